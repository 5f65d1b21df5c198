// Image jobs: run engine.generate under the scheduler, keep an append-only event log (for
// `imageJob(id, after)` resume and for @stream/@defer), and cancel on request or when the last
// watcher leaves.
//
// Ownership: a job created by a mutation that selects `previews` or `result` is *attached*: it is
// cancelled as soon as no operation watches it (client disconnect, stopped @stream, completed
// subscription). A mutation that selects neither creates a *detached* job that runs to completion
// for later `imageJob` subscribers (resume after reconnect); it is cancelled by `cancelJob`, or
// when nobody has watched it (nor asked about it with `job(id)`) for `unwatchedJobTimeoutMs`.
import type { Engine, GenerateRequest, ImageFrame as EngineFrame } from '../engine/types.ts';
import { GatewayError, cancelledError, logInternal, toGatewayError } from './errors.ts';
import { guarded } from './guard.ts';
import type { GatewayMetrics } from './metrics.ts';
import { hiddenFrom } from './owner.ts';
import { newId } from './replicas.ts';
import type { Scheduler } from './scheduler.ts';
import type { ErrorCode, GenerationMode, JobStatus } from './schema-types.ts';

/** What a client can be told about a frame: the engine's frame, or one relayed from the replica that ran it. */
export type JobFrame = Pick<EngineFrame, 'stage' | 'nfe' | 'step' | 'elapsedMs' | 'seed' | 'image' | 'sourceImage' | 'thought' | 'sampler'>;

export interface FrameRecord {
  readonly frame: JobFrame;
  /** image-store token, set when a client first asks for `url` */
  token?: string;
  base64?: string;
}

export interface JobEvent {
  readonly seq: number;
  readonly status: JobStatus;
  readonly frame?: FrameRecord;
  readonly done: boolean;
  readonly error?: { code: ErrorCode; message: string; errorId?: string };
}

export const TERMINAL: ReadonlySet<JobStatus> = new Set(['SUCCEEDED', 'FAILED', 'CANCELLED']);

/** imageJob's cursor past the job's last event: never handed out (lastSeq only grows), so a client's mistake */
export const afterPastEnd = (after: number, lastSeq: number, fromLastEventId = false) =>
  fromLastEventId
    ? new GatewayError('OUT_OF_RANGE', `the Last-Event-ID header (the resume point of a reconnecting EventSource) must be at most the job's lastSeq, ${lastSeq}; got ${after}`, { header: 'Last-Event-ID', min: 0, max: lastSeq })
    : new GatewayError('OUT_OF_RANGE', `after must be at most the job's lastSeq, ${lastSeq}; got ${after}`, { argument: 'after', min: 0, max: lastSeq });
export const jobNotFound = (id: string) => new GatewayError('JOB_NOT_FOUND', `No job ${JSON.stringify(id).slice(0, 80)} (it may have expired)`);

/** What a job's starter hears: its success, its final frame (before any client sees it), its end (before the terminal event). */
export interface JobHooks {
  onSuccess?: (job: ImageJobRecord) => void;
  onFinal?: (job: ImageJobRecord) => void;
  onEnd?: () => void;
}

export class ImageJobRecord {
  readonly createdAt = Date.now();
  status: JobStatus = 'QUEUED';
  readonly events: JobEvent[] = [];
  readonly controller = new AbortController();
  finalFrame?: FrameRecord;
  /** edits: the size of the source image as the client sent it (before the gateway's decode fit it) */
  sentSize?: { width: number; height: number };
  error?: GatewayError;
  /** set when this record can no longer learn the job's events (a relayed job whose owner is gone) */
  broken?: GatewayError;
  finishedAt?: number;
  private watchers = 0;
  private readonly listeners = new Set<() => void>();
  private unwatchedTimer?: NodeJS.Timeout;
  /** resolves at the terminal state, or when the record breaks (`fail`); never rejects */
  readonly finished: Promise<void>;
  private resolveFinished!: () => void;


  constructor(
    readonly id: string,
    readonly mode: GenerationMode,
    readonly seed: number,
    readonly attached: boolean,
    private readonly unwatchedTimeoutMs: number,
    private readonly onUnwatchedCancel: (job: ImageJobRecord, reason: string) => void,
    /** who started it (GatewayContext.client): with auth on (`key:<API key>`), only that key sees it */
    readonly client?: string,
  ) {
    this.finished = new Promise((r) => (this.resolveFinished = r));
    if (!attached) this.armUnwatchedTimer();
  }

  get terminal(): boolean {
    return TERMINAL.has(this.status);
  }

  /** Logs an event; `seq` defaults to the next number (a relayed event keeps its owner's). */
  push(ev: Omit<JobEvent, 'seq'> & { seq?: number }): void {
    this.events.push({ ...ev, seq: ev.seq ?? this.events.length + 1 });
    this.status = ev.status;
    if (ev.done) {
      this.finishedAt = Date.now();
      clearTimeout(this.unwatchedTimer);
      this.resolveFinished();
    }
    for (const l of [...this.listeners]) l();
  }

  /**
   * The job ended with `status`, though this record never saw its terminal event: a relayed record
   * that was asked for the events after the job's last one (there are none to relay).
   */
  endWithoutEvent(status: JobStatus): void {
    if (this.terminal || !TERMINAL.has(status)) return;
    this.status = status;
    this.finishedAt = Date.now();
    clearTimeout(this.unwatchedTimer);
    this.resolveFinished();
    for (const l of [...this.listeners]) l();
  }

  /**
   * The sequence number up to which the job's events are history for a consumer subscribing now: a
   * replay it asked for, delivered whole (later, live previews may slide). Here, everything logged.
   */
  historySeq(): number {
    return this.lastSeq;
  }

  /** The sequence number of the latest event logged (0 before the first). */
  get lastSeq(): number {
    return this.events.at(-1)?.seq ?? 0;
  }

  /** This record will get no more events (its owner is unreachable): waiting consumers get `error`. */
  fail(error: GatewayError): void {
    if (this.terminal || this.broken) return;
    this.broken = error;
    clearTimeout(this.unwatchedTimer);
    this.resolveFinished();
    for (const l of [...this.listeners]) l();
  }

  onChange(fn: () => void): () => void {
    this.listeners.add(fn);
    return () => this.listeners.delete(fn);
  }

  /** Registers a watcher; the returned function releases it (idempotent). */
  watch(): () => void {
    this.watchers++;
    clearTimeout(this.unwatchedTimer);
    let released = false;
    return () => {
      if (released) return;
      released = true;
      this.watchers--;
      if (this.watchers > 0 || this.terminal) return;
      if (this.attached) this.whenUnwatched('client_gone');
      else this.armUnwatchedTimer();
    };
  }

  /**
   * A client asked about the job (`job(id)`, e.g. polling its status): a detached job nobody watches
   * gets a fresh unwatchedJobTimeoutMs, as if watched until now.
   */
  touch(): void {
    if (this.watchers === 0 && !this.terminal && !this.attached) this.armUnwatchedTimer();
  }

  private armUnwatchedTimer(): void {
    clearTimeout(this.unwatchedTimer);
    this.unwatchedTimer = setTimeout(() => {
      if (this.watchers === 0 && !this.terminal) this.whenUnwatched('unwatched_timeout');
    }, this.unwatchedTimeoutMs);
    this.unwatchedTimer.unref();
  }

  /** Nobody watches the job (an attached one at once, a detached one after the timeout): here, cancel it. */
  protected whenUnwatched(reason: string): void {
    this.onUnwatchedCancel(this, reason);
  }

  /** The final frame, or the job's typed error. */
  async result(signal?: AbortSignal): Promise<FrameRecord> {
    // wait for the terminal state (not just the final frame): by then the slot and the session are free
    await waitFor(this, () => this.terminal || !!this.broken, signal);
    if (this.finalFrame) return this.finalFrame;
    if (!this.terminal && this.broken) throw this.broken;
    throw this.error ?? cancelledError();
  }
}

/** Waits until `ready()` holds, the signal aborts (throws CANCELLED) or the job changes state. */
function waitFor(job: ImageJobRecord, ready: () => boolean, signal?: AbortSignal): Promise<void> {
  if (ready()) return Promise.resolve();
  return new Promise((resolve, reject) => {
    const done = () => {
      off();
      signal?.removeEventListener('abort', onAbort);
    };
    const onAbort = () => {
      done();
      reject(cancelledError());
    };
    const off = job.onChange(() => {
      if (ready()) {
        done();
        resolve();
      }
    });
    if (signal?.aborted) return onAbort();
    signal?.addEventListener('abort', onAbort, { once: true });
  });
}

const isPreview = (ev: JobEvent | undefined) => ev?.frame?.frame.stage === 'preview';

/**
 * Picks what a consumer at `cursor` (count of events already consumed) gets next. A live preview is
 * skipped (counted as dropped) when a newer preview is already waiting behind it: the consumer fell
 * behind. Events numbered up to `history` (logged before the consumer subscribed: a replay it asked
 * for) are never skipped, nor are finals, status changes and the terminal event.
 */
export function pickNext(events: readonly JobEvent[], cursor: number, filter: (ev: JobEvent) => boolean, history = 0): { index: number; dropped: number } | undefined {
  let dropped = 0;
  for (let i = cursor; i < events.length; i++) {
    const ev = events[i]!;
    if (!filter(ev)) continue;
    if (ev.seq > history && isPreview(ev)) {
      let newer = false;
      for (let j = i + 1; j < events.length; j++) if (isPreview(events[j]) && filter(events[j]!)) newer = true;
      if (newer) {
        dropped++;
        continue;
      }
    }
    return { index: i, dropped };
  }
  return undefined;
}

/**
 * A pull-based iterator over a job's log, from the first event numbered above `after`. `filter`
 * selects events; iteration ends when `isEnd` holds for the consumed prefix (or on abort /
 * return()), and throws when the record breaks (`fail`) before that.
 */
export function iterateJob<T>(
  job: ImageJobRecord,
  after: number,
  opts: {
    filter: (ev: JobEvent) => boolean;
    isEnd: (job: ImageJobRecord, cursor: number) => boolean;
    map: (ev: JobEvent) => T;
    signal?: AbortSignal;
    onDropped?: (n: number) => void;
    onClose?: () => void;
  },
): AsyncIterableIterator<T> {
  // `after` is a sequence number: a relayed log may have gaps (previews its owner skipped), and
  // `after` may be ahead of the log (a client that saw more than this replica logged yet), so the
  // cursor (an index into the log) moves past every event numbered up to `after` as they arrive
  let cursor = 0;
  const history = job.historySeq();
  let closed = false;
  let wake: (() => void) | undefined;
  const off = job.onChange(() => wake?.());
  const onAbort = () => close();
  opts.signal?.addEventListener('abort', onAbort, { once: true });
  const close = () => {
    if (closed) return;
    closed = true;
    off();
    opts.signal?.removeEventListener('abort', onAbort);
    wake?.();
    opts.onClose?.();
  };
  if (opts.signal?.aborted) close();
  const it: AsyncIterableIterator<T> = {
    async next(): Promise<IteratorResult<T>> {
      for (;;) {
        if (closed) return { value: undefined, done: true };
        while (cursor < job.events.length && job.events[cursor]!.seq <= after) cursor++;
        const pick = pickNext(job.events, cursor, opts.filter, history);
        if (pick) {
          if (pick.dropped) opts.onDropped?.(pick.dropped);
          cursor = pick.index + 1;
          return { value: opts.map(job.events[pick.index]!), done: false };
        }
        if (opts.isEnd(job, cursor)) {
          close();
          return { value: undefined, done: true };
        }
        if (job.broken && !job.terminal) {
          close();
          throw job.broken;
        }
        await new Promise<void>((r) => (wake = r));
        wake = undefined;
      }
    },
    async return(): Promise<IteratorResult<T>> {
      close();
      return { value: undefined, done: true };
    },
    [Symbol.asyncIterator]() {
      return it;
    },
  };
  return it;
}

/** How long cancelJob waits for a cancelled job to end before answering anyway (a stalled engine step). */
export const CANCEL_SETTLE_MS = 2000;

/** Resolves when `p` settles or after `ms`, whichever is first. */
export async function settleWithin(p: Promise<void>, ms: number): Promise<void> {
  let timer: NodeJS.Timeout | undefined;
  await Promise.race([p, new Promise<void>((r) => (timer = setTimeout(r, ms)))]);
  clearTimeout(timer);
}

export interface JobManagerOptions {
  engine: () => Engine;
  scheduler: Scheduler;
  metrics: GatewayMetrics;
  jobRetentionMs: number;
  maxRetainedJobs: number;
  unwatchedJobTimeoutMs: number;
  engineStallTimeoutMs: number;
  /** this replica's id, the prefix of its job ids (see replicas.ts); none: plain UUIDs */
  replicaId?: string;
  /** the server log: a job that fails with INTERNAL is written there with its error id and cause */
  log?: (line: string) => void;
}

export class JobManager {
  private readonly jobs = new Map<string, ImageJobRecord>();
  private readonly timer: NodeJS.Timeout;

  constructor(private readonly o: JobManagerOptions) {
    this.timer = setInterval(() => this.sweep(), Math.max(1000, Math.min(30_000, o.jobRetentionMs / 4)));
    this.timer.unref();
  }

  get size(): number {
    return this.jobs.size;
  }

  /** Creates and starts a job; throws BUSY when the scheduler's queue (or `client`'s share of it) is full. */
  start(req: GenerateRequest, mode: GenerationMode, seed: number, attached: boolean, hooks: JobHooks = {}, client?: string): ImageJobRecord {
    this.o.scheduler.checkCapacity(client);
    this.sweep();
    const job = new ImageJobRecord(newId(this.o.replicaId), mode, seed, attached, this.o.unwatchedJobTimeoutMs, (j, reason) => this.cancelRecord(j, reason), client);
    this.jobs.set(job.id, job);
    void this.run(job, req, hooks, client);
    return job;
  }

  /** @param client  who asks (GatewayContext.client): another API key's job is not found, as sessions are */
  get(id: string, client?: string): ImageJobRecord {
    const job = this.find(id, client);
    if (!job) throw jobNotFound(id);
    return job;
  }

  find(id: string, client?: string): ImageJobRecord | undefined {
    const job = this.jobs.get(id);
    return job && hiddenFrom(job.client, client) ? undefined : job;
  }

  /**
   * Cancels the job; when it was running or queued, resolves once it has ended (the engine stops within one
   * model step) or after `settleMs`, so a client told "cancelled" can use the job's session at once.
   */
  async cancel(id: string, client?: string, settleMs = CANCEL_SETTLE_MS): Promise<boolean> {
    const job = this.get(id, client);
    const cancelled = this.cancelRecord(job, 'cancel_job');
    // a repeated cancel (a client retrying), or one after the final frame, answers false, but also once the
    // job has ended, so it too finds the job's session free
    if (cancelled || (!job.terminal && (job.controller.signal.aborted || job.finalFrame))) await settleWithin(job.finished, settleMs);
    return cancelled;
  }

  private cancelRecord(job: ImageJobRecord, reason: string): boolean {
    // a job whose final frame is out has done its work (and a session's latest image is that frame):
    // it is finishing, not cancellable
    if (job.terminal || job.finalFrame || job.controller.signal.aborted) return false;
    this.o.metrics.cancellations.inc({ reason, operation: 'image_job' });
    job.controller.abort(cancelledError());
    return true;
  }

  private async run(job: ImageJobRecord, req: GenerateRequest, hooks: JobHooks, client?: string): Promise<void> {
    const signal = job.controller.signal;
    const { metrics } = this.o;
    let slot: { release(): void; waitedMs: number } | undefined;
    let failure: unknown;
    let start = 0;
    /** settles when an engine stream this job stopped listening to has stopped (it holds the session until then) */
    let engineStopped: Promise<void> | undefined;
    try {
      slot = await this.o.scheduler.acquire(signal, client);
      metrics.queueWait.observe(slot.waitedMs / 1000, { kind: 'image_job' });
      start = performance.now();
      job.push({ status: 'RUNNING', done: false });
      let sawPreview = false;
      let sawFrame = false;
      for await (const frame of guarded(this.o.engine().generate(req, signal), signal, this.o.engineStallTimeoutMs, (p) => (engineStopped = p))) {
        if (signal.aborted) break;
        const rec: FrameRecord = { frame };
        if (!sawFrame && frame.timings?.thinkMs !== undefined) metrics.thinkTime.observe(frame.timings.thinkMs / 1000);
        sawFrame = true;
        if (frame.stage === 'preview' && !sawPreview) {
          sawPreview = true;
          metrics.previewLatency.observe((performance.now() - start) / 1000);
        }
        if (frame.stage === 'final') {
          job.finalFrame = rec;
          hooks.onFinal?.(job);
        }
        job.push({ status: 'RUNNING', frame: rec, done: false });
      }
    } catch (e) {
      if (!signal.aborted) {
        failure = e;
        job.controller.abort(); // tell the engine to stop whatever it is doing (e.g. after a stall)
      }
    } finally {
      slot?.release();
    }
    // the engine finishes the model step in progress after a cancel: the job ends once it has (or after
    // CANCEL_SETTLE_MS, for an engine that ignores its signal), so the session is really free when unlocked
    if (engineStopped) await settleWithin(engineStopped, CANCEL_SETTLE_MS);
    // session bookkeeping and unlock happen before the terminal event, so a client that sees the
    // job end can use the session again at once
    const cancelled = signal.aborted && failure === undefined;
    const succeeded = !cancelled && failure === undefined && !!job.finalFrame;
    // (a job cancelled while queued never ran: no duration)
    if (start) metrics.jobDuration.observe((performance.now() - start) / 1000, { mode: job.mode, outcome: succeeded ? 'succeeded' : cancelled ? 'cancelled' : 'failed' });
    if (succeeded) hooks.onSuccess?.(job);
    hooks.onEnd?.();
    if (cancelled) {
      job.error = cancelledError();
      job.push({ status: 'CANCELLED', done: true, error: { code: 'CANCELLED', message: job.error.message } });
    } else if (!succeeded) {
      job.error = failure !== undefined ? toGatewayError(failure) : new GatewayError('INTERNAL', 'The engine produced no final frame');
      metrics.errors.inc({ code: job.error.code });
      if (job.error.code === 'INTERNAL' && this.o.log) logInternal(this.o.log, job.error, undefined, ` (image job ${job.id})`);
      const errorId = job.error.extensions['errorId'];
      job.push({ status: 'FAILED', done: true, error: { code: job.error.code, message: job.error.message, ...(typeof errorId === 'string' ? { errorId } : {}) } });
    } else {
      job.push({ status: 'SUCCEEDED', done: true });
    }
  }

  sweep(): void {
    const now = Date.now();
    for (const [id, job] of this.jobs) if (job.finishedAt !== undefined && now - job.finishedAt > this.o.jobRetentionMs) this.jobs.delete(id);
    if (this.jobs.size >= this.o.maxRetainedJobs) {
      const finished = [...this.jobs.values()].filter((j) => j.terminal).sort((a, b) => a.finishedAt! - b.finishedAt!);
      for (const j of finished) {
        if (this.jobs.size < this.o.maxRetainedJobs) break;
        this.jobs.delete(j.id);
      }
    }
  }

  /** Cancels everything (shutdown). */
  cancelAll(): void {
    for (const job of this.jobs.values()) this.cancelRecord(job, 'shutdown');
  }

  dispose(): void {
    clearInterval(this.timer);
    this.cancelAll();
  }

  /** Resolves once every job has ended (its terminal event logged), or after `ms`. */
  async ended(ms: number): Promise<void> {
    const open = [...this.jobs.values()].filter((j) => !j.terminal).map((j) => j.finished);
    if (!open.length) return;
    let timer: NodeJS.Timeout | undefined;
    await Promise.race([Promise.all(open), new Promise<void>((r) => (timer = setTimeout(r, ms)))]);
    clearTimeout(timer);
  }
}
