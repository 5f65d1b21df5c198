// Lossless verification of a point-mass draft tree (EAGLE-2 / SpecInfer-style). At the accepted node,
// the target picks its own token for the next position from its processed distribution p there
// (understand/logits.ts tokenSampler: argmax when greedy, else an exact sample whose noise is fixed by
// the seed and the position); the child drafting that token is accepted and verification goes on from
// it; if no child drafted it, the target's token is emitted and the step ends; at a leaf it is the bonus
// token. Each position's token is exactly the one plain decoding picks there with the same seed, so the
// emitted sequence equals plain decoding's, sampled or greedy. The acceptance probability of a drafted
// token x is p(x), as with recursive rejection over point-mass siblings (the same tokens per step).
import type { TokenSampler } from '../understand/logits.ts';
import { childrenOf, type DraftTree } from './tree.ts';

export interface VerifyResult {
  /** accepted draft nodes along the path, root excluded, in order */
  acceptedNodes: number[];
  /** tokens of the accepted nodes */
  acceptedTokens: number[];
  /** the token sampled by the target after the accepted path (residual or bonus) */
  nextToken: number;
}

/**
 * @param probsAt processed target distribution predicted at a node (the distribution of its child);
 *                called lazily, only for nodes on the accepted path.
 * @param pick    the target's token for a position (tokenSampler)
 * @param rootPos position id of the root (the last committed token); a node at depth d predicts the
 *                token at rootPos + d + 1
 */
export function verifyTree(tree: DraftTree, probsAt: (node: number) => Float64Array, pick: TokenSampler, rootPos: number): VerifyResult {
  const children = childrenOf(tree);
  const acceptedNodes: number[] = [];
  let node = 0;
  for (;;) {
    const token = pick(probsAt(node), rootPos + tree.depths[node]! + 1);
    const hit = children[node]!.find((k) => tree.tokens[k] === token);
    if (hit === undefined) return { acceptedNodes, acceptedTokens: acceptedNodes.map((n) => tree.tokens[n]!), nextToken: token };
    acceptedNodes.push(hit);
    node = hit;
  }
}
