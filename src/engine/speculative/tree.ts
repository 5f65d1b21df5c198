// Draft trees (a chain is a tree whose nodes have one child each).
// Node 0 is the root: the last token already chosen by the target but not yet in the KV cache. Nodes
// 1..N-1 are drafted tokens; parents always precede children (topological order), siblings carry
// distinct tokens and are ordered best-first (the order the rejection sampler tries them).

export interface DraftTree {
  tokens: Int32Array;
  parents: Int32Array;
  depths: Int32Array;
  /** cumulative draft log-probability (estimated log acceptance probability of the path); root = 0 */
  scores: Float64Array;
}

export interface Candidate {
  token: number;
  /** draft log-probability of this token given its parent path (≤ 0) */
  logprob: number;
}

/** Something that proposes children for draft nodes: the n-gram table today, a draft model later. */
export interface Expander {
  /**
   * For each path (drafted tokens after the root, root excluded), the best candidate next tokens,
   * best first, with distinct tokens. `k` is the most candidates wanted per path.
   */
  expand(paths: number[][], k: number): Promise<Candidate[][]> | Candidate[][];
}

export function rootOnly(root: number): DraftTree {
  return {
    tokens: Int32Array.of(root),
    parents: Int32Array.of(-1),
    depths: Int32Array.of(0),
    scores: Float64Array.of(0),
  };
}

export function treeSize(t: DraftTree): number {
  return t.tokens.length;
}

/** Children of every node, in node order (which is best-first for trees built here). */
export function childrenOf(t: DraftTree): number[][] {
  const ch: number[][] = Array.from({ length: t.tokens.length }, () => []);
  for (let i = 1; i < t.tokens.length; i++) ch[t.parents[i]!]!.push(i);
  return ch;
}

/** Tree attention mask (N×N, 1 = attend): every node sees exactly its ancestors and itself. */
export function treeMask(t: DraftTree): Uint8Array {
  const n = t.tokens.length;
  const m = new Uint8Array(n * n);
  for (let i = 0; i < n; i++) {
    const p = t.parents[i]!;
    if (p >= 0) {
      if (p >= i) throw new Error(`tree not topological: parent ${p} of node ${i}`);
      m.set(m.subarray(p * n, p * n + n), i * n);
    }
    m[i * n + i] = 1;
  }
  return m;
}

/** Position ids for verification: cached length + depth (siblings share a position). */
export function treePositions(t: DraftTree, start: number): Int32Array {
  const out = new Int32Array(t.tokens.length);
  for (let i = 0; i < out.length; i++) out[i] = start + t.depths[i]!;
  return out;
}

/** Node indices from the root to `node`, root included. */
export function pathTo(t: DraftTree, node: number): number[] {
  const path: number[] = [];
  for (let n = node; n >= 0; n = t.parents[n]!) path.push(n);
  return path.reverse();
}

/** A chain tree from a root and a list of drafted tokens. */
export function chainTree(root: number, draft: ArrayLike<number>, logprobs?: ArrayLike<number>): DraftTree {
  const n = draft.length + 1;
  const t: DraftTree = {
    tokens: new Int32Array(n),
    parents: new Int32Array(n),
    depths: new Int32Array(n),
    scores: new Float64Array(n),
  };
  t.tokens[0] = root;
  t.parents[0] = -1;
  for (let i = 1; i < n; i++) {
    t.tokens[i] = draft[i - 1]!;
    t.parents[i] = i - 1;
    t.depths[i] = i;
    t.scores[i] = t.scores[i - 1]! + (logprobs ? logprobs[i - 1]! : 0);
  }
  return t;
}

interface Cand {
  token: number;
  parent: number; // index into cands, -1 = root
  score: number;
  depth: number;
  path: number[];
}

export interface TreeShape {
  /** branching factor per expanded node and number of nodes expanded per level (EAGLE-2 top_k) */
  topK: number;
  /** number of expansion levels (max draft depth) */
  depth: number;
  /** maximal number of drafted nodes kept after re-ranking (root excluded) */
  budget: number;
}

/**
 * EAGLE-2 dynamic draft tree: expand the root, then at each level expand the global top-k candidates
 * (by cumulative log-prob) of the previous level; keep every child as a candidate; finally keep the
 * `budget` best candidates over all depths and sort them by creation order. Because a child's score
 * never exceeds its parent's (log-probs ≤ 0) and ties are broken by creation order, the kept set is
 * a connected tree with parents before children.
 *
 * `chooseBudget`, when given, picks the final size from the sorted candidate scores (hardware-aware
 * sizing); it gets the scores best-first and returns how many to keep (≤ budget).
 */
export async function buildDynamicTree(
  root: number,
  expander: Expander,
  shape: TreeShape,
  chooseBudget?: (sortedScores: number[]) => number,
): Promise<DraftTree> {
  const cands: Cand[] = [];
  let frontier: number[] = [-1];
  for (let level = 0; level < shape.depth && frontier.length > 0; level++) {
    const paths = frontier.map((f) => (f < 0 ? [] : cands[f]!.path));
    const proposals = await expander.expand(paths, shape.topK);
    const created: number[] = [];
    frontier.forEach((f, fi) => {
      const seen = new Set<number>();
      const parentScore = f < 0 ? 0 : cands[f]!.score;
      for (const c of (proposals[fi] ?? []).slice(0, shape.topK)) {
        if (seen.has(c.token)) continue;
        seen.add(c.token);
        const lp = Math.min(0, c.logprob);
        cands.push({
          token: c.token,
          parent: f,
          score: parentScore + lp,
          depth: level + 1,
          path: [...paths[fi]!, c.token],
        });
        created.push(cands.length - 1);
      }
    });
    frontier = created
      .slice()
      .sort((a, b) => cands[b]!.score - cands[a]!.score || a - b)
      .slice(0, shape.topK);
  }
  const ranked = cands.map((_, i) => i).sort((a, b) => cands[b]!.score - cands[a]!.score || a - b);
  let keepN = Math.min(shape.budget, ranked.length);
  if (chooseBudget) keepN = Math.max(0, Math.min(keepN, chooseBudget(ranked.slice(0, keepN).map((i) => cands[i]!.score))));
  const kept = ranked.slice(0, keepN).sort((a, b) => a - b);
  const nodeOf = new Map<number, number>();
  const n = kept.length + 1;
  const t: DraftTree = {
    tokens: new Int32Array(n),
    parents: new Int32Array(n),
    depths: new Int32Array(n),
    scores: new Float64Array(n),
  };
  t.tokens[0] = root;
  t.parents[0] = -1;
  kept.forEach((ci, k) => {
    const c = cands[ci]!;
    const node = k + 1;
    nodeOf.set(ci, node);
    const parentNode = c.parent < 0 ? 0 : nodeOf.get(c.parent);
    if (parentNode === undefined) throw new Error('re-ranked draft tree is not connected');
    t.tokens[node] = c.token;
    t.parents[node] = parentNode;
    t.depths[node] = c.depth;
    t.scores[node] = c.score;
  });
  return sortSiblingsBestFirst(t);
}

/**
 * Renumber nodes so that the tree stays topological and siblings appear best-first (by score, then
 * original order). Verification tries siblings in this order.
 */
export function sortSiblingsBestFirst(t: DraftTree): DraftTree {
  const ch = childrenOf(t);
  const order: number[] = [];
  // BFS by depth with children sorted by score keeps parents before children.
  const queue = [0];
  while (queue.length) {
    const u = queue.shift()!;
    order.push(u);
    const kids = ch[u]!.slice().sort((a, b) => t.scores[b]! - t.scores[a]! || a - b);
    queue.push(...kids);
  }
  const newIdx = new Int32Array(order.length);
  order.forEach((old, i) => (newIdx[old] = i));
  const out: DraftTree = {
    tokens: new Int32Array(order.length),
    parents: new Int32Array(order.length),
    depths: new Int32Array(order.length),
    scores: new Float64Array(order.length),
  };
  order.forEach((old, i) => {
    out.tokens[i] = t.tokens[old]!;
    out.parents[i] = old === 0 ? -1 : newIdx[t.parents[old]!]!;
    out.depths[i] = t.depths[old]!;
    out.scores[i] = t.scores[old]!;
  });
  return out;
}

/** Leaves of the tree and the root→leaf node paths (EAGLE's retrieve_indices, unpadded). */
export function retrievePaths(t: DraftTree): number[][] {
  const ch = childrenOf(t);
  const out: number[][] = [];
  for (let i = 0; i < t.tokens.length; i++) if (ch[i]!.length === 0) out.push(pathTo(t, i));
  return out;
}

/** The subtree of nodes with depth ≤ maxDepth (connected: parents are shallower). */
export function pruneDepth(t: DraftTree, maxDepth: number): DraftTree {
  let deepest = 0;
  for (const d of t.depths) deepest = Math.max(deepest, d);
  if (deepest <= maxDepth) return t;
  const keep: number[] = [];
  for (let i = 0; i < t.tokens.length; i++) if (t.depths[i]! <= maxDepth) keep.push(i);
  const idx = new Map(keep.map((old, i) => [old, i]));
  return {
    tokens: Int32Array.from(keep.map((i) => t.tokens[i]!)),
    parents: Int32Array.from(keep.map((i) => (i === 0 ? -1 : idx.get(t.parents[i]!)!))),
    depths: Int32Array.from(keep.map((i) => t.depths[i]!)),
    scores: Float64Array.from(keep.map((i) => t.scores[i]!)),
  };
}

/**
 * An Expander that replays a recorded EAGLE-2 expansion (per level, the top-k candidates of every
 * frontier node, in frontier order), as recorded by the worker's fused draft_tree request.
 * buildDynamicTree asks for the same frontiers in the same order; anything else is an error.
 */
export function replayExpander(rec: { frontier: ArrayLike<number>; tokens: ArrayLike<number>; logprobs: ArrayLike<number> }, topK: number): Expander {
  let level = 0;
  let off = 0;
  return {
    expand: (paths: number[][], k: number): Candidate[][] => {
      const F = level < rec.frontier.length ? rec.frontier[level] : undefined;
      if (F === undefined || F !== paths.length || k !== topK) throw new Error(`fused draft tree: replay diverged at level ${level}`);
      level++;
      return paths.map(() => {
        const c: Candidate[] = [];
        for (let j = 0; j < k && off < rec.tokens.length; j++, off++) c.push({ token: rec.tokens[off]!, logprob: rec.logprobs[off]! });
        return c;
      });
    },
  };
}
