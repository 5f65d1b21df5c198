// EAGLE-style model drafting (feature-level autoregression, EAGLE-1/2) as an Expander.
//
// Draft input at committed position p: (embedding of token t_{p+1}, target feature f_p) at the
// position id of t_{p+1}; output: predicted feature f̂_{p+1} and logits for t_{p+2}. Committed pairs
// live in the draft's KV ("stable" prefix, always built from *target* features). Each round:
//   1. commit(): feed the pairs of the tokens committed since the last round (catch-up); the last
//      output is the draft's distribution for the root's children.
//   2. expand(): per tree level, run all frontier nodes in one draft forward (query length = k);
//      a node's input is (embedding of its token, its parent's draft hidden); it sees the stable
//      prefix and its own ancestors among the temporary tree entries, nothing else.
//   3. The temporary entries are dropped at the next commit (draft-side rollback is a truncate).
import type { Candidate, Expander } from './tree.ts';

export interface DraftForward {
  logits: Float32Array; // [T, V]
  hidden: Float32Array; // [T, F]
}

/** The draft network with its own KV cache (worker-backed for draft.onnx, pure JS in tests). */
export interface DraftModel {
  readonly vocab: number;
  readonly featureDim: number;
  readonly hiddenDim: number;
  /** entries in the draft's KV cache */
  readonly length: number;
  /**
   * Append T entries. `pastMask` (T × (length − pastFrom), 1 = attend) restricts which cached
   * entries from `pastFrom` on are visible; entries before `pastFrom` are always visible. `mask` is
   * the T×T local mask among the new entries.
   */
  forward(
    embeds: Float32Array,
    features: Float32Array,
    positions: Int32Array,
    mask: Uint8Array,
    past?: { from: number; mask: Uint8Array },
  ): Promise<DraftForward>;
  /** keep the first n entries */
  truncate(n: number): void;
}

interface Node {
  /** draft hidden of this node's forward: the feature its children are run with */
  hidden: Float32Array;
  /** draft logits of this node's forward: distribution of its children */
  logits: Float32Array;
  /** KV slot of this node's entry (−1 for the root, whose entry is part of the stable prefix) */
  slot: number;
  /** ancestor slots (temporary entries) incl. own */
  slots: number[];
}

export interface CommitPairs {
  /** the newly committed tokens t_{p+1} (embedded with the shared table) … */
  ids?: number[];
  /** … or their embeddings directly, [n, D] (prompt image blocks) */
  embeds?: Float32Array;
  /** target features f_p of the tokens before them, [n, F] */
  features: Float32Array;
  /** position ids of the newly committed tokens */
  positions: Int32Array;
}

export class EagleDrafter implements Expander {
  private stable = 0;
  private rootPos = 0;
  private nodes = new Map<string, Node>();
  forwards = 0;

  constructor(
    private draft: DraftModel,
    private embed: (ids: number[]) => Float32Array,
  ) {}

  /** Feed newly committed pairs (catch-up). The last pair's output predicts the root's children. */
  async commit(p: CommitPairs): Promise<void> {
    const n = p.positions.length;
    if (!n) throw new Error('commit: no pairs');
    this.draft.truncate(this.stable); // drop last round's tree entries
    const mask = new Uint8Array(n * n);
    for (let i = 0; i < n; i++) for (let j = 0; j <= i; j++) mask[i * n + j] = 1;
    const embeds = p.embeds ?? this.embed(p.ids ?? []);
    const out = await this.draft.forward(embeds, p.features, p.positions, mask);
    this.forwards++;
    this.stable += n;
    this.rootPos = p.positions[n - 1]!;
    const V = this.draft.vocab;
    const F = this.draft.hiddenDim;
    this.nodes.clear();
    this.nodes.set('', {
      hidden: out.hidden.slice((n - 1) * F, n * F),
      logits: out.logits.slice((n - 1) * V, n * V),
      slot: -1,
      slots: [],
    });
  }

  embedIds(ids: number[]): Float32Array {
    return this.embed(ids);
  }

  /** entries of the draft KV that are committed (for tests) */
  get stableLength(): number {
    return this.stable;
  }

  async expand(paths: number[][], k: number): Promise<Candidate[][]> {
    const V = this.draft.vocab;
    const F = this.draft.hiddenDim;
    // run the nodes not yet run (one batched draft forward per level)
    const todo = paths.filter((p) => !this.nodes.has(p.join(',')));
    if (todo.length) {
      const T = todo.length;
      const tokens = todo.map((p) => p[p.length - 1]!);
      const parents = todo.map((p) => {
        const parent = this.nodes.get(p.slice(0, -1).join(','));
        if (!parent) throw new Error(`draft tree: parent of [${p.join(',')}] was never run`);
        return parent;
      });
      const features = new Float32Array(T * F);
      parents.forEach((par, i) => features.set(par.hidden, i * F));
      const positions = Int32Array.from(todo.map((p) => this.rootPos + p.length));
      const local = new Uint8Array(T * T);
      for (let i = 0; i < T; i++) local[i * T + i] = 1;
      const base = this.draft.length;
      const tempCount = base - this.stable;
      const pastMask = new Uint8Array(T * tempCount);
      parents.forEach((par, i) => {
        for (const s of par.slots) pastMask[i * tempCount + (s - this.stable)] = 1;
      });
      const out = await this.draft.forward(this.embed(tokens), features, positions, local, { from: this.stable, mask: pastMask });
      this.forwards++;
      todo.forEach((p, i) => {
        const slot = base + i;
        this.nodes.set(p.join(','), {
          hidden: out.hidden.slice(i * F, (i + 1) * F),
          logits: out.logits.slice(i * V, (i + 1) * V),
          slot,
          slots: [...parents[i]!.slots, slot],
        });
      });
    }
    return paths.map((p) => topK(this.nodes.get(p.join(','))!.logits, k));
  }
}

/** Top-k tokens by draft log-probability (log-softmax), best first, ties by token id. */
export function topK(logits: Float32Array, k: number): Candidate[] {
  let max = -Infinity;
  for (const x of logits) max = Math.max(max, x);
  let z = 0;
  for (const x of logits) z += Math.exp(x - max);
  const lse = max + Math.log(z);
  const idx = Array.from(logits.keys());
  idx.sort((a, b) => logits[b]! - logits[a]! || a - b);
  return idx.slice(0, k).map((t) => ({ token: t, logprob: logits[t]! - lse }));
}
