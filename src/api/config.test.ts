import assert from 'node:assert/strict';
import { it } from 'node:test';
import { isFerryError } from '../common/errors.js';
import { apiOptionsFromConfig } from './config.js';

it('api config: defaults, tokens from the environment, durations', () => {
  const o = apiOptionsFromConfig(
    {
      tokens: [{ name: 'ops', scope: 'operator', token: '${OPS_TOKEN}' }],
      sampleInterval: '500ms',
      sse: { heartbeat: '20s' },
    },
    { env: { OPS_TOKEN: 'x'.repeat(20) } },
  );
  assert.equal(o.host, '127.0.0.1');
  assert.equal(o.port, 7300);
  assert.deepEqual(o.tokens, [{ name: 'ops', scope: 'operator', token: 'x'.repeat(20) }]);
  assert.equal(o.sampleIntervalMs, 500);
  assert.equal(o.sse?.heartbeatMs, 20_000);
  assert.equal(o.rateLimitPerMinute, 600);
});

it('api config: every problem named with its key', () => {
  assert.throws(
    () =>
      apiOptionsFromConfig({
        tokens: [{ scope: 'admin', token: 'a', tokenFile: '/x' }],
        listen: { address: 'localhost' },
      }),
    (e: unknown) =>
      isFerryError(e, 'CONFIG_INVALID') &&
      /api\.tokens\.0\.scope/.test(e.message) &&
      /api\.listen\.address/.test(e.message),
  );
  assert.throws(
    () => apiOptionsFromConfig({ tokens: [{ scope: 'read', token: '${NOPE_UNSET}' }] }, { env: {} }),
    /NOPE_UNSET is not set/,
  );
});
