// Hardware-aware sizing: the target's verification cost as a function of the number of tokens T
// (measured at start-up, linear interpolation between measured points) and the choice of chain
// length / tree size that maximises expected tokens per second. Speculation switches itself off
// (size 0) whenever plain decoding is expected to be faster.
import type { AcceptanceStats } from './metrics.ts';

export class CostCurve {
  /** points (T, ms), T ascending, T[0] = 1 */
  constructor(readonly points: Array<[number, number]>) {
    if (!points.length) throw new Error('empty cost curve');
    this.points = points.slice().sort((a, b) => a[0] - b[0]);
  }

  /** Estimated ms for a forward over T tokens. */
  cost(T: number): number {
    const p = this.points;
    if (T <= p[0]![0]) return p[0]![1];
    for (let i = 1; i < p.length; i++) {
      const [t1, c1] = p[i]!;
      const [t0, c0] = p[i - 1]!;
      if (T <= t1) return c0 + ((c1 - c0) * (T - t0)) / (t1 - t0);
    }
    // extrapolate linearly from the last two points
    const [t1, c1] = p[p.length - 1]!;
    const [t0, c0] = p.length > 1 ? p[p.length - 2]! : [0, 0];
    return c1 + ((c1 - c0) / Math.max(1, t1 - t0)) * (T - t1);
  }
}

export interface SizingChoice {
  size: number;
  expectedTokensPerMs: number;
  plainTokensPerMs: number;
}

/** Cost of drafting a chain of K tokens (ms): none for K = 0. */
export interface DraftCost {
  /** per drafted token after the first (one draft step each) */
  perToken: number;
  /** per verification step when drafting at all (model drafts: the catch-up forward) */
  fixed: number;
}

/**
 * Best chain length in [0, maxK]: maximises E[tokens](K) / (verify(K+1) + draft(K)), with
 * draft(K) = fixed + perToken·(K − 1) for K ≥ 1. K = 0 means plain decoding.
 */
export function chooseChainLength(curve: CostCurve, stats: AcceptanceStats, maxK: number, draft: DraftCost = { perToken: 0, fixed: 0 }): SizingChoice {
  const plain = 1 / curve.cost(1);
  let best = 0;
  let bestRate = plain;
  for (let K = 1; K <= maxK; K++) {
    const rate = stats.expectedTokens(K) / (curve.cost(K + 1) + draft.fixed + draft.perToken * (K - 1));
    if (rate > bestRate * 1.0001) {
      best = K;
      bestRate = rate;
    }
  }
  return { size: best, expectedTokensPerMs: bestRate, plainTokensPerMs: plain };
}

/**
 * Best tree size given the candidate scores (cumulative draft log-probs, best first): keeping the
 * top n nodes gives an expected accepted length of Σ exp(score) (EAGLE-2's observation), so pick n
 * maximising (1 + Σ_{i<n} exp(s_i)) / verify(n + 1).
 */
export function chooseTreeSize(curve: CostCurve, sortedScores: number[], fixedCost = 0): number {
  let best = 0;
  let bestRate = 1 / (curve.cost(1) + fixedCost);
  let expected = 1;
  for (let n = 1; n <= sortedScores.length; n++) {
    expected += Math.exp(sortedScores[n - 1]!);
    const rate = expected / (curve.cost(n + 1) + fixedCost);
    if (rate > bestRate * 1.0001) {
      best = n;
      bestRate = rate;
    }
  }
  return best;
}

/**
 * Draft cost of an EAGLE-2 tree of `depth` levels expanding `topK` nodes per level (ms): the catch-up
 * (`fixed`) yields the root's children (level 1); every further level is one draft forward over up to
 * topK rows. Only the one-row draft step is measured, so a k-row level is priced as perToken scaled by
 * the target's own cost growth cost(k)/cost(1) (same hardware, same kind of decoder layer).
 */
export function treeDraftCost(draft: DraftCost, curve: CostCurve, depth: number, topK: number): number {
  if (depth <= 0) return 0;
  return draft.fixed + (depth - 1) * draft.perToken * (curve.cost(Math.max(1, topK)) / curve.cost(1));
}

/** Nodes (root excluded) an auto tree of `depth` levels verifies: up to topK per level, within budget. */
export function treeNodes(depth: number, topK: number, budget: number): number {
  return Math.min(budget, topK * depth);
}

/** Tree steps recorded before the measured tree acceptance replaces the prior (see treeAcceptance). */
export const TREE_PRIOR_STEPS = 8;

/**
 * Conditional acceptance of tree level i (some node at depth i accepted, given depth i−1 was): the
 * measured tree statistics once TREE_PRIOR_STEPS tree steps were seen, else an optimistic prior from
 * the chain statistics — two independent tries at α instead of one: 1 − (1 − α)² (for topK ≥ 2).
 * The prior lets `auto` try trees where they might pay; the measurements then keep or drop them.
 */
export function treeAcceptance(i: number, chain: AcceptanceStats, tree: AcceptanceStats | undefined, topK: number): number {
  const a = chain.at(i);
  if (tree && tree.observations >= TREE_PRIOR_STEPS) return Math.max(tree.at(i), a);
  return topK >= 2 ? 1 - (1 - a) * (1 - a) : a;
}

export type ShapeChoice =
  | { kind: 'plain'; expectedTokensPerMs: number; plainTokensPerMs: number }
  | { kind: 'chain'; size: number; expectedTokensPerMs: number; plainTokensPerMs: number }
  | { kind: 'tree'; depth: number; topK: number; budget: number; expectedTokensPerMs: number; plainTokensPerMs: number };

/**
 * `auto` with a draft model: the best of plain decoding, a chain (chooseChainLength, draft cost
 * included) and an EAGLE-2 tree of depth d ≤ tree.depth, whose expected rate is
 *   E_tree(d) / (verify(nodes(d) + 1) + treeDraftCost(d)),  E_tree(d) = 1 + Σ_{i<d} Π_{j≤i} β_j
 * with β from treeAcceptance. Trees win where verifying more tokens is nearly free (flat cost curve,
 * GPUs) and drafting is cheap; chains or plain decoding where verification cost grows with tokens.
 */
export function chooseShape(
  curve: CostCurve,
  chainStats: AcceptanceStats,
  treeStats: AcceptanceStats | undefined,
  maxK: number,
  draft: DraftCost = { perToken: 0, fixed: 0 },
  tree: { topK: number; depth: number; budget: number } = { topK: 4, depth: 5, budget: 24 },
): ShapeChoice {
  const chain = chooseChainLength(curve, chainStats, maxK, draft);
  let best: ShapeChoice =
    chain.size > 0
      ? { kind: 'chain', size: chain.size, expectedTokensPerMs: chain.expectedTokensPerMs, plainTokensPerMs: chain.plainTokensPerMs }
      : { kind: 'plain', expectedTokensPerMs: chain.plainTokensPerMs, plainTokensPerMs: chain.plainTokensPerMs };
  if (tree.topK < 2) return best; // a top-1 tree is a chain
  let expected = 1;
  let prod = 1;
  for (let d = 1; d <= tree.depth; d++) {
    prod *= treeAcceptance(d - 1, chainStats, treeStats, tree.topK);
    expected += prod;
    const nodes = treeNodes(d, tree.topK, tree.budget);
    const rate = expected / (curve.cost(nodes + 1) + treeDraftCost(draft, curve, d, tree.topK));
    if (rate > best.expectedTokensPerMs * 1.0001)
      best = { kind: 'tree', depth: d, topK: tree.topK, budget: nodes, expectedTokensPerMs: rate, plainTokensPerMs: chain.plainTokensPerMs };
  }
  return best;
}
