// Stop conditions applied inside a chunk: EOS and max-tokens on the token list, stop strings on the
// text. Text that could still be the start of a stop string is held back until it is disambiguated,
// so no emitted delta ever has to be retracted.
import type { FinishReason } from '../types.ts';

export interface TokenCut {
  /** tokens to keep from this step */
  keep: number;
  finish: FinishReason | null;
}

/** Cut a step's tokens at EOS (not emitted) or at the token budget. */
export function cutTokens(tokens: number[], eos: number, generatedBefore: number, maxTokens: number): TokenCut {
  for (let i = 0; i < tokens.length; i++) {
    if (tokens[i] === eos) return { keep: i, finish: 'eos' };
    if (generatedBefore + i + 1 >= maxTokens) return { keep: i + 1, finish: 'length' };
  }
  return { keep: tokens.length, finish: null };
}

export class StopStringFilter {
  private held = '';
  private maxLen: number;

  constructor(private stops: string[]) {
    this.stops = stops.filter((s) => s.length > 0);
    this.maxLen = Math.max(0, ...this.stops.map((s) => s.length));
  }

  /** Feed new text; returns the text safe to emit and whether a stop string was hit. */
  push(text: string): { text: string; stopped: boolean } {
    if (!this.stops.length) return { text, stopped: false };
    const buf = this.held + text;
    let cut = -1;
    for (const s of this.stops) {
      const i = buf.indexOf(s);
      if (i >= 0 && (cut < 0 || i < cut)) cut = i;
    }
    if (cut >= 0) {
      this.held = '';
      return { text: buf.slice(0, cut), stopped: true };
    }
    // hold back the longest suffix that is a proper prefix of some stop string
    let hold = 0;
    for (let k = Math.min(this.maxLen - 1, buf.length); k > 0; k--) {
      const suf = buf.slice(buf.length - k);
      if (this.stops.some((s) => s.startsWith(suf))) {
        hold = k;
        break;
      }
    }
    this.held = buf.slice(buf.length - hold);
    return { text: buf.slice(0, buf.length - hold), stopped: false };
  }

  /** End of stream: the held text was not a stop string after all. */
  flush(): string {
    const h = this.held;
    this.held = '';
    return h;
  }
}
