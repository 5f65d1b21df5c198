// Logits processing shared by plain decoding and by every verification position (losslessness is
// relative to this processed distribution, so both paths must call exactly this code).

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
    // (a temperature so small that 1/T is Infinity: the maxima's 0 · Infinity would be NaN; the limit, a
    // one-hot at the argmax, is what 0 gives)
    const d = logits[offset + i]! - max;
    const e = Math.exp(d === 0 ? 0 : d * invT);
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
    // top-p over the top-k distribution renormalised (HF and vLLM: top-k masks the logits, then top-p's
    // softmax and cumulative sum run on what is left)
    let massK = 1;
    if (useK) {
      massK = 0;
      for (let n = 0; n < keep; n++) massK += out[order[n]!]!;
    }
    let cum = 0;
    let n = 0;
    while (n < keep) {
      cum += out[order[n]!]!;
      n++;
      if (cum / massK >= p.topP) break;
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

/**
 * Picks the token at a position from the processed target distribution there. Sampling is the
 * Gumbel-max trick with noise fixed by (seed, position, token id): argmax_v log p(v) + G(seed, pos, v).
 * That is an exact sample from p, and because the noise depends on nothing but the position, the token
 * chosen at a position is the same whatever was drafted there: speculative decoding (any chain, tree or
 * retrieval draft, verified by "follow the child equal to the target's token") commits exactly the
 * sequence plain decoding commits with the same seed, not merely one with the same distribution.
 */
export type TokenSampler = (probs: Float64Array, position: number) => number;

export function tokenSampler(seed: number, greedy: boolean): TokenSampler {
  if (greedy) return (probs) => argmax(probs, 0, probs.length);
  const lo = seed >>> 0;
  const hi = Math.floor(seed / 4294967296) >>> 0;
  return (probs, position) => {
    let best = -1;
    let bestScore = -Infinity;
    for (let v = 0; v < probs.length; v++) {
      const pv = probs[v]!;
      if (!(pv > 0)) continue;
      const score = Math.log(pv) - Math.log(-Math.log(noiseUniform(lo, hi, position, v)));
      if (score > bestScore) {
        bestScore = score;
        best = v;
      }
    }
    if (best < 0) throw new Error('tokenSampler: empty distribution');
    return best;
  };
}

const rotl = (x: number, r: number) => (x << r) | (x >>> (32 - r));
function fmix32(h: number): number {
  h ^= h >>> 16;
  h = Math.imul(h, 0x85ebca6b);
  h ^= h >>> 13;
  h = Math.imul(h, 0xc2b2ae35);
  h ^= h >>> 16;
  return h >>> 0;
}
/** MurmurHash3 (x86, 32-bit) of four 32-bit words under a salt. */
function murmur4(salt: number, a: number, b: number, c: number, d: number): number {
  let h = salt | 0;
  for (const w of [a, b, c, d]) {
    let k = Math.imul(w | 0, 0xcc9e2d51);
    k = Math.imul(rotl(k, 15), 0x1b873593);
    h = Math.imul(rotl(h ^ k, 13), 5) + 0xe6546b64;
  }
  return fmix32(h ^ 16);
}
/** A uniform in (0, 1) with 53 random bits, a pure function of (seed, position, token). */
export function noiseUniform(seedLo: number, seedHi: number, position: number, token: number): number {
  const a = murmur4(0x9747b28c, seedLo, seedHi, position, token) >>> 5; // 27 bits
  const b = murmur4(0x5bd1e995, seedLo, seedHi, position, token) >>> 6; // 26 bits
  return (a * 67108864 + b + 0.5) / 9007199254740992;
}
