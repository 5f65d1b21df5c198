// Admission: the global slot and queue limits, and each client's share of the queue (one busy client
// cannot take every queue place).
import { describe, expect, it } from 'vitest';
import { Scheduler, type Slot } from '../../src/gateway/scheduler.ts';
import { GatewayRuntime } from '../../src/gateway/runtime.ts';
import { defaultShare } from '../../src/gateway/limits.ts';

const busy = async (p: Promise<unknown>) => {
  const e = await p.then(
    () => undefined,
    (x) => x as { code?: string; extensions?: Record<string, unknown> },
  );
  expect(e?.code).toBe('BUSY');
  return e!;
};

describe('Scheduler', () => {
  it('a client may hold only its share of the queue; others still get in; the share frees as its jobs start', async () => {
    const s = new Scheduler(1, 4, 2);
    const running = await s.acquire(undefined, 'ip:a');
    const a1 = s.acquire(undefined, 'ip:a');
    const a2 = s.acquire(undefined, 'ip:a');
    expect(s.queuedFor('ip:a')).toBe(2);
    const refused = await busy(s.acquire(undefined, 'ip:a'));
    expect(refused.extensions).toMatchObject({ clientQueued: 2, clientLimit: 2 });
    expect(() => s.checkCapacity('ip:a')).toThrow(/already has 2 jobs waiting/);
    // another client still finds room, up to the global limit
    const b1 = s.acquire(undefined, 'key:b');
    const b2 = s.acquire(undefined, 'key:b');
    expect(s.queuedCount).toBe(4);
    await busy(s.acquire(undefined, 'key:c')); // the queue itself is full
    // FIFO: a1 starts when the running job ends, and a's share has room again
    running.release();
    const first: Slot = await a1;
    expect(s.queuedFor('ip:a')).toBe(1);
    const a3 = s.acquire(undefined, 'ip:a');
    expect(s.queuedFor('ip:a')).toBe(2);
    first.release();
    for (const p of [a2, b1, b2, a3]) (await p).release();
    expect(s.queuedCount).toBe(0);
    expect(s.runningCount).toBe(0);
    expect(s.queuedFor('ip:a')).toBe(0);
  });

  it('the default share leaves a place for others however small the queue (¾ of 2, rounded up, was the whole queue)', async () => {
    expect([1, 2, 3, 4, 8, 64].map(defaultShare)).toEqual([1, 1, 2, 3, 6, 48]);
    const rt = new GatewayRuntime({ maxConcurrentJobs: 1, maxQueuedJobs: 2 }, undefined, () => {});
    const s = rt.scheduler;
    const running = await s.acquire(undefined, 'key:a');
    const a1 = s.acquire(undefined, 'key:a');
    await busy(s.acquire(undefined, 'key:a'));
    const b1 = s.acquire(undefined, 'key:b');
    expect(s.queuedCount).toBe(2);
    running.release();
    (await a1).release();
    (await b1).release();
  });

  it('an aborted wait gives its place back to its client', async () => {
    const s = new Scheduler(1, 4, 1);
    const running = await s.acquire(undefined, 'ip:a');
    const ctrl = new AbortController();
    const waiting = s.acquire(ctrl.signal, 'ip:a');
    await busy(s.acquire(undefined, 'ip:a'));
    ctrl.abort();
    await expect(waiting).rejects.toMatchObject({ extensions: { code: 'CANCELLED' } });
    expect(s.queuedFor('ip:a')).toBe(0);
    const again = s.acquire(undefined, 'ip:a');
    running.release();
    (await again).release();
    // drain (shutdown) empties every client's count too
    const held = await s.acquire(undefined, 'ip:z');
    const w = s.acquire(undefined, 'ip:z');
    s.drain(new Error('closing'));
    await expect(w).rejects.toThrow('closing');
    expect(s.queuedFor('ip:z')).toBe(0);
    held.release();
  });

  it('requests without a client identity count only against the global limits', async () => {
    const s = new Scheduler(1, 3, 1);
    const running = await s.acquire();
    const w = [s.acquire(), s.acquire(), s.acquire()];
    await busy(s.acquire());
    running.release();
    for (const p of w) (await p).release();
  });
});
