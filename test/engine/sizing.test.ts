// Hardware-aware sizing with a draft model: draft cost in tree sizing, and auto's plain/chain/tree
// choice, on synthetic cost curves and acceptance statistics (no timing, no model).
import { describe, expect, test } from 'vitest';
import { AcceptanceStats } from '../../src/engine/speculative/metrics.ts';
import { TreeProposer } from '../../src/engine/speculative/proposer.ts';
import { chooseShape, chooseTreeSize, CostCurve, TREE_PRIOR_STEPS, treeDraftCost, type DraftCost } from '../../src/engine/speculative/sizing.ts';
import { childrenOf, type Candidate } from '../../src/engine/speculative/tree.ts';

// GPU-like: verifying 32 tokens costs barely more than 1; CPU-like: cost grows with every token
const flat = new CostCurve([[1, 1], [2, 1.01], [4, 1.02], [8, 1.05], [16, 1.1], [32, 1.2]]);
const steep = new CostCurve([[1, 1], [2, 1.9], [4, 3.6], [8, 7], [16, 14], [32, 28]]);
const cheapDraft: DraftCost = { perToken: 0.08, fixed: 0.12 };
const tree = { topK: 4, depth: 5, budget: 24 };

/** Stats with conditional acceptance `a` at every depth, marked as having `n` observations. */
function stats(a: number, n = 0): AcceptanceStats {
  const s = new AcceptanceStats(a);
  s.observations = n;
  return s;
}

describe('tree draft cost', () => {
  test('catch-up for level 1, one k-row draft forward per further level, scaled by the cost curve', () => {
    expect(treeDraftCost(cheapDraft, flat, 0, 4)).toBe(0);
    expect(treeDraftCost(cheapDraft, flat, 1, 4)).toBeCloseTo(0.12, 12);
    expect(treeDraftCost(cheapDraft, flat, 3, 4)).toBeCloseTo(0.12 + 2 * 0.08 * 1.02, 12);
    expect(treeDraftCost(cheapDraft, steep, 3, 4)).toBeCloseTo(0.12 + 2 * 0.08 * 3.6, 12);
  });

  test('tree size: the draft cost is paid whatever is kept, so it makes verifying more nodes worth it', () => {
    const scores = [-0.1, -0.2, -0.4, -0.9, -1.5, -3];
    const linear = new CostCurve([[1, 1], [2, 2], [4, 4], [8, 8]]);
    expect(chooseTreeSize(linear, scores)).toBe(0);
    expect(chooseTreeSize(linear, scores, 6)).toBeGreaterThan(0);
    expect(chooseTreeSize(linear, scores, 6)).toBeLessThanOrEqual(scores.length);
    expect(chooseTreeSize(flat, scores, 0.5)).toBeGreaterThanOrEqual(chooseTreeSize(flat, scores, 0));
  });
});

describe('auto: plain, chain or tree', () => {
  test('flat verification + cheap draft: a tree (prior from chain acceptance) beats the best chain', () => {
    const s = chooseShape(flat, stats(0.6), stats(0.6), 8, cheapDraft, tree);
    expect(s.kind).toBe('tree');
    if (s.kind !== 'tree') return;
    expect(s.depth).toBeGreaterThanOrEqual(3);
    expect(s.budget).toBeLessThanOrEqual(24);
    expect(s.expectedTokensPerMs).toBeGreaterThan(s.plainTokensPerMs);
  });

  test('measured tree acceptance decides once there are enough tree steps', () => {
    // trees measured no better than chains: their extra verification and draft cost lose
    const noGain = chooseShape(flat, stats(0.6), stats(0.6, TREE_PRIOR_STEPS), 8, cheapDraft, tree);
    expect(noGain.kind).toBe('chain');
    // trees measured clearly better (siblings catch what the top-1 misses): trees
    const gain = chooseShape(flat, stats(0.6), stats(0.9, TREE_PRIOR_STEPS), 8, cheapDraft, tree);
    expect(gain.kind).toBe('tree');
  });

  test('steep verification (CPU): no tree; an expensive draft: plain decoding', () => {
    expect(chooseShape(steep, stats(0.6), stats(0.95, 100), 8, cheapDraft, tree).kind).not.toBe('tree');
    expect(chooseShape(flat, stats(0.6), stats(0.6), 8, { perToken: 3, fixed: 3 }, tree).kind).toBe('plain');
  });

  test('the draft cost sizes the tree: dearer draft levels, shallower trees', () => {
    const depthAt = (perToken: number) => {
      const s = chooseShape(flat, stats(0.6), stats(0.6), 8, { perToken, fixed: 0.12 }, tree);
      return s.kind === 'tree' ? s.depth : 0;
    };
    const depths = [0, 0.08, 0.2, 0.3, 0.5].map(depthAt);
    expect(depths[0]).toBe(5); // free drafting: as deep as allowed
    for (let i = 1; i < depths.length; i++) expect(depths[i]!).toBeLessThanOrEqual(depths[i - 1]!);
    expect(depths.at(-1)!).toBeLessThan(3);
  });
});

describe('TreeProposer in auto mode with tree statistics', () => {
  const expander = {
    expand(paths: number[][], k: number): Candidate[][] {
      return paths.map((p) => Array.from({ length: k }, (_, i) => ({ token: 10 + ((p.length * 7 + i) % 50), logprob: Math.log(0.7 / (i + 1)) })));
    },
  };
  const branching = (t: { tokens: Int32Array; parents: Int32Array; depths: Int32Array; scores: Float64Array }) =>
    Math.max(...childrenOf(t).map((c) => c.length));

  test('flat curve: proposes a branching tree and records the step in the tree statistics', async () => {
    const chain = stats(0.6);
    const trees = stats(0.6);
    const p = new TreeProposer('draft-model', expander, { mode: 'auto', maxChainLength: 8, curve: flat, stats: chain, treeStats: trees, draftCost: cheapDraft });
    const t = await p.propose([1, 2, 3]);
    expect(branching(t)).toBeGreaterThan(1);
    p.observe(3, 2);
    expect(trees.observations).toBe(1);
    expect(chain.observations).toBe(0);
  });

  test('steep curve: a chain (or nothing), recorded in the chain statistics; without tree statistics auto never branches', async () => {
    const chain = stats(0.8);
    const trees = stats(0.8);
    const p = new TreeProposer('draft-model', expander, { mode: 'auto', maxChainLength: 8, curve: steep, stats: chain, treeStats: trees, draftCost: { perToken: 0.01, fixed: 0.01 } });
    const t = await p.propose([1, 2, 3]);
    expect(branching(t)).toBeLessThanOrEqual(1);
    p.observe(2, 1);
    expect(trees.observations).toBe(0);
    const ng = new TreeProposer('ngram', expander, { mode: 'auto', maxChainLength: 8, curve: flat, stats: stats(0.6) });
    expect(branching(await ng.propose([1, 2, 3]))).toBeLessThanOrEqual(1);
  });
});
