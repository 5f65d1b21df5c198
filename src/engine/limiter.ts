// Bounded admission: at most `concurrency` requests run at once, at most `maxQueue` wait; beyond that
// EngineError('BUSY'). Waiting is abortable.
import { EngineError } from './types.ts';

export class Limiter {
  private active = 0;
  private waiters: Array<{ resolve: () => void; reject: (e: Error) => void }> = [];
  constructor(
    private concurrency: number,
    private maxQueue: number,
  ) {}

  async acquire(signal?: AbortSignal): Promise<() => void> {
    if (signal?.aborted) throw new EngineError('CANCELLED', 'request cancelled');
    if (this.active < this.concurrency) {
      this.active++;
      return this.releaser();
    }
    if (this.waiters.length >= this.maxQueue) throw new EngineError('BUSY', `engine queue is full (${this.maxQueue} waiting)`);
    await new Promise<void>((resolve, reject) => {
      // The listener goes away once the slot is granted: a long-lived signal shared by many requests
      // (one per socket, say) must not collect one listener per request.
      const onAbort = () => {
        const i = this.waiters.indexOf(w);
        if (i >= 0) {
          this.waiters.splice(i, 1);
          reject(new EngineError('CANCELLED', 'request cancelled while queued'));
        }
      };
      const w = {
        resolve: () => {
          signal?.removeEventListener('abort', onAbort);
          resolve();
        },
        reject: (e: Error) => {
          signal?.removeEventListener('abort', onAbort);
          reject(e);
        },
      };
      this.waiters.push(w);
      signal?.addEventListener('abort', onAbort, { once: true });
    });
    return this.releaser();
  }

  private releaser(): () => void {
    let done = false;
    return () => {
      if (done) return;
      done = true;
      const next = this.waiters.shift();
      if (next) next.resolve();
      else this.active--;
    };
  }

  /** Ends every wait with `err` (the engine is closing): nothing waits for a slot that will never free. */
  rejectWaiting(err: Error): void {
    for (const w of this.waiters.splice(0)) w.reject(err);
  }

  get running(): number {
    return this.active;
  }
  get waiting(): number {
    return this.waiters.length;
  }
}
