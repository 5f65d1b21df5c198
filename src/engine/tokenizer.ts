// Tokenizer over the pack's tokenizer.json (@huggingface/tokenizers). The world's vocabulary is
// finite: words the tokenizer does not know give EngineError('UNKNOWN_WORDS') listing them.
// Punctuation-only pieces carry nothing in this world and are dropped. Words the pack declares untrained
// (manifest `untrained_words`: in the vocabulary, but in no training text) are refused the same way: the
// model would read them as noise. The pack's tokenizer.json normalizer folds forms its training text never
// writes ("an", "colour") onto the ones it does.
import { Tokenizer } from '@huggingface/tokenizers';
import { EngineError } from './types.ts';

const PUNCT = /^[\p{P}\p{S}]+$/u;

export class PackTokenizer {
  private tok: Tokenizer;
  readonly specialIds: Set<number>;
  private untrainedIds: Set<number>;

  constructor(
    private json: unknown,
    private unkId: number,
    specialIds: number[],
    untrainedWords: string[] = [],
  ) {
    this.tok = new Tokenizer(json as object, {});
    this.specialIds = new Set(specialIds);
    const vocab = (json as { model?: { vocab?: Record<string, number> } }).model?.vocab ?? {};
    this.untrainedIds = new Set(untrainedWords.filter((w) => Object.hasOwn(vocab, w)).map((w) => vocab[w]!));
  }

  /** Word ids of a user text (no special tokens added). */
  encodeWords(text: string): number[] {
    const { ids, unknown, special } = this.pieces(text);
    if (unknown.length) {
      // name the words as written: "what's" splits into what ' s, and "unknown word: s" would puzzle
      const words = this.writtenWords(text, unknown, special);
      throw new EngineError('UNKNOWN_WORDS', `unknown word${words.length > 1 ? 's' : ''}: ${words.join(', ')}`, { words });
    }
    const untrained = [...new Set(ids.filter((id) => this.untrainedIds.has(id)))].map((id) => this.tok.decode([id], { skip_special_tokens: true }));
    if (untrained.length) {
      const s = untrained.length > 1 ? 's' : '';
      throw new EngineError('UNKNOWN_WORDS', `word${s} the model was never trained on: ${untrained.join(', ')}`, { words: untrained, untrained: true });
    }
    return ids;
  }

  /** The text's word ids; the pieces the vocabulary lacks (punctuation dropped), and which of them are special tokens. */
  private pieces(text: string): { ids: number[]; unknown: string[]; special: string[] } {
    const enc = this.tok.encode(text, { add_special_tokens: false });
    const ids: number[] = [];
    const unknown: string[] = [];
    const special: string[] = [];
    enc.tokens.forEach((t: string, i: number) => {
      const id = enc.ids[i];
      // a special token typed as text (<unk> included: its id is also what an unknown word could map to)
      const typedSpecial = id !== undefined && id !== null && this.specialIds.has(id) && t.startsWith('<');
      if (!typedSpecial && (id === undefined || id === null || id === this.unkId)) {
        if (PUNCT.test(t)) return;
        if (!unknown.includes(t)) unknown.push(t);
        return;
      }
      if (this.specialIds.has(id)) {
        if (!unknown.includes(t)) unknown.push(t);
        if (!special.includes(t)) special.push(t);
        return;
      }
      ids.push(id);
    });
    return { ids, unknown, special };
  }

  /**
   * The words of `text` that hold an unknown piece, as written: special tokens as typed, then words
   * (letters, digits, apostrophes and hyphens; other punctuation separates them) the vocabulary lacks.
   */
  private writtenWords(text: string, unknown: string[], special: string[]): string[] {
    const words = [...special];
    let rest = text;
    for (const t of special) rest = rest.split(t).join(' ');
    for (const raw of rest.split(/[^\p{L}\p{N}'’-]+/u)) {
      const w = raw.replace(/^['’-]+|['’-]+$/g, '');
      if (w && !words.includes(w) && this.pieces(w).unknown.length) words.push(w);
    }
    return words.length ? words : unknown;
  }

  /**
   * The words a prompt may use, sorted: the vocabulary less special tokens, untrained words and the forms
   * the normalizer folds onto others (they are accepted, but as the word they fold to).
   */
  words(): string[] {
    const vocab = (this.json as { model?: { vocab?: unknown } }).model?.vocab;
    if (!vocab || typeof vocab !== 'object' || Array.isArray(vocab)) return []; // a WordLevel vocabulary only
    return Object.entries(vocab as Record<string, number>)
      .filter(([w, id]) => !this.specialIds.has(id) && !this.untrainedIds.has(id) && this.readsAsItself(w, id))
      .map(([w]) => w)
      .sort();
  }

  private readsAsItself(word: string, id: number): boolean {
    const ids = this.tok.encode(word, { add_special_tokens: false }).ids;
    return ids.length === 1 && ids[0] === id;
  }

  decode(ids: number[]): string {
    const words = ids.filter((i) => !this.specialIds.has(i));
    return words.length ? this.tok.decode(words, { skip_special_tokens: true }) : '';
  }
}
