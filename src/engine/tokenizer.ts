// Tokenizer over the pack's tokenizer.json (@huggingface/tokenizers). The world's vocabulary is
// finite: words the tokenizer does not know give EngineError('UNKNOWN_WORDS') listing them.
// Punctuation-only pieces carry nothing in this world and are dropped.
import { Tokenizer } from '@huggingface/tokenizers';
import { EngineError } from './types.ts';

const PUNCT = /^[\p{P}\p{S}]+$/u;

export class PackTokenizer {
  private tok: Tokenizer;
  readonly specialIds: Set<number>;

  constructor(
    json: unknown,
    private unkId: number,
    specialIds: number[],
  ) {
    this.tok = new Tokenizer(json as object, {});
    this.specialIds = new Set(specialIds);
  }

  /** Word ids of a user text (no special tokens added). */
  encodeWords(text: string): number[] {
    const enc = this.tok.encode(text, { add_special_tokens: false });
    const ids: number[] = [];
    const unknown: string[] = [];
    enc.tokens.forEach((t: string, i: number) => {
      const id = enc.ids[i];
      if (id === undefined || id === null || id === this.unkId) {
        if (PUNCT.test(t)) return;
        if (!unknown.includes(t)) unknown.push(t);
        return;
      }
      if (this.specialIds.has(id)) {
        if (!unknown.includes(t)) unknown.push(t);
        return;
      }
      ids.push(id);
    });
    if (unknown.length)
      throw new EngineError('UNKNOWN_WORDS', `unknown word${unknown.length > 1 ? 's' : ''}: ${unknown.join(', ')}`, { words: unknown });
    return ids;
  }

  decode(ids: number[]): string {
    const words = ids.filter((i) => !this.specialIds.has(i));
    return words.length ? this.tok.decode(words, { skip_special_tokens: true }) : '';
  }
}
