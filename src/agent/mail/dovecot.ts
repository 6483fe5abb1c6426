/**
 * PLACEHOLDER of this branch: the Dovecot side of a domain's mail is written in its own branch
 * (the real `Dovecot` replaces this file when the branches merge). It has that class's surface so
 * that the mail facade and the agent compile; every call answers MAIL_NOT_CONFIGURED.
 */
import { FerryError } from '../../common/errors.js';

/** One Dovecot user of a domain and its Maildir. */
export interface MailUser {
  user: string;
  home: string;
  maildir: string;
  uid: number;
  gid: number;
}

function missing(): Promise<never> {
  return Promise.reject(
    new FerryError('MAIL_NOT_CONFIGURED', "this agent was built without Dovecot's side of the mail move"),
  );
}

/** One Dovecot instance, by its configuration file (placeholder: see the file's comment). */
export class Dovecot {
  readonly configFile: string;

  constructor(opts: { configFile: string }) {
    this.configFile = opts.configFile;
  }

  check(): Promise<void> {
    return missing();
  }

  users(_domain: string): Promise<MailUser[]> {
    return missing();
  }

  exportUsers(_domain: string): Promise<string[]> {
    return missing();
  }

  installUsers(_domain: string, _lines: string[]): Promise<void> {
    return missing();
  }

  removeUsers(_domain: string): Promise<void> {
    return missing();
  }

  hasDomain(_domain: string): Promise<boolean> {
    return missing();
  }

  setDomainState(_domain: string, _state: 'serve' | 'block' | { proxy: string }): Promise<void> {
    return missing();
  }

  sessions(_domain: string): Promise<number> {
    return missing();
  }

  resync(_domain: string): Promise<void> {
    return missing();
  }
}
