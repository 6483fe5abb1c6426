/** Zone transfers (AXFR, IXFR), their ACLs, and the primary role that serves them. */
export { Acl, type AclEntry } from './acl.js';
export { Primary, type PrimaryOptions, type ZonePolicy } from './primary.js';
export { axfrRecords, ixfrRecords, packTransfer } from './transfer.js';
export { dnsTransfer, type TransferOptions, type TransferResult } from './client.js';
