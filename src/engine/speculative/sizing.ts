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
