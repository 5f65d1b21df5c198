// Proposers turn the committed context into a draft tree for one verification step. Both the
// n-gram drafter and (later) a draft model implement Expander; the proposer chooses the shape
// (chain = top-1 tree) and, when sizing is on, the size from the hardware cost curve.
import type { SpeculationMode } from '../types.ts';
import type { CommitRows, EagleDrafter } from './eagle.ts';
import { AcceptanceStats } from './metrics.ts';
import { NgramExpander } from './ngram.ts';
import { chooseChainLength, chooseTreeSize, type CostCurve, type DraftCost } from './sizing.ts';
import { buildDynamicTree, rootOnly, type DraftTree, type Expander } from './tree.ts';

export interface Proposer {
  /** 'ngram' or 'draft-model' */
  readonly source: string;
  /** the proposer consumes target features (EAGLE): the loop must run the target with features */
  readonly needsFeatures?: boolean;
  /** feed newly committed rows with their target hidden states to the draft (EAGLE catch-up) */
  commit?(rows: CommitRows): Promise<void>;
  propose(committed: number[]): Promise<DraftTree>;
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
  /** shared running statistics (per engine) */
  stats: AcceptanceStats;
  /** measured cost of drafting (model drafts); n-gram drafting is treated as free */
  draftCost?: DraftCost;
}

/** Builds chains or dynamic trees from an Expander (n-gram lookup or draft model). */
export class TreeProposer implements Proposer {
  constructor(
    readonly source: string,
    private expander: Expander & { setContext?(t: number[]): void; setLogPrior?(lp: number): void },
    private cfg: ProposerConfig,
  ) {}

  async propose(committed: number[]): Promise<DraftTree> {
    const root = committed[committed.length - 1]!;
    this.expander.setContext?.(committed);
    const c = this.cfg;
    const useTree = c.mode === 'tree';
    if (!useTree) {
      let K = c.chainLength ?? 0;
      if (!c.chainLength) {
        K = c.curve ? chooseChainLength(c.curve, c.stats, c.maxChainLength, c.draftCost).size : Math.min(4, c.maxChainLength);
        if (c.mode !== 'auto') K = Math.max(1, K); // explicit chain/ngram modes always draft
      }
      if (K <= 0) return rootOnly(root);
      this.expander.setLogPrior?.(Math.log(Math.max(1e-3, c.stats.at(0))));
      return buildDynamicTree(root, this.expander, { topK: 1, depth: K, budget: K });
    }
    const topK = c.treeTopK ?? 4;
    const depth = c.treeDepth ?? 5;
    const budget = c.treeBudget ?? 24;
    this.expander.setLogPrior?.(Math.log(Math.max(1e-3, c.stats.at(0))));
    const choose = !c.treeBudget && c.curve ? (scores: number[]) => chooseTreeSize(c.curve!, scores) : undefined;
    return buildDynamicTree(root, this.expander, { topK, depth, budget }, choose);
  }

  observe(depth: number, accepted: number): void {
    if (depth > 0) this.cfg.stats.update(depth, accepted);
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
  embedIds(ids: number[]): Float32Array {
    return this.drafter.embedIds(ids);
  }
}
