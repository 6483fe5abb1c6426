/**
 * Server-Sent Events of the controller's stream. A subscriber gets, in order: the events it
 * missed (after `Last-Event-ID`, from the controller's history), then live events, with a comment
 * line as heartbeat. Traffic samples go out as `event: sample` without an id: they are not part
 * of the replayable stream. The number of subscribers is bounded; a closed connection is removed
 * at once.
 */
import type { ServerResponse } from 'node:http';
import type { Controller, ControllerEvent } from '../controller/index.js';
import type { TrafficSample, TrafficSampler } from '../metrics/index.js';

export interface SseOptions {
  /** Most subscribers at once; more get 503. Default 100. */
  maxSubscribers?: number;
  /** Time between heartbeats. Default 15 000 ms. */
  heartbeatMs?: number;
}

interface Subscriber {
  res: ServerResponse;
  migration: string | undefined;
  heartbeat: NodeJS.Timeout;
}

/** Serialize one SSE message. `data` is JSON on one line, so no line splitting is needed. */
export function sseMessage(event: string, data: unknown, id?: number): string {
  return `${id !== undefined ? `id: ${id}\n` : ''}event: ${event}\ndata: ${JSON.stringify(data)}\n\n`;
}

/** Fans the controller's events and traffic samples out to SSE subscribers. */
export class EventHub {
  private readonly subs = new Set<Subscriber>();
  private readonly maxSubscribers: number;
  private readonly heartbeatMs: number;
  private readonly onEvent = (e: ControllerEvent) => {
    for (const s of this.subs)
      if (!s.migration || s.migration === e.migrationId) this.write(s, sseMessage(e.type, e, e.seq));
  };
  private readonly onSample = (t: TrafficSample) => {
    for (const s of this.subs)
      if (!s.migration || s.migration === t.migrationId) this.write(s, sseMessage('sample', t));
  };

  constructor(
    private readonly controller: Controller,
    private readonly sampler: TrafficSampler | undefined,
    opts: SseOptions = {},
  ) {
    this.maxSubscribers = opts.maxSubscribers ?? 100;
    this.heartbeatMs = opts.heartbeatMs ?? 15_000;
    controller.on('event', this.onEvent);
    sampler?.on('sample', this.onSample);
  }

  get size(): number {
    return this.subs.size;
  }

  get full(): boolean {
    return this.subs.size >= this.maxSubscribers;
  }

  /** Take over `res`: send the headers, the replay after `afterSeq`, then follow live events. */
  subscribe(res: ServerResponse, opts: { migration?: string; afterSeq: number }): void {
    res.writeHead(200, {
      'content-type': 'text/event-stream; charset=utf-8',
      'cache-control': 'no-cache, no-transform',
      connection: 'keep-alive',
      'x-accel-buffering': 'no',
    });
    res.write(`retry: 2000\n: ferry events${opts.migration ? ` of ${opts.migration}` : ''}\n\n`);
    const sub: Subscriber = {
      res,
      migration: opts.migration,
      heartbeat: setInterval(() => this.write(sub, `: heartbeat ${Date.now()}\n\n`), this.heartbeatMs),
    };
    sub.heartbeat.unref();
    // Replay and subscribe in the same tick: no event can fall between them.
    for (const e of this.controller.eventsSince(opts.afterSeq, opts.migration))
      res.write(sseMessage(e.type, e, e.seq));
    this.subs.add(sub);
    const drop = () => this.drop(sub);
    res.on('close', drop);
    res.on('error', drop);
  }

  private write(sub: Subscriber, text: string): void {
    if (sub.res.destroyed || sub.res.writableEnded) return this.drop(sub);
    // A subscriber that cannot keep up (a megabyte unread) is cut off rather than buffered forever.
    if (sub.res.writableLength > 1_000_000) {
      sub.res.destroy();
      return this.drop(sub);
    }
    sub.res.write(text);
  }

  private drop(sub: Subscriber): void {
    clearInterval(sub.heartbeat);
    this.subs.delete(sub);
  }

  /** End every stream and stop following the controller. */
  close(): void {
    this.controller.off('event', this.onEvent);
    this.sampler?.off('sample', this.onSample);
    for (const s of [...this.subs]) {
      s.res.end();
      this.drop(s);
    }
  }
}
