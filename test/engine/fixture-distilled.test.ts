// The distilled samplers (denoise_6nfe.onnx / denoise_1nfe.onnx: guidance inside the graph, one
// evaluation per step, the manifest's timestep grid) on test/fixtures/tiny-pack-accel.
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, expect, test } from 'vitest';
import { createEngine, type LocalEngine } from '../../src/engine/index.ts';
import { collect, engineError, FIXTURE } from './fixture-helpers.ts';
import { shiftedTimesteps } from '../../src/engine/generation/scheduler.ts';

const ACCEL = path.join(path.dirname(FIXTURE), 'tiny-pack-accel');
let engine: LocalEngine;

beforeAll(async () => {
  engine = await createEngine(ACCEL, { calibrate: false, intraOpThreads: 1 });
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
  // one context prefill (no CFG contexts) + 7 distilled calls + a VAE decode per frame (7)
  expect(after.modelCalls - before.modelCalls).toBe(1 + 7 + 7);
});

test('guidance scales reach the graph and are checked against the trained range', async () => {
  const a = await collect(engine.generate({ prompt: 'a red circle', mode: '6nfe', seed: 3, cfgTextScale: 2 }));
  const b = await collect(engine.generate({ prompt: 'a red circle', mode: '6nfe', seed: 3, cfgTextScale: 5 }));
  expect(a[0]!.image.sha256).not.toBe(b[0]!.image.sha256);
  const err = await engineError(() => engine.generate({ prompt: 'a red circle', mode: '6nfe', cfgTextScale: 9 }));
  expect(err.code).toBe('OUT_OF_RANGE');
  expect(err.details?.['param']).toBe('cfgTextScale');
  // the baseline is not limited to the distilled range
  const base = await collect(engine.generate({ prompt: 'a red circle', mode: 'baseline', steps: 4, cfgTextScale: 9, seed: 1 }));
  expect(base[0]!.sampler).toBe('euler-4 baseline');
  // checkGenerate (the gateway's check before it hands out a job id) applies the same range, with no model call
  const calls = (await engine.workerStats()).modelCalls;
  expect(() => engine.checkGenerate!({ prompt: 'a red circle', mode: 'progressive', cfgTextScale: 5.5 })).toThrow(/cfgTextScale must be in \[1, 5\] for the \d-NFE sampler/);
  expect(() => engine.checkGenerate!({ prompt: 'a red circle', mode: '1nfe', cfgTextScale: 5 })).not.toThrow();
  expect((await engine.workerStats()).modelCalls).toBe(calls);
  // info.guidance is the manifest's, for the client to read
  expect(engine.info.guidance.sixStep).toEqual({ text: { default: 4, min: 1, max: 5 }, image: { default: 1.5, min: 1, max: 2.5 } });
  expect(engine.info.guidance.baseline.text).toEqual({ default: 4, min: 1, max: 20 });
});

test('text-to-image refuses an image guidance scale (it has no image to guide by)', async () => {
  const err = await engineError(() => engine.generate({ prompt: 'a red circle', mode: '6nfe', cfgImageScale: 2 }));
  expect(err.code).toBe('INVALID_INPUT');
  expect(err.details?.['param']).toBe('cfgImageScale');
});

test('editing: 6 distilled evaluations; the baseline still uses the base denoiser with CFG', async () => {
  const src = { width: 64, height: 64, data: new Uint8Array(64 * 64 * 3).fill(40) };
  const e = await collect(engine.generate({ prompt: 'make the circle blue', sourceImage: src, mode: '6nfe', seed: 1 }));
  expect(e[0]!.nfe).toBe(6);
  const base = await collect(engine.generate({ prompt: 'make the circle blue', sourceImage: src, mode: 'baseline', steps: 10, seed: 1 }));
  expect(base[0]!.nfe).toBeGreaterThan(10);
});

const accelManifest = JSON.parse(fs.readFileSync(path.join(ACCEL, 'manifest.json'), 'utf8'));

/** Runs a request and records each distilled/denoiser step the worker is asked for, as [graph, t]. */
async function denoiseSteps(req: Parameters<LocalEngine['generate']>[0]) {
  const client = engine.workerClient;
  const orig = client.call.bind(client);
  const seen: Array<[string, number]> = [];
  client.call = ((msg: { op: string; graph?: string; t?: number; append?: boolean }, tr?: ArrayBuffer[], gen?: number) => {
    if (msg.op === 'denoise' && !msg.append) seen.push([msg.graph!, msg.t!]);
    return orig(msg as never, tr, gen);
  }) as typeof client.call;
  try {
    return { seen, frames: await collect(engine.generate(req)) };
  } finally {
    client.call = orig;
  }
}

test('the distilled samplers step on the manifest\'s timestep grids', async () => {
  const { seen } = await denoiseSteps({ prompt: 'a red circle', mode: 'progressive', seed: 2 });
  const grid6: number[] = accelManifest.distilled.denoise_6nfe.timesteps;
  expect(seen).toEqual([['denoise_1nfe', 1], ...grid6.slice(0, 6).map((t) => ['denoise_6nfe', t])]);
});

test('an explicit timestepShift replaces the distilled grid with the shifted one', async () => {
  const { seen, frames } = await denoiseSteps({ prompt: 'a red circle', mode: 'progressive', seed: 2, timestepShift: 0.5 });
  const want = [...shiftedTimesteps(6, 0.5)].slice(0, 6);
  expect(want).not.toEqual(accelManifest.distilled.denoise_6nfe.timesteps.slice(0, 6));
  expect(seen.map(([g]) => g)).toEqual(['denoise_1nfe', ...want.map(() => 'denoise_6nfe')]);
  expect(seen[0]![1]).toBe(1); // a 1-step grid is [1, 0] whatever the shift
  seen.slice(1).forEach(([, t], i) => expect(t).toBeCloseTo(want[i]!, 12));
  const plain = await collect(engine.generate({ prompt: 'a red circle', mode: 'progressive', seed: 2 }));
  expect(frames.at(-1)!.image.sha256).not.toBe(plain.at(-1)!.image.sha256);
  expect(frames[0]!.image.sha256).toBe(plain[0]!.image.sha256);
});

/** A copy of the accel fixture whose manifest is edited by `edit`. */
function packWith(edit: (m: { distilled: Record<string, Record<string, unknown>> }) => void): string {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'hb-accel-'));
  for (const f of fs.readdirSync(ACCEL)) if (f !== 'parity') fs.copyFileSync(path.join(ACCEL, f), path.join(dir, f));
  const mf = path.join(dir, 'manifest.json');
  const m = JSON.parse(fs.readFileSync(mf, 'utf8'));
  edit(m);
  fs.writeFileSync(mf, JSON.stringify(m));
  return dir;
}

test('a distilled graph\'s own default guidance scales apply when the request gives none', async () => {
  const dir = packWith((m) => {
    m.distilled.denoise_6nfe!.cfg_text_scale = 2; // the pack's sampler default stays 4
    m.distilled.denoise_6nfe!.cfg_image_scale = 2.5;
  });
  const other = await createEngine(dir, { calibrate: false, intraOpThreads: 1 });
  try {
    const sha = async (e: LocalEngine, r: Record<string, unknown>) => (await collect(e.generate({ prompt: 'a red circle', mode: '6nfe', seed: 3, ...r })))[0]!.image.sha256;
    const byDefault = await sha(other, {});
    expect(byDefault).toBe(await sha(engine, { cfgTextScale: 2 }));
    expect(byDefault).not.toBe(await sha(engine, {}));
    expect(await sha(other, { cfgTextScale: 4 })).toBe(await sha(engine, {})); // the request's scale wins
    const src = { width: 64, height: 64, data: new Uint8Array(64 * 64 * 3).fill(40) };
    expect(await sha(other, { prompt: 'make the circle blue', sourceImage: src, cfgTextScale: 4 }))
      .toBe(await sha(engine, { prompt: 'make the circle blue', sourceImage: src, cfgImageScale: 2.5 }));
  } finally {
    await other.close();
    fs.rmSync(dir, { recursive: true, force: true });
  }
});

test('a distilled default scale outside the graph\'s training range is refused at load, naming the field', async () => {
  const dir = packWith((m) => {
    m.distilled.denoise_1nfe!.cfg_text_scale = 9;
  });
  try {
    const err = await engineError(() => createEngine(dir, { calibrate: false }));
    expect(err.code).toBe('MODEL_LOAD_FAILED');
    expect(err.message).toContain('distilled.denoise_1nfe.cfg_text_scale');
    expect(err.message).toContain('[1, 5]');
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
});
