// A pure-JS EAGLE-style draft (DraftModel) for the toy target: predicts the next feature from
// (token embedding, previous feature) plus a little attention over the entries it may see. Records
// what every entry could see, so tests can check the tree visibility rules.
import type { DraftForward, DraftModel, DraftRows } from '../../src/engine/speculative/eagle.ts';
import type { ToyModel } from './toy-lm.ts';

interface Entry {
  emb: Float32Array;
  feat: Float32Array;
  pos: number;
}

export class ToyDraft implements DraftModel {
  entries: Entry[] = [];
  /** for every forwarded entry (by slot index): the slots it attended to */
  visibility: number[][] = [];
  forwards = 0;
  constructor(readonly target: ToyModel, readonly mix = 0.05) {}
  get vocab() {
    return this.target.vocab;
  }
  get featureDim() {
    return this.target.dim;
  }
  get length() {
    return this.entries.length;
  }
  embed = (ids: number[]): Float32Array => {
    const D = this.target.dim;
    const out = new Float32Array(ids.length * D);
    ids.forEach((id, i) => out.set(this.target.emb.subarray(id * D, id * D + D), i * D));
    return out;
  };
  async forward(rows: DraftRows): Promise<DraftForward> {
    const { embeds, positions, mask, past } = rows;
    const features = rows.hidden ?? rows.prev!;
    this.forwards++;
    const T = positions.length;
    const D = this.target.dim;
    const V = this.vocab;
    const base = this.entries.length;
    const from = past?.from ?? base;
    const temp = base - from;
    const fresh: Entry[] = [];
    for (let i = 0; i < T; i++) fresh.push({ emb: embeds.slice(i * D, (i + 1) * D), feat: features.slice(i * D, (i + 1) * D), pos: positions[i]! });
    const logits = new Float32Array(T * V);
    const hidden = new Float32Array(T * D);
    for (let i = 0; i < T; i++) {
      const vis: number[] = [];
      for (let s = 0; s < from; s++) vis.push(s);
      for (let s = 0; s < temp; s++) if (!past || past.mask[i * temp + s]) vis.push(from + s);
      for (let j = 0; j < T; j++) if (mask[i * T + j]) vis.push(base + j);
      this.visibility[base + i] = vis;
      const e = fresh[i]!;
      // row i predicts the feature of row i+1 (the embedded token's row, at position pos + 1)
      const p1 = e.pos + 1;
      const w = 1 / (1 + 0.3 * p1) + 0.05 * ((p1 * 7) % 5);
      const h = new Float64Array(D);
      for (let d = 0; d < D; d++) h[d] = e.feat[d]! * 1.5 + w * e.emb[d]! * (1 + 0.1 * Math.sin(p1 + d));
      for (const s of vis) {
        const f = s < base ? this.entries[s]!.feat : fresh[s - base]!.feat;
        for (let d = 0; d < D; d++) h[d]! += this.mix * f[d]!;
      }
      let n = 0;
      for (let d = 0; d < D; d++) n += h[d]! * h[d]!;
      n = Math.sqrt(n) || 1;
      for (let d = 0; d < D; d++) hidden[i * D + d] = h[d]! / n;
      for (let v = 0; v < V; v++) {
        let s = 0;
        for (let d = 0; d < D; d++) s += hidden[i * D + d]! * this.target.out[v * D + d]!;
        logits[i * V + v] = this.target.sharpness * s;
      }
    }
    this.entries.push(...fresh);
    return { logits, features: hidden };
  }
  truncate(n: number): void {
    this.entries.length = Math.min(n, this.entries.length);
  }
}
