// Admission control: at most `maxConcurrent` jobs run in the engine, at most `maxQueued` wait (FIFO),
// and one client (API key, else IP address) at most `maxQueuedPerClient` of those, so one busy client
// cannot fill the whole queue. Beyond that, `acquire` fails at once with BUSY. Waiting is abortable.
import { GatewayError, cancelledError } from './errors.ts';

export interface Slot {
  /** ms spent waiting in the queue */
  readonly waitedMs: number;
  release(): void;
}

interface Waiter {
  client?: string;
  resolve: (slot: Slot) => void;
  reject: (err: Error) => void;
  enqueuedAt: number;
  cleanup: () => void;
}

export class Scheduler {
  private running = 0;
  private readonly queue: Waiter[] = [];
  /** waiting jobs per client */
  private readonly queuedBy = new Map<string, number>();
  busyRejections = 0;

  constructor(
    private readonly maxConcurrent: number,
    private readonly maxQueued: number,
    private readonly maxQueuedPerClient = maxQueued,
  ) {}

  get runningCount(): number {
    return this.running;
  }
  get queuedCount(): number {
    return this.queue.length;
  }

  /** Throws BUSY when a job (of `client`) would have to wait and the queue (or the client's share of it) is full. */
  checkCapacity(client?: string): void {
    if (this.running < this.maxConcurrent) return;
    if (this.queue.length >= this.maxQueued) {
      this.busyRejections++;
      throw new GatewayError('BUSY', `The server is busy: ${this.running} jobs running and ${this.queue.length} queued; retry later`, {
        running: this.running,
        queued: this.queue.length,
      });
    }
    const mine = client === undefined ? 0 : (this.queuedBy.get(client) ?? 0);
    if (mine >= this.maxQueuedPerClient) {
      this.busyRejections++;
      throw new GatewayError('BUSY', `This client already has ${mine} jobs waiting (at most ${this.maxQueuedPerClient} of the ${this.maxQueued} queue places); retry when one has started`, {
        running: this.running,
        queued: this.queue.length,
        clientQueued: mine,
        clientLimit: this.maxQueuedPerClient,
      });
    }
  }

  /** Would a job asking now wait in the queue (every slot taken)? */
  get full(): boolean {
    return this.running >= this.maxConcurrent;
  }

  /** Jobs of `client` waiting now. */
  queuedFor(client: string): number {
    return this.queuedBy.get(client) ?? 0;
  }

  acquire(signal?: AbortSignal, client?: string): Promise<Slot> {
    if (signal?.aborted) return Promise.reject(cancelledError());
    try {
      this.checkCapacity(client);
    } catch (e) {
      return Promise.reject(e);
    }
    const start = performance.now();
    if (this.running < this.maxConcurrent) {
      this.running++;
      return Promise.resolve(this.makeSlot(0));
    }
    return new Promise<Slot>((resolve, reject) => {
      const onAbort = () => {
        const i = this.queue.indexOf(waiter);
        if (i >= 0) {
          this.queue.splice(i, 1);
          this.dequeued(waiter);
        }
        reject(cancelledError());
      };
      const waiter: Waiter = {
        client,
        resolve,
        reject,
        enqueuedAt: start,
        cleanup: () => signal?.removeEventListener('abort', onAbort),
      };
      signal?.addEventListener('abort', onAbort, { once: true });
      this.queue.push(waiter);
      if (client !== undefined) this.queuedBy.set(client, (this.queuedBy.get(client) ?? 0) + 1);
    });
  }

  private dequeued(w: Waiter): void {
    if (w.client === undefined) return;
    const n = (this.queuedBy.get(w.client) ?? 1) - 1;
    if (n > 0) this.queuedBy.set(w.client, n);
    else this.queuedBy.delete(w.client);
  }

  private makeSlot(waitedMs: number): Slot {
    let released = false;
    return {
      waitedMs,
      release: () => {
        if (released) return;
        released = true;
        const next = this.queue.shift();
        if (next) {
          this.dequeued(next);
          next.cleanup();
          next.resolve(this.makeSlot(performance.now() - next.enqueuedAt));
        } else {
          this.running--;
        }
      },
    };
  }

  /** Rejects every waiter (shutdown). */
  drain(err: Error): void {
    for (const w of this.queue.splice(0)) {
      this.dequeued(w);
      w.cleanup();
      w.reject(err);
    }
  }
}
