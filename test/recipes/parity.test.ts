// PyTorch vs onnxruntime-node parity on the random-weight tiny pack (test/fixtures/tiny-pack).
// The reference tensors in parity/*.json are written by models/recipes/make_fixture.py.
import * as fs from 'node:fs';
import * as path from 'node:path';
import { describe, expect, it } from 'vitest';
import { Tokenizer } from '@huggingface/tokenizers';
import type * as ort from 'onnxruntime-node';
import { GRAPH_NAMES, SPECIAL_TOKENS, expectParity, openSession, readJson, runParityCase, type Manifest, type ParityCase } from './helpers.ts';

const PACK = path.resolve(import.meta.dirname, '../fixtures/tiny-pack');
const manifest = readJson<Manifest>(path.join(PACK, 'manifest.json'));

const runCase = (file: string, override?: Record<string, ort.Tensor>) => runParityCase(PACK, manifest, file, override);

describe('tiny-pack manifest', () => {
  it('lists every graph with inputs and outputs that match the ONNX files', async () => {
    expect(manifest.format).toBe('hyperbagel-pack/1');
    for (const k of SPECIAL_TOKENS) expect(typeof manifest.special_tokens[k], k).toBe('number');
    for (const g of GRAPH_NAMES) {
      const spec = manifest.graphs[g];
      expect(spec, g).toBeDefined();
      const sess = await openSession(path.join(PACK, spec!.file));
      expect([...sess.inputNames].sort()).toEqual(Object.keys(spec!.inputs).sort());
      expect([...sess.outputNames].sort()).toEqual(Object.keys(spec!.outputs).sort());
      await sess.release();
    }
    const L = manifest.decoder.layers;
    expect(Object.keys(manifest.graphs.decoder!.inputs)).toContain(`past_key_values.${L - 1}.value`);
    expect(manifest.graphs.decoder!.outputs.hidden_states!.shape).toEqual(['batch', 'seq', L, manifest.decoder.hidden]);
    expect(manifest.preview.latent_rgb_factors.length).toBe(manifest.latent.channels);
    expect(manifest.sampler_defaults.steps).toBe(50);
  });

  it('tokenizer.json loads and uses the manifest special token ids', () => {
    const tj = readJson<Record<string, unknown>>(path.join(PACK, manifest.tokenizer));
    const tok = new Tokenizer(tj, {});
    const enc = tok.encode('describe the image');
    expect(enc.ids.length).toBe(3);
    const vocab = (tj.model as { vocab: Record<string, number> }).vocab;
    expect(enc.ids).toEqual(['describe', 'the', 'image'].map((w) => vocab[w]));
    expect(vocab['<|im_start|>']).toBe(manifest.special_tokens.im_start);
    expect(vocab['<eos>']).toBe(manifest.special_tokens.eos);
    expect(Object.keys(vocab).length).toBe(manifest.decoder.vocab);
    expect(tok.decode(enc.ids, { skip_special_tokens: true })).toBe('describe the image');
  });
});

describe('tiny-pack parity (PyTorch vs onnxruntime-node, max |diff| <= 1e-4)', () => {
  const files = fs.readdirSync(path.join(PACK, 'parity')).filter((f) => f.endsWith('.json')).sort();
  it('has a reference for every graph', () => {
    const graphs = new Set(files.map((f) => readJson<ParityCase>(path.join(PACK, 'parity', f)).graph));
    for (const g of GRAPH_NAMES) expect(graphs.has(g), g).toBe(true);
  });
  for (const f of files) {
    it(f, async () => {
      const { c, out } = await runCase(f);
      expectParity(c, out);
    });
  }

  it('decoder KV cache: ORT prefill presents fed back into an ORT decode step (non-empty past)', async () => {
    const pre = await runCase('decoder_prefill.json');
    const dec = readJson<ParityCase>(path.join(PACK, 'parity', 'decoder_decode.json'));
    const override: Record<string, ort.Tensor> = {};
    for (let i = 0; i < manifest.decoder.layers; i++) {
      for (const kv of ['key', 'value']) override[`past_key_values.${i}.${kv}`] = pre.out[`present.${i}.${kv}`]!;
    }
    expect(override['past_key_values.0.key']!.dims[2]).toBeGreaterThan(0);
    const { out } = await runCase('decoder_decode.json', override);
    expectParity(dec, out);
    const P = override['past_key_values.0.key']!.dims[2]!;
    expect(out['present.0.key']!.dims[2]).toBe(P + dec.inputs.inputs_embeds!.dims[1]!);
  });

  it('denoiser runs against the decoder cache from ORT', async () => {
    const pre = await runCase('decoder_prefill.json');
    const step = readJson<ParityCase>(path.join(PACK, 'parity', 'denoiser_step.json'));
    const B = step.inputs.latent_tokens!.dims[0]!;
    const override: Record<string, ort.Tensor> = {};
    for (let i = 0; i < manifest.decoder.layers; i++) {
      for (const kv of ['key', 'value']) {
        const t = pre.out[`present.${i}.${kv}`]!;
        const d = t.data as Float32Array;
        const rep = new Float32Array(d.length * B);
        for (let b = 0; b < B; b++) rep.set(d, b * d.length);
        override[`past_key_values.${i}.${kv}`] = new (t.constructor as typeof ort.Tensor)('float32', rep, [B, ...t.dims.slice(1)]);
      }
    }
    const { out } = await runCase('denoiser_step.json', override);
    expectParity(step, out);
  });
});
