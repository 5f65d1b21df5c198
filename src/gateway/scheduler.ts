// Admission control: at most `maxConcurrent` jobs run in the engine, at most `maxQueued` wait (FIFO).
// Beyond that, `acquire` fails at once with BUSY. Waiting is abortable.
import { GatewayError, cancelledError } from './errors.ts';

export interface Slot {
  /** ms spent waiting in the queue */
  readonly waitedMs: number;
  release(): void;
}

interface Waiter {
  resolve: (slot: Slot) => void;
  reject: (err: Error) => void;
  enqueuedAt: number;
  cleanup: () => void;
}

export class Scheduler {
  private running = 0;
  private readonly queue: Waiter[] = [];
  busyRejections = 0;

  constructor(
    private readonly maxConcurrent: number,
    private readonly maxQueued: number,
  ) {}

  get runningCount(): number {
    return this.running;
  }
  get queuedCount(): number {
    return this.queue.length;
  }

  /** Throws BUSY synchronously-equivalent (rejected promise before any wait) when the queue is full. */
  checkCapacity(): void {
    if (this.running >= this.maxConcurrent && this.queue.length >= this.maxQueued) {
      this.busyRejections++;
      throw new GatewayError('BUSY', `The server is busy: ${this.running} jobs running and ${this.queue.length} queued; retry later`, {
        running: this.running,
        queued: this.queue.length,
      });
    }
  }

  acquire(signal?: AbortSignal): Promise<Slot> {
    if (signal?.aborted) return Promise.reject(cancelledError());
    try {
      this.checkCapacity();
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
        if (i >= 0) this.queue.splice(i, 1);
        reject(cancelledError());
      };
      const waiter: Waiter = {
        resolve,
        reject,
        enqueuedAt: start,
        cleanup: () => signal?.removeEventListener('abort', onAbort),
      };
      signal?.addEventListener('abort', onAbort, { once: true });
      this.queue.push(waiter);
    });
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
      w.cleanup();
      w.reject(err);
    }
  }
}
