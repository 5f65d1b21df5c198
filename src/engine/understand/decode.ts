// The decoding loop shared by plain and speculative decoding. Plain decoding is the special case of a
// draft tree holding only the root. Each iteration: propose a tree (root = last chosen token, not yet
// cached), verify it in one target forward with the tree mask, accept a path by lossless rejection
// sampling, emit accepted tokens + the target's next token, and compact the KV cache to the path.
import type { Rng } from '../rng.ts';
import { EngineError } from '../types.ts';
import { verifyTree } from '../speculative/rejection.ts';
import type { Proposer } from '../speculative/proposer.ts';
import { rootOnly, treeMask, treePositions, type DraftTree } from '../speculative/tree.ts';
import { isGreedy, pickToken, processLogits, type SamplingParams } from './logits.ts';
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
  rng: Rng;
  proposer: Proposer | null;
  signal?: AbortSignal;
  /** called before every model call; throws to stop (cancellation) */
  checkpoint?: () => void;
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
  const greedy = isGreedy(o.sampling);
  let root = pickToken(processLogits(lastLogits, 0, V, o.sampling), greedy, o.rng);
  const committed = [...context, root];
  yield { tokens: [root], drafted: 0, accepted: 0, depth: 0 };
  let pos = nextPos;
  for (;;) {
    throwIfAborted(o.signal);
    o.checkpoint?.();
    const tree: DraftTree = o.proposer ? await o.proposer.propose(committed) : rootOnly(root);
    throwIfAborted(o.signal);
    const N = tree.tokens.length;
    const base = seq.length;
    const logits = await seq.forward(tree.tokens, treePositions(tree, pos), treeMask(tree), N === 1 ? 'last' : 'all');
    const res = verifyTree(tree, (node) => processLogits(logits, node * V, V, o.sampling), greedy, o.rng);
    const accepted = res.acceptedNodes.length;
    if (N > 1) {
      // keep the root's slot and the accepted path's slots, drop the rest of the tree
      seq.compact({ keepFrom: base, keep: Int32Array.from([0, ...res.acceptedNodes]) });
    }
    let depth = 0;
    for (let i = 1; i < N; i++) depth = Math.max(depth, tree.depths[i]!);
    o.proposer?.observe(depth, accepted);
    const tokens = [...res.acceptedTokens, res.nextToken];
    pos += 1 + accepted;
    committed.push(...tokens);
    root = res.nextToken;
    yield { tokens, drafted: N - 1, accepted, depth };
  }
}
