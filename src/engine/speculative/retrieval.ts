// Retrieval-based drafting (REST, He et al. 2023): a datastore of the answers the model is trained to
// give (the pack's retrieval.json: context n-grams → counts of the tokens that followed them). At each
// draft node the longest suffix (≤ max_n tokens) of context + drafted path found in the datastore gives
// the candidate next tokens, most frequent first; their draft log-probability is the log of their
// count share. buildDynamicTree turns that into a trie of the most frequent continuations within the
// token budget (a chain when topK = 1). Drafting costs microseconds, so the only question is whether
// verifying the tree pays, which hardware-aware sizing answers from the cost curve.
// Where nothing in the datastore matches, the prompt-lookup n-gram drafter is the fallback.
import type { RetrievalData } from '../../runtime/manifest.ts';
import { AcceptanceStats } from './metrics.ts';
import { NgramExpander } from './ngram.ts';
import { TreeProposer, type ProposerConfig } from './proposer.ts';
import { chooseChainLength, chooseTreeSize, type CostCurve } from './sizing.ts';
import { buildDynamicTree, rootOnly, type Candidate, type DraftTree, type Expander, type TreeShape } from './tree.ts';

/** A node of the reversed-suffix trie: the context read backwards from its last token. */
interface SuffixNode {
  children: Map<number, SuffixNode>;
  /** continuations of the context this node spells (best first), when the datastore has it */
  next: Candidate[] | null;
}

/**
 * Suffix index over a datastore: context → continuations (best first). Contexts are stored in a trie
 * keyed by their tokens read backwards, so the longest stored suffix of a sequence is found by walking
 * back from its last token (≤ maxN integer map lookups, no key strings or array copies per lookup).
 */
export class RetrievalIndex {
  readonly maxN: number;
  private root: SuffixNode = { children: new Map(), next: null };
  private count = 0;

  constructor(data: Pick<RetrievalData, 'max_n' | 'entries'>) {
    this.maxN = data.max_n;
    for (const [ctx, nx] of data.entries) {
      const total = nx.reduce((s, [, c]) => s + c, 0);
      const next = nx
        .slice()
        .sort((a, b) => b[1] - a[1] || a[0] - b[0])
        .map(([token, c]) => ({ token, logprob: Math.log(c / total) }));
      let node = this.root;
      for (let i = ctx.length - 1; i >= 0; i--) {
        let ch = node.children.get(ctx[i]!);
        if (!ch) node.children.set(ctx[i]!, (ch = { children: new Map(), next: null }));
        node = ch;
      }
      if (!node.next) this.count++;
      node.next = next;
    }
  }

  get size(): number {
    return this.count;
  }

  /**
   * Continuations of the longest suffix of `seq` (≤ maxN tokens) present in the datastore: candidate
   * tokens best first with log count shares, and the length of the matched suffix (0 = no match).
   */
  lookup(seq: ArrayLike<number>, k: number): { n: number; next: Candidate[] } {
    return this.lookupAfter(seq, [], k);
  }

  /** lookup() of the sequence `context` followed by `path`, without concatenating them. */
  lookupAfter(context: ArrayLike<number>, path: ArrayLike<number>, k: number): { n: number; next: Candidate[] } {
    const C = context.length;
    const L = C + path.length;
    let node = this.root;
    let best: Candidate[] | null = null;
    let bestN = 0;
    for (let n = 1; n <= Math.min(this.maxN, L); n++) {
      const i = L - n;
      const ch = node.children.get(i >= C ? path[i - C]! : context[i]!);
      if (!ch) break;
      node = ch;
      if (node.next) {
        best = node.next;
        bestN = n;
      }
    }
    return best ? { n: bestN, next: best.slice(0, k) } : { n: 0, next: [] };
  }
}

/** Built once per datastore object (per loaded pack). */
const indexes = new WeakMap<object, RetrievalIndex>();
export function retrievalIndex(data: RetrievalData): RetrievalIndex {
  let ix = indexes.get(data);
  if (!ix) indexes.set(data, (ix = new RetrievalIndex(data)));
  return ix;
}

export interface RetrievalOptions {
  /**
   * log-probability penalty for a match on fewer than `shortMatch` context tokens (the continuation
   * statistics are then those of a shorter context than the model sees)
   */
  shortMatch: number;
  shortPenalty: number;
}

export const DEFAULT_RETRIEVAL: RetrievalOptions = { shortMatch: 3, shortPenalty: Math.log(0.5) };

/** Expander over the datastore with the n-gram (prompt lookup) drafter as fallback. */
export class RetrievalExpander implements Expander {
  private context: number[] = [];
  private fallback = new NgramExpander();
  /** per-level calibration: log of (measured acceptance ÷ predicted), ≤ 0 */
  logCalib = 0;
  constructor(
    private index: RetrievalIndex,
    private opts: RetrievalOptions = DEFAULT_RETRIEVAL,
  ) {}

  setContext(tokens: ArrayLike<number>): void {
    this.context = Array.from(tokens);
    this.fallback.setContext(this.context);
  }

  setLogPrior(lp: number): void {
    this.fallback.setLogPrior(lp);
  }

  expand(paths: number[][], k: number): Candidate[][] {
    return paths.map((p) => {
      const m = this.index.lookupAfter(this.context, p, k);
      if (m.n === 0) return this.fallback.continuations(p.length ? this.context.concat(p) : this.context, k);
      const pen = (m.n < this.opts.shortMatch ? this.opts.shortPenalty : 0) + this.logCalib;
      return m.next.map((c) => ({ token: c.token, logprob: Math.min(0, c.logprob + pen) }));
    });
  }
}

/** Running statistics of retrieval drafting, per engine (shared across its requests). */
export interface RetrievalState {
  /** chain steps */
  stats: AcceptanceStats;
  /** tree steps */
  treeStats: AcceptanceStats;
  /** EWMA of accepted tokens per tree step, and of the tree's predicted acceptance Σ exp(score) */
  accepted: number;
  predicted: number;
  /** EWMA of measured tokens per ms of verification (verification cost from the cost curve) */
  tokensPerMs: number;
  steps: number;
  /**
   * EWMA of the per-step cost the cost curve does not see (ms): wall time from one proposal to the
   * next, less the curve's verification cost (worker messaging, verification and streaming JS). Tree
   * sizing adds it to every step's cost, which favours larger trees where steps carry overhead.
   */
  overheadMs: number;
  overheadSamples: number;
}

const states = new WeakMap<object, RetrievalState>();
/** The retrieval statistics of an engine (keyed by any per-engine object). */
export function retrievalState(owner: object): RetrievalState {
  let s = states.get(owner);
  if (!s) states.set(owner, (s = { stats: new AcceptanceStats(0.6), treeStats: new AcceptanceStats(0.6), accepted: 0, predicted: 0, tokensPerMs: 0, steps: 0, overheadMs: 0, overheadSamples: 0 }));
  return s;
}

/** Defaults of retrieval trees (4 candidates per node, 8 deep, ≤ 24 nodes; sized below that by the cost curve): on the 2-core CPU wider or larger trees verified slower than they gained (bench understand, captions). */
export const RETRIEVAL_TREE = { topK: 4, depth: 8, budget: 24 };
/** Shape of the draft verified with the prompt (wider: first answer words branch most; prompt rows dominate the cost). */
export const RETRIEVAL_PREFILL = { topK: 8, depth: 6, budget: 16 };

/**
 * Retrieval proposer. chain: the most frequent continuation, length from the chain statistics (or
 * chainLength). tree: the trie of frequent continuations (treeTopK/treeDepth/treeBudget, defaults
 * RETRIEVAL_TREE), sized from the cost curve unless treeBudget is given. auto: the sized tree; the size
 * chooser keeps 0 nodes (plain decoding) when no draft is expected to pay; with chainLength, chains of
 * that length (as the draft-model proposer's auto). Node scores are the
 * datastore's count shares, calibrated per level by measured vs predicted acceptance.
 */
export class RetrievalProposer extends TreeProposer {
  private rx: RetrievalExpander;
  private lastPredicted = 0;
  private lastNodes = 0;
  constructor(
    index: RetrievalIndex,
    cfg: ProposerConfig,
    private state: RetrievalState,
  ) {
    const rx = new RetrievalExpander(index);
    super('retrieval', rx, { ...cfg, stats: state.stats, treeStats: state.treeStats });
    this.rx = rx;
  }

  /** when the previous proposal of this request was made (step wall time, for overheadMs) */
  private lastAt = -1;

  override async propose(committed: number[], maxDepth = Infinity): Promise<DraftTree> {
    const root = committed[committed.length - 1]!;
    const c = this.cfg;
    if (maxDepth <= 0) {
      // (the answer's last step: nothing to draft, and no step after it to time)
      this.lastShape = 'none';
      this.lastNodes = 0;
      return rootOnly(root);
    }
    const now = performance.now();
    if (this.lastAt >= 0 && c.curve && this.lastNodes > 0) {
      const s = this.state;
      const sample = Math.min(10, Math.max(0, now - this.lastAt - c.curve.cost(this.lastNodes)));
      s.overheadSamples++;
      s.overheadMs += (s.overheadSamples < 20 ? 1 / s.overheadSamples : 0.05) * (sample - s.overheadMs);
    }
    this.lastAt = now;
    this.rx.setContext(committed);
    this.rx.logCalib = calibration(this.state);
    if (c.mode === 'chain' || c.mode === 'ngram' || (c.mode === 'auto' && c.chainLength)) {
      let K = c.chainLength ?? 0;
      if (!K) K = Math.max(1, c.curve ? chooseChainLength(c.curve, c.stats, c.maxChainLength).size : Math.min(4, c.maxChainLength));
      const t = await this.chain(root, Math.min(K, maxDepth));
      this.note(t);
      return t;
    }
    const topK = c.treeTopK ?? RETRIEVAL_TREE.topK;
    const depth = Math.min(c.treeDepth ?? RETRIEVAL_TREE.depth, maxDepth);
    const budget = c.treeBudget ?? RETRIEVAL_TREE.budget;
    const t = await this.tree(root, topK, depth, budget, !c.treeBudget);
    if (t.tokens.length === 1) this.lastShape = 'none';
    this.note(t);
    return t;
  }

  /**
   * A draft of the answer's first tokens, verified in the prefill forward: a tree rooted at the
   * prompt's last token (im_start), whose nodes are appended to the prompt rows. Only tree/auto modes
   * (chain mode keeps chains); RETRIEVAL_PREFILL shape, pruned to `maxDepth`. Root only = no draft.
   */
  async proposeAtPrefill(context: number[], maxDepth: number): Promise<DraftTree> {
    const root = context[context.length - 1]!;
    const c = this.cfg;
    if ((c.mode !== 'tree' && c.mode !== 'auto') || maxDepth <= 0 || c.chainLength) return rootOnly(root);
    this.rx.setContext(context);
    this.rx.logCalib = calibration(this.state);
    const shape = { ...RETRIEVAL_PREFILL, depth: Math.min(RETRIEVAL_PREFILL.depth, maxDepth) };
    const t = await buildDynamicTree(root, this.rx, shape);
    this.lastShape = t.tokens.length > 1 ? 'tree' : 'none';
    this.note(t);
    return t;
  }

  /** tree sizing from the calibrated scores (no draft cost: lookup is free) */
  protected override tree(root: number, topK: number, depth: number, budget: number, size: boolean): Promise<DraftTree> {
    this.lastShape = 'tree';
    return buildSized(root, this.rx, { topK, depth, budget }, size ? this.cfg.curve : undefined, this.state.overheadMs);
  }

  private note(t: DraftTree): void {
    let p = 0;
    for (let i = 1; i < t.scores.length; i++) p += Math.exp(t.scores[i]!);
    this.lastPredicted = p;
    this.lastNodes = t.tokens.length;
  }

  override observe(depth: number, accepted: number): void {
    super.observe(depth, accepted);
    if (depth <= 0) return;
    const s = this.state;
    const d = s.steps < 20 ? 1 / (s.steps + 1) : 0.05;
    s.steps++;
    s.accepted += d * (accepted - s.accepted);
    s.predicted += d * (this.lastPredicted - s.predicted);
    if (this.cfg.curve) s.tokensPerMs += d * ((1 + accepted) / (this.cfg.curve.cost(this.lastNodes) + s.overheadMs) - s.tokensPerMs);
  }
}

function buildSized(root: number, ex: Expander, shape: TreeShape, curve: CostCurve | undefined, overheadMs = 0): Promise<DraftTree> {
  const choose = curve ? (scores: number[]) => chooseTreeSize(curve, scores, overheadMs) : undefined;
  return shape.depth > 0 ? buildDynamicTree(root, ex, shape, choose) : Promise.resolve(rootOnly(root));
}

/**
 * Per-level log calibration of datastore scores: predicted acceptance Σ exp(score) vs measured
 * accepted tokens per step, spread over the levels (≤ 0: scores are only ever lowered).
 */
export function calibration(s: RetrievalState): number {
  if (s.steps < 8 || s.predicted <= 0.05) return 0;
  const r = Math.min(1, Math.max(0.05, s.accepted / s.predicted));
  return Math.log(r) / 2;
}

/** Expected tokens/ms of retrieval drafting so far (0 = not measured yet). */
export function retrievalRate(s: RetrievalState): number {
  return s.steps >= 8 ? s.tokensPerMs : 0;
}

/**
 * A datastore from answer sequences, as models/recipes/build_retrieval.py builds it: each sequence is
 * prompt tokens (ending in im_start) + answer + eos; every answer token is counted after each of its
 * 1..maxN preceding context n-grams (for tests and tools; the pack's file comes from the recipe).
 */
export function buildRetrievalData(seqs: Array<{ prompt: number[]; answer: number[]; count?: number }>, vocab: number, maxN: number): RetrievalData {
  const table = new Map<string, Map<number, number>>();
  for (const { prompt, answer, count = 1 } of seqs) {
    const s = [...prompt, ...answer];
    for (let i = prompt.length; i < s.length; i++)
      for (let n = 1; n <= maxN && i - n >= 0; n++) {
        const key = s.slice(i - n, i).join(',');
        let m = table.get(key);
        if (!m) table.set(key, (m = new Map()));
        m.set(s[i]!, (m.get(s[i]!) ?? 0) + count);
      }
  }
  const entries: RetrievalData['entries'] = [...table.entries()]
    .map(([k, m]): [number[], Array<[number, number]>] => [k.split(',').map(Number), [...m.entries()].sort((a, b) => b[1] - a[1] || a[0] - b[0])])
    .sort((a, b) => a[0].length - b[0].length || a[0].join(',').localeCompare(b[0].join(',')));
  return { format: 'hyperbagel-retrieval/1', vocab, max_n: maxN, entries };
}
