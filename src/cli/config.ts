/** `ferry config check FILE`: validate a controller config alone, printing it without its secrets. */
import type { Command } from 'commander';
import { describeConfig, loadConfig } from '../controller/index.js';

export function registerConfig(program: Command): void {
  const config = program.command('config').description('Work with the controller configuration (ferry.yaml)');
  config
    .command('check')
    .description('Validate a config file: every problem with the path of its key and what to write instead')
    .argument('<file>', 'the YAML config file')
    .option('--no-files', 'do not read token and secret files (check the file alone)')
    .action(async (file: string, o: { files: boolean }) => {
      const cfg = await loadConfig(file, { readSecretFiles: o.files });
      process.stdout.write(describeConfig(cfg) + '\n');
    });
}
