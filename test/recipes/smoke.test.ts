// Runs the Python recipe smoke test (tiny data -> VAE -> unified -> export) and loads the exported pack in
// onnxruntime-node: parity against the PyTorch references, plus a prefill + KV-cache decode + denoise chain.
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import * as ort from 'onnxruntime-node';
import { GRAPH_NAMES, recipeSmokeEnabled, runRecipeScript, maxAbsDiff, openSession, readJson, toOrt, type Manifest, type ParityCase } from './helpers.ts';

const enabled = recipeSmokeEnabled('recipes smoke');

describe.skipIf(!enabled)('recipes smoke test (python train + export, then onnxruntime-node)', () => {
  let dir = '';
  let pack = '';
  let manifest: Manifest;

  beforeAll(() => {
    dir = fs.mkdtempSync(path.join(os.tmpdir(), 'hb-smoke-'));
    pack = path.join(dir, 'pack');
    runRecipeScript('models/recipes/smoke_test.py', pack, 170_000);
    manifest = readJson<Manifest>(path.join(pack, 'manifest.json'));
  }, 180_000);

  afterAll(() => {
    if (dir) fs.rmSync(dir, { recursive: true, force: true });
  });

  it('exports every graph listed in the manifest', async () => {
    for (const g of GRAPH_NAMES) {
      const spec = manifest.graphs[g]!;
      const sess = await openSession(path.join(pack, spec.file));
      expect([...sess.inputNames].sort()).toEqual(Object.keys(spec.inputs).sort());
      expect([...sess.outputNames].sort()).toEqual(Object.keys(spec.outputs).sort());
      await sess.release();
    }
    expect(fs.existsSync(path.join(pack, 'tokenizer.json'))).toBe(true);
  });

  it('matches the PyTorch references (max |diff| <= 1e-4)', async () => {
    const files = fs.readdirSync(path.join(pack, 'parity')).filter((f) => f.endsWith('.json'));
    expect(files.length).toBeGreaterThanOrEqual(GRAPH_NAMES.length);
    for (const f of files) {
      const c = readJson<ParityCase>(path.join(pack, 'parity', f));
      const sess = await openSession(path.join(pack, manifest.graphs[c.graph]!.file));
      const feeds: Record<string, ort.Tensor> = {};
      for (const [k, v] of Object.entries(c.inputs)) feeds[k] = toOrt(v);
      const out = await sess.run(feeds);
      for (const [k, want] of Object.entries(c.outputs)) expect(maxAbsDiff(out[k]!, want), `${f} ${k}`).toBeLessThanOrEqual(1e-4);
      await sess.release();
    }
  });

  it('exports the factorised vision encoder (foreground mask + colour feature) that matches PyTorch', async () => {
    const factor = `${pack}-work/factor-pack`;
    const fm = readJson<Manifest>(path.join(factor, 'manifest.json'));
    const c = readJson<ParityCase>(path.join(factor, 'parity', 'vision.json'));
    const sess = await openSession(path.join(factor, fm.graphs.vision!.file));
    const feeds: Record<string, ort.Tensor> = {};
    for (const [k, v] of Object.entries(c.inputs)) feeds[k] = toOrt(v);
    const out = await sess.run(feeds);
    for (const [k, want] of Object.entries(c.outputs)) expect(maxAbsDiff(out[k]!, want), k).toBeLessThanOrEqual(1e-4);
    // the same graph family as the RGB pack: only the vision encoder's weights and ops differ
    expect(Object.keys(fm.graphs).sort()).toEqual(Object.keys(manifest.graphs).sort());
    await sess.release();
  });

  it('runs a text prefill, a KV-cache decode step and a denoiser step against the cache', async () => {
    const d = manifest.decoder;
    const st = manifest.special_tokens;
    const embed = await openSession(path.join(pack, manifest.graphs.embed!.file));
    const dec = await openSession(path.join(pack, manifest.graphs.decoder!.file));
    const den = await openSession(path.join(pack, manifest.graphs.denoiser!.file));
    const ids = [st.bos!, st.gen_start!];
    const emb = (await embed.run({ input_ids: new ort.Tensor('int64', BigInt64Array.from(ids.map(BigInt)), [1, ids.length]) })).inputs_embeds!;
    const T = ids.length;
    const mask = new Float32Array(T * T);
    for (let i = 0; i < T; i++) for (let j = i + 1; j < T; j++) mask[i * T + j] = -1e9;
    const feeds: Record<string, ort.Tensor> = {
      inputs_embeds: emb,
      position_ids: new ort.Tensor('int64', BigInt64Array.from([0n, 1n]), [1, T]),
      attention_mask: new ort.Tensor('float32', mask, [1, 1, T, T]),
    };
    for (let i = 0; i < d.layers; i++) for (const kv of ['key', 'value']) feeds[`past_key_values.${i}.${kv}`] = new ort.Tensor('float32', new Float32Array(0), [1, d.heads, 0, d.head_dim]);
    const pre = await dec.run(feeds);
    expect(pre.logits!.dims).toEqual([1, T, d.vocab]);
    expect(pre.hidden_states!.dims).toEqual([1, T, d.layers, d.hidden]);
    // one decode step with the cache
    const step: Record<string, ort.Tensor> = {
      inputs_embeds: (await embed.run({ input_ids: new ort.Tensor('int64', BigInt64Array.from([BigInt(st.eos!)]), [1, 1]) })).inputs_embeds!,
      position_ids: new ort.Tensor('int64', BigInt64Array.from([2n]), [1, 1]),
      attention_mask: new ort.Tensor('float32', new Float32Array(T + 1), [1, 1, 1, T + 1]),
    };
    for (let i = 0; i < d.layers; i++) for (const kv of ['key', 'value']) step[`past_key_values.${i}.${kv}`] = pre[`present.${i}.${kv}`]!;
    const dout = await dec.run(step);
    expect(dout['present.0.key']!.dims).toEqual([1, d.heads, T + 1, d.head_dim]);
    // denoiser on the prefill cache
    const lat = manifest.latent;
    const N = (lat.height / lat.patch) * (lat.width / lat.patch);
    const td = lat.channels * lat.patch * lat.patch;
    const x = new Float32Array(N * td).map((_, i) => Math.sin(i));
    const g: Record<string, ort.Tensor> = {
      latent_tokens: new ort.Tensor('float32', x, [1, N, td]),
      timestep: new ort.Tensor('float32', Float32Array.from([0.5]), [1]),
      position_ids: new ort.Tensor('int64', new BigInt64Array(N).fill(2n), [1, N]),
      attention_mask: new ort.Tensor('float32', new Float32Array(N * (T + N)), [1, 1, N, T + N]),
    };
    for (let i = 0; i < d.layers; i++) for (const kv of ['key', 'value']) g[`past_key_values.${i}.${kv}`] = pre[`present.${i}.${kv}`]!;
    const v = await den.run(g);
    expect(v.velocity!.dims).toEqual([1, N, td]);
    expect(Array.from(v.velocity!.data as Float32Array).every(Number.isFinite)).toBe(true);
    await Promise.all([embed.release(), dec.release(), den.release()]);
  });

  it('declares prompts.think (trained with --think) and the engine runs think mode on it', async () => {
    expect((manifest as { prompts?: { think?: boolean } }).prompts?.think).toBe(true);
    const { createEngine } = await import('../../src/engine/index.ts');
    const engine = await createEngine(pack, { calibrate: false, intraOpThreads: 1 });
    try {
      expect(engine.info.capabilities.think).toBe(true);
      const frames = [];
      for await (const f of engine.generate({ prompt: 'a photo of a red circle', mode: '1nfe', seed: 5, think: true })) frames.push(f);
      const final = frames.find((f) => f.stage === 'final')!;
      expect(typeof final.thought).toBe('string');
      expect(final.thought!.length).toBeGreaterThan(0);
    } finally {
      await engine.close();
    }
  });
});
