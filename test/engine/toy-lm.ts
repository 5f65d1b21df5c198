// A pure-JS causal "language model" implementing TargetSequence, for fast exhaustive tests of the
// decode loop: logits of a token depend on every token it can see (cached past + masked-visible new
// tokens) and on their positions, so a wrong tree mask, position or compaction changes the output.
import { Rng } from '../../src/engine/rng.ts';
import type { Compaction, TargetSequence } from '../../src/engine/understand/target.ts';

export class ToyModel {
  readonly emb: Float64Array;
  readonly out: Float64Array;
  constructor(
    readonly vocab: number,
    readonly dim = 8,
    seed = 1,
    readonly sharpness = 3,
  ) {
    const r = new Rng(seed);
    this.emb = Float64Array.from({ length: vocab * dim }, () => r.normal());
    this.out = Float64Array.from({ length: vocab * dim }, () => r.normal());
  }

  logitsFor(visible: Array<{ token: number; pos: number }>, into: Float32Array, off: number, feat?: Float32Array, featOff = 0): void {
    const h = new Float64Array(this.dim);
    for (const { token, pos } of visible) {
      const w = 1 / (1 + 0.3 * pos) + 0.05 * ((pos * 7) % 5);
      for (let d = 0; d < this.dim; d++) h[d]! += w * this.emb[token * this.dim + d]! * (1 + 0.1 * Math.sin(pos + d));
    }
    let n = 0;
    for (let d = 0; d < this.dim; d++) n += h[d]! * h[d]!;
    n = Math.sqrt(n) || 1;
    if (feat) for (let d = 0; d < this.dim; d++) feat[featOff + d] = h[d]! / n;
    for (let v = 0; v < this.vocab; v++) {
      let s = 0;
      for (let d = 0; d < this.dim; d++) s += (h[d]! / n) * this.out[v * this.dim + d]!;
      into[off + v] = this.sharpness * s;
    }
  }
}

export class ToySequence implements TargetSequence {
  cache: Array<{ token: number; pos: number }> = [];
  forwards = 0;
  tokensRun = 0;
  lastFeatures: Float32Array | null = null;
  constructor(readonly model: ToyModel) {}
  get featureDim() {
    return this.model.dim;
  }
  get vocab() {
    return this.model.vocab;
  }
  get length() {
    return this.cache.length;
  }
  async forward(tokens: Int32Array, positions: Int32Array, mask: Uint8Array, rows: 'all' | 'last', wantFeatures = false): Promise<Float32Array> {
    this.forwards++;
    const T = tokens.length;
    this.tokensRun += T;
    const V = this.vocab;
    const out = new Float32Array(T * V);
    const feats = new Float32Array(T * this.model.dim);
    for (let i = 0; i < T; i++) {
      const vis = this.cache.slice();
      for (let j = 0; j < T; j++) if (mask[i * T + j]) vis.push({ token: tokens[j]!, pos: positions[j]! });
      this.model.logitsFor(vis, out, i * V, feats, i * this.model.dim);
    }
    this.lastFeatures = wantFeatures ? feats : null;
    for (let i = 0; i < T; i++) this.cache.push({ token: tokens[i]!, pos: positions[i]! });
    return rows === 'last' ? out.slice((T - 1) * V) : out;
  }
  compact(c: Compaction): void {
    const kept = this.cache.slice(0, c.keepFrom);
    for (const k of c.keep) kept.push(this.cache[c.keepFrom + k]!);
    this.cache = kept;
  }
}
