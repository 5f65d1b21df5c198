import { afterAll, beforeAll, describe, expect, test } from 'vitest';
import { createEngine, type LocalEngine } from '../../src/engine/index.ts';
import { cfgActive, combineCfg, EulerFlowScheduler, patchify, shiftedTimesteps, unpatchify } from '../../src/engine/generation/scheduler.ts';
import { chwToRgb, rgbToChw } from '../../src/engine/image/pixels.ts';
import { Rng } from '../../src/engine/rng.ts';
import sharp from 'sharp';
import { collect, FIXTURE } from './fixture-helpers.ts';
import { fixedCosts } from '../../bench/generate.ts';
import { WorkerSequence } from '../../src/engine/understand/worker-target.ts';
import { causalMask } from '../../src/engine/understand/target.ts';

describe('flow-matching sampler units', () => {
  test('BAGEL shift and the 100 / 132 NFE accounting', () => {
    const ts = shiftedTimesteps(50, 3);
    expect(ts[0]).toBe(1);
    expect(ts[50]).toBe(0);
    for (let i = 1; i <= 50; i++) expect(ts[i]!).toBeLessThan(ts[i - 1]!);
    expect(ts[25]).toBeCloseTo((3 * 0.5) / (1 + 2 * 0.5), 12);
    const steps = Array.from(ts.slice(0, 50));
    expect(steps.filter((t) => cfgActive(t, [0, 1])).length * 2 + steps.filter((t) => !cfgActive(t, [0, 1])).length).toBe(100);
    const inEdit = steps.filter((t) => cfgActive(t, [0.4, 1])).length;
    expect(inEdit).toBe(41);
    expect(50 + 2 * inEdit).toBe(132);
  });

  test('Euler step and x0 prediction follow the pack convention', () => {
    const s = new EulerFlowScheduler(4, 1);
    const x0 = Float32Array.from([0.5, -0.25]);
    const eps = Float32Array.from([1, 2]);
    // exact velocity of a straight path: x_t = (1-t)x0 + t·eps, v = eps - x0 → Euler is exact
    let x: Float32Array = Float32Array.from(eps);
    for (let i = 0; i < 4; i++) {
      const v = Float32Array.from([eps[0]! - x0[0]!, eps[1]! - x0[1]!]);
      const r = s.step(v, i, x);
      expect(r.x0[0]).toBeCloseTo(0.5, 6);
      x = r.prev;
    }
    expect(x[0]).toBeCloseTo(0.5, 6);
    expect(x[1]).toBeCloseTo(-0.25, 6);
  });

  test('dual CFG and renorm', () => {
    const v = Float32Array.from([1, 0, 0, 1]);
    const vt = Float32Array.from([0, 0, 0, 0]);
    const vi = Float32Array.from([1, 1, 1, 1]);
    const p = { textScale: 4, imageScale: 1.5, interval: [0, 1] as [number, number], renormType: 'global' as const, renormMin: 1 };
    const noRenorm = combineCfg(v, vt, vi, p, 2);
    // v_text = 4v; v = vi + 1.5 (4v - vi)
    expect(Array.from(noRenorm)).toEqual([5.5, -0.5, -0.5, 5.5]);
    const g = combineCfg(v, vt, vi, { ...p, renormMin: 0 }, 2);
    const norm = (a: Float32Array) => Math.hypot(...a);
    expect(norm(g)).toBeCloseTo(norm(v), 5);
    const ch = combineCfg(v, vt, null, { ...p, renormMin: 0, renormType: 'text_channel' }, 2);
    expect(Math.hypot(ch[0]!, ch[1]!)).toBeCloseTo(1, 5);
    expect(combineCfg(v, vt, vi, { ...p, textScale: 1, imageScale: 1 }, 2)).toBe(v);
    // text_channel renorms v_text only (BAGEL): with text guidance off, image guidance is not renormed
    // (before, it was renormed per token, so the image term vanished at text scale 1 and came back above it)
    const imgOnly = combineCfg(v, null, vi, { ...p, textScale: 1, imageScale: 2, renormMin: 0, renormType: 'text_channel' }, 2);
    expect(Array.from(imgOnly)).toEqual([1, -1, -1, 1]); // vi + 2 (v - vi)
    const justAbove = combineCfg(v, v, vi, { ...p, textScale: 1.0001, imageScale: 2, renormMin: 0, renormType: 'text_channel' }, 2);
    for (let k = 0; k < 4; k++) expect(justAbove[k]).toBeCloseTo(imgOnly[k]!, 3);
  });

  test('patchify round trip and layout', () => {
    const C = 4, h = 8, w = 8, p = 2;
    const lat = Float32Array.from({ length: C * h * w }, (_, i) => i);
    const tok = patchify(lat, C, h, w, p);
    // token 1 = patch (0,1): channel 0 rows 0..1 cols 2..3 first
    expect(Array.from(tok.subarray(16, 20))).toEqual([2, 3, 10, 11]);
    expect(Array.from(unpatchify(tok, C, h, w, p))).toEqual(Array.from(lat));
  });

  test('pixels: box down-sampling, nearest up-sampling, latent preview', () => {
    const img = { width: 4, height: 4, data: new Uint8Array(48).map((_, i) => (i % 3 === 0 ? 255 : 0)) };
    const chw = rgbToChw(img, 2);
    expect(chw[0]).toBeCloseTo(1, 6);
    expect(chw[4]).toBeCloseTo(-1, 6);
    const back = chwToRgb(chw, 2, 4);
    expect(Array.from(back.data)).toEqual(Array.from(img.data));
  });
});

let engine: LocalEngine;
beforeAll(async () => {
  engine = await createEngine(FIXTURE, { calibrate: false, intraOpThreads: 1 });
});
afterAll(async () => {
  await engine?.close();
});

describe('fixture: generation', () => {
  test('progressive: 1-NFE preview, intermediate 6-step previews, final PNG; all tagged', async () => {
    const frames = await collect(engine.generate({ prompt: 'a red circle', mode: 'progressive', seed: 4, intermediatePreviews: true }));
    expect(frames.map((f) => f.stage)).toEqual(['preview', 'preview', 'preview', 'preview', 'preview', 'preview', 'final']);
    expect(frames[0]!.image.mimeType).toBe('image/jpeg');
    // intermediate previews are VAE-decoded, like the 1-NFE preview
    expect(frames[1]!.image.mimeType).toBe('image/jpeg');
    const fin = frames[6]!;
    expect(fin.image.mimeType).toBe('image/png');
    expect(fin.step).toBe(6);
    expect(fin.rgb.width).toBe(64);
    expect(fin.seed).toBe(4);
    // the base denoiser stands in for the absent distilled graphs: 2 contexts × 6 steps
    expect(fin.nfe).toBe(12);
    expect(frames[0]!.nfe).toBe(2);
    for (let i = 1; i < frames.length; i++) expect(frames[i]!.elapsedMs).toBeGreaterThanOrEqual(frames[i - 1]!.elapsedMs);
    const meta = await sharp(Buffer.from(fin.image.bytes)).metadata();
    expect([meta.format, meta.width, meta.height]).toEqual(['png', 64, 64]);
    const raw = await sharp(Buffer.from(fin.image.bytes)).raw().toBuffer();
    expect(Buffer.compare(raw, Buffer.from(fin.rgb.data))).toBe(0);
  });

  test('seeds make images reproducible', async () => {
    const a = await collect(engine.generate({ prompt: 'a blue square', mode: '6nfe', seed: 11 }));
    const b = await collect(engine.generate({ prompt: 'a blue square', mode: '6nfe', seed: 11 }));
    const c = await collect(engine.generate({ prompt: 'a blue square', mode: '6nfe', seed: 12 }));
    expect(a[0]!.image.sha256).toBe(b[0]!.image.sha256);
    expect(a[0]!.image.sha256).not.toBe(c[0]!.image.sha256);
  });

  test('baseline NFE: 100 for text-to-image, 132 for editing (50 steps)', async () => {
    const t2i = await collect(engine.generate({ prompt: 'a red circle', mode: 'baseline', seed: 1 }));
    expect(t2i.map((f) => [f.stage, f.nfe, f.step])).toEqual([['final', 100, 50]]);
    const src = { width: 64, height: 64, data: new Uint8Array(64 * 64 * 3).map((_, i) => (i * 13) % 256) };
    const edit = await collect(engine.generate({ prompt: 'make the circle blue', sourceImage: src, mode: 'baseline', seed: 1 }));
    expect(edit.map((f) => [f.stage, f.nfe, f.step])).toEqual([['final', 132, 50]]);
    // editing conditions on the source image
    const other = { width: 64, height: 64, data: new Uint8Array(64 * 64 * 3).fill(200) };
    const edit2 = await collect(engine.generate({ prompt: 'make the circle blue', sourceImage: other, mode: '1nfe', seed: 1 }));
    const edit3 = await collect(engine.generate({ prompt: 'make the circle blue', sourceImage: src, mode: '1nfe', seed: 1 }));
    expect(edit2[0]!.image.sha256).not.toBe(edit3[0]!.image.sha256);
  }, 30000);

  test('frame timings report each fixed cost separately: prefill, ViT encode, VAE encode, VAE decode, image encode', async () => {
    const src = { width: 64, height: 64, data: new Uint8Array(64 * 64 * 3).map((_, i) => (i * 7) % 256) };
    const edit = (await collect(engine.generate({ prompt: 'make the circle blue', sourceImage: src, mode: '1nfe', seed: 5 }))).at(-1)!;
    const t = edit.timings!;
    for (const k of ['prefillMs', 'vitEncodeMs', 'vaeEncodeMs', 'encodeSourceMs', 'samplingMs', 'decodeMs', 'imageEncodeMs'] as const) {
      expect(typeof t[k], k).toBe('number');
      expect(t[k]!, k).toBeGreaterThanOrEqual(0);
    }
    // both encoders ran, each timed on its own; the source-encode total is their sum
    expect(t.vitEncodeMs!).toBeGreaterThan(0);
    expect(t.vaeEncodeMs!).toBeGreaterThan(0);
    expect(t.encodeSourceMs).toBeCloseTo(t.vitEncodeMs! + t.vaeEncodeMs!, 9);
    // the benchmark's JSON reports them as separate fields
    expect(Object.keys(fixedCosts(t, true))).toEqual(['prefill', 'vit_encode', 'vae_encode', 'vae_decode', 'image_encode']);
    expect(fixedCosts(t, true).vae_encode).toBe(t.vaeEncodeMs);
    expect(fixedCosts(t, true).vit_encode).toBe(t.vitEncodeMs);
    // text-to-image encodes no source
    const t2i = (await collect(engine.generate({ prompt: 'a red circle', mode: '1nfe', seed: 5 }))).at(-1)!.timings!;
    expect([t2i.vitEncodeMs, t2i.vaeEncodeMs, t2i.encodeSourceMs]).toEqual([0, 0, 0]);
    expect(Object.keys(fixedCosts(t2i, false))).toEqual(['prefill', 'vae_decode', 'image_encode']);
  });

  test('CFG off uses only the conditional context', async () => {
    const f = await collect(engine.generate({ prompt: 'a red circle', mode: 'baseline', steps: 8, cfgTextScale: 1, seed: 2 }));
    expect(f[0]!.nfe).toBe(8);
  });
});

describe('rng noise', () => {
  test('fillNormal is seeded', () => {
    expect(Array.from(new Rng(1).fillNormal(new Float32Array(4)))).toEqual(Array.from(new Rng(1).fillNormal(new Float32Array(4))));
  });

  test('seeds past 2^32 no longer draw the noise of a 32-bit seed; 32-bit seeds are unchanged', () => {
    const noise = (seed: number) => Array.from(new Rng(seed).fillNormal(new Float32Array(8)));
    // the seed was folded to (low 32 bits) XOR (the rest): each pair below drew the same noise
    for (const [a, b] of [[2 ** 32, 1], [2 ** 32 + 1, 0], [2 ** 32 + 7, 6], [2 ** 33, 2], [2 ** 53 - 1, 0xffe00000]]) expect(noise(a), `${a} vs ${b}`).not.toEqual(noise(b));
    // the first value of seed 1 as every release so far drew it (images of 32-bit seeds reproduce)
    expect(new Rng(1).nextU32()).toBe(1828152527);
  });
});

describe('fixture: batched CFG', () => {
  test('one batched denoiser call per CFG step gives the same velocities as separate calls', async () => {
    const sep = await createEngine(FIXTURE, { calibrate: false, intraOpThreads: 1, batchCfg: false });
    try {
      const src = { width: 64, height: 64, data: new Uint8Array(64 * 64 * 3).map((_, i) => (i * 31) % 256) };
      for (const req of [{ prompt: 'a red circle' }, { prompt: 'make the circle blue', sourceImage: src }]) {
        const before = (await engine.workerStats()).modelCalls;
        const a = await collect(engine.generate({ ...req, mode: 'baseline', steps: 10, seed: 3 }));
        const batchedCalls = (await engine.workerStats()).modelCalls - before;
        const before2 = (await sep.workerStats()).modelCalls;
        const b = await collect(sep.generate({ ...req, mode: 'baseline', steps: 10, seed: 3 }));
        const sepCalls = (await sep.workerStats()).modelCalls - before2;
        expect(a[0]!.nfe).toBe(b[0]!.nfe);
        expect(batchedCalls).toBeLessThan(sepCalls);
        let maxDiff = 0;
        for (let i = 0; i < a[0]!.rgb.data.length; i++) maxDiff = Math.max(maxDiff, Math.abs(a[0]!.rgb.data[i]! - b[0]!.rgb.data[i]!));
        expect(maxDiff).toBeLessThanOrEqual(4);
      }
      // velocities, directly: contexts of different lengths, padded and masked in the batch
      const client = engine.workerClient;
      const seqs: WorkerSequence[] = [];
      for (const ids of [[1, 30, 66, 35, 8], [1, 8], [1, 10, 56, 25, 16, 71, 40, 8]]) {
        const s = await WorkerSequence.open(client, 81);
        await s.forward(Int32Array.from(ids), Int32Array.from(ids.map((_, i) => i)), causalMask(ids.length), 'last');
        seqs.push(s);
      }
      const latent = new Rng(5).fillNormal(new Float32Array(16 * 16));
      const call = (batch: boolean) =>
        client.call<Float32Array>({ op: 'denoise', graph: 'denoiser', seqs: seqs.map((s) => s.id), positions: [5, 2, 8], latent, t: 0.7, append: false, batch });
      const vb = await call(true);
      const vs = await call(false);
      let md = 0;
      for (let i = 0; i < vs.length; i++) md = Math.max(md, Math.abs(vb[i]! - vs[i]!));
      expect(md).toBeLessThan(1e-4);
      // and the contexts matter (so the comparison above is not vacuous)
      let dctx = 0;
      for (let i = 0; i < 256; i++) dctx = Math.max(dctx, Math.abs(vs[i]! - vs[256 + i]!));
      expect(dctx).toBeGreaterThan(1e-3);
      for (const s of seqs) await s.close();
    } finally {
      await sep.close();
    }
  });
});
