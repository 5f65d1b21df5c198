// The distilled-sampler hooks (denoise_6nfe.onnx / denoise_1nfe.onnx: guidance inside the graph,
// one evaluation per step) with random-weight stand-ins made by fixtures/distilled/make_distilled.py.
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, beforeAll, expect, test } from 'vitest';
import { createEngine, type LocalEngine } from '../../src/engine/index.ts';
import { collect, FIXTURE } from './fixture-helpers.ts';

const HERE = path.dirname(fileURLToPath(import.meta.url));
let engine: LocalEngine;

beforeAll(async () => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'hb-distilled-pack-'));
  for (const f of fs.readdirSync(FIXTURE)) if (f !== 'parity') fs.copyFileSync(path.join(FIXTURE, f), path.join(dir, f));
  const m = JSON.parse(fs.readFileSync(path.join(dir, 'manifest.json'), 'utf8'));
  for (const g of ['denoise_6nfe', 'denoise_1nfe']) {
    fs.copyFileSync(path.join(HERE, 'fixtures/distilled', `${g}.onnx`), path.join(dir, `${g}.onnx`));
    const base = m.graphs.denoiser;
    m.graphs[g] = {
      file: `${g}.onnx`,
      inputs: { ...base.inputs, cfg_text_scale: { dtype: 'float32', shape: ['batch'] }, cfg_image_scale: { dtype: 'float32', shape: ['batch'] } },
      outputs: base.outputs,
    };
  }
  fs.writeFileSync(path.join(dir, 'manifest.json'), JSON.stringify(m));
  engine = await createEngine(dir, { calibrate: false, intraOpThreads: 1 });
});
afterAll(async () => {
  await engine?.close();
});

test('progressive with distilled graphs: 1 evaluation for the preview, 6 for the final, one context', async () => {
  expect(engine.info.capabilities.sixStep).toBe(true);
  expect(engine.info.capabilities.oneStep).toBe(true);
  const before = await engine.workerStats();
  const frames = await collect(engine.generate({ prompt: 'a red circle', mode: 'progressive', seed: 3, intermediatePreviews: true }));
  const after = await engine.workerStats();
  expect(frames.map((f) => [f.stage, f.nfe, f.step])).toEqual([
    ['preview', 1, 1],
    ['preview', 1, 1],
    ['preview', 2, 2],
    ['preview', 3, 3],
    ['preview', 4, 4],
    ['preview', 5, 5],
    ['final', 6, 6],
  ]);
  expect(frames[0]!.sampler).toBe('distilled-1nfe');
  expect(frames[6]!.sampler).toBe('distilled-6nfe');
  // one context prefill (no CFG contexts) + 7 denoiser calls + 2 VAE decodes
  expect(after.modelCalls - before.modelCalls).toBe(1 + 7 + 2);
  // the guidance scales reach the graph
  const a = await collect(engine.generate({ prompt: 'a red circle', mode: '6nfe', seed: 3, cfgTextScale: 2 }));
  const b = await collect(engine.generate({ prompt: 'a red circle', mode: '6nfe', seed: 3, cfgTextScale: 6 }));
  expect(a[0]!.image.sha256).not.toBe(b[0]!.image.sha256);
  // editing: 6 evaluations too; the baseline still uses the base denoiser with CFG
  const src = { width: 64, height: 64, data: new Uint8Array(64 * 64 * 3).fill(40) };
  const e = await collect(engine.generate({ prompt: 'make the circle blue', sourceImage: src, mode: '6nfe', seed: 1 }));
  expect(e[0]!.nfe).toBe(6);
  const base = await collect(engine.generate({ prompt: 'make the circle blue', sourceImage: src, mode: 'baseline', steps: 10, seed: 1 }));
  expect(base[0]!.sampler).toBe('euler-10 baseline');
  expect(base[0]!.nfe).toBeGreaterThan(10);
});
