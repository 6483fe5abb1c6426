/** Run `ferry demo --serve` as a separate process for the dashboard and CLI tests; wait for its API. */
import { spawn, type ChildProcess } from 'node:child_process';
import { once } from 'node:events';

export interface ServedSandbox {
  url: string;
  token: string;
  child: ChildProcess;
  output(): string;
  stop(): Promise<void>;
}

/** Start the sandbox on loopback addresses 127.0.<net>.x with every port picked by the system. */
export async function serveSandbox(
  net: number,
  extra: string[] = [],
  timeoutMs = 60_000,
): Promise<ServedSandbox> {
  const args = [
    '--import',
    'tsx',
    'src/cli/main.ts',
    'demo',
    '--serve',
    '--api-address',
    `127.0.${net}.10`,
    '--api-port',
    '0',
    '--dns-address',
    `127.0.${net}.53`,
    '--dns-port',
    '0',
    '--http-port',
    '0',
    '--origin-ip',
    `127.0.${net}.1`,
    '--target-ip',
    `127.0.${net}.2`,
    '--temp-ip',
    `127.0.${net}.100`,
    ...extra,
  ];
  const child = spawn(process.execPath, args, {
    stdio: ['ignore', 'pipe', 'pipe'],
    env: { ...process.env, FERRY_TOKEN: '' },
  });
  let out = '';
  child.stdout!.on('data', (c: Buffer) => (out += c.toString()));
  child.stderr!.on('data', (c: Buffer) => (out += c.toString()));
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const m = /Control API: (\S+)\s+operator token: (\S+)/.exec(out);
    if (m) {
      return {
        url: m[1]!,
        token: m[2]!,
        child,
        output: () => out,
        stop: async () => {
          if (child.exitCode !== null) return;
          const exited = once(child, 'exit');
          child.kill('SIGINT');
          const timer = setTimeout(() => child.kill('SIGKILL'), 15_000);
          await exited;
          clearTimeout(timer);
        },
      };
    }
    if (child.exitCode !== null || Date.now() > deadline) {
      child.kill('SIGKILL');
      throw new Error(`the sandbox did not start its API:\n${out}`);
    }
    await new Promise((r) => setTimeout(r, 100));
  }
}
