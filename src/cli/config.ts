/** `ferry config check FILE`: validate a controller config alone, printing it without its secrets. */
import { dirname, resolve } from 'node:path';
import type { Command } from 'commander';
import { apiOptionsFromConfig } from '../api/index.js';
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
      let api = '';
      if (cfg.api && o.files) {
        const a = apiOptionsFromConfig(cfg.api, { baseDir: dirname(resolve(cfg.file)) });
        api = `\n  api: http://${a.host}:${a.port}, ${a.tokens.length} token${a.tokens.length === 1 ? '' : 's'} (${a.tokens.map((t) => `${t.name}: ${t.scope}`).join(', ')})`;
      }
      process.stdout.write(describeConfig(cfg) + api + '\n');
    });
}
