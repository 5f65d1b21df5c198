// EAGLE drafting through draft.onnx in the worker: the fixture pack plus a random-weight draft graph
// (test/engine/fixtures/draft, made by make_draft.py with the proposed draft.onnx contract).
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, beforeAll, describe, expect, test } from 'vitest';
import { createEngine, type LocalEngine } from '../../src/engine/index.ts';
import { Rng } from '../../src/engine/rng.ts';
import { EagleDrafter } from '../../src/engine/speculative/eagle.ts';
import { AcceptanceStats } from '../../src/engine/speculative/metrics.ts';
import { DraftModelProposer } from '../../src/engine/speculative/proposer.ts';
import { WorkerDraftModel } from '../../src/engine/speculative/worker-draft.ts';
import { decodeSteps } from '../../src/engine/understand/decode.ts';
import { processLogits } from '../../src/engine/understand/logits.ts';
import { causalMask } from '../../src/engine/understand/target.ts';
import { WorkerSequence } from '../../src/engine/understand/worker-target.ts';
import type { UnderstandSummary } from '../../src/engine/types.ts';
import { chiSquare } from './spec-helpers.ts';
import { collect, FIXTURE } from './fixture-helpers.ts';

const HERE = path.dirname(fileURLToPath(import.meta.url));
let dir: string;
let engine: LocalEngine;
const V = 81;
const D = 32;

beforeAll(async () => {
  dir = fs.mkdtempSync(path.join(os.tmpdir(), 'hb-draft-pack-'));
  for (const f of fs.readdirSync(FIXTURE)) if (f !== 'parity') fs.copyFileSync(path.join(FIXTURE, f), path.join(dir, f));
  fs.copyFileSync(path.join(HERE, 'fixtures/draft/draft.onnx'), path.join(dir, 'draft.onnx'));
  const m = JSON.parse(fs.readFileSync(path.join(dir, 'manifest.json'), 'utf8'));
  m.draft = { layers: 1, heads: 2, head_dim: 16 };
  const t = (shape: Array<string | number>) => ({ dtype: 'float32', shape });
  m.graphs.draft = {
    file: 'draft.onnx',
    inputs: {
      inputs_embeds: t(['batch', 'seq', D]),
      features: t(['batch', 'seq', D]),
      position_ids: { dtype: 'int64', shape: ['batch', 'seq'] },
      attention_mask: t(['batch', 1, 'seq', 'total']),
      'past_key_values.0.key': t(['batch', 2, 'past', 16]),
      'past_key_values.0.value': t(['batch', 2, 'past', 16]),
    },
    outputs: { logits: t(['batch', 'seq', V]), hidden_out: t(['batch', 'seq', D]), 'present.0.key': t(['batch', 2, 'total', 16]), 'present.0.value': t(['batch', 2, 'total', 16]) },
  };
  fs.writeFileSync(path.join(dir, 'manifest.json'), JSON.stringify(m));
  engine = await createEngine(dir, { calibrate: false, intraOpThreads: 1, costCurve: [[1, 1], [2, 1.02], [8, 1.1], [32, 1.4]] });
});
afterAll(async () => {
  await engine?.close();
});

describe('draft.onnx (EAGLE) through the worker', () => {
  test('engine reports the draft capability; greedy answers identical with every mode; drafts come from the model', async () => {
    expect(engine.info.capabilities.draft).toBe(true);
    const img = { width: 64, height: 64, data: new Uint8Array(64 * 64 * 3).map((_, i) => (i * 5) % 256) };
    const prompts = ['describe the image', 'what is in the picture', 'how many objects are there', 'where is the red circle'];
    let drafted = 0;
    for (const prompt of prompts)
      for (const image of [undefined, img]) {
        const texts: string[] = [];
        for (const mode of ['off', 'chain', 'tree', 'auto'] as const) {
          const evs = await collect(engine.understand({ prompt, image, maxTokens: 24, speculation: { mode } }));
          const s = evs.at(-1) as UnderstandSummary;
          expect(s.speculation.proposer).toBe(mode === 'off' ? 'none' : 'draft-model');
          drafted += s.speculation.draftedTokens;
          texts.push(s.text);
        }
        expect(new Set(texts).size, `${prompt} ${image ? '+image' : ''}: ${JSON.stringify(texts)}`).toBe(1);
      }
    expect(drafted).toBeGreaterThan(0);
    // ngram mode still uses the n-gram drafter
    const ng = (await collect(engine.understand({ prompt: 'describe the image', maxTokens: 8, speculation: { mode: 'ngram' } }))).at(-1) as UnderstandSummary;
    expect(ng.speculation.proposer).toBe('ngram');
    const st = await engine.workerStats();
    expect(st.openSequences).toBe(0); // draft caches are closed with their request
  }, 60000);

  test('sampled: the first two tokens follow the exact target distribution (chi-square)', async () => {
    const client = engine.workerClient;
    // low temperature: the random target repeats itself, so the copy-style test draft gets accepted
    const sampling = { temperature: 0.6, topK: 3, topP: 1 };
    const ids = [1, 30, 66, 35, 4, 52, 52, 32, 32]; // describe the image <im_start> photo photo gray gray
    const pos = Int32Array.from(ids.map((_, i) => i));
    const open = async (extra: number[] = []) => {
      const s = await WorkerSequence.open(client, V, 64, D);
      const all = [...ids, ...extra];
      const l = await s.forward(Int32Array.from(all), Int32Array.from(all.map((_, i) => i)), causalMask(all.length), 'all', true);
      return { s, l: l.slice((all.length - 1) * V), feats: s.lastFeatures! };
    };
    const exact = new Map<string, number>();
    const base = await open();
    const p1 = processLogits(base.l, 0, V, sampling);
    for (let a = 0; a < V; a++) {
      if (!p1[a]) continue;
      const b = await open([a]);
      const p2 = processLogits(b.l, 0, V, sampling);
      for (let c = 0; c < V; c++) if (p2[c]) exact.set(`${a},${c}`, p1[a]! * p2[c]!);
      await b.s.close();
    }
    await base.s.close();
    const table = await client.call<Float32Array>({ op: 'embed_table' });
    const embed = (xs: number[]) => {
      const out = new Float32Array(xs.length * D);
      xs.forEach((x, i) => out.set(table.subarray(x * D, x * D + D), i * D));
      return out;
    };
    const N = 500;
    const counts = new Map<string, number>();
    let accepted = 0;
    for (let s = 0; s < N; s++) {
      const { s: seq, l, feats } = await open();
      const draft = await WorkerDraftModel.open(client, V, D);
      const proposer = new DraftModelProposer(new EagleDrafter(draft, embed), { mode: 'tree', treeBudget: 6, treeTopK: 3, treeDepth: 2, maxChainLength: 8, stats: new AcceptanceStats() });
      const out: number[] = [];
      for await (const st of decodeSteps(seq, l, ids.length, ids, { sampling, rng: new Rng(900 + s), proposer, prompt: { embeds: embed(ids), features: feats, positions: pos } })) {
        out.push(...st.tokens);
        accepted += st.accepted;
        if (out.length >= 2) break;
      }
      const k = out.slice(0, 2).join(',');
      counts.set(k, (counts.get(k) ?? 0) + 1);
      await seq.close();
      await draft.close();
    }
    expect(accepted).toBeGreaterThan(N / 10);
    const { stat, df } = chiSquare(counts, exact, N);
    expect(df).toBe(8);
    expect(stat).toBeLessThan(26.12);
  }, 90000);

  test('a manifest with a draft graph but no draft section names the field', async () => {
    const bad = fs.mkdtempSync(path.join(os.tmpdir(), 'hb-draft-bad-'));
    for (const f of fs.readdirSync(dir)) fs.copyFileSync(path.join(dir, f), path.join(bad, f));
    const m = JSON.parse(fs.readFileSync(path.join(bad, 'manifest.json'), 'utf8'));
    delete m.draft;
    fs.writeFileSync(path.join(bad, 'manifest.json'), JSON.stringify(m));
    await expect(createEngine(bad, { calibrate: false })).rejects.toThrow(/draft\.layers/);
  });
});
