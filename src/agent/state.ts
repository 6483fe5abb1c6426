/**
 * Where a host agent keeps what it must restore after a restart: the addresses it brought up,
 * its sites with their modes, and its redirects. `FileStateStore` is what `ferry agent` uses
 * (`<dataDir>/agent-state.json`, replaced atomically); `MemoryStateStore` keeps it in the
 * process, for in-process agents (the sandbox) that a test may stop and start again.
 */
import { readFile, rename, writeFile } from 'node:fs/promises';
import type { SiteMode } from '../host/index.js';

/** The agent's saved state: enough to serve and forward as before the restart. */
export interface AgentState {
  /** Addresses this agent brought up (the only ones it will take down). */
  addresses?: string[];
  sites: Array<{ domain: string; mode: SiteMode }>;
  redirects: Array<{
    id: string;
    spec: { address: string; ports: number[]; engine: 'userspace' | 'kernel'; sourceAddress?: string };
    upstream: string;
    held: boolean;
    /** Userspace: the redirect's own process and its control socket, for a restarted agent to adopt. */
    pid?: number;
    socket?: string;
  }>;
  /** The site app's own process (when it runs in one) and its control socket. */
  siteApp?: { pid?: number; socket: string };
}

/** Load and save the agent's state. `save` calls never overlap (the agent serializes them). */
export interface AgentStateStore {
  /** The last saved state, or undefined when none was ever saved. */
  load(): Promise<AgentState | undefined>;
  save(state: AgentState): Promise<void>;
}

/** State in a JSON file (mode 0600), written to a temporary file and renamed over the old one. */
export class FileStateStore implements AgentStateStore {
  constructor(readonly path: string) {}

  async load(): Promise<AgentState | undefined> {
    return readFile(this.path, 'utf8').then(
      (t) => JSON.parse(t) as AgentState,
      () => undefined,
    );
  }

  async save(state: AgentState): Promise<void> {
    const tmp = `${this.path}.tmp`;
    await writeFile(tmp, JSON.stringify(state, null, 2) + '\n', { mode: 0o600 });
    await rename(tmp, this.path);
  }
}

/** State in memory: survives a stop and start of an agent given the same store, not the process. */
export class MemoryStateStore implements AgentStateStore {
  private state: string | undefined;

  async load(): Promise<AgentState | undefined> {
    return this.state === undefined ? undefined : (JSON.parse(this.state) as AgentState);
  }

  async save(state: AgentState): Promise<void> {
    this.state = JSON.stringify(state);
  }
}
