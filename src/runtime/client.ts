// Main-thread side of a model worker: request/response over postMessage with transfer lists, a
// bounded queue, crash detection and restart. When the worker dies every in-flight request fails
// with EngineError('WORKER_CRASHED') and a fresh worker is started and re-initialised; sequences
// (KV caches) of the dead worker are gone, which `generation` lets callers detect.
import { Worker } from 'node:worker_threads';
import { EngineError, type EngineErrorCode } from '../engine/types.ts';
import type { InitResult, WorkerReply, WorkerRequest, WorkerStats } from './protocol.ts';

type InitRequest = Extract<WorkerRequest, { op: 'init' }>;

interface Pending {
  resolve: (v: unknown) => void;
  reject: (e: Error) => void;
  generation: number;
}

export interface WorkerClientOptions {
  /** most requests waiting in or for the worker; more gives EngineError('BUSY') */
  maxPending: number;
  /** restart after a crash (default true) */
  restart: boolean;
}

const BOOT = new URL('./boot.mjs', import.meta.url);
/** How long close() waits for a worker to finish the request it is running before terminating it. */
const CLOSE_DRAIN_MS = 5000;

/** Every started, not yet closed client: closeAllWorkers() stops them safely before a process exits. */
const live = new Set<WorkerClient>();

/**
 * Closes every live model worker, each after the request it is running. A process that exits (or a
 * worker terminated) inside a native onnxruntime run aborts with SIGABRT (onnxruntime-node throws a
 * Napi::Error while the thread's environment is torn down), so callers that must exit early, such as
 * the CLI when its reader closes the pipe, close the workers first.
 */
export async function closeAllWorkers(): Promise<void> {
  await Promise.all([...live].map((c) => c.close()));
}
const ENTRY = new URL('./worker.ts', import.meta.url).href;

export class WorkerClient {
  private worker: Worker | null = null;
  private nextId = 1;
  private pending = new Map<number, Pending>();
  private ready: Promise<InitResult> | null = null;
  private closed = false;
  private closing: Promise<void> | undefined;
  /** incremented on every (re)start */
  generation = 0;
  crashes = 0;
  private deaths: number[] = [];
  private gaveUp = false;
  /** the worker kept crashing and is not restarted again */
  get givenUp(): boolean {
    return this.gaveUp;
  }
  initResult: InitResult | null = null;
  /** How long close() waits for the running request before terminating the worker (tests raise it). */
  closeDrainMs = CLOSE_DRAIN_MS;
  private opts: WorkerClientOptions;

  constructor(
    private init: InitRequest,
    opts: Partial<WorkerClientOptions> = {},
  ) {
    this.opts = { maxPending: 256, restart: true, ...opts };
  }

  start(): Promise<InitResult> {
    if (this.closed) return Promise.reject(new EngineError('INTERNAL', 'engine is closed'));
    this.generation++;
    const gen = this.generation;
    const w = new Worker(BOOT, { workerData: { entry: ENTRY } });
    this.worker = w;
    live.add(this);
    w.on('message', (reply: WorkerReply) => {
      const p = this.pending.get(reply.id);
      if (!p) return;
      this.pending.delete(reply.id);
      if (reply.ok) p.resolve(reply.result);
      else p.reject(new EngineError(reply.error.code as EngineErrorCode, reply.error.message, reply.error.details));
    });
    const onDeath = (why: string) => {
      if (this.worker !== w) return;
      this.worker = null;
      this.crashes++;
      const err = new EngineError('WORKER_CRASHED', `model worker crashed (${why}); in-flight requests were aborted`);
      for (const [id, p] of this.pending) if (p.generation === gen) {
        this.pending.delete(id);
        p.reject(err);
      }
      this.ready = null;
      // restart, unless the worker keeps dying (e.g. a model that crashes at load): then give up
      const now = Date.now();
      this.deaths = this.deaths.filter((t) => now - t < 60_000).concat(now);
      if (!this.closed && this.opts.restart && this.deaths.length <= 5) this.ready = this.start();
      else this.gaveUp = true;
      this.ready?.catch(() => {});
    };
    w.on('error', (e) => onDeath(e.message));
    w.on('exit', (code) => {
      if (!this.closed) onDeath(`exit code ${code}`);
      // closing: whatever still waits on this worker (close()'s drain request) ends now, not at the drain's timeout
      else for (const [id, p] of this.pending) if (p.generation === gen) {
        this.pending.delete(id);
        p.reject(new EngineError('CANCELLED', 'engine closed'));
      }
    });
    const ready = this.post<InitResult>(this.init, [], gen).then((r) => {
      this.initResult = r;
      return r;
    });
    this.ready = ready;
    return ready;
  }

  private post<T>(msg: WorkerRequest, transfer: ArrayBuffer[], gen: number): Promise<T> {
    const id = this.nextId++;
    return new Promise<T>((resolve, reject) => {
      this.pending.set(id, { resolve: resolve as (v: unknown) => void, reject, generation: gen });
      for (const b of transfer)
        if (b.byteLength === 0 && (b as ArrayBuffer & { detached?: boolean }).detached) {
          this.pending.delete(id);
          reject(new EngineError('INTERNAL', `request ${msg.op}: a transferred buffer is already detached`));
          return;
        }
      try {
        this.worker!.postMessage({ ...msg, id }, transfer);
      } catch (e) {
        this.pending.delete(id);
        reject(new EngineError('INTERNAL', `request ${msg.op} could not be sent: ${(e as Error).message}`));
      }
    });
  }

  /** Waits for the worker to be ready (after a restart too). */
  async whenReady(): Promise<InitResult> {
    if (!this.ready)
      throw new EngineError('WORKER_CRASHED', this.gaveUp ? 'model worker crashed repeatedly (more than 5 times in a minute); not restarting it' : 'model worker is not running');
    return this.ready;
  }

  /**
   * Send one request. `expectGeneration`, when given, fails the call with WORKER_CRASHED if the
   * worker was restarted since (its KV caches are gone).
   */
  async call<T>(msg: WorkerRequest, transfer: ArrayBuffer[] = [], expectGeneration?: number): Promise<T> {
    if (this.closed) throw new EngineError('INTERNAL', 'engine is closed');
    if (this.pending.size >= this.opts.maxPending) throw new EngineError('BUSY', `model worker queue is full (${this.opts.maxPending} requests)`);
    await this.whenReady();
    // close() may have run while this call waited: a request posted after its drain would never be answered
    if (this.closed) throw new EngineError('CANCELLED', 'engine closed');
    if (expectGeneration !== undefined && expectGeneration !== this.generation)
      throw new EngineError('WORKER_CRASHED', 'model worker crashed and was restarted; this request lost its state');
    return this.post<T>(msg, transfer, this.generation);
  }

  stats(): Promise<WorkerStats> {
    return this.call<WorkerStats>({ op: 'stats' });
  }

  get queued(): number {
    return this.pending.size;
  }

  /** Closes once: a second caller (the engine's own close after closeAllWorkers) waits for the first. */
  close(): Promise<void> {
    return (this.closing ??= this.shutDown());
  }

  private async shutDown(): Promise<void> {
    this.closed = true;
    live.delete(this);
    const w = this.worker;
    for (const p of this.pending.values()) p.reject(new EngineError('CANCELLED', 'engine closed'));
    this.pending.clear();
    // terminating the worker inside a native run would abort the process (see closeAllWorkers):
    // requests are served in order, so the reply to one sent now comes once the running one is done
    if (w) {
      let timer: NodeJS.Timeout | undefined;
      await Promise.race([
        this.post({ op: 'stats' }, [], this.generation).catch(() => undefined),
        new Promise((r) => (timer = setTimeout(r, this.closeDrainMs))),
      ]);
      clearTimeout(timer);
    }
    this.worker = null;
    // nothing is posted after the drain (call() checks `closed`), but nothing may be left unsettled either
    for (const p of this.pending.values()) p.reject(new EngineError('CANCELLED', 'engine closed'));
    this.pending.clear();
    if (w) await w.terminate();
  }
}
