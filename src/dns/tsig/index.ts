/** TSIG (RFC 8945): keys, signing and verification. */
export {
  TsigKey,
  TsigKeyring,
  TsigError,
  findTsig,
  signMessage,
  verifyMessage,
  signError,
  type TsigKeyConfig,
  type TsigRecord,
  type SignOptions,
  type VerifyOptions,
  type VerifyResult,
  type VerifySigned,
} from './tsig.js';
