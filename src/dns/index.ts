/**
 * Ferry's authoritative DNS server: wire codec, zones and zone files, the query engine, the
 * UDP/TCP server and a small client. This file is the component's whole public surface.
 */
export { DnsServer, type DnsServerOptions } from './server.js';
export { startQueryThreadsEarly } from './workers/pool.js';
export { Catalog, catalogMemberId, DEFAULT_CATALOG_ZONE, type CatalogOptions } from './catalog/catalog.js';
export { mergeZonePolicies, zoneOverride } from './xfr/policies.js';
export type { ZonePolicy } from './xfr/primary.js';
export type { AclEntry } from './xfr/acl.js';
export { DNS_QUERY_CHANNEL, type DnsQueryEvent } from './metrics.js';
export {
  dnsQuery,
  dnsExchangeUdp,
  dnsExchangeTcp,
  type DnsQueryOptions,
  type DnsResponse,
  type DnsAnswerRecord,
} from './client.js';
export { ZoneStore, nextSerial, serialGreater, type RRsetChange, type SerialPolicy } from './zone/store.js';
export { Zone, RRsetsByType, type RRset, type ZoneNode } from './zone/zone.js';
export { parseZone, loadZoneFile, type ParseZoneOptions } from './zone/parser.js';
export {
  ZoneFiles,
  type RefusedZoneFile,
  type ZoneFileSources,
  type ZoneReloadResult,
} from './zone/files.js';
export { exportZone } from './zone/export.js';
export { QueryEngine, type QueryEngineOptions } from './query/engine.js';
export { QUERY_CHAIN, runChain } from './query/chain.js';
export type { Handler, QueryContext, Next } from './query/context.js';
export {
  decodeMessage,
  encodeMessage,
  makeQuery,
  unpackHeader,
  type DnsMessage,
  type Question,
  type ResourceRecord,
  type Edns,
  type EdnsOption,
  type MessageFlags,
  type EncodeOptions,
} from './wire/message.js';
export { formatRdata, parseRdata, type Rdata, type RdataValue, type SvcParam } from './wire/rdata.js';
export { parseName, nameKey } from './wire/name.js';
export { tokenize } from './wire/text.js';
export {
  RRType,
  RRClass,
  Opcode,
  Rcode,
  RR_TYPE_TABLE,
  typeName,
  typeCode,
  className,
  classCode,
  rcodeName,
  type RRTypeInfo,
} from './wire/types.js';
