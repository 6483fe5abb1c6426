/**
 * Options and the choice of data plane. The relay's behaviour (forwarding, hold/release, limits,
 * timeouts, half-close, counters, PROXY headers, close) is tested once for every data plane in
 * contract.test.ts.
 */
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { isFerryError } from '../common/errors.js';
import { NativeRelay, TcpRelay, WorkerRelay, createUserspaceRelay, type RelayOptions } from './index.js';
import { nativeUnsupported } from './native-relay.js';
import { resolveRelayOptions } from './options.js';

const base: RelayOptions = {
  listen: { address: '127.0.0.3', ports: [0] },
  upstream: { address: '127.0.0.2', port: 1 },
};
const nativeMissing = nativeUnsupported(resolveRelayOptions(base));
const badOption = (e: unknown) => isFerryError(e, 'RELAY_BAD_OPTION');

/** Runs `f` with FERRY_NATIVE set to `value`, restoring it after. */
function withEnv<T>(value: string, f: () => T): T {
  const old = process.env.FERRY_NATIVE;
  process.env.FERRY_NATIVE = value;
  try {
    return f();
  } finally {
    if (old === undefined) delete process.env.FERRY_NATIVE;
    else process.env.FERRY_NATIVE = old;
  }
}

describe('relay options and data plane', () => {
  it('rejects bad options with RELAY_BAD_OPTION', () => {
    for (const make of [(o: RelayOptions) => new TcpRelay(o), (o: RelayOptions) => createUserspaceRelay(o)]) {
      const bad = (o: unknown) => assert.throws(() => make(o as RelayOptions), badOption);
      bad({ listen: { address: 'localhost', ports: [1] }, upstream: { address: '127.0.0.1' } });
      bad({ listen: { address: '127.0.0.1', ports: [] }, upstream: { address: '127.0.0.1' } });
      bad({ listen: { address: '127.0.0.1', ports: [70000] }, upstream: { address: '127.0.0.1' } });
      bad({
        listen: { address: '127.0.0.1', ports: [1] },
        upstream: { address: '::1' },
        sourceAddress: '127.0.0.7',
      });
      bad({
        listen: { address: '127.0.0.1', ports: [1] },
        upstream: { address: '127.0.0.1' },
        maxHoldMs: -1,
      });
      bad({
        listen: { address: '127.0.0.1', ports: [1] },
        upstream: { address: '127.0.0.1' },
        proxyProtocol: 'v3',
      });
      bad({
        listen: { address: '127.0.0.1', ports: [1] },
        upstream: { address: '127.0.0.1' },
        dataPlane: 'fast',
      });
    }
  });

  it(
    'picks the native data plane by default when the addon is built, the TypeScript one when asked or needed',
    { skip: nativeMissing ?? false },
    () => {
      assert.ok(createUserspaceRelay(base) instanceof NativeRelay);
      assert.ok(createUserspaceRelay({ ...base, dataPlane: 'native' }) instanceof NativeRelay);
      assert.ok(createUserspaceRelay({ ...base, dataPlane: 'js' }) instanceof TcpRelay);
      // Options only the TypeScript plane serves.
      assert.ok(createUserspaceRelay({ ...base, acceptProxyProtocol: true }) instanceof TcpRelay);
      assert.ok(createUserspaceRelay({ ...base, udp: true }) instanceof TcpRelay);
      assert.ok(
        createUserspaceRelay({
          listen: { address: '::1', ports: [0] },
          upstream: { address: 'fe80::1%lo', port: 1 },
        }) instanceof TcpRelay,
      );
      assert.ok(withEnv('0', () => createUserspaceRelay(base)) instanceof TcpRelay);
      // Workers: native, even with UDP (relayed by the engine's process); TypeScript when asked.
      assert.equal(new WorkerRelay({ ...base, workers: 2 }).dataPlane, 'native');
      assert.equal(new WorkerRelay({ ...base, workers: 2, udp: true }).dataPlane, 'native');
      assert.equal(new WorkerRelay({ ...base, workers: 2, dataPlane: 'js' }).dataPlane, 'js');
      assert.equal(new WorkerRelay({ ...base, workers: 2, acceptProxyProtocol: true }).dataPlane, 'js');
      assert.equal(withEnv('0', () => new WorkerRelay({ ...base, workers: 2 })).dataPlane, 'js');
    },
  );

  it("says why when dataPlane 'native' cannot be used", () => {
    const says = (re: RegExp) => (e: unknown) => badOption(e) && re.test((e as Error).message);
    assert.throws(
      () => createUserspaceRelay({ ...base, dataPlane: 'native', acceptProxyProtocol: true }),
      says(/acceptProxyProtocol/),
    );
    assert.throws(() => createUserspaceRelay({ ...base, dataPlane: 'native', udp: true }), says(/udp/));
    assert.throws(
      () => withEnv('0', () => createUserspaceRelay({ ...base, dataPlane: 'native' })),
      says(/FERRY_NATIVE=0/),
    );
    assert.throws(
      () => withEnv('0', () => new WorkerRelay({ ...base, workers: 2, dataPlane: 'native' })),
      says(/FERRY_NATIVE=0/),
    );
    assert.throws(() => new TcpRelay({ ...base, dataPlane: 'native' }), says(/TypeScript data plane/));
    assert.throws(() => withEnv('0', () => new NativeRelay(base)), says(/FERRY_NATIVE=0/));
    assert.throws(() => new NativeRelay({ ...base, dataPlane: 'js' }), says(/TcpRelay/));
    assert.throws(() => new NativeRelay({ ...base, workers: 2 }), says(/createUserspaceRelay/));
    if (!nativeMissing)
      assert.throws(
        () => new NativeRelay(base).setUpstream({ address: 'fe80::1%lo', port: 1 }),
        says(/scoped/),
      );
  });
});
