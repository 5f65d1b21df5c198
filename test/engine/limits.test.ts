import { afterAll, beforeAll, describe, expect, test } from 'vitest';
import { createEngine, type LocalEngine } from '../../src/engine/index.ts';
import { Limiter } from '../../src/engine/limiter.ts';
import { collect, engineError, FIXTURE } from './fixture-helpers.ts';

describe('bounded admission', () => {
  test('limiter: runs N, queues M, refuses the rest with BUSY; queued waits are abortable', async () => {
    const l = new Limiter(1, 1);
    const r1 = await l.acquire();
    const p2 = l.acquire();
    expect((await engineError(() => l.acquire())).code).toBe('BUSY');
    r1();
    const r2 = await p2;
    const ac = new AbortController();
    const p3 = l.acquire(ac.signal);
    ac.abort();
    expect((await engineError(() => p3)).code).toBe('CANCELLED');
    r2();
    expect(l.running).toBe(0);
  });
});

let engine: LocalEngine;
beforeAll(async () => {
  engine = await createEngine(FIXTURE, { intraOpThreads: 1, maxConcurrent: 1, maxQueue: 1 });
});
afterAll(async () => {
  await engine?.close();
});

describe('engine limits and start-up calibration', () => {
  test('verification cost curve is measured at start-up and non-decreasing', () => {
    const c = engine.costCurve!;
    expect(c.length).toBeGreaterThan(4);
    expect(c[0]![0]).toBe(1);
    for (let i = 1; i < c.length; i++) {
      expect(c[i]![0]).toBeGreaterThan(c[i - 1]![0]);
      expect(c[i]![1]).toBeGreaterThanOrEqual(c[i - 1]![1]);
    }
    expect(c[0]![1]).toBeGreaterThan(0);
  });

  test('a full engine answers BUSY', async () => {
    const a = engine.understand({ prompt: 'describe the image', maxTokens: 30 })[Symbol.asyncIterator]();
    await a.next(); // running
    const b = engine.understand({ prompt: 'describe the image', maxTokens: 3 })[Symbol.asyncIterator]();
    const bFirst = b.next(); // queued
    const c = await engineError(() => engine.understand({ prompt: 'describe the image' }));
    expect(c.code).toBe('BUSY');
    for (let r = await a.next(); !r.done; r = await a.next());
    const rb = await bFirst;
    expect(rb.done).toBe(false);
    for (let r = await b.next(); !r.done; r = await b.next());
    expect((await collect(engine.understand({ prompt: 'describe the image', maxTokens: 2 }))).at(-1)!.kind).toBe('done');
  });
});

describe('auto speculation follows the cost curve', () => {
  test('steep verification cost turns speculation off; flat cost turns it on; same answer', async () => {
    const steep = await createEngine(FIXTURE, { intraOpThreads: 1, costCurve: [[1, 1], [2, 2.5], [8, 10], [32, 40]] });
    const flat = await createEngine(FIXTURE, { intraOpThreads: 1, costCurve: [[1, 1], [2, 1.01], [8, 1.05], [32, 1.2]] });
    try {
      const a = (await collect(steep.understand({ prompt: 'describe the image', maxTokens: 40, speculation: { mode: 'auto' } }))).at(-1)!;
      const b = (await collect(flat.understand({ prompt: 'describe the image', maxTokens: 40, speculation: { mode: 'auto' } }))).at(-1)!;
      if (a.kind !== 'done' || b.kind !== 'done') throw new Error('no summary');
      expect(a.speculation.drafts).toBe(0);
      expect(b.speculation.drafts).toBeGreaterThan(0);
      expect(a.text).toBe(b.text);
    } finally {
      await steep.close();
      await flat.close();
    }
  });
});

describe('concurrent requests share one worker without cross-talk', () => {
  test('interleaved understand/generate give the same results as run one by one', async () => {
    const e = await createEngine(FIXTURE, { intraOpThreads: 1, maxConcurrent: 8, costCurve: [[1, 1], [2, 1.05], [8, 1.2], [32, 2]] });
    try {
      const img = { width: 64, height: 64, data: new Uint8Array(64 * 64 * 3).map((_, i) => (i * 11) % 256) };
      const jobs = [
        () => e.understand({ prompt: 'describe the image', maxTokens: 20, speculation: { mode: 'tree' } }),
        () => e.understand({ prompt: 'what is in the picture', image: img, maxTokens: 20, speculation: { mode: 'chain' } }),
        () => e.understand({ prompt: 'how many objects are there', maxTokens: 20, temperature: 1, seed: 3, speculation: { mode: 'ngram', chainLength: 3 } }),
        () => e.understand({ prompt: 'where is the red circle', maxTokens: 20, speculation: { mode: 'off' } }),
        () => e.generate({ prompt: 'a red circle', mode: 'baseline', steps: 6, seed: 5 }),
        () => e.generate({ prompt: 'make the circle blue', sourceImage: img, mode: '6nfe', seed: 6 }),
      ];
      const key = (evs: unknown[]) => {
        const last = evs.at(-1) as { kind?: string; text?: string; image?: { sha256: string } };
        return last.kind === 'done' ? last.text : last.image!.sha256;
      };
      const alone: string[] = [];
      for (const j of jobs) alone.push(key(await collect(j() as AsyncIterable<unknown>)) as string);
      const together = await Promise.all(jobs.map(async (j) => key(await collect(j() as AsyncIterable<unknown>)) as string));
      expect(together).toEqual(alone);
    } finally {
      await e.close();
    }
  });
});
