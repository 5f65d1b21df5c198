// Lossless verification of a point-mass draft tree (EAGLE-2 / SpecInfer-style recursive rejection).
// At the accepted node, with the processed target distribution p there, try the children best-first:
// accept child x with probability p(x) (relative to the current, renormalised p); on rejection set
// p(x) = 0 and renormalise; if no child is accepted, emit a token sampled from the residual p; if a
// leaf is reached, emit a bonus token from p at the leaf. The emitted sequence is distributed exactly
// as if each token had been sampled from p one at a time. Greedy (one-hot p) reduces to "follow the
// child equal to the argmax".
import type { Rng } from '../rng.ts';
import { argmax, sampleFrom } from '../understand/logits.ts';
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
 */
export function verifyTree(
  tree: DraftTree,
  probsAt: (node: number) => Float64Array,
  greedy: boolean,
  rng: Rng,
): VerifyResult {
  const children = childrenOf(tree);
  const acceptedNodes: number[] = [];
  let node = 0;
  for (;;) {
    const p = probsAt(node);
    const kids = children[node]!;
    if (greedy) {
      const best = argmax(p, 0, p.length);
      const hit = kids.find((k) => tree.tokens[k] === best);
      if (hit === undefined) return finish(tree, acceptedNodes, best);
      acceptedNodes.push(hit);
      node = hit;
      continue;
    }
    const residual = Float64Array.from(p);
    let mass = 0;
    for (let i = 0; i < residual.length; i++) mass += residual[i]!;
    let accepted = -1;
    for (const k of kids) {
      const x = tree.tokens[k]!;
      const px = residual[x]!;
      if (mass > 0 && px > 0 && rng.uniform() * mass < px) {
        accepted = k;
        break;
      }
      residual[x] = 0;
      mass -= px;
    }
    if (accepted < 0) return finish(tree, acceptedNodes, sampleFrom(residual, rng));
    acceptedNodes.push(accepted);
    node = accepted;
  }
}

function finish(tree: DraftTree, acceptedNodes: number[], nextToken: number): VerifyResult {
  return { acceptedNodes, acceptedTokens: acceptedNodes.map((n) => tree.tokens[n]!), nextToken };
}
