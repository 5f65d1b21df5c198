// Sessions across understand / generate / edit (the session's latest image), images of other sizes
// (centre-crop + resize), and chunks that never carry empty text. Fixture pack, real worker.
import { afterAll, beforeAll, describe, expect, test } from 'vitest';
import { createEngine, type LocalEngine } from '../../src/engine/index.ts';
import { fitImage } from '../../src/engine/image/codec.ts';
import { EngineError, type ImageFrame, type RgbImage, type UnderstandChunk, type UnderstandEvent, type UnderstandSummary } from '../../src/engine/types.ts';
import { answerIds, collect, engineError, FIXTURE, withWorkerCalls } from './fixture-helpers.ts';
import { WorkerSequence } from '../../src/engine/understand/worker-target.ts';

let engine: LocalEngine;
beforeAll(async () => {
  engine = await createEngine(FIXTURE, { calibrate: false, intraOpThreads: 1 });
});
afterAll(async () => {
  await engine?.close();
});

const summary = (evs: UnderstandEvent[]) => evs.at(-1) as UnderstandSummary;
const finalOf = (frames: ImageFrame[]) => frames.find((f) => f.stage === 'final')!;
const pattern = (w: number, h: number, f: (x: number, y: number, c: number) => number): RgbImage => {
  const data = new Uint8Array(w * h * 3);
  for (let y = 0; y < h; y++) for (let x = 0; x < w; x++) for (let c = 0; c < 3; c++) data[(y * w + x) * 3 + c] = f(x, y, c);
  return { width: w, height: h, data };
};
const greedy = { maxTokens: 8, speculation: { mode: 'off' as const } };

describe('images of other sizes', () => {
  test('fitImage: exact size untouched; non-square centre-cropped; larger/smaller resized', async () => {
    const exact = pattern(64, 64, (x, y, c) => (x + y + c) % 256);
    const e = await fitImage(exact, 64);
    expect(e.image).toBe(exact);
    expect(e.info).toMatchObject({ resized: false, cropped: false, width: 64, height: 64 });
    // 160×64: a 64-wide centre block of 200, sides of 10 → the crop keeps only the centre
    const wide = pattern(160, 64, (x) => (x >= 48 && x < 112 ? 200 : 10));
    const w = await fitImage(wide, 64);
    expect(w.info).toMatchObject({ originalWidth: 160, originalHeight: 64, resized: true, cropped: true });
    expect(w.image.width).toBe(64);
    expect(w.image.data.length).toBe(64 * 64 * 3);
    expect(Math.min(...w.image.data)).toBeGreaterThanOrEqual(195);
    const up = await fitImage(pattern(16, 16, () => 77), 64);
    expect(up.info).toMatchObject({ resized: true, cropped: false });
    expect(new Set(up.image.data)).toEqual(new Set([77]));
  });

  test('understand accepts any reasonable size and reports the resize; a uniform photo answers like its 64×64 version', async () => {
    const ref = summary(await collect(engine.understand({ prompt: 'describe the image', image: pattern(64, 64, () => 120), ...greedy })));
    expect(ref.inputImage).toMatchObject({ resized: false, source: 'request' });
    const big = summary(await collect(engine.understand({ prompt: 'describe the image', image: pattern(300, 200, () => 120), ...greedy })));
    expect(big.inputImage).toMatchObject({ originalWidth: 300, originalHeight: 200, width: 64, height: 64, resized: true, cropped: true, source: 'request' });
    expect(big.usage.promptTokens).toBe(ref.usage.promptTokens); // 16 vision tokens either way
    expect(big.text).toBe(ref.text);
    const small = summary(await collect(engine.understand({ prompt: 'describe the image', image: pattern(32, 32, () => 120), ...greedy })));
    expect(small.inputImage).toMatchObject({ resized: true, cropped: false });
    expect(small.text).toBe(ref.text);
  });

  test('edit accepts any reasonable size; the frame reports the resize and equals the edit of the fitted image', async () => {
    const photo = pattern(200, 150, (x, y, c) => (x * 3 + y * 5 + c * 40) % 256);
    const a = finalOf(await collect(engine.generate({ prompt: 'make the circle blue', sourceImage: photo, mode: '1nfe', seed: 3 })));
    expect(a.sourceImage).toMatchObject({ originalWidth: 200, originalHeight: 150, resized: true, cropped: true, source: 'request' });
    const fitted = (await fitImage(photo, 64)).image;
    const b = finalOf(await collect(engine.generate({ prompt: 'make the circle blue', sourceImage: fitted, mode: '1nfe', seed: 3 })));
    expect(b.sourceImage).toMatchObject({ resized: false });
    expect(a.image.sha256).toBe(b.image.sha256);
    // text-to-image frames have no sourceImage
    expect(finalOf(await collect(engine.generate({ prompt: 'a red circle', mode: '1nfe', seed: 3 }))).sourceImage).toBeUndefined();
  });
});

describe('sessions: the latest image across understand, generate and edit', () => {
  test('a generated final becomes the latest image: the next understand turn sees it, the one after does not re-feed it', async () => {
    const session = engine.createSession();
    expect(engine.sessionInfo(session)).toEqual({ tokens: 0, bytes: 0, hasImage: false });
    const gen = finalOf(await collect(engine.generate({ prompt: 'a red circle', mode: '1nfe', seed: 9, session })));
    const info = engine.sessionInfo(session);
    expect(info.hasImage).toBe(true);
    expect(info.tokens).toBe(0);
    expect(info.bytes).toBe(64 * 64 * 3);
    // turn 1: no image given → the generated image is fed (like passing it explicitly, one-shot)
    const t1 = await collect(engine.understand({ prompt: 'describe the image', session, ...greedy }));
    const s1 = summary(t1);
    expect(s1.inputImage).toMatchObject({ source: 'session', width: 64, height: 64 });
    const oneShot = summary(await collect(engine.understand({ prompt: 'describe the image', image: gen.rgb, ...greedy })));
    expect(s1.usage.promptTokens).toBe(oneShot.usage.promptTokens);
    expect(s1.text).toBe(oneShot.text);
    const afterT1 = engine.sessionInfo(session);
    expect(afterT1.tokens).toBeGreaterThanOrEqual(s1.usage.promptTokens);
    expect(afterT1.bytes).toBeGreaterThan(64 * 64 * 3);
    // turn 2: the conversation holds the image already: nothing re-fed
    const s2 = summary(await collect(engine.understand({ prompt: 'what colour is it', session, ...greedy })));
    expect(s2.inputImage).toBeUndefined();
    expect(s2.usage.promptTokens).toBeLessThan(10);
    expect(engine.sessionInfo(session).tokens).toBeGreaterThan(afterT1.tokens);
    engine.closeSession(session);
    expect((await engineError(() => engine.sessionInfo(session))).code).toBe('INVALID_INPUT');
    expect((await engineError(() => engine.generate({ prompt: 'a red circle', session }))).code).toBe('INVALID_INPUT');
  });

  test("a follow-up turn's promptTokens are its own input, the same however the previous answer was decoded", async () => {
    const turns = async (mode: 'off' | 'chain' | 'ngram' | 'tree') => {
      const session = engine.createSession();
      try {
        const first = summary(await collect(engine.understand({ prompt: 'describe the image', image: pattern(64, 64, (x, y, c) => (x * 5 + y + c * 80) % 256), session, ...greedy, speculation: { mode } })));
        const second = summary(await collect(engine.understand({ prompt: 'what colour is it', session, ...greedy, speculation: { mode } })));
        return { first, second };
      } finally {
        engine.closeSession(session);
      }
    };
    const plain = await turns('off');
    const fresh = summary(await collect(engine.understand({ prompt: 'what colour is it', ...greedy })));
    for (const mode of ['chain', 'ngram', 'tree'] as const) {
      const t = await turns(mode);
      expect(t.first.text, mode).toBe(plain.first.text);
      expect(t.second.usage.promptTokens, mode).toBe(plain.second.usage.promptTokens);
      expect(t.second.usage.totalTokens, mode).toBe(t.second.usage.promptTokens + t.second.usage.completionTokens);
    }
    // a follow-up's own input is its words and the turn's template: no BOS, none of the previous answer
    expect(plain.second.usage.promptTokens).toBe(fresh.usage.promptTokens - 1);
  });

  test('edit without sourceImage edits the latest image (understood, then edited), and its final becomes the latest', async () => {
    const photo = pattern(96, 80, (x, y, c) => (x * 7 + y * 3 + c * 50) % 256);
    const session = engine.createSession();
    // no image yet: a typed error
    const none = await engineError(() => engine.generate({ prompt: 'make the circle green', edit: true, session }));
    expect(none.code).toBe('INVALID_INPUT');
    expect(none.message).toMatch(/no image/);
    expect((await engineError(() => engine.generate({ prompt: 'make the circle green', edit: true }))).code).toBe('INVALID_INPUT');
    // "describe this image" → "now make the circle green"
    await collect(engine.understand({ prompt: 'describe the image', image: photo, session, ...greedy }));
    expect(engine.sessionInfo(session).hasImage).toBe(true);
    const e1 = finalOf(await collect(engine.generate({ prompt: 'make the circle green', edit: true, session, mode: '1nfe', seed: 2 })));
    expect(e1.sourceImage).toMatchObject({ source: 'session', originalWidth: 96, originalHeight: 80, resized: true, cropped: true });
    const fitted = (await fitImage(photo, 64)).image;
    const ref1 = finalOf(await collect(engine.generate({ prompt: 'make the circle green', sourceImage: fitted, mode: '1nfe', seed: 2 })));
    expect(e1.image.sha256).toBe(ref1.image.sha256);
    // the edit's final is the latest image now: a second edit starts from it
    const e2 = finalOf(await collect(engine.generate({ prompt: 'make the square red', edit: true, session, mode: '1nfe', seed: 5 })));
    const ref2 = finalOf(await collect(engine.generate({ prompt: 'make the square red', sourceImage: e1.rgb, mode: '1nfe', seed: 5 })));
    expect(e2.image.sha256).toBe(ref2.image.sha256);
    // and the next understand turn is about the edited image (fed, since the conversation has not seen it)
    const s = summary(await collect(engine.understand({ prompt: 'what colour is it', session, ...greedy })));
    expect(s.inputImage?.source).toBe('session');
    // an explicit sourceImage wins over the session's
    const e3 = finalOf(await collect(engine.generate({ prompt: 'make the square red', sourceImage: fitted, session, mode: '1nfe', seed: 5 })));
    expect(e3.sourceImage?.source).toBe('request');
    engine.closeSession(session);
  });

  test('after a worker crash the session says so once, then re-feeds its latest image to the new context', async () => {
    const e = await createEngine(FIXTURE, { calibrate: false, intraOpThreads: 1 });
    try {
      const session = e.createSession();
      await collect(e.understand({ prompt: 'describe the image', image: pattern(80, 80, (x, y) => (x * y) % 256), session, ...greedy }));
      expect(e.sessionInfo(session).tokens).toBeGreaterThan(16);
      await e.crashWorkerForTest();
      expect(e.sessionInfo(session)).toMatchObject({ tokens: 0, hasImage: true });
      expect((await engineError(() => e.understand({ prompt: 'what colour is it', session, maxTokens: 2 }))).code).toBe('WORKER_CRASHED');
      const s = summary(await collect(e.understand({ prompt: 'what colour is it', session, ...greedy })));
      expect(s.inputImage).toMatchObject({ source: 'session', originalWidth: 80, resized: true });
    } finally {
      await e.close();
    }
  });

  test('a worker crash during a turn: that turn says the conversation was lost, and the next turn is served afresh', async () => {
    const e = await createEngine(FIXTURE, { calibrate: false, intraOpThreads: 1 });
    try {
      const session = e.createSession();
      await collect(e.understand({ prompt: 'describe the image', image: pattern(64, 64, () => 90), session, ...greedy }));
      const it = e.understand({ prompt: 'describe the image', session, maxTokens: 60, speculation: { mode: 'off' } })[Symbol.asyncIterator]();
      expect((await it.next()).value?.kind).toBe('chunk');
      await e.crashWorkerForTest();
      let err: unknown;
      try {
        while (!(await it.next()).done);
      } catch (x) {
        err = x;
      }
      expect(err).toBeInstanceOf(EngineError);
      expect(err).toMatchObject({ code: 'WORKER_CRASHED', details: { sessionReset: true } });
      expect((err as Error).message).toMatch(/next request starts a new conversation/);
      // the next turn is served, from a fresh context that re-reads the session's image
      const s = summary(await collect(e.understand({ prompt: 'what colour is it', session, ...greedy })));
      expect(s.finishReason).not.toBe('cancelled');
      expect(s.inputImage).toMatchObject({ source: 'session' });
    } finally {
      await e.close();
    }
  });

  test('a worker crash during an image job in a session: the job says the conversation was lost, and the next turn is served', async () => {
    const e = await createEngine(FIXTURE, { calibrate: false, intraOpThreads: 1 });
    try {
      const session = e.createSession();
      await collect(e.understand({ prompt: 'describe the image', image: pattern(64, 64, () => 90), session, ...greedy }));
      let crashed = false;
      const crashAtFirstDenoise = async (op: string) => {
        if (op !== 'denoise' || crashed) return;
        crashed = true;
        await e.crashWorkerForTest();
      };
      const err = await withWorkerCalls(e.workerClient, crashAtFirstDenoise, () => collect(e.generate({ prompt: 'make the circle green', edit: true, session, mode: '1nfe', seed: 1 }))).then(
        () => undefined,
        (x: unknown) => x,
      );
      expect(crashed).toBe(true);
      expect(err).toMatchObject({ code: 'WORKER_CRASHED', details: { sessionReset: true } });
      const s = summary(await collect(e.understand({ prompt: 'what colour is it', session, ...greedy })));
      expect(s.inputImage).toMatchObject({ source: 'session' });
    } finally {
      await e.close();
    }
  });

  test('one request at a time per session; the session is free as soon as the final frame / summary is out', async () => {
    const session = engine.createSession();
    const a = engine.generate({ prompt: 'a red circle', mode: '1nfe', seed: 1, session })[Symbol.asyncIterator]();
    const first = a.next(); // starts the request
    const busy = await engineError(() => engine.understand({ prompt: 'describe the image', session, maxTokens: 2 }));
    expect(busy.code).toBe('BUSY');
    let r = await first;
    while (!r.done && r.value.stage !== 'final') r = await a.next();
    // final received, generator not finished: the session already takes the next request …
    const b = engine.understand({ prompt: 'describe the image', session, ...greedy })[Symbol.asyncIterator]();
    const bFirst = b.next();
    // … and the first request finishing afterwards does not free the session under the second
    expect((await a.next()).done).toBe(true);
    expect((await engineError(() => engine.understand({ prompt: 'what colour is it', session, maxTokens: 2 }))).code).toBe('BUSY');
    const next: UnderstandEvent[] = [];
    for (let r = await bFirst; !r.done; r = await b.next()) next.push(r.value);
    expect(summary(next).inputImage?.source).toBe('session');
    // same for understanding: summary received, next turn at once
    const u = engine.understand({ prompt: 'what colour is it', session, maxTokens: 3 })[Symbol.asyncIterator]();
    let ev = await u.next();
    while (!ev.done && ev.value.kind !== 'done') ev = await u.next();
    const edit = await collect(engine.generate({ prompt: 'make the circle green', edit: true, session, mode: '1nfe', seed: 1 }));
    expect(finalOf(edit).sourceImage?.source).toBe('session');
    await u.next();
    engine.closeSession(session);
  });

  test('a cancel that comes while the final is decoded: the request ends CANCELLED and the session keeps no image', async () => {
    const session = engine.createSession();
    const ac = new AbortController();
    // 1-NFE: its one VAE decode is the final's (after the last model step)
    const cancelAtDecode = (op: string) => void (op === 'vae_decode' && ac.abort());
    const e = await withWorkerCalls(engine.workerClient, cancelAtDecode, () => engineError(() => engine.generate({ prompt: 'a red circle', mode: '1nfe', seed: 1, session }, ac.signal)));
    expect(e.code).toBe('CANCELLED');
    expect(engine.sessionInfo(session).hasImage).toBe(false);
    // an edit of "the session's image" is refused, not run on an image the client never saw
    expect((await engineError(() => engine.generate({ prompt: 'make the circle green', edit: true, session, mode: '1nfe', seed: 1 }))).message).toMatch(/no image to edit yet/);
    engine.closeSession(session);
  });
});

describe('chunks never carry empty text', () => {
  test('textless steps (special tokens, EOS) fold into the next chunk or the summary; counts add up', async () => {
    const special = new Set([0, 1, 3, 4, 5, 6, 7, 8, 9]); // render to "" (EOS ends the answer)
    let folded = 0;
    let specialSeen = 0;
    for (let seed = 0; seed < 24; seed++) {
      const mode = (['off', 'ngram', 'tree'] as const)[seed % 3]!;
      const evs = await collect(engine.understand({ prompt: 'describe the image', maxTokens: 24, temperature: 1.5, seed, speculation: { mode } }));
      const s = summary(evs);
      const chunks = evs.filter((e): e is UnderstandChunk => e.kind === 'chunk');
      for (const c of chunks) {
        expect(c.text.length, JSON.stringify(c)).toBeGreaterThan(0);
        expect(c.steps).toBeGreaterThanOrEqual(1);
        if (c.steps! > 1) folded++;
      }
      const ids = answerIds(evs);
      expect(ids.length).toBe(s.usage.completionTokens);
      specialSeen += ids.filter((t) => special.has(t)).length;
      expect(chunks.map((c) => c.text).join('')).toBe(s.text);
      // every verification step is in exactly one chunk or the trailing record
      const steps = chunks.reduce((n, c) => n + c.steps!, 0) + (s.trailing?.steps ?? 0);
      const accepted = chunks.reduce((n, c) => n + c.acceptedTokens, 0) + (s.trailing?.acceptedTokens ?? 0);
      const drafted = chunks.reduce((n, c) => n + c.draftedTokens, 0) + (s.trailing?.draftedTokens ?? 0);
      expect(accepted).toBe(s.speculation.acceptedTokens);
      expect(drafted).toBe(s.speculation.draftedTokens);
      expect(steps).toBeGreaterThanOrEqual(s.speculation.drafts);
    }
    // the random fixture samples special tokens often: the folding above was exercised
    expect(specialSeen).toBeGreaterThan(0);
    expect(folded).toBeGreaterThan(0);
  });

  test('a cancel while text is held back for a stop string: that text still arrives, in a last chunk', async () => {
    const prompt = { prompt: 'describe the image', maxTokens: 8, speculation: { mode: 'off' as const } };
    const full = summary(await collect(engine.understand(prompt)));
    expect(full.text).toBe('photo photo photo gray gray gray'); // the fixture's greedy answer
    // "gray zzz" never completes, but "gray" could start it: held back once the 6th token gives it (two of
    // the first five are textless special tokens)
    const ac = new AbortController();
    let decodes = 0;
    // the prefill gives token 1, each later decode one more
    const cancelAtSixthDecode = (op: string) => void (op === 'decode' && ++decodes === 6 && ac.abort());
    const evs = await withWorkerCalls(engine.workerClient, cancelAtSixthDecode, () => collect(engine.understand({ ...prompt, stop: ['gray zzz'] }, ac.signal)));
    const s = summary(evs);
    expect(s.finishReason).toBe('cancelled');
    expect(s.usage.completionTokens).toBe(6);
    expect(s.text).toBe('photo photo photo gray');
    const chunks = evs.filter((e): e is UnderstandChunk => e.kind === 'chunk');
    expect(chunks.map((c) => c.text).join('')).toBe(s.text);
    expect(answerIds(evs)).toHaveLength(6);
  }, 30000);

  test('meanAcceptedLength = 1 + accepted/drafts, 1.0 when nothing was drafted', async () => {
    const off = summary(await collect(engine.understand({ prompt: 'describe the image', maxTokens: 6, speculation: { mode: 'off' } })));
    expect(off.speculation.drafts).toBe(0);
    expect(off.speculation.meanAcceptedLength).toBe(1);
    const ac = new AbortController();
    const evs: UnderstandEvent[] = [];
    for await (const ev of engine.understand({ prompt: 'describe the image', maxTokens: 40, speculation: { mode: 'off' } }, ac.signal)) {
      evs.push(ev);
      ac.abort();
    }
    const cancelled = summary(evs);
    expect(cancelled.finishReason).toBe('cancelled');
    expect(cancelled.speculation.meanAcceptedLength).toBe(1);
    const ng = summary(await collect(engine.understand({ prompt: 'describe the image', maxTokens: 24, speculation: { mode: 'ngram', chainLength: 3 } })));
    if (ng.speculation.drafts) expect(ng.speculation.meanAcceptedLength).toBeCloseTo(1 + ng.speculation.acceptedTokens / ng.speculation.drafts, 12);
  });
});

describe('image rows in the prefill request', () => {
  test("a 'pixels' segment (vision run inside the forward) gives exactly the logits of 'vision' then an 'embeds' segment; a reused (pooled) KV cache gives the same again", async () => {
    const client = engine.workerClient;
    const V = engine.info.vocabularySize;
    const S = engine.info.imageSize.width;
    const pixels = () => Float32Array.from({ length: 3 * S * S }, (_, i) => ((i * 37) % 255) / 127.5 - 1);
    const count = 16;
    const ids = [1, 5, 9];
    const T = ids.length + count;
    const positions = () => Int32Array.from({ length: T }, (_, i) => (i < 2 ? i : i < 2 + count ? 2 : i - count + 1));
    const blocks = Array.from({ length: T }, (_, i) => (i < 2 ? i : i < 2 + count ? 2 : i - count + 1));
    const mask = () => Uint8Array.from({ length: T * T }, (_, k) => (blocks[k % T]! <= blocks[Math.floor(k / T)]! ? 1 : 0));
    const run = async (img: { kind: 'pixels'; pixels: Float32Array; count: number } | { kind: 'embeds'; data: Float32Array; count: number }) => {
      const s = await WorkerSequence.open(client, V, 64);
      const l = await s.extend([{ kind: 'ids', ids: Int32Array.from(ids.slice(0, 2)) }, img, { kind: 'ids', ids: Int32Array.from(ids.slice(2)) }], positions(), mask(), 'all');
      // one decode step on top, through the cache the prefill wrote
      const l2 = await s.forward(Int32Array.of(7), Int32Array.of(blocks[T - 1]! + 1), Uint8Array.of(1), 'last');
      await s.close();
      return [...l, ...l2];
    };
    const embeds = await client.call<Float32Array>({ op: 'vision', pixels: pixels(), batch: 1 });
    const viaEmbeds = await run({ kind: 'embeds', data: embeds, count });
    const viaPixels = await run({ kind: 'pixels', pixels: pixels(), count });
    expect(viaPixels).toEqual(viaEmbeds);
    // the closed sequences' caches are pooled and reused by the next open: same result
    expect(await run({ kind: 'pixels', pixels: pixels(), count })).toEqual(viaEmbeds);
  });
});

describe('a turn that fails part way', () => {
  /** Runs `f` while the worker client fails its third decode call (a worker error that is not a crash). */
  async function failingThirdDecode<T>(f: () => Promise<T>): Promise<T> {
    let decodes = 0;
    return withWorkerCalls(
      engine.workerClient,
      (op) => {
        if (op === 'decode' && ++decodes === 3) throw new EngineError('INTERNAL', 'decode: injected failure');
      },
      f,
    );
  }

  test('leaves the conversation as it was before the turn: the next turn answers as if it never ran', async () => {
    const img = pattern(64, 64, (x, y, c) => (x * 3 + y * 5 + c * 70) % 256);
    const turn = (e: LocalEngine, s: ReturnType<LocalEngine['createSession']>, prompt: string, withImage = false) =>
      collect(e.understand({ prompt, session: s, ...(withImage ? { image: img } : {}), maxTokens: 6, speculation: { mode: 'off' } }));
    // the reference: turn 1, then turn 3
    const ref = engine.createSession();
    await turn(engine, ref, 'describe the image', true);
    const want = answerIds(await turn(engine, ref, 'what color is the circle'));
    const refTokens = engine.sessionInfo(ref).tokens;
    // the same, with a turn between them whose third decode fails (a worker error that is not a crash)
    const s = engine.createSession();
    await turn(engine, s, 'describe the image', true);
    const before = engine.sessionInfo(s).tokens;
    const err = await failingThirdDecode(() => engineError(() => turn(engine, s, 'where is the square')));
    expect(err.message).toMatch(/injected failure/);
    expect(engine.sessionInfo(s).tokens).toBe(before);
    expect(answerIds(await turn(engine, s, 'what color is the circle'))).toEqual(want);
    expect(engine.sessionInfo(s).tokens).toBe(refTokens);
    engine.closeSession(ref);
    engine.closeSession(s);
  });

  test('a failed turn that brought an image leaves the session\'s image as it was', async () => {
    const first = pattern(64, 64, (x, y, c) => (x * 3 + y * 5 + c * 70) % 256);
    const second = pattern(64, 64, (x, y, c) => (x * 11 + c * 40) % 256);
    const s = engine.createSession();
    await collect(engine.understand({ prompt: 'describe the image', image: first, session: s, ...greedy }));
    await failingThirdDecode(() => engineError(() => collect(engine.understand({ prompt: 'describe the image', image: second, session: s, ...greedy }))));
    // an edit of the session's latest image edits the first one, as if the failed turn never ran
    const viaSession = finalOf(await collect(engine.generate({ prompt: 'make the circle red', edit: true, session: s, mode: 'baseline', steps: 2, seed: 5 })));
    const direct = finalOf(await collect(engine.generate({ prompt: 'make the circle red', sourceImage: first, mode: 'baseline', steps: 2, seed: 5 })));
    expect(viaSession.image.sha256).toBe(direct.image.sha256);
    engine.closeSession(s);
  });
});
