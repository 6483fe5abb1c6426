/**
 * NOTIFY (RFC 1996) to a zone's secondaries after each committed change. Changes that come in a
 * burst are coalesced into one NOTIFY per secondary (sent `coalesceMs` after the first, carrying
 * the SOA current then); a NOTIFY without an answer is retried with a doubling interval, at most
 * `retries` times (RFC 1996 §3.6). Signed with the secondary's TSIG key when it has one.
 */
import { randomInt } from 'node:crypto';
import dgram from 'node:dgram';
import net from 'node:net';
import { decodeMessage, encodeMessage, NO_FLAGS, type DnsMessage } from '../wire/message.js';
import { Opcode, RRClass, RRType } from '../wire/types.js';
import { signMessage, verifyMessage, findTsig, type TsigKey, TsigKeyring } from '../tsig/tsig.js';
import type { Zone } from '../zone/zone.js';
import { soaOf } from '../xfr/transfer.js';

/** A secondary to notify. */
export interface NotifyTarget {
  address: string;
  /** Default 53. */
  port?: number;
  /** TSIG key name to sign with (from the server's keys). */
  key?: string;
}

export interface NotifierOptions {
  /** Source address of NOTIFY datagrams (the server's own address, which secondaries trust). */
  source: string;
  keys: TsigKeyring;
  /** Wait after a change before sending, to coalesce bursts (default 50 ms). */
  coalesceMs?: number;
  /** First retry interval (default 1000 ms), doubled each time. */
  retryMs?: number;
  /** Retries after the first send (default 4). */
  retries?: number;
  /** Called on each outcome (logging at the edge). */
  onEvent?: (e: {
    zone: string;
    target: string;
    outcome: 'answered' | 'gave-up' | 'error';
    attempts: number;
    rcode?: number;
  }) => void;
}

interface State {
  timer?: NodeJS.Timeout;
  inflight: boolean;
  again: boolean;
}

/** Sends NOTIFY messages for changed zones. */
export class Notifier {
  private sock: dgram.Socket | undefined;
  private readonly states = new Map<string, State>();
  private readonly waiting = new Map<number, (m: DnsMessage, raw: Buffer) => void>();
  private stopped = false;
  /** NOTIFY messages sent (tests and metrics). */
  sent = 0;

  constructor(private readonly opts: NotifierOptions) {}

  private socket(): dgram.Socket {
    if (!this.sock) {
      const sock = dgram.createSocket(net.isIPv6(this.opts.source) ? 'udp6' : 'udp4');
      sock.on('error', () => undefined);
      sock.on('message', (buf) => {
        try {
          const m = decodeMessage(verifyMessage(buf, this.opts.keys).message);
          this.waiting.get(m.id)?.(m, buf);
        } catch {
          // not an answer we can read: ignore, the retry covers it
        }
      });
      sock.bind(0, this.opts.source);
      sock.unref();
      this.sock = sock;
    }
    return this.sock;
  }

  /** A zone changed: notify each target (coalesced). */
  changed(zone: Zone, targets: readonly NotifyTarget[]): void {
    if (this.stopped) return;
    for (const t of targets) {
      const id = `${zone.originKey}|${t.address}|${t.port ?? 53}`;
      let st = this.states.get(id);
      if (!st) this.states.set(id, (st = { inflight: false, again: false }));
      if (st.inflight) {
        st.again = true;
        continue;
      }
      if (st.timer) continue;
      const s = st;
      s.timer = setTimeout(() => {
        s.timer = undefined;
        void this.run(zone, t, s);
      }, this.opts.coalesceMs ?? 50);
    }
  }

  private async run(zone: Zone, target: NotifyTarget, st: State): Promise<void> {
    st.inflight = true;
    const label = `${target.address}:${target.port ?? 53}`;
    const retries = this.opts.retries ?? 4;
    let wait = this.opts.retryMs ?? 1000;
    let attempts = 0;
    let outcome: 'answered' | 'gave-up' | 'error' = 'gave-up';
    let rcode: number | undefined;
    try {
      for (; attempts <= retries && !this.stopped; attempts++) {
        const res = await this.sendOnce(zone, target, wait);
        if (res) {
          outcome = 'answered';
          rcode = res.rcode;
          attempts++;
          break;
        }
        wait *= 2;
      }
    } catch {
      outcome = 'error';
    }
    this.opts.onEvent?.({
      zone: zone.origin,
      target: label,
      outcome,
      attempts,
      ...(rcode !== undefined ? { rcode } : {}),
    });
    st.inflight = false;
    if (st.again && !this.stopped) {
      st.again = false;
      this.changed(zone, [target]);
    }
  }

  private sendOnce(zone: Zone, target: NotifyTarget, timeoutMs: number): Promise<DnsMessage | undefined> {
    const id = randomInt(65536);
    const msg: DnsMessage = {
      id,
      opcode: Opcode.NOTIFY,
      rcode: 0,
      flags: { ...NO_FLAGS, aa: true },
      questions: [{ name: zone.origin, type: RRType.SOA, class: RRClass.IN }],
      answers: [soaOf(zone)], // RFC 1996 §3.7: the SOA may be sent along
      authority: [],
      additional: [],
    };
    let packet = encodeMessage(msg);
    const key: TsigKey | undefined = target.key ? this.opts.keys.get(target.key) : undefined;
    if (target.key && !key) return Promise.reject(new Error(`no TSIG key ${target.key}`));
    let mac: Buffer | undefined;
    if (key) ({ packet, mac } = signMessage(packet, key));
    return new Promise((resolve) => {
      const timer = setTimeout(() => {
        this.waiting.delete(id);
        resolve(undefined);
      }, timeoutMs);
      this.waiting.set(id, (m, raw) => {
        if (!m.flags.qr || m.opcode !== Opcode.NOTIFY) return;
        if (key && mac) {
          const v = findTsig(raw) ? verifyMessage(raw, this.opts.keys, { requestMac: mac }) : undefined;
          if (!v || v.status !== 'ok') return; // RFC 8945 §5.3: an unsigned or bad answer is dropped
        }
        clearTimeout(timer);
        this.waiting.delete(id);
        resolve(m);
      });
      this.sent++;
      this.socket().send(packet, target.port ?? 53, target.address);
    });
  }

  /** Stops timers and closes the socket. */
  stop(): void {
    this.stopped = true;
    for (const st of this.states.values()) if (st.timer) clearTimeout(st.timer);
    this.states.clear();
    this.sock?.close();
    this.sock = undefined;
  }
}
