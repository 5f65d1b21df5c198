// Cancellation, worker crashes, bad input and broken packs on the fixture pack.
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import sharp from 'sharp';
import { afterAll, beforeAll, describe, expect, test } from 'vitest';
import { createEngine, type LocalEngine } from '../../src/engine/index.ts';
import { decodeImageBytes } from '../../src/engine/image/codec.ts';
import type { UnderstandSummary } from '../../src/engine/types.ts';
import { collect, engineError, FIXTURE } from './fixture-helpers.ts';

let engine: LocalEngine;
beforeAll(async () => {
  engine = await createEngine(FIXTURE, { calibrate: false, intraOpThreads: 1 });
});
afterAll(async () => {
  await engine?.close();
});

const img64 = () => ({ width: 64, height: 64, data: new Uint8Array(64 * 64 * 3).fill(90) });

describe('cancellation', () => {
  test('understand: aborting stops model work within one step and ends with finishReason cancelled', async () => {
    const ac = new AbortController();
    const it = engine.understand({ prompt: 'describe the image', maxTokens: 200, temperature: 1, seed: 1, speculation: { mode: 'off' } }, ac.signal)[Symbol.asyncIterator]();
    await it.next();
    await it.next();
    const before = (await engine.workerStats()).decodeCalls;
    ac.abort();
    const rest: unknown[] = [];
    for (let r = await it.next(); !r.done; r = await it.next()) rest.push(r.value);
    const after = (await engine.workerStats()).decodeCalls;
    expect(after - before).toBeLessThanOrEqual(1);
    const last = rest[rest.length - 1] as UnderstandSummary;
    expect(last.kind).toBe('done');
    expect(last.finishReason).toBe('cancelled');
  });

  test('understand: an abort while a model call is in flight stops before the next one', async () => {
    const ac = new AbortController();
    const client = engine.workerClient;
    const orig = client.call.bind(client);
    let decodes = 0;
    // abort exactly while the 3rd decoder call (2nd verification step) is running in the worker
    client.call = ((msg: { op: string }, tr?: ArrayBuffer[], gen?: number) => {
      if (msg.op === 'decode' && ++decodes === 3) ac.abort();
      return orig(msg as never, tr, gen);
    }) as typeof client.call;
    const evs: string[] = [];
    try {
      for await (const ev of engine.understand({ prompt: 'describe the image', maxTokens: 200, temperature: 1, seed: 2, speculation: { mode: 'tree' } }, ac.signal)) {
        evs.push(ev.kind === 'done' ? ev.finishReason : ev.kind);
      }
    } finally {
      client.call = orig;
    }
    expect(decodes).toBe(3);
    expect(evs[evs.length - 1]).toBe('cancelled');
  });

  test('generate: aborting after the first frame stops the sampler', async () => {
    const ac = new AbortController();
    const it = engine.generate({ prompt: 'a red circle', mode: 'baseline', steps: 50, seed: 1, intermediatePreviews: true }, ac.signal)[Symbol.asyncIterator]();
    const first = await it.next();
    expect(first.value?.stage).toBe('preview');
    const before = (await engine.workerStats()).modelCalls;
    ac.abort();
    const err = await it.next().then(
      () => null,
      (e: unknown) => e,
    );
    expect((err as { code?: string })?.code).toBe('CANCELLED');
    const after = (await engine.workerStats()).modelCalls;
    expect(after - before).toBeLessThanOrEqual(1);
  });

  test('an already-aborted signal never reaches the model', async () => {
    const ac = new AbortController();
    ac.abort();
    const before = (await engine.workerStats()).modelCalls;
    const err = await engineError(() => engine.understand({ prompt: 'describe the image' }, ac.signal));
    expect(err.code).toBe('CANCELLED');
    expect((await engine.workerStats()).modelCalls).toBe(before);
  });
});

describe('worker crash', () => {
  test('in-flight requests fail with WORKER_CRASHED; the worker restarts and serves again', async () => {
    const e = await createEngine(FIXTURE, { calibrate: false, intraOpThreads: 1 });
    try {
      const it = e.understand({ prompt: 'describe the image', maxTokens: 200, temperature: 1, seed: 3, speculation: { mode: 'off' } })[Symbol.asyncIterator]();
      await it.next();
      await e.crashWorkerForTest();
      const err = await (async () => {
        try {
          for (let r = await it.next(); !r.done; r = await it.next());
        } catch (x) {
          return x as { code?: string; message: string };
        }
        return null;
      })();
      expect(err?.code).toBe('WORKER_CRASHED');
      expect(err?.message).toMatch(/crashed/);
      const evs = await collect(e.understand({ prompt: 'describe the image', maxTokens: 5 }));
      expect(evs[evs.length - 1]!.kind).toBe('done');
      const frames = await collect(e.generate({ prompt: 'a red circle', mode: '1nfe', seed: 1 }));
      expect(frames.length).toBe(1);
      expect((await e.workerStats()).restarts).toBe(1);
      // a session whose context died with the worker says so once, then starts afresh
      const session = e.createSession();
      await collect(e.understand({ prompt: 'describe the image', maxTokens: 3, session }));
      await e.crashWorkerForTest();
      const lost = await engineError(() => e.understand({ prompt: 'what colour is it', maxTokens: 3, session }));
      expect(lost.code).toBe('WORKER_CRASHED');
      expect(lost.message).toMatch(/session/);
      const again = await collect(e.understand({ prompt: 'what colour is it', maxTokens: 3, session }));
      expect(again.at(-1)!.kind).toBe('done');
      expect((await e.workerStats()).restarts).toBe(2);
    } finally {
      await e.close();
    }
  });
});

describe('engine options and closing', () => {
  test('maxConcurrent 0 (nothing would ever run) is refused; waiting requests end when the engine closes', async () => {
    await expect(createEngine(FIXTURE, { calibrate: false, maxConcurrent: 0 })).rejects.toMatchObject({ code: 'OUT_OF_RANGE', message: expect.stringMatching(/maxConcurrent must be an integer >= 1, got 0/) });
    await expect(createEngine(FIXTURE, { calibrate: false, defaultMaxTokens: 0 })).rejects.toMatchObject({ code: 'OUT_OF_RANGE' });
    const e = await createEngine(FIXTURE, { calibrate: false, intraOpThreads: 1, maxConcurrent: 1 });
    // one request holds the only slot (a long answer), a second waits for it
    const first = e.understand({ prompt: 'describe the image', maxTokens: 200, temperature: 1, seed: 9, speculation: { mode: 'off' } })[Symbol.asyncIterator]();
    await first.next();
    const second = collect(e.understand({ prompt: 'describe the image', maxTokens: 2 })).then(() => 'done', (x: unknown) => x);
    await e.close();
    const settled = await Promise.race([second, new Promise((r) => setTimeout(() => r('still waiting'), 2000))]);
    expect(settled).toMatchObject({ code: 'CANCELLED', message: 'engine closed' });
  });

  test('crashWorkerForTest returns once the client has given up restarting the worker', async () => {
    const e = await createEngine(FIXTURE, { calibrate: false, intraOpThreads: 1 });
    try {
      for (let i = 0; i < 6; i++) await e.crashWorkerForTest();
      const after = await Promise.race([e.crashWorkerForTest().then(() => 'returned', (x: Error) => x.message), new Promise((r) => setTimeout(() => r('still pending'), 3000))]);
      expect(after).toMatch(/returned|crashed repeatedly/);
      expect((await engineError(() => e.understand({ prompt: 'describe the image', maxTokens: 2 }))).code).toBe('WORKER_CRASHED');
    } finally {
      await e.close();
    }
  });
});

describe('worker crash during a model call', () => {
  test('the call in flight is rejected with WORKER_CRASHED', async () => {
    const e = await createEngine(FIXTURE, { calibrate: false, intraOpThreads: 1 });
    const client = e.workerClient;
    const orig = client.call.bind(client);
    let decodes = 0;
    client.call = ((msg: { op: string }, tr?: ArrayBuffer[], gen?: number) => {
      // the worker dies while this decode is queued/in flight
      if (msg.op === 'decode' && ++decodes === 3) void orig({ op: '__crash' }).catch(() => {});
      return orig(msg as never, tr, gen);
    }) as typeof client.call;
    try {
      const err = await engineError(() => e.understand({ prompt: 'describe the image', maxTokens: 200, temperature: 1, seed: 4, speculation: { mode: 'off' } }));
      expect(err.code).toBe('WORKER_CRASHED');
      expect(err.message).toMatch(/in-flight requests were aborted/);
    } finally {
      client.call = orig;
      await e.close();
    }
  });
});

describe('closing while a model call runs', () => {
  test('the worker is stopped only after the call in flight, however many close at once', async () => {
    // terminating a worker inside a native onnxruntime run aborts the process; __sleep stands in for a long run
    const e = await createEngine(FIXTURE, { calibrate: false, intraOpThreads: 1 });
    const client = e.workerClient;
    const t0 = performance.now(); // before the sleep starts: load can only lengthen what is measured
    const sleeping = client.call({ op: '__sleep', ms: 400 }).catch((x: unknown) => x);
    await new Promise((r) => setTimeout(r, 50)); // the worker is now inside the call
    const first = client.close();
    // a second close (the engine's own, after the CLI's closeAllWorkers) must not cut the wait short
    const second = e.close();
    expect(client.close()).toBe(first);
    await Promise.all([first, second]);
    // the worker's 400 ms sleep began after t0, so a close that waited for it cannot end sooner
    expect(performance.now() - t0).toBeGreaterThanOrEqual(390);
    expect(await sleeping).toMatchObject({ code: 'CANCELLED' });
  });

  test('a call made in the same tick as close() is cancelled, never left pending or run after the drain', async () => {
    const e = await createEngine(FIXTURE, { calibrate: false, intraOpThreads: 1 });
    const client = e.workerClient;
    // if the late sleep ran before the drain, close() would wait the whole minute for it and the test would time out
    client.closeDrainMs = 120_000;
    // what reaches the worker: posted after the drain, the sleep would run until terminate() cut it (an abort in a native run)
    const w = (client as unknown as { worker: { postMessage(m: { op: string }, t?: readonly ArrayBuffer[]): void } }).worker;
    const post = w.postMessage.bind(w);
    const posted: string[] = [];
    w.postMessage = (m, t) => {
      posted.push(m.op);
      post(m, t);
    };
    // call() passes its closed check, then waits on readiness while close() posts its drain request
    const late = client.call({ op: '__sleep', ms: 60_000 }).then(() => 'resolved', (x: unknown) => x);
    await e.close();
    const settled = await Promise.race([late, new Promise((r) => setTimeout(() => r('still pending'), 2000))]);
    expect(settled).toMatchObject({ code: 'CANCELLED' });
    expect(posted).toEqual(['stats']); // the drain request, and never the late sleep
  }, 30_000);

  test('a worker that exits while close() drains ends the wait at once, not at the drain timeout', async () => {
    const e = await createEngine(FIXTURE, { calibrate: false, intraOpThreads: 1 });
    const client = e.workerClient;
    // neither the sleep nor the drain timeout ends within the test's timeout: only the worker's exit can end close()
    client.closeDrainMs = 120_000;
    const sleeping = client.call({ op: '__sleep', ms: 60_000 }).catch((x: unknown) => x);
    await new Promise((r) => setTimeout(r, 50));
    const w = (client as unknown as { worker: { terminate(): Promise<number> } }).worker;
    const closing = e.close();
    setTimeout(() => void w.terminate(), 20); // stands in for a native crash during the drain
    await closing;
    expect(await sleeping).toMatchObject({ code: 'CANCELLED' });
  }, 30_000);
});

describe('worker request order', () => {
  test('with the reply spin on, requests are still handled in the order they were sent', async () => {
    // the spin after a reply polls the port; a request already delivered while the previous one ran
    // (here `open`) must still go before one that arrives during the spin (its `decode`)
    const e = await createEngine(FIXTURE, { calibrate: false, intraOpThreads: 1, replySpinUs: 300_000 });
    try {
      const c = e.workerClient;
      await new Promise((r) => setTimeout(r, 600)); // the spin after init runs out
      const order: string[] = [];
      const B = 300;
      const a = c.call({ op: 'vision', pixels: new Float32Array(B * 3 * 64 * 64), batch: B }).then(() => order.push('A'));
      await new Promise((r) => setTimeout(r, 30)); // the worker is inside A's onnxruntime run
      const seq = 424242;
      const open = c.call({ op: 'open', seq, capacity: 64 }).then(() => order.push('open'), (x: Error) => order.push(`open failed: ${x.message}`));
      await a;
      const decode = c
        .call({ op: 'decode', seq, segments: [{ kind: 'ids', ids: Int32Array.of(1) }], positions: Int32Array.of(0), mask: Uint8Array.of(1), rows: 'last' })
        .then(() => order.push('decode'), (x: Error) => order.push(`decode failed: ${x.message}`));
      await Promise.all([open, decode]);
      expect(order).toEqual(['A', 'open', 'decode']);
    } finally {
      await e.close();
    }
  });
});

describe('bad input gives typed errors', () => {
  test('prompts', async () => {
    expect((await engineError(() => engine.understand({ prompt: '' }))).code).toBe('INVALID_INPUT');
    expect((await engineError(() => engine.understand({ prompt: '   ' }))).code).toBe('INVALID_INPUT');
    const unk = await engineError(() => engine.understand({ prompt: 'describe the zorblax and the quux' }));
    expect(unk.code).toBe('UNKNOWN_WORDS');
    expect(unk.details?.['words']).toEqual(['zorblax', 'quux']);
    expect(unk.message).toMatch(/zorblax, quux/);
    // words are named as written: a contraction splits into pieces, and its stray piece would puzzle
    const contraction = await engineError(() => engine.understand({ prompt: "what's the colour, it's red?" }));
    expect(contraction.message).toBe("unknown words: what's, it's");
    expect(contraction.details?.['words']).toEqual(["what's", "it's"]);
    // other punctuation separates words; special tokens are named as typed
    expect((await engineError(() => engine.understand({ prompt: 'red,zorblax circle' }))).message).toBe('unknown word: zorblax');
    expect((await engineError(() => engine.understand({ prompt: 'describe <|im_start|> the image' }))).message).toBe('unknown word: <|im_start|>');
    // <unk> typed as text too (its id is the one unknown words map to: it was named "unk")
    expect((await engineError(() => engine.understand({ prompt: 'describe <unk> the image' }))).message).toBe('unknown word: <unk>');
    const long = await engineError(() => engine.understand({ prompt: Array(300).fill('red').join(' ') }));
    expect(long.code).toBe('PROMPT_TOO_LONG');
    expect((await engineError(() => engine.generate({ prompt: 'a glorp' }))).code).toBe('UNKNOWN_WORDS');
    expect((await engineError(() => engine.generate({ prompt: '' }))).code).toBe('INVALID_INPUT');
  });

  test('out-of-range parameters name the parameter', async () => {
    const cases: Array<[Record<string, unknown>, string]> = [
      [{ temperature: -1 }, 'temperature'],
      [{ temperature: Number.NaN }, 'temperature'],
      [{ topP: 0 }, 'topP'],
      [{ topP: 1.5 }, 'topP'],
      [{ topK: -2 }, 'topK'],
      [{ maxTokens: 0 }, 'maxTokens'],
      [{ maxTokens: 2.5 }, 'maxTokens'],
      [{ seed: -1 }, 'seed'],
      [{ speculation: { mode: 'warp' } }, 'speculation.mode'],
      [{ speculation: { mode: 'chain', chainLength: 99 } }, 'speculation.chainLength'],
      [{ speculation: { mode: 'tree', treeBudget: 0 } }, 'speculation.treeBudget'],
    ];
    for (const [extra, param] of cases) {
      const err = await engineError(() => engine.understand({ prompt: 'describe the image', ...extra } as never));
      expect(err.code, param).toBe('OUT_OF_RANGE');
      expect(err.details?.['param']).toBe(param);
    }
    const gen: Array<[Record<string, unknown>, string]> = [
      [{ steps: 0, mode: 'baseline' }, 'steps'],
      [{ cfgTextScale: -1 }, 'cfgTextScale'],
      [{ cfgInterval: [0.8, 0.2], mode: 'baseline' }, 'cfgInterval'],
      [{ timestepShift: 0 }, 'timestepShift'],
      [{ mode: 'fast' }, 'mode'],
    ];
    for (const [extra, param] of gen) {
      const err = await engineError(() => engine.generate({ prompt: 'a red circle', ...extra } as never));
      expect(err.code, param).toBe('OUT_OF_RANGE');
      expect(err.details?.['param']).toBe(param);
    }
    // a number that is not finite is named as given (JSON wrote NaN as null)
    const nan = await engineError(() => engine.generate({ prompt: 'a red circle', cfgTextScale: Number.NaN }));
    expect(nan.message).toBe('cfgTextScale must be a number, got NaN');
    // sizing fields a mode never reads are refused, not ignored (the 6-NFE sampler ran 6 steps for steps: 3)
    for (const mode of ['progressive', '6nfe', '1nfe'] as const)
      for (const [extra, param] of [[{ steps: 3 }, 'steps'], [{ cfgInterval: [0.2, 0.8] }, 'cfgInterval']] as const) {
        const err = await engineError(() => engine.generate({ prompt: 'a red circle', mode, ...extra } as never));
        expect(err.code, `${mode} ${param}`).toBe('INVALID_INPUT');
        expect(err.details?.['param']).toBe(param);
      }
  });

  test('images: too small, too large, wrong data, corrupt bytes, wrong format, pixel limits', async () => {
    // other sizes are resized (fixture-sessions-images.test.ts); out-of-limit ones are typed errors
    const tiny = { width: 4, height: 4, data: new Uint8Array(4 * 4 * 3) };
    expect((await engineError(() => engine.understand({ prompt: 'describe the image', image: tiny }))).code).toBe('BAD_IMAGE');
    expect((await engineError(() => engine.generate({ prompt: 'make it red', sourceImage: tiny }))).code).toBe('BAD_IMAGE');
    const huge = { width: 5001, height: 5000, data: new Uint8Array(3) }; // refused on its size alone
    const e = await engineError(() => engine.understand({ prompt: 'describe the image', image: huge }));
    expect(e.code).toBe('BAD_IMAGE');
    expect(e.message).toMatch(/limit/);
    expect((await engineError(() => engine.generate({ prompt: 'make it red', sourceImage: huge }))).code).toBe('BAD_IMAGE');
    const short = { width: 64, height: 64, data: new Uint8Array(100) };
    expect((await engineError(() => engine.understand({ prompt: 'describe the image', image: short }))).code).toBe('BAD_IMAGE');
    const png = await sharp(Buffer.from(img64().data), { raw: { width: 64, height: 64, channels: 3 } }).png().toBuffer();
    const ok = await decodeImageBytes(new Uint8Array(png), { size: 64 });
    expect(ok.width).toBe(64);
    expect(ok.data.length).toBe(64 * 64 * 3);
    const bad = async (b: Uint8Array, lim = {}) => (await engineError(() => decodeImageBytes(b, lim))).code;
    expect(await bad(new Uint8Array([1, 2, 3, 4, 5, 6, 7, 8]))).toBe('BAD_IMAGE');
    expect(await bad(new Uint8Array(0))).toBe('BAD_IMAGE');
    expect(await bad(new Uint8Array(png.subarray(0, png.length - 40)))).toBe('BAD_IMAGE'); // truncated
    const gif = await sharp(Buffer.from(img64().data), { raw: { width: 64, height: 64, channels: 3 } }).gif().toBuffer();
    const g = await engineError(() => decodeImageBytes(new Uint8Array(gif)));
    expect(g.code).toBe('BAD_IMAGE');
    expect(g.message).toMatch(/format gif/);
    expect(await bad(new Uint8Array(png), { size: 32 })).toBe('BAD_IMAGE');
    expect(await bad(new Uint8Array(png), { maxPixels: 1000 })).toBe('BAD_IMAGE');
  });
});

describe('broken packs fail at load with the file named', () => {
  function copyPack(): string {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'hb-pack-'));
    for (const f of fs.readdirSync(FIXTURE)) if (f !== 'parity') fs.copyFileSync(path.join(FIXTURE, f), path.join(dir, f));
    return dir;
  }
  test('missing model file', async () => {
    const dir = copyPack();
    fs.rmSync(path.join(dir, 'vision.onnx'));
    const err = await engineError(() => createEngine(dir, { calibrate: false }));
    expect(err.code).toBe('MODEL_LOAD_FAILED');
    expect(err.message).toContain('vision.onnx');
  });
  test('corrupt model file', async () => {
    const dir = copyPack();
    fs.writeFileSync(path.join(dir, 'decoder.onnx'), 'this is not an onnx model');
    const err = await engineError(() => createEngine(dir, { calibrate: false }));
    expect(err.code).toBe('MODEL_LOAD_FAILED');
    expect(err.message).toContain('decoder.onnx');
  });
  test('manifest errors name the field; graph I/O checked against the real graph', async () => {
    const dir = copyPack();
    const mf = path.join(dir, 'manifest.json');
    const m = JSON.parse(fs.readFileSync(mf, 'utf8'));
    delete m.decoder.vocab;
    fs.writeFileSync(mf, JSON.stringify(m));
    let err = await engineError(() => createEngine(dir, { calibrate: false }));
    expect(err.code).toBe('MODEL_LOAD_FAILED');
    expect(err.message).toContain('decoder.vocab');
    m.decoder.vocab = 81;
    m.graphs.embed.inputs.token_ids = m.graphs.embed.inputs.input_ids;
    fs.writeFileSync(mf, JSON.stringify(m));
    err = await engineError(() => createEngine(dir, { calibrate: false }));
    expect(err.message).toMatch(/embed\.onnx.*token_ids/);
    fs.writeFileSync(mf, '{ not json');
    err = await engineError(() => createEngine(dir, { calibrate: false }));
    expect(err.message).toMatch(/manifest\.json.*invalid JSON/);
  });
  test('a manifest whose graph specs disagree with the graphs themselves fails at load, naming file and field', async () => {
    const dir = copyPack();
    const mf = path.join(dir, 'manifest.json');
    const m = JSON.parse(fs.readFileSync(mf, 'utf8'));
    // every size moved together, so the manifest agrees with itself but not with decoder.onnx (vocab 81)
    m.decoder.vocab = 90;
    m.graphs.decoder.outputs.logits.shape[2] = 90;
    fs.writeFileSync(mf, JSON.stringify(m));
    let err = await engineError(() => createEngine(dir, { calibrate: false }));
    expect(err.code).toBe('MODEL_LOAD_FAILED');
    expect(err.message).toMatch(/decoder\.onnx: graph "decoder" output "logits" has shape \[batch, seq, 81\], the manifest says \[batch, seq, 90\] \(graphs\.decoder\.outputs\.logits\)/);
    const m2 = JSON.parse(fs.readFileSync(path.join(FIXTURE, 'manifest.json'), 'utf8'));
    m2.graphs.decoder.inputs.position_ids.dtype = 'int32';
    fs.writeFileSync(mf, JSON.stringify(m2));
    err = await engineError(() => createEngine(dir, { calibrate: false }));
    expect(err.message).toMatch(/input "position_ids" is int64, the manifest says int32/);
  });
  test('a text-to-image pack (no vision graph) needs vision.image_size, and then serves', async () => {
    const dir = copyPack();
    fs.rmSync(path.join(dir, 'vision.onnx'));
    const mf = path.join(dir, 'manifest.json');
    const m = JSON.parse(fs.readFileSync(mf, 'utf8'));
    delete m.graphs.vision;
    delete m.vision;
    fs.writeFileSync(mf, JSON.stringify(m));
    // without it every generate request failed with a TypeError
    const err = await engineError(() => createEngine(dir, { calibrate: false }));
    expect(err.code).toBe('MODEL_LOAD_FAILED');
    expect(err.message).toContain('field "vision.image_size"');
    m.vision = { image_size: 64 };
    fs.writeFileSync(mf, JSON.stringify(m));
    const e = await createEngine(dir, { calibrate: false, intraOpThreads: 1 });
    try {
      expect(e.info.capabilities).toMatchObject({ generate: true, edit: false });
      const frames = await collect(e.generate({ prompt: 'a red circle', mode: 'baseline', steps: 2, seed: 1 }));
      expect(frames.at(-1)).toMatchObject({ stage: 'final', image: { width: 64, height: 64 } });
      const evs = await collect(e.understand({ prompt: 'describe the image', maxTokens: 2, speculation: { mode: 'off' } }));
      expect(evs.at(-1)).toMatchObject({ kind: 'done' });
      expect((await engineError(() => e.understand({ prompt: 'describe the image', image: { width: 64, height: 64, data: new Uint8Array(64 * 64 * 3) } }))).code).toBe('INVALID_INPUT');
    } finally {
      await e.close();
    }
  });
  test('manifest values that would break every request are refused at load, naming the field', async () => {
    const dir = copyPack();
    const mf = path.join(dir, 'manifest.json');
    const good = fs.readFileSync(mf, 'utf8');
    const cases: Array<[string, (m: any) => void, RegExp]> = [
      ['sampler_defaults.steps', (m) => (m.sampler_defaults.steps = 0), /expected a positive integer, got 0/],
      ['sampler_defaults.shift', (m) => (m.sampler_defaults.shift = -1), /expected a positive number/],
      // a default scale below 1 would run as 1 (guidance off) while requests may not ask for it
      ['sampler_defaults.cfg_text_scale', (m) => (m.sampler_defaults.cfg_text_scale = 0.5), /expected a number ≥ 1 \(1 = no guidance\), got 0\.5/],
      ['sampler_defaults.cfg_renorm_min', (m) => (m.sampler_defaults.cfg_renorm_min = -0.1), /expected a non-negative number, got -0\.1/],
      // a distilled graph's range and default: requests may not go below 1 whatever the pack says
      ['distilled.denoise_6nfe.cfg_text_range', (m) => ((m.distilled ??= {}).denoise_6nfe = { cfg_text_range: [0.5, 5] }), /expected \[lo, hi\] with 1 ≤ lo ≤ hi .*got \[0\.5,5\]/],
      ['distilled.denoise_1nfe.cfg_text_scale', (m) => ((m.distilled ??= {}).denoise_1nfe = { cfg_text_scale: 0.5 }), /expected a number ≥ 1, got 0\.5/],
      ['vision.image_size', (m) => (m.vision.image_size = 0), /expected a positive integer/],
      ['special_tokens.eos', (m) => (m.special_tokens.eos = 999), /token id in \[0, 81\), got 999/],
      ['graphs.decoder.file', (m) => (m.graphs.decoder.file = '../../../../etc/passwd'), /inside the pack's folder/],
      ['tokenizer', (m) => (m.tokenizer = '/etc/passwd'), /inside the pack's folder/],
      // sizes the engine builds tensors from, against the graph specs (each loaded, then failed every request)
      ['decoder.vocab', (m) => (m.decoder.vocab = 80), /80 disagrees with graphs\.decoder\.outputs\.logits, whose dimension 2 is 81/],
      ['decoder.hidden', (m) => (m.decoder.hidden = 48), /48 disagrees with graphs\.decoder\.inputs\.inputs_embeds/],
      ['decoder.heads', (m) => (m.decoder.heads = 4), /4 disagrees with graphs\.decoder\.inputs\.past_key_values\.0\.key, whose dimension 1 is 2/],
      ['decoder.layers', (m) => (m.decoder.layers = 3), /3 disagrees with graphs\.decoder\.inputs, which has 2 layers/],
      ['vision.tokens', (m) => (m.vision.tokens = 9), /9 disagrees with graphs\.vision\.outputs\.image_embeds/],
    ];
    for (const [field, edit, msg] of cases) {
      const m = JSON.parse(good);
      edit(m);
      fs.writeFileSync(mf, JSON.stringify(m));
      const err = await engineError(() => createEngine(dir, { calibrate: false }));
      expect(err.code).toBe('MODEL_LOAD_FAILED');
      expect(err.message).toContain(`field "${field}"`);
      expect(err.message).toMatch(msg);
    }
  });
});
