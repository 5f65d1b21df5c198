// PyTorch vs onnxruntime-node parity for the acceleration graphs of test/fixtures/tiny-pack-accel
// (draft.onnx, denoise_6nfe.onnx, denoise_1nfe.onnx), written by models/recipes/accel/make_accel_fixture.py.
import * as fs from 'node:fs';
import * as path from 'node:path';
import { describe, expect, it } from 'vitest';
import * as ort from 'onnxruntime-node';
import { expectParity, openSession, readJson, runParityCase, type Manifest, type ParityCase } from '../recipes/helpers.ts';
import { chainDecode } from './chain.ts';

const PACK = path.resolve(import.meta.dirname, '../fixtures/tiny-pack-accel');
const BASE = path.resolve(import.meta.dirname, '../fixtures/tiny-pack');
const ACCEL_GRAPHS = ['draft', 'denoise_6nfe', 'denoise_1nfe'] as const;

interface AccelManifest extends Manifest {
  draft: { layers: number; heads: number; head_dim: number; hidden: number; variant: string; feature_layers: number[]; chain_steps: number };
  distilled: Record<string, { nfe: number; timesteps: number[]; shift: number }>;
}
const manifest = readJson<AccelManifest>(path.join(PACK, 'manifest.json'));

const runCase = (file: string, override?: Record<string, ort.Tensor>) => runParityCase(PACK, manifest, file, override);

describe('tiny-pack-accel manifest', () => {
  it('keeps every tiny-pack graph byte-identical and lists the acceleration graphs with matching I/O', async () => {
    const base = readJson<Manifest>(path.join(BASE, 'manifest.json'));
    for (const [g, spec] of Object.entries(base.graphs)) {
      expect(manifest.graphs[g], g).toEqual(spec);
      expect(fs.readFileSync(path.join(PACK, spec.file)).equals(fs.readFileSync(path.join(BASE, spec.file))), spec.file).toBe(true);
    }
    for (const g of ACCEL_GRAPHS) {
      const spec = manifest.graphs[g];
      expect(spec, g).toBeDefined();
      const sess = await openSession(path.join(PACK, spec!.file));
      expect([...sess.inputNames].sort()).toEqual(Object.keys(spec!.inputs).sort());
      expect([...sess.outputNames].sort()).toEqual(Object.keys(spec!.outputs).sort());
      await sess.release();
    }
    const d = manifest.draft;
    const L = manifest.decoder.layers;
    expect(manifest.graphs.draft!.inputs.hidden_states!.shape).toEqual(['batch', 'seq', L, manifest.decoder.hidden]);
    expect(Object.keys(manifest.graphs.draft!.inputs)).toContain(`past_key_values.${d.layers - 1}.value`);
    expect(Object.keys(manifest.graphs.draft!.outputs)).toEqual(expect.arrayContaining(['logits', 'features', `present.${d.layers - 1}.key`]));
    const den = manifest.graphs.denoiser!;
    for (const g of ['denoise_6nfe', 'denoise_1nfe']) {
      const s = manifest.graphs[g]!;
      expect(Object.keys(s.inputs).sort()).toEqual([...Object.keys(den.inputs), 'cfg_text_scale', 'cfg_image_scale'].sort());
      expect(s.outputs).toEqual(den.outputs);
    }
    expect(manifest.distilled.denoise_6nfe!.timesteps.length).toBe(7);
    expect(manifest.distilled.denoise_1nfe!.timesteps).toEqual([1, 0]);
  });
});

describe('tiny-pack-accel parity (PyTorch vs onnxruntime-node, max |diff| <= 1e-4)', () => {
  const files = fs.readdirSync(path.join(PACK, 'parity')).filter((f) => f.endsWith('.json')).sort();
  it('has a reference for every acceleration graph', () => {
    const graphs = new Set(files.map((f) => readJson<ParityCase>(path.join(PACK, 'parity', f)).graph));
    for (const g of ACCEL_GRAPHS) expect(graphs.has(g), g).toBe(true);
  });
  for (const f of files) {
    it(f, async () => {
      const { c, out } = await runCase(f);
      expectParity(c, out, f);
    });
  }

  it('draft KV cache: ORT prefill presents and last-row features fed into an ORT feedback step', async () => {
    const pre = await runCase('draft_prefill.json');
    const step = readJson<ParityCase>(path.join(PACK, 'parity', 'draft_step.json'));
    const override: Record<string, ort.Tensor> = {};
    for (let i = 0; i < manifest.draft.layers; i++) {
      for (const kv of ['key', 'value']) override[`past_key_values.${i}.${kv}`] = pre.out[`present.${i}.${kv}`]!;
    }
    const f = pre.out.features!;
    const [, T, D] = f.dims as [number, number, number];
    override.prev_features = new ort.Tensor('float32', (f.data as Float32Array).slice((T - 1) * D, T * D), [1, 1, D]);
    const { out } = await runCase('draft_step.json', override);
    expectParity(step, out, 'draft_step.json (chained)');
    expect(out['present.0.key']!.dims[2]).toBe(T + 1);
  });

  it('decoder hidden_states feed the draft directly (engine wiring: prefill -> draft catch-up -> feedback step)', async () => {
    const dir = PACK;
    const embed = await openSession(path.join(dir, manifest.graphs.embed!.file));
    const dec = await openSession(path.join(dir, manifest.graphs.decoder!.file));
    const draft = await openSession(path.join(dir, manifest.graphs.draft!.file));
    const st = manifest.special_tokens;
    const d = manifest.decoder;
    const ids = [st.bos!, st.im_start!, 12, 13];
    const T = ids.length;
    const emb = (await embed.run({ input_ids: new ort.Tensor('int64', BigInt64Array.from(ids.map(BigInt)), [1, T]) })).inputs_embeds!;
    const mask = new Float32Array(T * T);
    for (let i = 0; i < T; i++) for (let j = i + 1; j < T; j++) mask[i * T + j] = -1e9;
    const pos = new ort.Tensor('int64', BigInt64Array.from(ids.map((_, i) => BigInt(i))), [1, T]);
    const feeds: Record<string, ort.Tensor> = { inputs_embeds: emb, position_ids: pos, attention_mask: new ort.Tensor('float32', mask, [1, 1, T, T]) };
    for (let i = 0; i < d.layers; i++) for (const kv of ['key', 'value']) feeds[`past_key_values.${i}.${kv}`] = new ort.Tensor('float32', new Float32Array(0), [1, d.heads, 0, d.head_dim]);
    const pre = await dec.run(feeds);
    // draft rows 0..T-1: target hidden states of row i, input embedding of row i+1 (the sampled token for the last row)
    const logits = pre.logits!.data as Float32Array;
    const V = d.vocab;
    let nxt = 0;
    for (let v = 1; v < V; v++) if (logits[(T - 1) * V + v]! > logits[(T - 1) * V + nxt]!) nxt = v;
    const nEmb = (await embed.run({ input_ids: new ort.Tensor('int64', BigInt64Array.from([BigInt(nxt)]), [1, 1]) })).inputs_embeds!;
    const D = d.hidden;
    const shifted = new Float32Array(T * D);
    shifted.set((emb.data as Float32Array).subarray(D), 0);
    shifted.set(nEmb.data as Float32Array, (T - 1) * D);
    const dl = manifest.draft.layers;
    const df: Record<string, ort.Tensor> = {
      inputs_embeds: new ort.Tensor('float32', shifted, [1, T, D]),
      hidden_states: pre.hidden_states!,
      prev_features: new ort.Tensor('float32', new Float32Array(T * D), [1, T, D]),
      feature_select: new ort.Tensor('float32', new Float32Array(T), [1, T]),
      position_ids: pos,
      attention_mask: new ort.Tensor('float32', mask, [1, 1, T, T]),
    };
    for (let i = 0; i < dl; i++) for (const kv of ['key', 'value']) df[`past_key_values.${i}.${kv}`] = new ort.Tensor('float32', new Float32Array(0), [1, d.heads, 0, d.head_dim]);
    const dp = await draft.run(df);
    expect(dp.logits!.dims).toEqual([1, T, V]);
    expect(dp.features!.dims).toEqual([1, T, D]);
    const s1: Record<string, ort.Tensor> = {
      inputs_embeds: nEmb,
      hidden_states: new ort.Tensor('float32', new Float32Array(d.layers * D), [1, 1, d.layers, D]),
      prev_features: new ort.Tensor('float32', (dp.features!.data as Float32Array).slice((T - 1) * D), [1, 1, D]),
      feature_select: new ort.Tensor('float32', Float32Array.from([1]), [1, 1]),
      position_ids: new ort.Tensor('int64', BigInt64Array.from([BigInt(T)]), [1, 1]),
      attention_mask: new ort.Tensor('float32', new Float32Array(T + 1), [1, 1, 1, T + 1]),
    };
    for (let i = 0; i < dl; i++) for (const kv of ['key', 'value']) s1[`past_key_values.${i}.${kv}`] = dp[`present.${i}.${kv}`]!;
    const o1 = await draft.run(s1);
    expect(o1['present.0.key']!.dims).toEqual([1, d.heads, T + 1, d.head_dim]);
    expect(Array.from(o1.logits!.data as Float32Array).every(Number.isFinite)).toBe(true);
    await Promise.all([embed.release(), dec.release(), draft.release()]);
  });

  it('chain speculative decoding on ORT (prefill -> draft steps -> verify -> catch-up) equals plain greedy', async () => {
    const st = manifest.special_tokens;
    for (const prompt of [[st.bos!, st.im_start!], [st.bos!, 20, 21, 22, st.im_start!]]) {
      const r = await chainDecode(PACK, manifest, prompt, 10, 24);
      expect(r.tokens).toEqual(r.greedy);
      expect(r.acceptLengths.length).toBeGreaterThan(0);
    }
  });
});
