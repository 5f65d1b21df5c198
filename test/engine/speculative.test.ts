import { tokenSampler } from '../../src/engine/understand/logits.ts';
import { describe, expect, test } from 'vitest';
import { Rng } from '../../src/engine/rng.ts';
import { AcceptanceStats } from '../../src/engine/speculative/metrics.ts';
import { ngramProposer, TreeProposer, type ProposerConfig } from '../../src/engine/speculative/proposer.ts';
import { verifyTree } from '../../src/engine/speculative/rejection.ts';
import {
  buildDynamicTree,
  chainTree,
  childrenOf,
  pathTo,
  pruneDepth,
  retrievePaths,
  treeMask,
  treePositions,
  type Candidate,
  type DraftTree,
} from '../../src/engine/speculative/tree.ts';
import { CostCurve } from '../../src/engine/speculative/sizing.ts';
import { ToyModel } from './toy-lm.ts';
import { chiSquare, exactJoint, randomPrompt, runDecode, ToyDraftExpander } from './spec-helpers.ts';

/** Random expander: deterministic per path, distinct tokens, random log-probs. */
function randomExpander(seed: number, V: number) {
  let calls = 0;
  return {
    get calls() {
      return calls;
    },
    expand(paths: number[][], k: number): Candidate[][] {
      calls++;
      return paths.map((p) => {
        const r = new Rng(seed * 7919 + p.reduce((h, t) => h * 131 + t + 1, 17));
        const toks = new Set<number>();
        while (toks.size < Math.min(k, V)) toks.add(Math.floor(r.uniform() * V));
        const raw = [...toks].map((t) => ({ token: t, w: r.uniform() + 0.01 }));
        const s = raw.reduce((a, b) => a + b.w, 0) * (1 + r.uniform());
        return raw.map((x) => ({ token: x.token, logprob: Math.log(x.w / s) })).sort((a, b) => b.logprob - a.logprob);
      });
    },
  };
}

function checkTree(t: DraftTree) {
  const n = t.tokens.length;
  expect(t.parents[0]).toBe(-1);
  expect(t.depths[0]).toBe(0);
  const kids = childrenOf(t);
  for (let i = 1; i < n; i++) {
    const p = t.parents[i]!;
    expect(p).toBeGreaterThanOrEqual(0);
    expect(p).toBeLessThan(i); // topological
    expect(t.depths[i]).toBe(t.depths[p]! + 1);
    expect(t.scores[i]).toBeLessThanOrEqual(t.scores[p]! + 1e-12); // cumulative log-prob never grows
  }
  for (const ks of kids) {
    const toks = ks.map((k) => t.tokens[k]);
    expect(new Set(toks).size).toBe(toks.length); // distinct siblings
    for (let j = 1; j < ks.length; j++) expect(t.scores[ks[j]!]!).toBeLessThanOrEqual(t.scores[ks[j - 1]!]!); // best first
  }
  // mask = exactly the ancestors and self; positions = depth
  const m = treeMask(t);
  const pos = treePositions(t, 100);
  for (let i = 0; i < n; i++) {
    const anc = new Set(pathTo(t, i));
    for (let j = 0; j < n; j++) expect(m[i * n + j]).toBe(anc.has(j) ? 1 : 0);
    expect(pos[i]).toBe(100 + t.depths[i]!);
  }
  const leaves = retrievePaths(t);
  expect(leaves.every((p) => p[0] === 0 && kids[p[p.length - 1]!]!.length === 0)).toBe(true);
}

describe('draft tree construction (EAGLE-2)', () => {
  test('properties over many random expansions', async () => {
    for (let s = 0; s < 200; s++) {
      const r = new Rng(s);
      const shape = { topK: 1 + Math.floor(r.uniform() * 5), depth: 1 + Math.floor(r.uniform() * 6), budget: 1 + Math.floor(r.uniform() * 40) };
      const ex = randomExpander(s, 30);
      const t = await buildDynamicTree(5, ex, shape);
      checkTree(t);
      expect(t.tokens[0]).toBe(5);
      expect(t.tokens.length - 1).toBeLessThanOrEqual(shape.budget);
      expect(Math.max(...t.depths)).toBeLessThanOrEqual(shape.depth);
      expect(ex.calls).toBeLessThanOrEqual(shape.depth); // one batched expansion per level
    }
  });

  test('re-ranking keeps the globally best candidates by cumulative log-prob', async () => {
    // scores known by construction: every node has children with log-probs log(.6), log(.3), log(.1)
    const lp = [Math.log(0.6), Math.log(0.3), Math.log(0.1)];
    const ex = { expand: (paths: number[][], k: number) => paths.map(() => lp.slice(0, k).map((l, i) => ({ token: i + 1, logprob: l }))) };
    const t = await buildDynamicTree(0, ex, { topK: 3, depth: 3, budget: 6 });
    checkTree(t);
    const got = Array.from(t.scores.slice(1)).map(Math.exp).sort((a, b) => b - a);
    // candidates: depth1 .6 .3 .1; depth2 (from top-3 of depth1) .36 .18 .18 .09 .06 ...; depth3 .216 ...
    expect(got.map((x) => +x.toFixed(3))).toEqual([0.6, 0.36, 0.3, 0.216, 0.18, 0.18]);
  });

  test('chooseBudget shrinks the tree', async () => {
    const ex = randomExpander(3, 30);
    const t = await buildDynamicTree(0, ex, { topK: 4, depth: 4, budget: 30 }, (scores) => {
      expect(scores.every((s, i) => i === 0 || s <= scores[i - 1]!)).toBe(true);
      return 5;
    });
    checkTree(t);
    expect(t.tokens.length).toBe(6);
  });

  test('pruning by depth keeps a connected tree', async () => {
    for (let s = 0; s < 50; s++) {
      const t = await buildDynamicTree(1, randomExpander(s, 30), { topK: 3, depth: 5, budget: 30 });
      for (const d of [0, 1, 2, 4]) {
        const p = pruneDepth(t, d);
        checkTree(p);
        expect(Math.max(...p.depths)).toBeLessThanOrEqual(d);
        expect(p.tokens.length).toBe(Array.from(t.depths).filter((x) => x <= d).length);
      }
    }
  });

  test('chains', () => {
    const t = chainTree(9, [4, 5, 6]);
    checkTree(t);
    expect(Array.from(treeMask(t))).toEqual([1, 0, 0, 0, 1, 1, 0, 0, 1, 1, 1, 0, 1, 1, 1, 1]);
  });
});

describe('rejection sampling over trees', () => {
  test('first emitted token follows the target distribution exactly (Monte Carlo)', () => {
    const V = 6;
    const r0 = new Rng(11);
    const target = Array.from({ length: V }, () => r0.uniform() ** 2);
    const z = target.reduce((a, b) => a + b);
    const p0 = Float64Array.from(target.map((x) => x / z));
    // root has 3 children drafting tokens 2, 0, 5 (a point-mass draft tree)
    const tree: DraftTree = {
      tokens: Int32Array.of(9, 2, 0, 5, 1),
      parents: Int32Array.of(-1, 0, 0, 0, 1),
      depths: Int32Array.of(0, 1, 1, 1, 2),
      scores: Float64Array.of(0, -1, -2, -3, -4),
    };
    const other = Float64Array.from({ length: V }, (_, i) => (i === 1 ? 0.5 : 0.1));
    const counts = new Array(V).fill(0);
    const N = 60000;
    for (let i = 0; i < N; i++) {
      const res = verifyTree(tree, (node) => (node === 0 ? p0 : other), tokenSampler(5000 + i, false), 7);
      const first = res.acceptedTokens.length ? res.acceptedTokens[0]! : res.nextToken;
      counts[first]++;
    }
    const tv = counts.reduce((s, c, i) => s + Math.abs(c / N - p0[i]!), 0) / 2;
    expect(tv).toBeLessThan(0.01);
  });

  test('greedy follows the argmax path and stops at the first mismatch', () => {
    const tree = chainTree(1, [3, 4, 5]);
    const oneHot = (i: number) => Float64Array.from({ length: 8 }, (_, j) => (j === i ? 1 : 0));
    const want = [3, 4, 7, 0];
    const res = verifyTree(tree, (n) => oneHot(want[n]!), tokenSampler(1, true), 0);
    expect(res.acceptedTokens).toEqual([3, 4]);
    expect(res.nextToken).toBe(7);
  });

  test('sampled verification commits exactly the tokens plain sampling picks at those positions, whatever the draft', () => {
    const V = 5;
    const r = new Rng(3);
    const dist = () => {
      const w = Array.from({ length: V }, () => r.uniform() ** 3);
      const z = w.reduce((a, b) => a + b);
      return Float64Array.from(w.map((x) => x / z));
    };
    let accepted = 0;
    for (let trial = 0; trial < 400; trial++) {
      const seed = 77 + trial;
      const pick = tokenSampler(seed, false);
      const rootPos = 10 + (trial % 7);
      // one distribution per depth (the target's prediction along any path at that depth)
      const ps = [dist(), dist(), dist(), dist()];
      // the plain decode: one pick per position
      const plain = ps.map((p, d) => pick(p, rootPos + d + 1));
      // a random draft tree up to depth 3 with 2 children per node
      const tokens = [0], parents = [-1], depths = [0];
      for (let i = 0; tokens.length < 15; i++) {
        if (depths[i]! >= 3) continue;
        for (let c = 0; c < 2; c++) {
          tokens.push(Math.floor(r.uniform() * V));
          parents.push(i);
          depths.push(depths[i]! + 1);
        }
      }
      const tree: DraftTree = { tokens: Int32Array.from(tokens), parents: Int32Array.from(parents), depths: Int32Array.from(depths), scores: new Float64Array(tokens.length) };
      const res = verifyTree(tree, (node) => ps[tree.depths[node]!]!, pick, rootPos);
      const emitted = [...res.acceptedTokens, res.nextToken];
      expect(emitted).toEqual(plain.slice(0, emitted.length));
      accepted += res.acceptedTokens.length;
    }
    expect(accepted).toBeGreaterThan(100); // drafts were accepted often enough for this to mean something
  });

  test('tokenSampler: a pure function of (seed, position), exact in distribution, greedy is argmax', () => {
    const p = Float64Array.of(0.5, 0.3, 0.2, 0);
    const a = tokenSampler(42, false);
    const b = tokenSampler(42, false);
    for (let pos = 0; pos < 50; pos++) expect(a(p, pos)).toBe(b(p, pos));
    const counts = [0, 0, 0, 0];
    for (let seed = 0; seed < 20000; seed++) counts[tokenSampler(seed, false)(p, 3)]!++;
    expect(counts[3]).toBe(0);
    for (let i = 0; i < 3; i++) expect(Math.abs(counts[i]! / 20000 - p[i]!)).toBeLessThan(0.015);
    // positions are independent draws too
    const byPos = [0, 0, 0, 0];
    const one = tokenSampler(9, false);
    for (let pos = 0; pos < 20000; pos++) byPos[one(p, pos)]!++;
    for (let i = 0; i < 3; i++) expect(Math.abs(byPos[i]! / 20000 - p[i]!)).toBeLessThan(0.015);
    expect(tokenSampler(1, true)(Float64Array.of(0.1, 0.6, 0.3), 0)).toBe(1);
    // seeds beyond 32 bits matter
    const big = [2 ** 40, 2 ** 40 + 2 ** 33].map((sd) => Array.from({ length: 40 }, (_, pos) => tokenSampler(sd, false)(p, pos)).join(''));
    expect(big[0]).not.toBe(big[1]);
  });
});

function cfg(mode: ProposerConfig['mode'], extra: Partial<ProposerConfig> = {}): ProposerConfig {
  return { mode, maxChainLength: 8, stats: new AcceptanceStats(), ...extra };
}

describe('decode loop: speculation is lossless (toy target)', () => {
  const target = new ToyModel(40, 8, 1, 4);
  const draft = new ToyModel(40, 8, 1, 2.5); // same weights, different temperature: a decent draft

  test('greedy output identical with and without speculation, over many prompts', async () => {
    const r = new Rng(99);
    let drafted = 0;
    for (let i = 0; i < 40; i++) {
      const prompt = randomPrompt(r, 40, 3 + Math.floor(r.uniform() * 8));
      const g = { temperature: 0, topK: 0, topP: 1 };
      const plain = await runDecode(target, prompt, 24, g, 0, null);
      const proposers = [
        ngramProposer(cfg('ngram', { chainLength: 4 })),
        ngramProposer(cfg('tree', { treeBudget: 8, treeTopK: 3, treeDepth: 4 })),
        new TreeProposer('toy-draft', new ToyDraftExpander(draft), cfg('chain', { chainLength: 5 })),
        new TreeProposer('toy-draft', new ToyDraftExpander(draft), cfg('tree', { treeBudget: 12, treeTopK: 3, treeDepth: 5 })),
        new TreeProposer('random', randomExpander(i, 40), cfg('tree', { treeBudget: 10, treeTopK: 4, treeDepth: 3 })),
      ];
      for (const p of proposers) {
        const spec = await runDecode(target, prompt, 24, g, 0, p);
        expect(spec.tokens).toEqual(plain.tokens);
        // KV holds exactly prompt + emitted tokens except the last (not yet fed back): no rejected slots left
        expect(spec.seq.length).toBe(prompt.length + spec.emitted - 1);
        expect(spec.seq.cache.map((c) => c.pos)).toEqual(spec.seq.cache.map((_, i) => i));
        drafted += spec.steps < plain.steps ? 1 : 0;
      }
    }
    // speculation actually happened (fewer steps) in many runs
    expect(drafted).toBeGreaterThan(40);
  });

  test('sampled outputs follow the exact target distribution (chi-square, with and without speculation)', async () => {
    const sampling = { temperature: 1.3, topK: 3, topP: 1 };
    const prompt = [12, 20, 33, 12];
    const exact = await exactJoint(target, prompt, 3, sampling);
    const N = 4000;
    const runs: Record<string, Map<string, number>> = { plain: new Map(), tree: new Map(), chain: new Map() };
    let accepted = 0;
    for (let s = 0; s < N; s++) {
      const variants: Array<[string, ReturnType<typeof ngramProposer> | null]> = [
        ['plain', null],
        ['tree', new TreeProposer('toy-draft', new ToyDraftExpander(draft), cfg('tree', { treeBudget: 8, treeTopK: 3, treeDepth: 3 }))],
        ['chain', new TreeProposer('toy-draft', new ToyDraftExpander(draft), cfg('chain', { chainLength: 3 }))],
      ];
      for (const [name, p] of variants) {
        const out = await runDecode(target, prompt, 3, sampling, 1000 + s, p);
        const k = out.tokens.join(',');
        runs[name]!.set(k, (runs[name]!.get(k) ?? 0) + 1);
        if (name === 'tree' && out.steps < 3) accepted++;
      }
    }
    expect(accepted).toBeGreaterThan(N / 4); // drafts were accepted often
    for (const name of Object.keys(runs)) {
      const { stat, df } = chiSquare(runs[name]!, exact, N);
      // df = 26 → 99.9th percentile ≈ 54.05
      expect(df).toBe(26);
      expect(stat, `${name}: chi2=${stat.toFixed(1)}`).toBeLessThan(54.05);
    }
  }, 60000);

  test('a lossy verifier is caught by the same statistic (power check)', async () => {
    // accept every drafted child whose target probability is > 0: biased toward the draft
    const sampling = { temperature: 1.3, topK: 3, topP: 1 };
    const prompt = [12, 20, 33, 12];
    const exact = await exactJoint(target, prompt, 3, sampling);
    const ex = new ToyDraftExpander(draft);
    const counts = new Map<string, number>();
    const N = 4000;
    const rng = new Rng(4);
    for (let s = 0; s < N; s++) {
      ex.setContext(prompt);
      const first = ex.expand([[]], 1)[0]![0]!.token;
      const exactFirst = [...exact.keys()].some((k) => k.startsWith(`${first},`));
      // lossy: take the draft's top token with prob 0.5, else sample exactly
      const seqs = [...exact.entries()];
      let u = rng.uniform();
      let pick = seqs[0]![0];
      const useDraft = exactFirst && rng.uniform() < 0.5;
      const pool = useDraft ? seqs.filter(([k]) => k.startsWith(`${first},`)) : seqs;
      const z = pool.reduce((a, [, p]) => a + p, 0);
      u *= z;
      for (const [k, p] of pool) {
        pick = k;
        if ((u -= p) < 0) break;
      }
      counts.set(pick, (counts.get(pick) ?? 0) + 1);
    }
    expect(chiSquare(counts, exact, N).stat).toBeGreaterThan(54.05);
  });

  test('auto sizing: flat verification cost drafts, steep cost turns speculation off', async () => {
    const r = new Rng(5);
    const prompt = randomPrompt(r, 40, 6);
    const g = { temperature: 0, topK: 0, topP: 1 };
    const flat = new CostCurve([[1, 1], [2, 1.02], [8, 1.1], [32, 1.5]]);
    const steep = new CostCurve([[1, 1], [2, 2.2], [8, 9]]);
    const stats = new AcceptanceStats(0.8);
    const on = await runDecode(target, prompt, 20, g, 0, new TreeProposer('toy-draft', new ToyDraftExpander(draft), cfg('auto', { curve: flat, stats })));
    const seqOn = on.seq;
    expect(seqOn.tokensRun).toBeGreaterThan(prompt.length + on.steps); // multi-token verification happened
    const off = await runDecode(target, prompt, 20, g, 0, new TreeProposer('toy-draft', new ToyDraftExpander(draft), cfg('auto', { curve: steep, stats: new AcceptanceStats(0.8) })));
    expect(off.seq.tokensRun).toBe(prompt.length + off.steps - 1); // plain: one token per forward
    expect(on.tokens).toEqual(off.tokens);
  });
});
