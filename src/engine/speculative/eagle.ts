// EAGLE-style model drafting as an Expander, following docs/model-pack.md "Draft rows":
// draft row i stands for target row i: input = (target input embedding of row i+1, target
// hidden_states of row i [L layers]) — or, for draft steps, the draft's own `features` of the previous
// row — at the target position of row i; it predicts the token of row i+2.
//
// Each round:
//   1. commit(): crop the draft cache to its committed rows, then feed the newly committed rows with
//      their target hidden states (catch-up). The last row's output is the distribution of the root's
//      children (the root = the token just chosen by the target, not yet verified-cached).
//   2. expand(): per tree level, all frontier nodes go through the draft in one call (query length k).
//      A node at depth d (target row n+d) is run as draft row n+d−1: input embedding of its token, the
//      parent's draft features, the target position of row n+d−1; it sees the committed rows and its
//      own ancestors among the temporary tree rows, nothing else.
//   3. The temporary rows are cropped at the next commit (draft-side rollback is a truncate).
import { replayExpander, type Candidate, type Expander } from './tree.ts';

export interface DraftForward {
  logits: Float32Array; // [T, V]
  features: Float32Array; // [T, D]
}

export interface DraftRows {
  /** input embeddings (of the next row's token), [T, D] */
  embeds: Float32Array;
  /** target hidden states of all layers, [T, L·D] (feature_select 0) … */
  hidden?: Float32Array;
  /** … or the draft's own features of the previous row, [T, D] (feature_select 1) */
  prev?: Float32Array;
  positions: Int32Array;
  /** T×T local mask among the new rows (1 = attend) */
  mask: Uint8Array;
  /** visibility of cached rows from `from` on (T × (length − from)); earlier rows always visible */
  past?: { from: number; mask: Uint8Array };
}

/** The draft network with its own KV cache (worker-backed draft.onnx, or pure JS in tests). */
export interface DraftModel {
  readonly vocab: number;
  /** D: width of `features` */
  readonly featureDim: number;
  /** rows in the draft's KV cache */
  readonly length: number;
  forward(rows: DraftRows): Promise<DraftForward>;
  /** keep the first n rows */
  truncate(n: number): void;
  /**
   * Optional fused chain (one request to the worker instead of one per draft step): forward the
   * committed `rows`, then `steps` − 1 draft steps, each on the top-1 token of the previous row
   * (embedding of that token, the previous row's features, position rootPos + i, seeing every
   * earlier row). Returns the `steps` top-1 tokens with their draft log-probabilities, exactly as
   * forward + expand(…, 1) would; the cache grows by rows + steps − 1.
   */
  chain?(rows: DraftRows, rootPos: number, steps: number, root?: number): Promise<DraftChain>;
  /**
   * Optional fused EAGLE-2 expansion: forward the committed `rows`, then expand `depth` levels of
   * tree.ts buildDynamicTree (top-`topK` children per node, the `topK` best nodes of a level
   * expanded next, one forward per level, visibility as in expand()). Must be used with both
   * chain and tree, or neither.
   */
  tree?(rows: DraftRows, rootPos: number, topK: number, depth: number, verify?: TreeVerify): Promise<DraftTreeRecord>;
}

/**
 * What the worker needs to build the same tree as the engine (tree.ts buildDynamicTree with
 * sizing.ts chooseTreeSize) and verify it in the same request as the draft expansion.
 */
export interface TreeVerify {
  root: number;
  budget: number;
  /** hardware-aware size choice: cost-curve points and the tree's fixed draft cost (ms) */
  choose?: { points: Array<[number, number]>; fixed: number };
}

/** What a fused tree expansion saw: per level, the top-k candidates of each frontier node. */
export interface DraftTreeRecord {
  /** frontier size per level */
  frontier: Int32Array;
  /** candidates, level by level, frontier node by node, k each (best first) */
  tokens: Int32Array;
  logprobs: Float64Array;
}

export interface DraftChain {
  tokens: Int32Array;
  /** log-softmax of each chosen token (≤ 0) */
  logprobs: Float64Array;
}

interface Node {
  features: Float32Array;
  logits: Float32Array;
  /** temporary rows of this node and its ancestors (root: none, it is committed) */
  slots: number[];
}

export interface CommitRows {
  /** tokens whose embeddings are the inputs (row i+1's token for row i) … */
  ids?: number[];
  /** … or the embeddings themselves, [n, D] (prompt image blocks) */
  embeds?: Float32Array;
  /** target hidden states (all layers) of the committed rows, [n, L·D] */
  hidden: Float32Array;
  /** target positions of the committed rows */
  positions: Int32Array;
  /** n×n mask among them (the target's: causal, bidirectional inside image blocks); default causal */
  mask?: Uint8Array;
  /** target position of the root (the token just chosen, next row) */
  rootPos: number;
}

export function causal(n: number): Uint8Array {
  const m = new Uint8Array(n * n);
  for (let i = 0; i < n; i++) for (let j = 0; j <= i; j++) m[i * n + j] = 1;
  return m;
}

export class EagleDrafter implements Expander {
  private stable = 0;
  private rootPos = 0;
  private nodes = new Map<string, Node>();
  /** committed rows not yet run (draft models with a fused chain run them with the next chain) */
  private pending: { rows: DraftRows; n: number; rootPos: number } | null = null;
  forwards = 0;

  constructor(
    private draft: DraftModel,
    private embed: (ids: number[]) => Float32Array,
  ) {}

  embedIds(ids: number[]): Float32Array {
    return this.embed(ids);
  }

  /** committed rows in the draft cache (including rows whose forward is deferred to the next chain) */
  get stableLength(): number {
    return this.stable + (this.pending?.n ?? 0);
  }

  /** true when the next chain can run fused with the pending commit (one worker request) */
  get canChain(): boolean {
    return !!this.draft.chain && this.pending !== null;
  }

  /** true when the next tree can be expanded fused with the pending commit */
  get canTree(): boolean {
    return !!this.draft.tree && this.pending !== null;
  }

  async commit(c: CommitRows): Promise<void> {
    const n = c.positions.length;
    if (!n) throw new Error('commit: no rows');
    const rows: DraftRows = { embeds: c.embeds ?? this.embed(c.ids ?? []), hidden: c.hidden, positions: c.positions, mask: c.mask ?? causal(n) };
    if (this.draft.chain) {
      // deferred: a chain runs it in the same request; anything else runs it first (flush)
      await this.flush();
      this.pending = { rows, n, rootPos: c.rootPos };
      this.nodes.clear();
      return;
    }
    await this.runCommit(rows, n, c.rootPos);
  }

  private async flush(): Promise<void> {
    if (!this.pending) return;
    const p = this.pending;
    this.pending = null;
    await this.runCommit(p.rows, p.n, p.rootPos);
  }

  /**
   * A greedy chain of K tokens after the pending commit, in one draft-model request (same tokens
   * and log-probabilities as expand() level by level with k = 1).
   */
  async chain(K: number, root?: number): Promise<DraftChain> {
    const p = this.pending;
    if (!p || !this.draft.chain) throw new Error('chain: no pending commit or no fused chain');
    this.pending = null;
    this.draft.truncate(this.stable);
    const out = await this.draft.chain(p.rows, p.rootPos, K, root);
    this.forwards += K;
    this.stable += p.n;
    this.rootPos = p.rootPos;
    this.nodes.clear(); // the chain's nodes stay in the worker; its rows are cropped at the next commit
    return out;
  }

  /**
   * An EAGLE-2 expansion after the pending commit in one draft-model request. Returns an Expander
   * that replays it for buildDynamicTree (which asks for the same frontiers in the same order).
   */
  async tree(topK: number, depth: number, verify?: TreeVerify): Promise<Expander> {
    const p = this.pending;
    if (!p || !this.draft.tree) throw new Error('tree: no pending commit or no fused tree');
    this.pending = null;
    this.draft.truncate(this.stable);
    const rec = await this.draft.tree(p.rows, p.rootPos, topK, depth, verify);
    this.forwards += rec.frontier.length;
    this.stable += p.n;
    this.rootPos = p.rootPos;
    this.nodes.clear();
    return replayExpander(rec, topK);
  }

  private async runCommit(rows: DraftRows, n: number, rootPos: number): Promise<void> {
    this.draft.truncate(this.stable);
    const out = await this.draft.forward(rows);
    this.forwards++;
    this.stable += n;
    this.rootPos = rootPos;
    const V = this.draft.vocab;
    const D = this.draft.featureDim;
    this.nodes.clear();
    this.nodes.set('', { features: out.features.slice((n - 1) * D, n * D), logits: out.logits.slice((n - 1) * V, n * V), slots: [] });
  }

  async expand(paths: number[][], k: number): Promise<Candidate[][]> {
    await this.flush();
    const V = this.draft.vocab;
    const D = this.draft.featureDim;
    const todo = paths.filter((p) => !this.nodes.has(p.join(',')));
    if (todo.length) {
      const T = todo.length;
      const parents = todo.map((p) => {
        const parent = this.nodes.get(p.slice(0, -1).join(','));
        if (!parent) throw new Error(`draft tree: parent of [${p.join(',')}] was never run`);
        return parent;
      });
      const prev = new Float32Array(T * D);
      parents.forEach((par, i) => prev.set(par.features, i * D));
      const base = this.draft.length;
      const temp = base - this.stable;
      const pastMask = new Uint8Array(T * temp);
      parents.forEach((par, i) => {
        for (const s of par.slots) pastMask[i * temp + (s - this.stable)] = 1;
      });
      const local = new Uint8Array(T * T);
      for (let i = 0; i < T; i++) local[i * T + i] = 1;
      const out = await this.draft.forward({
        embeds: this.embed(todo.map((p) => p[p.length - 1]!)),
        prev,
        positions: Int32Array.from(todo.map((p) => this.rootPos + p.length - 1)),
        mask: local,
        past: { from: this.stable, mask: pastMask },
      });
      this.forwards++;
      todo.forEach((p, i) => {
        this.nodes.set(p.join(','), {
          features: out.features.slice(i * D, (i + 1) * D),
          logits: out.logits.slice(i * V, (i + 1) * V),
          slots: [...parents[i]!.slots, base + i],
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
