/**
 * The `ferry` command. Each subcommand lives in its own module and is registered here; this is
 * the edge where errors become messages and exit codes (from the code table: 0 ok, 1 failed,
 * 2 bad usage, 3 unreachable, 4 auth refused). With `--json` an error is also a JSON object on stdout.
 */
import { Command, CommanderError } from 'commander';
import { isFerryError, errorMessage } from '../common/errors.js';
import { EXIT, exitOfCode } from '../common/error-codes.js';
import { registerDemo } from './demo.js';
import { registerMigrate } from './migrate.js';
import { registerStatus } from './status.js';
import { registerWatch } from './watch.js';
import { registerRollback } from './rollback.js';
import { registerServers } from './servers.js';
import { registerSites } from './sites.js';
import { registerRecords } from './records.js';
import { registerAgent } from './agent.js';
import { registerController } from './controller.js';
import { registerConfig } from './config.js';
import { registerEvacuate } from './evacuate.js';
import { registerDns } from './dns.js';
import { registerRelay } from './relay.js';

export function buildProgram(): Command {
  const program = new Command()
    .name('ferry')
    .description('Move a hosted service between servers through a temporary IP, with no failed request.')
    .version('0.1.0')
    .showHelpAfterError()
    .exitOverride();
  registerDemo(program);
  registerMigrate(program);
  registerStatus(program);
  registerWatch(program);
  registerRollback(program);
  registerServers(program);
  registerSites(program);
  registerRecords(program);
  registerAgent(program);
  registerController(program);
  registerConfig(program);
  registerEvacuate(program);
  registerDns(program);
  registerRelay(program);
  return program;
}

/** With `--json`, the error as `{"error":{"code","message","exitCode"}}` on stdout, as the commands print theirs. */
function jsonError(argv: string[], code: string, message: string, exitCode: number): number {
  const end = argv.indexOf('--');
  if ((end < 0 ? argv : argv.slice(0, end)).includes('--json'))
    process.stdout.write(JSON.stringify({ error: { code, message, exitCode } }) + '\n');
  return exitCode;
}

async function main(argv: string[]): Promise<number> {
  const program = buildProgram();
  try {
    await program.parseAsync(argv);
    return process.exitCode === undefined ? EXIT.ok : Number(process.exitCode);
  } catch (err) {
    if (err instanceof CommanderError) {
      if (
        err.code === 'commander.helpDisplayed' ||
        err.code === 'commander.version' ||
        err.code === 'commander.help'
      )
        return EXIT.ok;
      // Commander has written its message to stderr already.
      return jsonError(argv, 'USAGE', err.message.replace(/^error: /, ''), EXIT.usage);
    }
    if (isFerryError(err)) {
      process.stderr.write(`ferry: ${err.message} [${err.code}]\n`);
      return jsonError(argv, err.code, err.message, exitOfCode(err.code));
    }
    process.stderr.write(`ferry: ${errorMessage(err)}\n`);
    return jsonError(argv, 'INTERNAL', errorMessage(err), EXIT.failed);
  }
}

process.exitCode = await main(process.argv);
