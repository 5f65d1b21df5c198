// What the decode loop needs from the target model: one sequence (KV cache) it can extend by a
// block of tokens with an arbitrary local mask, getting logits back, and compact after verification.
// The worker-backed implementation lives in ./worker-target.ts; tests also use a pure-JS model.

export interface Compaction {
  keepFrom: number;
  keep: Int32Array;
}

export interface TargetSequence {
  readonly vocab: number;
  /** tokens currently cached (after any pending compaction) */
  readonly length: number;
  /**
   * Append `tokens` at `positions` (T×T local mask, 1 = attend; the cached past is fully visible)
   * and return logits [T, V] ('all') or [1, V] ('last'). A compaction requested before is applied
   * first (it may travel with this call).
   */
  forward(tokens: Int32Array, positions: Int32Array, mask: Uint8Array, rows: 'all' | 'last', wantFeatures?: boolean): Promise<Float32Array>;
  /**
   * After a forward with `wantFeatures`: the target features of every new token, [T, F] (the last
   * decoder layer's hidden state, what an EAGLE draft consumes).
   */
  readonly lastFeatures: Float32Array | null;
  readonly featureDim: number;
  /** Keep [0, keepFrom) and keepFrom + keep[i]; may be deferred to the next forward. */
  compact(c: Compaction): void;
}

/** Lower-triangular (causal) local mask. */
export function causalMask(T: number): Uint8Array {
  const m = new Uint8Array(T * T);
  for (let i = 0; i < T; i++) for (let j = 0; j <= i; j++) m[i * T + j] = 1;
  return m;
}
