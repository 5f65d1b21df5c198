// Incremental detokenisation (the prefix/read-offset scheme of TGI / HF TextStreamer): decode a small
// window of recent tokens twice and emit only the new suffix, holding text back while it ends in an
// incomplete character (U+FFFD), so a delta never splits a character.

export type DecodeFn = (ids: number[]) => string;

export class IncrementalDetokenizer {
  private ids: number[] = [];
  private prefixOffset = 0;
  private readOffset = 0;

  constructor(private decode: DecodeFn) {}

  /** Add tokens; returns the newly completed text. */
  push(tokens: ArrayLike<number>): string {
    let out = '';
    for (let i = 0; i < tokens.length; i++) {
      this.ids.push(tokens[i]!);
      const prefixText = this.decode(this.ids.slice(this.prefixOffset, this.readOffset));
      const newText = this.decode(this.ids.slice(this.prefixOffset));
      if (newText.length > prefixText.length && !newText.endsWith('\uFFFD') && newText.startsWith(prefixText)) {
        out += newText.slice(prefixText.length);
        this.prefixOffset = this.readOffset;
        this.readOffset = this.ids.length;
      }
    }
    return out;
  }

  /** Whatever is still held back (at the end of a stream). */
  flush(): string {
    const prefixText = this.decode(this.ids.slice(this.prefixOffset, this.readOffset));
    const newText = this.decode(this.ids.slice(this.prefixOffset));
    this.prefixOffset = this.readOffset = this.ids.length;
    return newText.startsWith(prefixText) ? newText.slice(prefixText.length).replace(/\uFFFD+$/, '') : '';
  }
}
