// EAGLE drafting through draft.onnx in the worker, on test/fixtures/tiny-pack-accel (tiny-pack plus a
// random-weight draft built on the same target weights; docs/model-pack.md "Draft rows").
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, test } from 'vitest';
import { createEngine, type LocalEngine } from '../../src/engine/index.ts';
import { EagleDrafter } from '../../src/engine/speculative/eagle.ts';
import { AcceptanceStats } from '../../src/engine/speculative/metrics.ts';
import { DraftModelProposer } from '../../src/engine/speculative/proposer.ts';
import { CostCurve } from '../../src/engine/speculative/sizing.ts';
import { pruneDepth, treeMask, treePositions } from '../../src/engine/speculative/tree.ts';
import { WorkerDraftModel } from '../../src/engine/speculative/worker-draft.ts';
import { decodeSteps } from '../../src/engine/understand/decode.ts';
import { isGreedy, tokenSampler } from '../../src/engine/understand/logits.ts';
import { causalMask } from '../../src/engine/understand/target.ts';
import { WorkerSequence } from '../../src/engine/understand/worker-target.ts';
import type { UnderstandSummary } from '../../src/engine/types.ts';
import { chiSquare } from './spec-helpers.ts';
import { answerIds, collect, embedLookup, exactTwoTokenJoint, FIXTURE, prefixOpener } from './fixture-helpers.ts';

export const ACCEL = path.join(path.dirname(FIXTURE), 'tiny-pack-accel');
let engine: LocalEngine;
const V = 81;
const D = 32;
const L = 2;

beforeAll(async () => {
  engine = await createEngine(ACCEL, { calibrate: false, intraOpThreads: 1, costCurve: [[1, 1], [2, 1.02], [8, 1.1], [32, 1.4]] });
});
afterAll(async () => {
  await engine?.close();
});

interface T {
  dims: number[];
  data: number[];
}
const parity = (f: string) => JSON.parse(fs.readFileSync(path.join(ACCEL, 'parity', f), 'utf8')) as { inputs: Record<string, T>; outputs: Record<string, T> };
const maxDiff = (a: ArrayLike<number>, b: ArrayLike<number>) => {
  expect(a.length).toBe(b.length);
  let m = 0;
  for (let i = 0; i < a.length; i++) m = Math.max(m, Math.abs(a[i]! - b[i]!));
  return m;
};

describe('seeded sampling is the same text with any speculation', () => {
  test('temperature 1, top-p 0.9: off, chain, tree and auto commit identical tokens for the same seed', async () => {
    let accepted = 0;
    for (const prompt of ['describe the image', 'what color is the star']) {
      for (let seed = 1; seed <= 8; seed++) {
        const runs: number[][] = [];
        for (const mode of ['off', 'chain', 'tree', 'auto'] as const) {
          const evs = await collect(engine.understand({ prompt, maxTokens: 24, temperature: 1, topP: 0.9, seed, speculation: { mode } }));
          runs.push(answerIds(evs));
          accepted += (evs.at(-1) as UnderstandSummary).speculation.acceptedTokens;
        }
        expect(runs[0]!.length).toBeGreaterThan(0);
        for (const r of runs.slice(1)) expect(r, `${prompt} seed ${seed}`).toEqual(runs[0]);
      }
    }
    expect(accepted).toBeGreaterThan(0); // drafts were accepted, so verification really chose tokens
  }, 120_000);
});

describe('draft.onnx through the worker', () => {
  test('parity with PyTorch: committed rows (target hidden states), then a draft step on its cache', async () => {
    const pre = parity('draft_prefill.json');
    const step = parity('draft_step.json');
    const draft = await WorkerDraftModel.open(engine.workerClient, V, D);
    const T = pre.inputs['position_ids']!.data.length;
    const mask = Uint8Array.from(pre.inputs['attention_mask']!.data.map((x) => (x === 0 ? 1 : 0)));
    const a = await draft.forward({
      embeds: Float32Array.from(pre.inputs['inputs_embeds']!.data),
      hidden: Float32Array.from(pre.inputs['hidden_states']!.data),
      positions: Int32Array.from(pre.inputs['position_ids']!.data),
      mask,
    });
    expect(maxDiff(a.logits, pre.outputs['logits']!.data)).toBeLessThan(1e-4);
    expect(maxDiff(a.features, pre.outputs['features']!.data)).toBeLessThan(1e-4);
    const b = await draft.forward({
      embeds: Float32Array.from(step.inputs['inputs_embeds']!.data),
      prev: Float32Array.from(step.inputs['prev_features']!.data),
      positions: Int32Array.from(step.inputs['position_ids']!.data),
      mask: Uint8Array.of(1),
    });
    expect(T).toBe(5);
    expect(maxDiff(b.logits, step.outputs['logits']!.data)).toBeLessThan(1e-4);
    expect(maxDiff(b.features, step.outputs['features']!.data)).toBeLessThan(1e-4);
    await draft.close();
  });

  test('engine: draft capability; greedy answers identical in every mode, with and without an image', async () => {
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
          // auto may leave the (random, never accepted) draft for the n-gram drafter once its
          // running acceptance shows it does not pay
          if (mode === 'auto') expect(['draft-model', 'ngram']).toContain(s.speculation.proposer);
          else expect(s.speculation.proposer).toBe(mode === 'off' ? 'none' : 'draft-model');
          drafted += s.speculation.draftedTokens;
          texts.push(s.text);
        }
        expect(new Set(texts).size, `${prompt} ${image ? '+image' : ''}: ${JSON.stringify(texts)}`).toBe(1);
      }
    expect(drafted).toBeGreaterThan(0);
    const ng = (await collect(engine.understand({ prompt: 'describe the image', maxTokens: 8, speculation: { mode: 'ngram' } }))).at(-1) as UnderstandSummary;
    expect(ng.speculation.proposer).toBe('ngram');
    expect((await engine.workerStats()).openSequences).toBe(0); // draft caches close with their request
  }, 60000);

  test('fused draft requests (draft_chain, draft_tree) build the same chains and trees as per-step forwards', async () => {
    const client = engine.workerClient;
    const embed = await embedLookup(client, D);
    const ids = [1, 30, 66, 35, 4, 12, 40];
    const pos = Int32Array.from(ids.map((_, i) => i));
    const seq = await WorkerSequence.open(client, V, 64, L * D);
    await seq.forward(Int32Array.from(ids), pos, causalMask(ids.length), 'all', true);
    const feats = seq.lastFeatures!;
    await seq.close();
    const shapes = [
      { mode: 'chain' as const, chainLength: 5 },
      { mode: 'tree' as const, treeBudget: 12, treeTopK: 3, treeDepth: 4 },
      { mode: 'tree' as const, treeBudget: 20, treeTopK: 4, treeDepth: 3 },
    ];
    for (const shape of shapes) {
      const trees: string[] = [];
      for (const fused of [true, false]) {
        const wd = await WorkerDraftModel.open(client, V, D);
        // forward-only view of the same worker draft model: no fused requests
        const draft = fused ? wd : { vocab: wd.vocab, featureDim: wd.featureDim, get length() { return wd.length; }, forward: (r: Parameters<typeof wd.forward>[0]) => wd.forward(r), truncate: (n: number) => wd.truncate(n) };
        const drafter = new EagleDrafter(draft, embed);
        const proposer = new DraftModelProposer(drafter, { ...shape, maxChainLength: 8, stats: new AcceptanceStats() });
        const out: string[] = [];
        // two rounds: prompt catch-up, then a catch-up of two rows after the first tree's rows are cropped
        const n = ids.length;
        const embeds = new Float32Array(n * D);
        embeds.set(embed(ids.slice(1)));
        embeds.set(embed([9]), (n - 1) * D);
        await proposer.commit({ embeds, hidden: feats, positions: pos, mask: causalMask(n), rootPos: n });
        const t1 = await proposer.propose([...ids, 9]);
        await proposer.commit({ ids: [t1.tokens[1] ?? 3, 17], hidden: feats.subarray(0, 2 * L * D), positions: Int32Array.of(n, n + 1), rootPos: n + 2 });
        const t2 = await proposer.propose([...ids, 9, t1.tokens[1] ?? 3, 17]);
        expect(t1.tokens.length).toBeGreaterThan(shape.mode === 'chain' ? 5 : 4);
        for (const t of [t1, t2]) out.push(JSON.stringify([[...t.tokens], [...t.parents], [...t.depths], [...t.scores].map((x) => x.toFixed(4))]));
        expect(drafter.stableLength).toBe(n + 2);
        trees.push(out.join('|'));
        await wd.close();
      }
      expect(trees[0], JSON.stringify(shape)).toBe(trees[1]);
    }
  });

  test('a draft chain or tree carries its verification (fused request); a pruned one drops the prefetched rows', async () => {
    const client = engine.workerClient;
    const embed = await embedLookup(client, D);
    const ids = [1, 30, 66, 35, 4, 12, 40];
    const n = ids.length;
    const pos = Int32Array.from(ids.map((_, i) => i));
    const shapes = [
      { mode: 'chain' as const, chainLength: 4 },
      { mode: 'tree' as const, treeBudget: 10, treeTopK: 3, treeDepth: 3 },
      // sized by the cost curve (chooseTreeSize in the worker too)
      { mode: 'tree' as const, treeTopK: 3, treeDepth: 3, curve: new CostCurve([[1, 1], [4, 1.05], [16, 1.6]]), draftCost: { perToken: 0.2, fixed: 0.3 } },
    ];
    for (const shape of shapes)
      for (const prune of [false, true]) {
        const seq = await WorkerSequence.open(client, V, 64, L * D);
        const ref = await WorkerSequence.open(client, V, 64, L * D);
        await seq.forward(Int32Array.from(ids), pos, causalMask(n), 'all', true);
        await ref.forward(Int32Array.from(ids), pos, causalMask(n), 'all', true);
        const feats = seq.lastFeatures!;
        const wd = await WorkerDraftModel.open(client, V, D);
        wd.verifyOn(seq);
        const proposer = new DraftModelProposer(new EagleDrafter(wd, embed), { ...shape, maxChainLength: 8, stats: new AcceptanceStats() });
        const embeds = new Float32Array(n * D);
        embeds.set(embed(ids.slice(1)));
        embeds.set(embed([9]), (n - 1) * D);
        await proposer.commit({ embeds, hidden: feats, positions: pos, mask: causalMask(n), rootPos: n });
        const full = await proposer.propose([...ids, 9]);
        expect(full.tokens.length).toBeGreaterThan(2);
        expect(seq.length).toBe(n); // prefetched rows are not counted until asked for
        const tree = prune ? pruneDepth(full, 1) : full;
        if (prune && !('curve' in shape)) expect(tree).not.toBe(full); // the sized tree may already be shallow
        const T = tree.tokens.length;
        const p = treePositions(tree, n);
        const m = treeMask(tree);
        const got = await seq.forward(tree.tokens, p, m, 'all', true);
        const gotF = seq.lastFeatures!;
        const want = await ref.forward(tree.tokens, p, m, 'all', true);
        expect(seq.length).toBe(n + T);
        expect([seq.prefetchHits, seq.prefetchMisses]).toEqual(tree !== full ? [0, 1] : [1, 0]);
        expect(maxDiff(got, want)).toBeLessThan(1e-4);
        expect(maxDiff(gotF, ref.lastFeatures!)).toBeLessThan(1e-4);
        // keep the root and its first child, then one more token: both caches must agree
        seq.compact({ keepFrom: n, keep: Int32Array.of(0, 1) });
        ref.compact({ keepFrom: n, keep: Int32Array.of(0, 1) });
        const a = await seq.forward(Int32Array.of(7), Int32Array.of(n + 2), causalMask(1), 'all');
        const b = await ref.forward(Int32Array.of(7), Int32Array.of(n + 2), causalMask(1), 'all');
        expect(maxDiff(a, b)).toBeLessThan(1e-4);
        await seq.close();
        await ref.close();
        await wd.close();
      }
  });

  test('near maxTokens the draft stays within the tokens left: every step verifies in its draft request (one target run per step)', async () => {
    for (const maxTokens of [2, 3, 40])
      for (const speculation of [{ mode: 'chain' as const, chainLength: 8 }, { mode: 'tree' as const, treeDepth: 6, treeBudget: 24, treeTopK: 4 }]) {
        const before = (await engine.workerStats()).decodeCalls;
        const evs = await collect(engine.understand({ prompt: 'describe the image', maxTokens, temperature: 1, seed: 2, speculation }));
        const s = evs.at(-1) as UnderstandSummary;
        expect(s.finishReason).toBe('length');
        // the prefill gives the first token; every later step commits at least one
        const calls = (await engine.workerStats()).decodeCalls - before;
        expect(calls, `${speculation.mode} maxTokens ${maxTokens}`).toBeLessThanOrEqual(s.usage.completionTokens);
      }
  });

  test('sampled: the first two tokens follow the exact target distribution with EAGLE trees (chi-square)', async () => {
    const client = engine.workerClient;
    const sampling = { temperature: 1, topK: 3, topP: 1 };
    const ids = [1, 30, 66, 35, 4];
    const pos = Int32Array.from(ids.map((_, i) => i));
    const open = prefixOpener(client, V, ids, L * D);
    const { exact } = await exactTwoTokenJoint(open, V, sampling);
    const embed = await embedLookup(client, D);
    const N = 500;
    const counts = new Map<string, number>();
    let drafted = 0;
    for (let s = 0; s < N; s++) {
      const { s: seq, l, feats } = await open();
      const draft = await WorkerDraftModel.open(client, V, D);
      const proposer = new DraftModelProposer(new EagleDrafter(draft, embed), { mode: 'tree', treeBudget: 8, treeTopK: 4, treeDepth: 2, maxChainLength: 8, stats: new AcceptanceStats() });
      const out: number[] = [];
      for await (const st of decodeSteps(seq, l, ids.length, ids, {
        sampling,
        pick: tokenSampler(900 + s, isGreedy(sampling)),
        proposer,
        prompt: { embeds: embed(ids), features: feats, positions: pos, mask: causalMask(ids.length) },
      })) {
        out.push(...st.tokens);
        drafted += st.drafted;
        if (out.length >= 2) break;
      }
      const k = out.slice(0, 2).join(',');
      counts.set(k, (counts.get(k) ?? 0) + 1);
      await seq.close();
      await draft.close();
    }
    expect(drafted).toBeGreaterThan(N);
    const { stat, df } = chiSquare(counts, exact, N);
    expect(df).toBe(8);
    expect(stat).toBeLessThan(26.12);
  }, 90000);

  test('auto: the draft model is used only when its measured cost and acceptance pay off', async () => {
    const flat: Array<[number, number]> = [[1, 1], [2, 1.02], [8, 1.1], [32, 1.4]];
    const dear = await createEngine(ACCEL, { intraOpThreads: 1, costCurve: flat, draftCost: { perToken: 5, fixed: 5 } });
    const cheap = await createEngine(ACCEL, { intraOpThreads: 1, costCurve: flat, draftCost: { perToken: 0.01, fixed: 0.01 } });
    try {
      const sources = async (e: LocalEngine) => {
        const out: string[] = [];
        for (let i = 0; i < 6; i++) {
          const s = (await collect(e.understand({ prompt: 'describe the image', maxTokens: 6, speculation: { mode: 'auto' } }))).at(-1) as UnderstandSummary;
          out.push(s.speculation.proposer!);
        }
        return out;
      };
      expect(new Set(await sources(dear))).toEqual(new Set(['ngram']));
      expect((await sources(cheap))[0]).toBe('draft-model');
      expect(dear.costCurve).toEqual(flat);
    } finally {
      await dear.close();
      await cheap.close();
    }
  });

  test('auto: flat verification cost and a cheap draft → EAGLE-2 trees (draft cost included in sizing), lossless', async () => {
    const flat: Array<[number, number]> = [[1, 1], [2, 1.01], [8, 1.05], [32, 1.2]];
    const e = await createEngine(ACCEL, { intraOpThreads: 1, costCurve: flat, draftCost: { perToken: 0.02, fixed: 0.05 } });
    try {
      let branched = 0;
      for (const prompt of ['describe the image', 'what is in the picture', 'where is the red circle']) {
        const off = (await collect(e.understand({ prompt, maxTokens: 16, speculation: { mode: 'off' } }))).at(-1) as UnderstandSummary;
        const evs = await collect(e.understand({ prompt, maxTokens: 16, speculation: { mode: 'auto' } }));
        const auto = evs.at(-1) as UnderstandSummary;
        expect(auto.text).toBe(off.text);
        expect(auto.speculation.proposer).toBe('draft-model');
        // a step that drafted more nodes than the deepest position any step reached verified a branching tree
        const deepest = auto.speculation.acceptancePerPosition.length;
        if (evs.some((ev) => ev.kind === 'chunk' && (ev.steps ?? 1) === 1 && ev.draftedTokens > deepest)) branched++;
      }
      expect(branched).toBeGreaterThan(0);
    } finally {
      await e.close();
    }
  });

  test('start-up calibration measures the draft too', async () => {
    const e = await createEngine(ACCEL, { intraOpThreads: 1 });
    try {
      expect(e.draftCost!.perToken).toBeGreaterThan(0);
      expect(e.draftCost!.fixed).toBeGreaterThan(0);
    } finally {
      await e.close();
    }
  });

  test('a manifest with a draft graph but no draft section names the field', async () => {
    const bad = fs.mkdtempSync(path.join(os.tmpdir(), 'hb-draft-bad-'));
    for (const f of fs.readdirSync(ACCEL)) if (f !== 'parity') fs.copyFileSync(path.join(ACCEL, f), path.join(bad, f));
    const m = JSON.parse(fs.readFileSync(path.join(bad, 'manifest.json'), 'utf8'));
    delete m.draft;
    fs.writeFileSync(path.join(bad, 'manifest.json'), JSON.stringify(m));
    await expect(createEngine(bad, { calibrate: false })).rejects.toThrow(/draft\.layers/);
  });
});
