// Backpressure mechanics at the unit level: token chunks coalesce while the consumer is not pulling,
// previews keep only the latest, finals and terminal events are never dropped.
import { describe, expect, it } from 'vitest';
import type { UnderstandChunk, UnderstandSummary } from '../../src/engine/types.ts';
import { ImageJobRecord, iterateJob, pickNext, type JobEvent } from '../../src/gateway/jobs.ts';
import { coalescingStream } from '../../src/gateway/understand-stream.ts';

const chunk = (i: number): UnderstandChunk => ({ kind: 'chunk', text: `t${i} `, tokenIds: [i], acceptedTokens: 1, draftedTokens: 2 });
const summary: UnderstandSummary = {
  kind: 'done',
  finishReason: 'eos',
  text: 'all',
  usage: { promptTokens: 1, completionTokens: 5, totalTokens: 6 },
  timings: { queueMs: 0, timeToFirstTokenMs: 1, totalMs: 2, tokensPerSecond: 3 },
  speculation: { mode: 'chain', drafts: 5, draftedTokens: 10, acceptedTokens: 5, meanAcceptedLength: 1, acceptanceRate: 0.5, acceptancePerPosition: [] },
};

/** An engine stream fed by hand. */
function manualSource() {
  const queue: Array<UnderstandChunk | UnderstandSummary | null> = [];
  let wake: (() => void) | undefined;
  return {
    push(ev: UnderstandChunk | UnderstandSummary | null) {
      queue.push(ev);
      wake?.();
    },
    async *[Symbol.asyncIterator]() {
      for (;;) {
        while (!queue.length) await new Promise<void>((r) => (wake = r));
        const ev = queue.shift()!;
        if (ev === null) return;
        yield ev;
      }
    },
  };
}

const tick = () => new Promise((r) => setTimeout(r, 5));

describe('coalescing understand stream', () => {
  it('yields one event per step for a fast consumer and merges while it is slow, losing nothing', async () => {
    const src = manualSource();
    let coalesced = 0;
    let ended: unknown;
    const it = coalescingStream<unknown>(src, new AbortController(), {
      chunk: (c) => c,
      summary: (s) => s,
      onCoalesced: () => coalesced++,
      onEnd: (i) => (ended = i),
    });
    src.push(chunk(0));
    expect(await it.next()).toMatchObject({ value: { text: 't0 ', steps: 1 } });
    // slow consumer: four steps arrive before the next pull
    for (let i = 1; i <= 4; i++) src.push(chunk(i));
    await tick();
    const merged = (await it.next()).value as { text: string; tokenIds: number[]; steps: number; acceptedTokens: number; draftedTokens: number };
    expect(merged).toEqual({ text: 't1 t2 t3 t4 ', tokenIds: [1, 2, 3, 4], steps: 4, acceptedTokens: 4, draftedTokens: 8 });
    expect(coalesced).toBe(3);
    src.push(summary);
    src.push(null);
    expect((await it.next()).value).toBe(summary);
    expect((await it.next()).done).toBe(true);
    expect(ended).toMatchObject({ cancelled: false });
  });

  it('a consumer so far behind that its backlog passes the bound gets SLOW_CONSUMER, and the engine is stopped', async () => {
    const src = manualSource();
    const controller = new AbortController();
    let ended: { cancelled: boolean; error?: unknown } | undefined;
    const big = (i: number): UnderstandChunk => ({ kind: 'chunk', text: 'x'.repeat(100), tokenIds: [i], acceptedTokens: 1, draftedTokens: 1 });
    const it = coalescingStream<unknown>(src, controller, { chunk: (c) => c, summary: (s) => s, onEnd: (i) => (ended = i) }, undefined, Infinity, 250);
    src.push(big(0));
    expect(await it.next()).toMatchObject({ value: { steps: 1 } });
    // the consumer stops pulling: 100 + 100 fit in the bound, the third chunk would pass it
    for (let i = 1; i <= 3; i++) src.push(big(i));
    await tick();
    expect(controller.signal.aborted).toBe(true);
    expect(ended).toMatchObject({ cancelled: false, error: expect.objectContaining({ code: 'SLOW_CONSUMER' }) });
    await expect(it.next()).rejects.toMatchObject({ code: 'SLOW_CONSUMER', extensions: expect.objectContaining({ limit: 250 }) });
  });

  it('a hook that throws fails the stream with a typed error, not the process', async () => {
    const src = manualSource();
    const controller = new AbortController();
    const unhandled: unknown[] = [];
    const onUnhandled = (e: unknown) => unhandled.push(e);
    process.on('unhandledRejection', onUnhandled);
    try {
      const it = coalescingStream<unknown>(src, controller, {
        chunk: (c) => c,
        summary: (s) => s,
        onEngineChunk: () => {
          throw new Error('metrics exploded');
        },
        onEnd: () => {},
      });
      src.push(chunk(0));
      await expect(it.next()).rejects.toMatchObject({ code: 'INTERNAL' });
      expect(controller.signal.aborted).toBe(true);
      await tick();
      expect(unhandled).toEqual([]);
    } finally {
      process.off('unhandledRejection', onUnhandled);
    }
  });

  it('an onEnd hook that throws still ends the stream (with the error), never leaves it hanging', async () => {
    const src = manualSource();
    const it = coalescingStream<unknown>(src, new AbortController(), {
      chunk: (c) => c,
      summary: (s) => s,
      onEnd: () => {
        throw new Error('slot release exploded');
      },
    });
    src.push(chunk(0));
    expect(await it.next()).toMatchObject({ value: { text: 't0 ' } });
    src.push(summary);
    src.push(null);
    // the answer itself was complete: its summary is delivered, then the hook's failure
    expect((await it.next()).value).toBe(summary);
    await expect(it.next()).rejects.toMatchObject({ code: 'INTERNAL' });
  });

  it('counts the engine steps a chunk covers (textless steps folded in) when merging', async () => {
    const src = manualSource();
    const it = coalescingStream<unknown>(src, new AbortController(), { chunk: (c) => c, summary: (s) => s, onEnd: () => {} });
    // a single folded chunk keeps its steps
    src.push({ ...chunk(0), tokenIds: [7, 0], steps: 2 });
    expect(await it.next()).toMatchObject({ value: { tokenIds: [7, 0], steps: 2 } });
    // merged while the consumer is slow: 3 + 1 + 2 steps
    src.push({ ...chunk(1), steps: 3 });
    src.push(chunk(2));
    src.push({ ...chunk(3), steps: 2 });
    await tick();
    expect((await it.next()).value).toMatchObject({ text: 't1 t2 t3 ', tokenIds: [1, 2, 3], steps: 6 });
    src.push(summary);
    src.push(null);
    expect((await it.next()).value).toBe(summary);
    expect((await it.next()).done).toBe(true);
  });

  it('return() aborts the engine and ends a pending next()', async () => {
    const src = manualSource();
    const ctrl = new AbortController();
    const it = coalescingStream<unknown>(src, ctrl, { chunk: (c) => c, summary: (s) => s, onEnd: () => {} });
    const pending = it.next();
    await it.return!();
    expect((await pending).done).toBe(true);
    expect(ctrl.signal.aborted).toBe(true);
  });
});

function fakeFrame(stage: 'preview' | 'final', nfe: number) {
  return { frame: { stage, nfe, step: nfe, elapsedMs: 0, seed: 0, image: { mimeType: 'image/png' as const, width: 1, height: 1, bytes: new Uint8Array(1), sha256: '' }, rgb: { width: 1, height: 1, data: new Uint8Array(3) } } };
}

describe('preview sliding', () => {
  it('pickNext skips previews superseded by a newer preview, never finals or the terminal event', () => {
    const ev = (seq: number, stage?: 'preview' | 'final', done = false): JobEvent => ({ seq, status: done ? 'SUCCEEDED' : 'RUNNING', frame: stage ? fakeFrame(stage, seq) : undefined, done });
    const log = [ev(1), ev(2, 'preview'), ev(3, 'preview'), ev(4, 'preview'), ev(5, 'final'), ev(6, undefined, true)];
    const all = () => true;
    expect(pickNext(log, 0, all)).toEqual({ index: 0, dropped: 0 });
    expect(pickNext(log, 1, all)).toEqual({ index: 3, dropped: 2 });
    expect(pickNext(log, 4, all)).toEqual({ index: 4, dropped: 0 });
    expect(pickNext(log, 5, all)).toEqual({ index: 5, dropped: 0 });
    expect(pickNext(log, 6, all)).toBeUndefined();
    // events logged before the consumer subscribed are a replay it asked for: none is skipped
    expect(pickNext(log, 1, all, 6)).toEqual({ index: 1, dropped: 0 });
    expect(pickNext(log, 1, all, 3)).toEqual({ index: 1, dropped: 0 });
    expect(pickNext(log, 3, all, 3)).toEqual({ index: 3, dropped: 0 });
  });

  it('a replay of a finished job delivers every event after `after`; live previews still slide', async () => {
    const job = new ImageJobRecord('job-1', 'PROGRESSIVE', 1, false, 60_000, () => {});
    job.push({ status: 'RUNNING', done: false });
    for (let n = 1; n <= 3; n++) job.push({ status: 'RUNNING', frame: fakeFrame('preview', n), done: false });
    const opts = { filter: () => true, isEnd: (j: ImageJobRecord, c: number) => j.terminal && c >= j.events.length, map: (e: JobEvent) => e };
    const replay = iterateJob(job, 1, opts);
    // after the replay starts, three more previews pile up before it reads: only the newest of those is live news
    for (let n = 4; n <= 6; n++) job.push({ status: 'RUNNING', frame: fakeFrame('preview', n), done: false });
    job.push({ status: 'RUNNING', frame: fakeFrame('final', 7), done: false });
    job.push({ status: 'SUCCEEDED', done: true });
    const got: number[] = [];
    for await (const e of replay) got.push(e.seq);
    expect(got).toEqual([2, 3, 4, 7, 8, 9]);
    const full: number[] = [];
    for await (const e of iterateJob(job, 0, opts)) full.push(e.seq);
    expect(full).toEqual([1, 2, 3, 4, 5, 6, 7, 8, 9]);
  });

  it('imageJob with `after` beyond the log waits for events after it, never sends older ones', async () => {
    const job = new ImageJobRecord('job-1', 'PROGRESSIVE', 1, false, 60_000, () => {});
    job.push({ status: 'RUNNING', done: false });
    const it = iterateJob(job, 3, { filter: () => true, isEnd: (j, c) => j.terminal && c >= j.events.length, map: (e) => e.seq });
    const first = it.next();
    job.push({ status: 'RUNNING', frame: fakeFrame('preview', 1), done: false });
    job.push({ status: 'RUNNING', frame: fakeFrame('preview', 2), done: false });
    job.push({ status: 'RUNNING', frame: fakeFrame('final', 3), done: false });
    job.push({ status: 'SUCCEEDED', done: true });
    expect((await first).value).toBe(4);
    expect((await it.next()).value).toBe(5);
    expect((await it.next()).done).toBe(true);
  });

  it('a slow imageJob consumer gets the latest preview, the final and the terminal event', async () => {
    const job = new ImageJobRecord('job-1', 'PROGRESSIVE', 1, false, 60_000, () => {});
    let dropped = 0;
    const it = iterateJob(job, 0, { filter: () => true, isEnd: (j, c) => j.terminal && c >= j.events.length, map: (e) => e, onDropped: (n) => (dropped += n) });
    job.push({ status: 'RUNNING', done: false });
    for (let n = 1; n <= 5; n++) job.push({ status: 'RUNNING', frame: fakeFrame('preview', n), done: false });
    job.push({ status: 'RUNNING', frame: fakeFrame('final', 6), done: false });
    job.push({ status: 'SUCCEEDED', done: true });
    const got: JobEvent[] = [];
    for await (const e of it) got.push(e);
    expect(got.map((e) => e.frame?.frame.nfe ?? e.status)).toEqual(['RUNNING', 5, 6, 'SUCCEEDED']);
    expect(dropped).toBe(4);
  });
});
