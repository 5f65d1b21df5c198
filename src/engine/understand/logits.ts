// Logits processing shared by plain decoding and by every verification position (losslessness is
// relative to this processed distribution, so both paths must call exactly this code).
import type { Rng } from '../rng.ts';

export interface SamplingParams {
  /** 0 = greedy */
  temperature: number;
  /** 0 = off */
  topK: number;
  /** 1 = off */
  topP: number;
}

export const GREEDY: SamplingParams = { temperature: 0, topK: 0, topP: 1 };

export function isGreedy(p: SamplingParams): boolean {
  return p.temperature <= 0;
}

/** Index of the largest value in logits[offset, offset+V); ties go to the lowest index. */
export function argmax(logits: ArrayLike<number>, offset: number, V: number): number {
  let best = 0;
  let bv = -Infinity;
  for (let i = 0; i < V; i++) {
    const v = logits[offset + i]!;
    if (v > bv) {
      bv = v;
      best = i;
    }
  }
  return best;
}

/**
 * The processed target distribution at one position: temperature, then top-k, then top-p (the order
 * HF transformers and vLLM use). Greedy gives a one-hot distribution at the argmax, so the same
 * rejection code handles both cases. Returns a fresh normalised Float64Array of length V.
 */
export function processLogits(logits: ArrayLike<number>, offset: number, V: number, p: SamplingParams): Float64Array {
  const out = new Float64Array(V);
  if (isGreedy(p)) {
    out[argmax(logits, offset, V)] = 1;
    return out;
  }
  const invT = 1 / p.temperature;
  let max = -Infinity;
  for (let i = 0; i < V; i++) max = Math.max(max, logits[offset + i]!);
  let sum = 0;
  for (let i = 0; i < V; i++) {
    const e = Math.exp((logits[offset + i]! - max) * invT);
    out[i] = e;
    sum += e;
  }
  for (let i = 0; i < V; i++) out[i] = out[i]! / sum;
  const useK = p.topK > 0 && p.topK < V;
  const useP = p.topP < 1;
  if (!useK && !useP) return out;
  // Stable sort of indices by probability, descending (ties: lower index first).
  const order = Array.from({ length: V }, (_, i) => i).sort((a, b) => out[b]! - out[a]! || a - b);
  let keep = useK ? p.topK : V;
  if (useP) {
    let cum = 0;
    let n = 0;
    while (n < keep) {
      cum += out[order[n]!]!;
      n++;
      if (cum >= p.topP) break;
    }
    keep = Math.max(1, n);
  }
  let kept = 0;
  for (let r = 0; r < V; r++) {
    const i = order[r]!;
    if (r < keep) kept += out[i]!;
    else out[i] = 0;
  }
  for (let i = 0; i < V; i++) out[i] = out[i]! / kept;
  return out;
}

/** Inverse-CDF sample from a (possibly unnormalised) non-negative weight vector. */
export function sampleFrom(weights: Float64Array, rng: Rng): number {
  let total = 0;
  for (let i = 0; i < weights.length; i++) total += weights[i]!;
  const u = rng.uniform() * total;
  let acc = 0;
  let last = -1;
  for (let i = 0; i < weights.length; i++) {
    const w = weights[i]!;
    if (w <= 0) continue;
    acc += w;
    last = i;
    if (u < acc) return i;
  }
  if (last < 0) throw new Error('sampleFrom: empty distribution');
  return last;
}

/** The next token from a processed distribution: argmax for greedy (no randomness used), else a sample. */
export function pickToken(probs: Float64Array, greedy: boolean, rng: Rng): number {
  if (greedy) return argmax(probs, 0, probs.length);
  return sampleFrom(probs, rng);
}
