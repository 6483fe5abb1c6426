/**
 * The one table of DNS constants: RR types (with their rdata layout), classes, opcodes and rcodes.
 * The rdata codec, the zone-file parser and the query engine all read the layouts from here, so a
 * new type is one row.
 */

/**
 * One rdata field. Wire and presentation forms per kind:
 * - `u8`/`u16`/`u32`: unsigned integers; `ttl`: u32 that also accepts `1h30m` units in zone files.
 * - `ipv4`/`ipv6`: 4/16 bytes (RFC 1035 §3.4.1, RFC 3596 §2.2).
 * - `cname`: a domain name that may be compressed on output (RFC 3597 §4: RFC 1035 types only).
 * - `name`: a domain name never compressed on output (decompressed on input, leniently).
 * - `str`: one <character-string> (RFC 1035 §3.3); `strs`: one or more up to the end (TXT).
 * - `hex`/`b64`: the rest of the rdata as hex or base64.
 * - `caatag`/`caavalue`: RFC 8659 §4.1 tag (length-prefixed) and value (the rest).
 * - `svcparams`: RFC 9460 §2.2 SvcParams up to the end.
 * - `opaque`: RFC 3597 §5 generic `\# len hex` (unknown types).
 */
export type FieldKind =
  | 'u8'
  | 'u16'
  | 'u32'
  | 'ttl'
  | 'ipv4'
  | 'ipv6'
  | 'cname'
  | 'name'
  | 'str'
  | 'strs'
  | 'hex'
  | 'b64'
  | 'caatag'
  | 'caavalue'
  | 'svcparams'
  | 'opaque';

export interface RRTypeInfo {
  code: number;
  name: string;
  /** Rdata layout; undefined for meta types and QTYPEs that never appear as data. */
  fields?: readonly FieldKind[];
  /** Index of the field whose name triggers additional-section A/AAAA (RFC 1034 §4.3.2 step 6). */
  additional?: number;
}

/** Every type Ferry knows by name. Rows sorted by code. */
export const RR_TYPE_TABLE: readonly RRTypeInfo[] = [
  { code: 1, name: 'A', fields: ['ipv4'] },
  { code: 2, name: 'NS', fields: ['cname'], additional: 0 },
  { code: 5, name: 'CNAME', fields: ['cname'] },
  { code: 6, name: 'SOA', fields: ['cname', 'cname', 'u32', 'ttl', 'ttl', 'ttl', 'ttl'] },
  { code: 12, name: 'PTR', fields: ['cname'] },
  { code: 13, name: 'HINFO', fields: ['str', 'str'] },
  { code: 15, name: 'MX', fields: ['u16', 'cname'], additional: 1 },
  { code: 16, name: 'TXT', fields: ['strs'] },
  { code: 17, name: 'RP', fields: ['name', 'name'] },
  { code: 28, name: 'AAAA', fields: ['ipv6'] },
  { code: 33, name: 'SRV', fields: ['u16', 'u16', 'u16', 'name'], additional: 3 },
  { code: 35, name: 'NAPTR', fields: ['u16', 'u16', 'str', 'str', 'str', 'name'] },
  { code: 39, name: 'DNAME', fields: ['name'] },
  { code: 41, name: 'OPT' },
  { code: 43, name: 'DS', fields: ['u16', 'u8', 'u8', 'hex'] },
  { code: 44, name: 'SSHFP', fields: ['u8', 'u8', 'hex'] },
  { code: 48, name: 'DNSKEY', fields: ['u16', 'u8', 'u8', 'b64'] },
  { code: 52, name: 'TLSA', fields: ['u8', 'u8', 'u8', 'hex'] },
  { code: 64, name: 'SVCB', fields: ['u16', 'name', 'svcparams'] },
  { code: 65, name: 'HTTPS', fields: ['u16', 'name', 'svcparams'] },
  { code: 99, name: 'SPF', fields: ['strs'] },
  { code: 250, name: 'TSIG' },
  { code: 251, name: 'IXFR' },
  { code: 252, name: 'AXFR' },
  { code: 253, name: 'MAILB' },
  { code: 254, name: 'MAILA' },
  { code: 255, name: 'ANY' },
  { code: 257, name: 'CAA', fields: ['u8', 'caatag', 'caavalue'] },
];

/** RR type codes by name, for code that names a type (`RRType.A`). */
export const RRType = {
  A: 1,
  NS: 2,
  CNAME: 5,
  SOA: 6,
  PTR: 12,
  HINFO: 13,
  MX: 15,
  TXT: 16,
  RP: 17,
  AAAA: 28,
  SRV: 33,
  NAPTR: 35,
  DNAME: 39,
  OPT: 41,
  DS: 43,
  SSHFP: 44,
  DNSKEY: 48,
  TLSA: 52,
  SVCB: 64,
  HTTPS: 65,
  SPF: 99,
  TSIG: 250,
  IXFR: 251,
  AXFR: 252,
  MAILB: 253,
  MAILA: 254,
  ANY: 255,
  CAA: 257,
} as const;

/** Classes (RFC 1035 §3.2.4, RFC 2136 §1.3). */
export const RRClass = { IN: 1, CH: 3, HS: 4, NONE: 254, ANY: 255 } as const;

/** Opcodes (RFC 1035 §4.1.1, RFC 1996, RFC 2136). */
export const Opcode = { QUERY: 0, IQUERY: 1, STATUS: 2, NOTIFY: 4, UPDATE: 5 } as const;

/** Response codes, including the EDNS extended ones (RFC 6895 §2.3). */
export const Rcode = {
  NOERROR: 0,
  FORMERR: 1,
  SERVFAIL: 2,
  NXDOMAIN: 3,
  NOTIMP: 4,
  REFUSED: 5,
  YXDOMAIN: 6,
  YXRRSET: 7,
  NXRRSET: 8,
  NOTAUTH: 9,
  NOTZONE: 10,
  BADVERS: 16,
  BADKEY: 17,
  BADTIME: 18,
  BADMODE: 19,
  BADNAME: 20,
  BADALG: 21,
  BADTRUNC: 22,
  BADCOOKIE: 23,
} as const;

const typeByCode = new Map<number, RRTypeInfo>(RR_TYPE_TABLE.map((t) => [t.code, t]));
const typeByName = new Map<string, RRTypeInfo>(RR_TYPE_TABLE.map((t) => [t.name, t]));
const rcodeNames = new Map<number, string>(Object.entries(Rcode).map(([k, v]) => [v, k]));
const classNames = new Map<number, string>(Object.entries(RRClass).map(([k, v]) => [v, k]));

/** Row of the type table, or undefined for a type Ferry does not know. */
export function typeInfo(code: number): RRTypeInfo | undefined {
  return typeByCode.get(code);
}

/** Rdata layout of a type: its table row, or RFC 3597 opaque data for unknown types. */
export function rdataFields(code: number): readonly FieldKind[] {
  return typeByCode.get(code)?.fields ?? OPAQUE;
}
const OPAQUE: readonly FieldKind[] = ['opaque'];

/** Mnemonic of a type, or `TYPEnnn` (RFC 3597 §5). */
export function typeName(code: number): string {
  return typeByCode.get(code)?.name ?? `TYPE${code}`;
}

/** Type code of a mnemonic or `TYPEnnn` (case-insensitive); undefined when neither. */
export function typeCode(name: string): number | undefined {
  const upper = name.toUpperCase();
  const known = typeByName.get(upper);
  if (known) return known.code;
  const m = /^TYPE(\d{1,5})$/.exec(upper);
  if (!m) return undefined;
  const n = Number(m[1]);
  return n <= 0xffff ? n : undefined;
}

/** Mnemonic of a class, or `CLASSnnn` (RFC 3597 §5). */
export function className(code: number): string {
  return classNames.get(code) ?? `CLASS${code}`;
}

/** Class code of a mnemonic or `CLASSnnn`; undefined when neither. */
export function classCode(name: string): number | undefined {
  const upper = name.toUpperCase();
  const known = (RRClass as Record<string, number>)[upper];
  if (known !== undefined) return known;
  const m = /^CLASS(\d{1,5})$/.exec(upper);
  if (!m) return undefined;
  const n = Number(m[1]);
  return n <= 0xffff ? n : undefined;
}

/** Name of an rcode, or `RCODEnnn`. */
export function rcodeName(code: number): string {
  return rcodeNames.get(code) ?? `RCODE${code}`;
}

/** True for QTYPEs and meta types that never appear as stored data (RFC 6895 §3.1). */
export function isMetaType(code: number): boolean {
  return code === RRType.OPT || (code >= 128 && code <= 255);
}
