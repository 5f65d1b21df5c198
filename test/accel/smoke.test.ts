// Runs the Python acceleration smoke test (random-init TINY target -> draft data, train_draft + resume and the
// ablation variants, TTT consistency, chain eval, reward, cfg + resume, tscd, dmdo, adp, refl -> export) and loads
// the exported pack in onnxruntime-node: every graph's I/O, parity of every reference, the numbers it measured.
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type * as ort from 'onnxruntime-node';
import { GRAPH_NAMES, recipeSmokeEnabled, runRecipeScript, maxAbsDiff, openSession, readJson, toOrt, type Manifest, type ParityCase } from '../recipes/helpers.ts';
import { chainDecode, type DraftManifest } from './chain.ts';
import { shiftedTimesteps } from '../../src/engine/generation/scheduler.ts';

const enabled = recipeSmokeEnabled('accel smoke');

interface EvalRow { variant: string; tau_chain: number; acceptance_10: number; lossless: boolean }
interface SmokeResult { draft_eval: { tau_chain: number; acceptance_10: number; ablation: EvalRow[] }; ttt_consistency_full: number; ttt_consistency_eagle3: number; seconds: number }

describe.skipIf(!enabled)('acceleration recipes smoke test (python train + export, then onnxruntime-node)', () => {
  let dir = '';
  let pack = '';
  let manifest: Manifest;

  beforeAll(() => {
    dir = fs.mkdtempSync(path.join(os.tmpdir(), 'hb-accel-smoke-'));
    pack = path.join(dir, 'pack');
    runRecipeScript('models/recipes/accel/smoke_test.py', pack, 290_000);
    manifest = readJson<Manifest>(path.join(pack, 'manifest.json'));
  }, 300_000);

  afterAll(() => {
    if (dir) fs.rmSync(dir, { recursive: true, force: true });
  });

  it('exports the base graphs and draft / denoise_6nfe / denoise_1nfe with the manifest I/O', async () => {
    for (const g of [...GRAPH_NAMES, 'draft', 'denoise_6nfe', 'denoise_1nfe']) {
      const spec = manifest.graphs[g];
      expect(spec, g).toBeDefined();
      const sess = await openSession(path.join(pack, spec!.file));
      expect([...sess.inputNames].sort()).toEqual(Object.keys(spec!.inputs).sort());
      expect([...sess.outputNames].sort()).toEqual(Object.keys(spec!.outputs).sort());
      await sess.release();
    }
  });

  it('writes the 6-NFE grid the engine computes from its shift (the uniform grid by default), and [1, 0] for 1-NFE', () => {
    const d = (manifest as Manifest & { distilled: Record<string, { shift: number; timesteps: number[] }> }).distilled;
    expect(d.denoise_6nfe!.shift).toBe(1);
    const want = shiftedTimesteps(6, d.denoise_6nfe!.shift);
    expect(d.denoise_6nfe!.timesteps).toHaveLength(7); // 6 steps: 7 grid points, from 1 to 0
    d.denoise_6nfe!.timesteps.forEach((t, i) => expect(t, `t${i}`).toBeCloseTo(want[i]!, 6));
    expect(d.denoise_1nfe!.timesteps).toEqual([1, 0]);
  });

  it('matches the PyTorch references (max |diff| <= 1e-4), acceleration graphs included', async () => {
    const files = fs.readdirSync(path.join(pack, 'parity')).filter((f) => f.endsWith('.json'));
    const graphs = new Set<string>();
    for (const f of files) {
      const c = readJson<ParityCase>(path.join(pack, 'parity', f));
      graphs.add(c.graph);
      const sess = await openSession(path.join(pack, manifest.graphs[c.graph]!.file));
      const feeds: Record<string, ort.Tensor> = {};
      for (const [k, v] of Object.entries(c.inputs)) feeds[k] = toOrt(v);
      const out = await sess.run(feeds);
      for (const [k, want] of Object.entries(c.outputs)) expect(maxAbsDiff(out[k]!, want), `${f} ${k}`).toBeLessThanOrEqual(1e-4);
      await sess.release();
    }
    for (const g of ['draft', 'denoise_6nfe', 'denoise_1nfe']) expect(graphs.has(g), g).toBe(true);
  });

  it('speculative decoding stayed lossless for every variant; TTT unroll equals the KV-cache path', () => {
    const r = readJson<SmokeResult>(path.join(pack, 'accel_smoke.json'));
    expect(r.draft_eval.ablation.map((x) => x.variant).sort()).toEqual(['eagle3', 'full', 'noce', 'noinit']);
    for (const row of r.draft_eval.ablation) {
      expect(row.lossless, row.variant).toBe(true);
      expect(row.tau_chain, row.variant).toBeGreaterThanOrEqual(1);
      expect(row.acceptance_10, row.variant).toBeGreaterThanOrEqual(0);
    }
    expect(r.ttt_consistency_full).toBeLessThan(1e-4);
    expect(r.ttt_consistency_eagle3).toBeLessThan(1e-4);
  });

  it('the exported smoke-trained draft decodes losslessly in an ORT chain loop', async () => {
    const tj = readJson<{ model: { vocab: Record<string, number> } }>(path.join(pack, 'tokenizer.json'));
    const st = manifest.special_tokens;
    const words = ['describe', 'the', 'image'].map((w) => tj.model.vocab[w]!);
    const r = await chainDecode(pack, manifest as DraftManifest, [st.bos!, ...words, st.im_start!], 10, 16);
    expect(r.tokens).toEqual(r.greedy);
    const tau = r.acceptLengths.reduce((a, b) => a + b, 0) / r.acceptLengths.length;
    console.info(`[accel smoke] ORT chain: ${r.tokens.length} tokens in ${r.acceptLengths.length} verify rounds (mean ${tau.toFixed(2)})`);
  });
});
