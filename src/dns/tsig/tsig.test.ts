import { test } from 'node:test';
import { inspect } from 'node:util';
import assert from 'node:assert/strict';
import { encodeMessage, makeQuery } from '../wire/message.js';
import { RRType } from '../wire/types.js';
import { TsigError, TsigKey, TsigKeyring, findTsig, signError, signMessage, verifyMessage } from './tsig.js';

const SECRET = Buffer.alloc(32, 7).toString('base64');
const key = new TsigKey({ name: 'xfr.example.', algorithm: 'hmac-sha256', secret: SECRET });
const ring = new TsigKeyring([key]);
const query = () => encodeMessage(makeQuery(4242, 'example.', RRType.SOA));

test('a signed request verifies, and its TSIG is the last record', () => {
  for (const algorithm of ['hmac-sha1', 'hmac-sha256', 'hmac-sha512']) {
    const k = new TsigKey({ name: 'k.example', algorithm, secret: SECRET });
    const { packet, mac } = signMessage(query(), k);
    assert.equal(mac.length, k.macSize);
    const r = verifyMessage(packet, new TsigKeyring([k]));
    assert.equal(r.status, 'ok', algorithm);
    assert.deepEqual(r.message, query());
    assert.equal(findTsig(packet)?.tsig.keyName, 'k.example.');
  }
});

test('unknown key is BADKEY, a changed byte is BADSIG, an old time is BADTIME', () => {
  const other = new TsigKey({ name: 'other.', secret: SECRET });
  const r1 = verifyMessage(signMessage(query(), other).packet, ring);
  assert.equal(r1.status === 'error' && r1.error, TsigError.BADKEY);
  const wrong = new TsigKey({ name: 'xfr.example.', secret: Buffer.alloc(32, 8).toString('base64') });
  const r2 = verifyMessage(signMessage(query(), wrong).packet, ring);
  assert.equal(r2.status === 'error' && r2.error, TsigError.BADSIG);
  const old = signMessage(query(), key, { now: Math.floor(Date.now() / 1000) - 1000 }).packet;
  const r3 = verifyMessage(old, ring);
  assert.equal(r3.status === 'error' && r3.error, TsigError.BADTIME);
  // The BADTIME answer is signed with the request MAC and carries the server time.
  const answer = signError(r3.status === 'error' ? r3.message : Buffer.alloc(0), r3 as never);
  const v = verifyMessage(answer, ring, {
    requestMac: findTsig(old)!.tsig.mac,
    now: findTsig(old)!.tsig.timeSigned,
  });
  assert.equal(v.status, 'ok', 'the BADTIME answer is signed');
  assert.equal(findTsig(answer)!.tsig.error, TsigError.BADTIME);
  assert.equal(findTsig(answer)!.tsig.other.length, 6);
});

test('a response chain verifies message by message (RFC 8945 §5.3.1)', () => {
  const req = signMessage(query(), key);
  const m1 = signMessage(query(), key, { requestMac: req.mac });
  const m2 = signMessage(query(), key, { priorMac: m1.mac });
  assert.equal(verifyMessage(m1.packet, ring, { requestMac: req.mac }).status, 'ok');
  assert.equal(verifyMessage(m2.packet, ring, { priorMac: m1.mac }).status, 'ok');
  assert.equal(verifyMessage(m2.packet, ring, { priorMac: req.mac }).status, 'error');
});

test('secrets stay out of JSON and inspection', () => {
  assert.doesNotMatch(JSON.stringify(key), new RegExp(SECRET.slice(0, 10)));
  assert.doesNotMatch(inspect(key), /BwcH/);
});
