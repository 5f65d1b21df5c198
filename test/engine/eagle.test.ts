import { isGreedy, tokenSampler } from '../../src/engine/understand/logits.ts';
import { describe, expect, test } from 'vitest';
import { Rng } from '../../src/engine/rng.ts';
import { decodeSteps } from '../../src/engine/understand/decode.ts';
import { causalMask } from '../../src/engine/understand/target.ts';
import { EagleDrafter } from '../../src/engine/speculative/eagle.ts';
import { AcceptanceStats } from '../../src/engine/speculative/metrics.ts';
import { DraftModelProposer, type ProposerConfig } from '../../src/engine/speculative/proposer.ts';
import type { SamplingParams } from '../../src/engine/understand/logits.ts';
import { ToyModel, ToySequence } from './toy-lm.ts';
import { ToyDraft } from './toy-draft.ts';
import { chiSquare, exactJoint, randomPrompt, runDecode } from './spec-helpers.ts';

const target = new ToyModel(40, 8, 1, 4);

function cfg(mode: ProposerConfig['mode'], extra: Partial<ProposerConfig> = {}): ProposerConfig {
  return { mode, maxChainLength: 8, stats: new AcceptanceStats(), ...extra };
}

/** decode with an EAGLE proposer: prefill with features, then the loop feeds the draft */
async function runEagle(prompt: number[], n: number, sampling: SamplingParams, seed: number, mode: 'chain' | 'tree', draft = new ToyDraft(target)) {
  const seq = new ToySequence(target);
  const pos = Int32Array.from(prompt.map((_, i) => i));
  const last = await seq.forward(Int32Array.from(prompt), pos, causalMask(prompt.length), 'all', true);
  const feats = seq.lastFeatures!;
  const drafter = new EagleDrafter(draft, draft.embed);
  const proposer = new DraftModelProposer(drafter, mode === 'chain' ? cfg('chain', { chainLength: 4 }) : cfg('tree', { treeBudget: 10, treeTopK: 3, treeDepth: 4 }));
  const V = target.vocab;
  const out: number[] = [];
  let steps = 0;
  let accepted = 0;
  const checks: Array<() => void> = [];
  for await (const s of decodeSteps(seq, last.slice((prompt.length - 1) * V), prompt.length, prompt, {
    sampling,
    pick: tokenSampler(seed, isGreedy(sampling)),
    proposer,
    prompt: { embeds: draft.embed(prompt), features: feats, positions: pos, mask: causalMask(prompt.length) },
  })) {
    steps++;
    accepted += s.accepted;
    out.push(...s.tokens);
    // invariant: the draft holds one committed row per target-cached token, except the rows of the
    // step just verified (their catch-up runs lazily at the start of the next step)
    const committedSoFar = prompt.length - 1 + out.length - s.tokens.length;
    const stable = drafter.stableLength;
    checks.push(() => expect(stable).toBe(committedSoFar));
    if (out.length >= n) break;
  }
  return { tokens: out.slice(0, n), steps, accepted, drafter, draft, checks, seq, emitted: out.length };
}

describe('EAGLE drafting (pure units on the toy target)', () => {
  test('greedy: identical to plain decoding over many prompts, chains and dynamic trees; drafts are accepted', async () => {
    const r = new Rng(7);
    let acc = 0;
    for (let i = 0; i < 30; i++) {
      const prompt = randomPrompt(r, 40, 3 + Math.floor(r.uniform() * 8));
      const g = { temperature: 0, topK: 0, topP: 1 };
      const plain = await runDecode(target, prompt, 24, g, 0, null);
      for (const mode of ['chain', 'tree'] as const) {
        const e = await runEagle(prompt, 24, g, 0, mode);
        expect(e.tokens).toEqual(plain.tokens);
        e.checks.slice(1).forEach((c) => c());
        expect(e.seq.length).toBe(prompt.length + e.emitted - 1); // target KV: no rejected tree slots left
        acc += e.accepted;
      }
    }
    expect(acc).toBeGreaterThan(200); // the toy draft is good enough that many drafts are accepted
  });

  test('sampling: joint of the first three tokens follows the exact target (chi-square)', async () => {
    const sampling = { temperature: 1.3, topK: 3, topP: 1 };
    const prompt = [12, 20, 33, 12];
    const exact = await exactJoint(target, prompt, 3, sampling);
    const N = 3000;
    const counts = new Map<string, number>();
    let accepted = 0;
    for (let s = 0; s < N; s++) {
      const e = await runEagle(prompt, 3, sampling, 7000 + s, s % 2 ? 'tree' : 'chain');
      accepted += e.accepted;
      const k = e.tokens.join(',');
      counts.set(k, (counts.get(k) ?? 0) + 1);
    }
    expect(accepted).toBeGreaterThan(N / 2);
    const { stat } = chiSquare(counts, exact, N);
    expect(stat).toBeLessThan(54.05); // df 26, p = 0.001
  }, 60000);

  test('tree nodes see exactly the committed prefix and their own ancestors; tree entries are rolled back', async () => {
    const draft = new ToyDraft(target);
    const drafter = new EagleDrafter(draft, draft.embed);
    const prompt = [11, 22, 33, 11, 22];
    const feats = new Float32Array(prompt.length * 8).map((_, i) => Math.sin(i));
    await drafter.commit({ ids: prompt.slice(1), hidden: feats.subarray(0, 4 * 8), positions: Int32Array.of(0, 1, 2, 3), rootPos: 4 });
    expect(drafter.stableLength).toBe(4);
    // expand three levels by hand: root, its children, grandchildren
    const l1 = await drafter.expand([[]], 3);
    const p1 = l1[0]!.map((c) => [c.token]);
    const l2 = await drafter.expand(p1, 3);
    const p2 = p1.flatMap((p, i) => l2[i]!.slice(0, 2).map((c) => [...p, c.token]));
    await drafter.expand(p2, 3);
    expect(draft.length).toBe(4 + p1.length + p2.length);
    // level-1 nodes (slots 4..6) see the stable prefix 0..3 and themselves; they are run as row n
    // (the root's row, position 4), level-2 nodes as row n+1 (position 5)
    for (let i = 0; i < p1.length; i++) expect(draft.visibility[4 + i]).toEqual([0, 1, 2, 3, 4 + i]);
    expect(draft.entries.slice(4, 7).map((e) => e.pos)).toEqual([4, 4, 4]);
    expect(new Set(draft.entries.slice(7).map((e) => e.pos))).toEqual(new Set([5]));
    // level-2 node j (slot 7 + j) sees the prefix, its parent (slot 4 + floor(j/2)) and itself
    for (let j = 0; j < p2.length; j++) expect(draft.visibility[7 + j]).toEqual([0, 1, 2, 3, 4 + Math.floor(j / 2), 7 + j]);
    // the next commit drops the tree entries before adding the new pairs
    await drafter.commit({ ids: [p1[0]![0]!], hidden: new Float32Array(8), positions: Int32Array.of(4), rootPos: 5 });
    expect(drafter.stableLength).toBe(5);
    expect(draft.length).toBe(5);
  });
});
