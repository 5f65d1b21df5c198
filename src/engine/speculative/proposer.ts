// Proposers turn the committed context into a draft tree for one verification step. Both the
// n-gram drafter and (later) a draft model implement Expander; the proposer chooses the shape
// (chain = top-1 tree) and, when sizing is on, the size from the hardware cost curve.
import type { SpeculationMode } from '../types.ts';
import type { CommitRows, EagleDrafter } from './eagle.ts';
import { AcceptanceStats } from './metrics.ts';
import { NgramExpander } from './ngram.ts';
import { chooseChainLength, chooseShape, chooseTreeSize, treeDraftCost, type CostCurve, type DraftCost } from './sizing.ts';
import { buildDynamicTree, chainTree, rootOnly, type DraftTree, type Expander } from './tree.ts';

export interface Proposer {
  /** reported as speculation.proposer: 'ngram', 'draft-model' or 'retrieval' (tests use their own names) */
  readonly source: string;
  /** the proposer consumes target features (EAGLE): the loop must run the target with features */
  readonly needsFeatures?: boolean;
  /** feed newly committed rows with their target hidden states to the draft (EAGLE catch-up) */
  commit?(rows: CommitRows): Promise<void>;
  /**
   * @param maxDepth  the deepest draft the step may verify (tokens left before maxTokens or the context
   *   end); a proposer that drafts within it lets a draft request verify in the same call (a deeper
   *   draft would be cut after the worker had verified it, and verified again)
   */
  propose(committed: number[], maxDepth?: number): Promise<DraftTree>;
  /** feedback after verification: tree depth drafted and tokens accepted */
  observe(depth: number, accepted: number): void;
}

export interface ProposerConfig {
  mode: Exclude<SpeculationMode, 'off'>;
  chainLength?: number;
  treeBudget?: number;
  treeTopK?: number;
  treeDepth?: number;
  maxChainLength: number;
  /** measured verification cost; when absent, sizes are the configured/default ones */
  curve?: CostCurve;
  /** shared running statistics (per engine) of chain steps (and of tree steps without treeStats) */
  stats: AcceptanceStats;
  /**
   * running statistics of tree steps (per engine). When given, tree steps update these instead of
   * `stats`, and `auto` chooses per step between plain, chain and tree (chooseShape); without it
   * `auto` only sizes chains.
   */
  treeStats?: AcceptanceStats;
  /** measured cost of drafting (model drafts); n-gram drafting is treated as free */
  draftCost?: DraftCost;
}

/** Builds chains or dynamic trees from an Expander (n-gram lookup or draft model). */
export class TreeProposer implements Proposer {
  constructor(
    readonly source: string,
    private expander: Expander & { setContext?(t: number[]): void; setLogPrior?(lp: number): void },
    protected cfg: ProposerConfig,
  ) {}

  /** shape of the last proposal (which statistics its verification updates) */
  lastShape: 'none' | 'chain' | 'tree' = 'none';

  async propose(committed: number[], maxDepth = Infinity): Promise<DraftTree> {
    const root = committed[committed.length - 1]!;
    if (maxDepth <= 0) {
      this.lastShape = 'none';
      return rootOnly(root);
    }
    this.expander.setContext?.(committed);
    const c = this.cfg;
    const topK = c.treeTopK ?? 4;
    const depth = Math.min(c.treeDepth ?? 5, maxDepth);
    const budget = c.treeBudget ?? 24;
    // auto with tree statistics (model drafting): plain, chain or tree, whichever pays (chooseShape)
    if (c.mode === 'auto' && c.treeStats && c.curve && !c.chainLength) {
      const s = chooseShape(c.curve, c.stats, c.treeStats, c.maxChainLength, c.draftCost, { topK, depth, budget });
      if (s.kind === 'plain') {
        this.lastShape = 'none';
        return rootOnly(root);
      }
      if (s.kind === 'tree') return this.tree(root, s.topK, Math.min(s.depth, maxDepth), s.budget, true);
      return this.chain(root, Math.min(s.size, maxDepth));
    }
    const useTree = c.mode === 'tree';
    if (!useTree) {
      let K = c.chainLength ?? 0;
      if (!c.chainLength) {
        K = c.curve ? chooseChainLength(c.curve, c.stats, c.maxChainLength, c.draftCost).size : Math.min(4, c.maxChainLength);
        if (c.mode !== 'auto') K = Math.max(1, K); // explicit chain/ngram modes always draft
      }
      K = Math.min(K, maxDepth);
      if (K <= 0) {
        this.lastShape = 'none';
        return rootOnly(root);
      }
      return this.chain(root, K);
    }
    return this.tree(root, topK, depth, budget, !c.treeBudget);
  }

  protected chain(root: number, K: number): Promise<DraftTree> {
    this.lastShape = 'chain';
    this.expander.setLogPrior?.(Math.log(Math.max(1e-3, this.cfg.stats.at(0))));
    return buildDynamicTree(root, this.expander, { topK: 1, depth: K, budget: K });
  }

  /**
   * EAGLE-2 dynamic tree; with `size`, the kept node count is chosen from the candidates' scores
   * (chooseTreeSize) with the tree's draft cost included (it is paid whatever is kept, so it dilutes
   * the cost of verifying more nodes).
   */
  protected tree(root: number, topK: number, depth: number, budget: number, size: boolean, expander: Expander = this.expander): Promise<DraftTree> {
    const c = this.cfg;
    this.lastShape = 'tree';
    const stats = c.treeStats && c.treeStats.observations > 0 ? c.treeStats : c.stats;
    this.expander.setLogPrior?.(Math.log(Math.max(1e-3, stats.at(0))));
    const fixed = c.draftCost && c.curve ? treeDraftCost(c.draftCost, c.curve, depth, topK) : 0;
    const choose = size && c.curve ? (scores: number[]) => chooseTreeSize(c.curve!, scores, fixed) : undefined;
    return buildDynamicTree(root, expander, { topK, depth, budget }, choose);
  }

  observe(depth: number, accepted: number): void {
    if (depth <= 0) return;
    if (this.lastShape === 'tree' && this.cfg.treeStats) this.cfg.treeStats.update(depth, accepted);
    else this.cfg.stats.update(depth, accepted);
  }
}

export function ngramProposer(cfg: ProposerConfig): Proposer {
  return new TreeProposer('ngram', new NgramExpander(), cfg);
}

/** Model drafting (EAGLE chain or EAGLE-2 dynamic tree) over a DraftModel. */
export class DraftModelProposer extends TreeProposer {
  readonly needsFeatures = true;
  constructor(
    private drafter: EagleDrafter,
    cfg: ProposerConfig,
  ) {
    super('draft-model', drafter, cfg);
  }
  commit(rows: CommitRows): Promise<void> {
    return this.drafter.commit(rows);
  }
  /** chains run fused with the pending catch-up in one draft-model request when the model can */
  protected override async chain(root: number, K: number): Promise<DraftTree> {
    if (!this.drafter.canChain) return super.chain(root, K);
    this.lastShape = 'chain';
    const c = await this.drafter.chain(K, root);
    return chainTree(root, c.tokens, Array.from(c.logprobs, (lp) => Math.min(0, lp)));
  }
  /** trees: the whole EAGLE-2 expansion runs in one draft-model request, replayed here for ranking/sizing */
  protected override async tree(root: number, topK: number, depth: number, budget: number, size: boolean): Promise<DraftTree> {
    if (!this.drafter.canTree) return super.tree(root, topK, depth, budget, size);
    // the worker builds the same tree (same sizing inputs) and verifies it in the same request
    const c = this.cfg;
    const fixed = c.draftCost && c.curve ? treeDraftCost(c.draftCost, c.curve, depth, topK) : 0;
    const choose = size && c.curve ? { points: c.curve.points, fixed } : undefined;
    return super.tree(root, topK, depth, budget, size, await this.drafter.tree(topK, depth, { root, budget, choose }));
  }
  embedIds(ids: number[]): Float32Array {
    return this.drafter.embedIds(ids);
  }
}
