// The decoding loop shared by plain and speculative decoding. Plain decoding is the special case of a
// draft tree holding only the root. Each iteration: propose a tree (root = last chosen token, not yet
// cached), verify it in one target forward with the tree mask, accept a path by lossless rejection
// sampling, emit accepted tokens + the target's next token, and compact the KV cache to the path.
import { EngineError } from '../types.ts';
import { verifyTree } from '../speculative/rejection.ts';
import type { Proposer } from '../speculative/proposer.ts';
import type { CommitRows } from '../speculative/eagle.ts';
import { pruneDepth, rootOnly, treeMask, treePositions, type DraftTree } from '../speculative/tree.ts';
import { processLogits, type SamplingParams, type TokenSampler } from './logits.ts';
import type { TargetSequence } from './target.ts';

export interface DecodeStep {
  /** tokens emitted by this step (accepted drafts, then the target's own token) */
  tokens: number[];
  /** drafted nodes verified in this step (0 for plain steps) */
  drafted: number;
  accepted: number;
  depth: number;
}

export interface DecodeOptions {
  sampling: SamplingParams;
  /** the target's token at a position (logits.ts tokenSampler: the seed and greedy-ness live in it) */
  pick: TokenSampler;
  proposer: Proposer | null;
  signal?: AbortSignal;
  /** called before every model call; throws to stop (cancellation) */
  checkpoint?: () => void;
  /**
   * For feature-consuming proposers (EAGLE): the prompt's rows as cached in the target — input
   * embeddings [n, D], target hidden states of all layers [n, L·D], positions, n×n mask.
   */
  prompt?: { embeds: Float32Array; features: Float32Array; positions: Int32Array; mask: Uint8Array };
  /**
   * Deepest draft worth verifying at the next step (e.g. tokens still allowed − 1, or positions
   * left in the model); deeper drafted nodes are pruned before verification.
   */
  maxDraftDepth?: () => number;
  /**
   * The first step when it was already verified with the prompt (a draft tree rooted at the prompt's
   * last token, verified in the prefill forward): its tokens are emitted instead of picking the
   * first token from `lastLogits`; their KV rows (all but the last token) are cached.
   */
  first?: DecodeStep;
}

export function throwIfAborted(signal?: AbortSignal): void {
  if (signal?.aborted) throw new EngineError('CANCELLED', 'request cancelled');
}

/**
 * Infinite generator of decode steps (the caller stops it on EOS / stop strings / max tokens).
 * @param seq        target sequence holding the prompt (all prompt tokens cached)
 * @param lastLogits logits [V] of the last prompt token
 * @param nextPos    position id of the first generated token
 * @param context    token ids of the prompt for the n-gram drafter (image blocks omitted)
 */
export async function* decodeSteps(
  seq: TargetSequence,
  lastLogits: Float32Array,
  nextPos: number,
  context: number[],
  o: DecodeOptions,
): AsyncGenerator<DecodeStep, void, void> {
  const V = seq.vocab;
  const first: DecodeStep = o.first ?? { tokens: [o.pick(processLogits(lastLogits, 0, V, o.sampling), nextPos)], drafted: 0, accepted: 0, depth: 0 };
  let root = first.tokens[first.tokens.length - 1]!;
  const committed = [...context, ...first.tokens];
  yield first;
  let pos = nextPos + first.tokens.length - 1;
  const eagle = o.proposer?.needsFeatures ? o.proposer : null;
  if (eagle && o.first) throw new Error('a feature-consuming proposer cannot start from a prefill-verified step');
  // draft catch-ups run lazily at the start of the next step (none is wasted after the last step,
  // and cancellation is checked before them like before every other model call)
  let pendingCommit: CommitRows | null = null;
  if (eagle) {
    // draft catch-up on the prompt: row i = (embedding of row i+1 — the root's for the last row,
    // target hidden states of row i) at row i's position, with the prompt's own mask
    const pr = o.prompt;
    if (!pr) throw new Error('a feature-consuming proposer needs the prompt rows');
    const n = pr.positions.length;
    const D = pr.embeds.length / n;
    const embeds = new Float32Array(n * D);
    embeds.set(pr.embeds.subarray(D));
    embeds.set(await embedOne(eagle, root), (n - 1) * D);
    pendingCommit = { embeds, hidden: pr.features, positions: pr.positions, mask: pr.mask, rootPos: pos };
  }
  for (;;) {
    throwIfAborted(o.signal);
    o.checkpoint?.();
    if (eagle && pendingCommit) {
      await eagle.commit!(pendingCommit);
      pendingCommit = null;
      throwIfAborted(o.signal);
    }
    const maxDepth = o.maxDraftDepth ? Math.max(0, o.maxDraftDepth()) : Infinity;
    let tree: DraftTree = o.proposer ? await o.proposer.propose(committed, maxDepth) : rootOnly(root);
    // (a proposer drafts within maxDepth; this is for one that does not)
    if (o.maxDraftDepth) tree = pruneDepth(tree, maxDepth);
    throwIfAborted(o.signal);
    const N = tree.tokens.length;
    const base = seq.length;
    const logits = await seq.forward(tree.tokens, treePositions(tree, pos), treeMask(tree), N === 1 && !eagle ? 'last' : 'all', !!eagle);
    const feats = eagle ? seq.lastFeatures : null;
    const res = verifyTree(tree, (node) => processLogits(logits, node * V, V, o.sampling), o.pick, pos);
    const accepted = res.acceptedNodes.length;
    if (N > 1) {
      // keep the root's slot and the accepted path's slots, drop the rest of the tree
      seq.compact({ keepFrom: base, keep: Int32Array.from([0, ...res.acceptedNodes]) });
    }
    let depth = 0;
    for (let i = 1; i < N; i++) depth = Math.max(depth, tree.depths[i]!);
    o.proposer?.observe(depth, accepted);
    const tokens = [...res.acceptedTokens, res.nextToken];
    if (eagle) {
      // catch-up on the newly committed rows (root + accepted path) with their verify hidden states;
      // inputs are the embeddings of the following tokens (a_1 … a_m, next)
      if (!feats) throw new Error('target returned no features');
      const F = feats.length / N;
      const rows = [0, ...res.acceptedNodes];
      const hidden = new Float32Array(rows.length * F);
      rows.forEach((r, i) => hidden.set(feats.subarray(r * F, (r + 1) * F), i * F));
      const positions = Int32Array.from(rows.map((_, i) => pos + i));
      pendingCommit = { ids: tokens, hidden, positions, rootPos: pos + rows.length };
    }
    pos += 1 + accepted;
    committed.push(...tokens);
    root = res.nextToken;
    yield { tokens, drafted: N - 1, accepted, depth };
  }
}

async function embedOne(p: Proposer, token: number): Promise<Float32Array> {
  const q = p as unknown as { embedIds?: (ids: number[]) => Float32Array };
  if (!q.embedIds) throw new Error('feature-consuming proposer without embedIds');
  return q.embedIds([token]);
}
