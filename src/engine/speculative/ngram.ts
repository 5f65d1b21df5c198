// Model-free drafting by prompt lookup (n-gram matching against the context, as in HF
// `prompt_lookup_num_tokens`, vLLM/ORT-GenAI n-gram). Implemented as an Expander so the same tree
// builder makes chains (topK = 1) or trees (several distinct continuations) from it.
import type { Candidate, Expander } from './tree.ts';

export interface NgramOptions {
  /** longest suffix n-gram tried first */
  maxN: number;
  /** shortest suffix n-gram accepted */
  minN: number;
  /**
   * Log of the prior probability that a continuation seen once in the context is accepted; the
   * candidate log-prob is this plus log(count share). Updated from running acceptance statistics.
   */
  logPrior: number;
}

export const DEFAULT_NGRAM: NgramOptions = { maxN: 3, minN: 1, logPrior: Math.log(0.5) };

export class NgramExpander implements Expander {
  private context: number[] = [];
  constructor(private opts: NgramOptions = DEFAULT_NGRAM) {}

  /** Committed tokens including the root (the last chosen, not yet cached, token). */
  setContext(tokens: ArrayLike<number>): void {
    this.context = Array.from(tokens);
  }

  setLogPrior(lp: number): void {
    this.opts = { ...this.opts, logPrior: Math.min(0, lp) };
  }

  expand(paths: number[][], k: number): Candidate[][] {
    return paths.map((p) => this.continuations(this.context.concat(p), k));
  }

  /** Candidate next tokens after `seq`, from the longest suffix n-gram that occurs earlier in `seq`. */
  continuations(seq: number[], k: number): Candidate[] {
    const L = seq.length;
    for (let n = Math.min(this.opts.maxN, L - 1); n >= this.opts.minN; n--) {
      const counts = new Map<number, { count: number; last: number }>();
      let total = 0;
      // scan earlier occurrences of the suffix of length n; the follower of each is a candidate
      for (let start = L - n - 1; start >= 0; start--) {
        let match = true;
        for (let j = 0; j < n; j++) {
          if (seq[start + j] !== seq[L - n + j]) {
            match = false;
            break;
          }
        }
        if (!match) continue;
        const next = seq[start + n]!;
        const e = counts.get(next);
        if (e) e.count++;
        else counts.set(next, { count: 1, last: start });
        total++;
      }
      if (total === 0) continue;
      return [...counts.entries()]
        .sort((a, b) => b[1].count - a[1].count || b[1].last - a[1].last)
        .slice(0, k)
        .map(([token, e]) => ({ token, logprob: this.opts.logPrior + Math.log(e.count / total) }));
    }
    return [];
  }
}
