/**
 * The TSIG link of the request chain (RFC 8945): verifies a request for the primary role before
 * any other handler reads it, answers a failed one (FORMERR, or NOTAUTH with BADKEY, BADSIG or
 * BADTIME), and signs every answer to a signed one.
 */
import type { Logger } from '../../common/log.js';
import { bareResponse, type RequestHandler } from '../dispatch/request.js';
import { Rcode } from '../wire/types.js';
import { signError, signMessage, verifyMessage, type TsigKeyring } from './tsig.js';

/** The TSIG handler for `keys`; failures are logged at info. */
export function tsigHandler(keys: TsigKeyring, log: Logger): RequestHandler {
  return (req, next) => {
    if (!req.forPrimary) return next(req);
    let verified;
    try {
      verified = verifyMessage(req.packet, keys);
    } catch {
      return bareResponse(req.packet, Rcode.FORMERR);
    }
    if (verified.status === 'unsigned') return next(req);
    if (verified.status === 'error') {
      log.info(
        { from: req.peer.address, key: verified.tsig.keyName, tsigError: verified.error },
        'tsig verification failed',
      );
      if (verified.error === 1) return bareResponse(req.packet, Rcode.FORMERR);
      return signError(bareResponse(verified.message, Rcode.NOTAUTH), verified);
    }
    const key = verified.key!;
    req.message = verified.message;
    req.key = key;
    const out = next(req);
    if (out === undefined) return undefined;
    // Every message (RFC 8945 §5.3.1): the first over the request MAC, then each over the one before.
    if (!Array.isArray(out)) return signMessage(out, key, { requestMac: verified.tsig.mac }).packet;
    let prior: Buffer | undefined;
    return out.map((m, i) => {
      const s = signMessage(m, key, i === 0 ? { requestMac: verified.tsig.mac } : { priorMac: prior! });
      prior = s.mac;
      return s.packet;
    });
  };
}
