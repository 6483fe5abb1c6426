/** A plain dnsperf pass for bench/dns/big.ts run alone (run.ts passes its own, with CPU figures). */
import { execFile } from 'node:child_process';
import { promisify } from 'node:util';

/** dnsperf -c 8 -q 64 for `seconds` against address:port with a query file: q/s, lost, sent. */
export function dnsperfQps(seconds: number) {
  return async (address: string, port: number, queryFile: string) => {
    const args = [
      '-s',
      address,
      '-p',
      String(port),
      '-d',
      queryFile,
      '-l',
      String(seconds),
      '-c',
      '8',
      '-q',
      '64',
      '-t',
      '2',
    ];
    const { stdout } = await promisify(execFile)('dnsperf', args, { encoding: 'utf8', maxBuffer: 1 << 26 });
    const num = (re: RegExp) => Number(re.exec(stdout)?.[1] ?? NaN);
    return {
      qps: num(/Queries per second:\s+([\d.]+)/),
      lost: num(/Queries lost:\s+(\d+)/),
      sent: num(/Queries sent:\s+(\d+)/),
    };
  };
}
