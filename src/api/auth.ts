/**
 * Bearer tokens with two scopes: `read` sees everything, `operator` may also start, roll back and
 * evacuate. Tokens are compared in constant time (as SHA-256 digests, against every configured
 * token, so neither the match nor its position leaks through timing) and are never logged.
 */
import { createHash, randomBytes, timingSafeEqual } from 'node:crypto';
import { FerryError } from '../common/errors.js';

export type Scope = 'read' | 'operator';

/** One accepted token. `name` shows in logs instead of the token. */
export interface ApiToken {
  token: string;
  scope: Scope;
  name?: string;
}

/** A new random token (32 bytes, base64url): `ferry_` followed by 43 characters. */
export function generateToken(): string {
  return `ferry_${randomBytes(32).toString('base64url')}`;
}

const digest = (s: string) => createHash('sha256').update(s, 'utf8').digest();

/** Checks presented tokens against the configured ones. */
export class TokenVerifier {
  private readonly tokens: Array<{ digest: Buffer; scope: Scope; name: string }>;

  constructor(tokens: ApiToken[]) {
    if (tokens.length === 0)
      throw new FerryError(
        'API_OPTIONS',
        'the API needs at least one token: pass tokens: [{ token, scope }]',
      );
    this.tokens = tokens.map((t, i) => {
      if (typeof t.token !== 'string' || t.token.length < 16) {
        throw new FerryError(
          'API_OPTIONS',
          `token ${t.name ?? i + 1} is shorter than 16 characters; use generateToken()`,
        );
      }
      if (t.scope !== 'read' && t.scope !== 'operator') {
        throw new FerryError(
          'API_OPTIONS',
          `token ${t.name ?? i + 1} has scope "${String(t.scope)}"; use "read" or "operator"`,
        );
      }
      return { digest: digest(t.token), scope: t.scope, name: t.name ?? `token-${i + 1}` };
    });
  }

  /** The scope and name of `presented`, or undefined when it matches no token. */
  verify(presented: string | undefined): { scope: Scope; name: string } | undefined {
    if (!presented) return undefined;
    const d = digest(presented);
    let found: { scope: Scope; name: string } | undefined;
    for (const t of this.tokens) {
      // Look at every token whatever happens, so the time taken does not depend on which matched.
      if (timingSafeEqual(d, t.digest) && !found) found = { scope: t.scope, name: t.name };
    }
    return found;
  }
}

/** Whether a token of scope `have` may call a route that needs `need`. */
export function allows(have: Scope, need: Scope): boolean {
  return need === 'read' || have === 'operator';
}

/** The token of an `Authorization: Bearer …` header, or undefined. */
export function bearer(header: string | undefined): string | undefined {
  if (!header) return undefined;
  const m = /^Bearer\s+(\S+)\s*$/i.exec(header);
  return m?.[1];
}
