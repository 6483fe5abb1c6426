/**
 * The `ferry` command. Each subcommand lives in its own module and is registered here; this is
 * the edge where errors become messages and exit codes (from the code table: 0 ok, 1 failed,
 * 2 bad usage, 3 unreachable, 4 auth refused). With `--json` an error is also a JSON object on stdout.
 */
import { Command, CommanderError } from 'commander';
import { isFerryError, errorMessage } from '../common/errors.js';
import { EXIT, exitOfCode } from '../common/error-codes.js';

type Register = (program: Command) => void;

/**
 * Each subcommand's module, in help order. Loaded on demand: a command run by name loads only its
 * own module (the others cost about a second of start-up together, which a server started by
 * `ferry dns serve` would spend before reading its zones).
 */
const COMMANDS: ReadonlyArray<readonly [string, () => Promise<Register>]> = [
  ['demo', async () => (await import('./demo.js')).registerDemo],
  ['migrate', async () => (await import('./migrate.js')).registerMigrate],
  ['status', async () => (await import('./status.js')).registerStatus],
  ['watch', async () => (await import('./watch.js')).registerWatch],
  ['rollback', async () => (await import('./rollback.js')).registerRollback],
  ['servers', async () => (await import('./servers.js')).registerServers],
  ['sites', async () => (await import('./sites.js')).registerSites],
  ['records', async () => (await import('./records.js')).registerRecords],
  ['agent', async () => (await import('./agent.js')).registerAgent],
  ['controller', async () => (await import('./controller.js')).registerController],
  ['config', async () => (await import('./config.js')).registerConfig],
  ['evacuate', async () => (await import('./evacuate.js')).registerEvacuate],
  ['dns', async () => (await import('./dns.js')).registerDns],
  ['relay', async () => (await import('./relay.js')).registerRelay],
];

/**
 * The program with the subcommand named `command` only, when it is one (what running it needs),
 * else with every subcommand (help, suggestions for a mistyped name).
 */
export async function buildProgram(command?: string): Promise<Command> {
  const program = new Command()
    .name('ferry')
    .description('Move a hosted service between servers through a temporary IP, with no failed request.')
    .version('0.1.0')
    .showHelpAfterError()
    .exitOverride();
  const one = COMMANDS.find(([name]) => name === command);
  for (const [, load] of one ? [one] : COMMANDS) (await load())(program);
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
  const program = await buildProgram(argv[2]);
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
