// Scene ↔ canonical caption. Grammar:
//   caption := object ("and" object)* "on a" BACKGROUND "background"
//   object  := "a" SIZE COLOR SHAPE "at the" CELL
import { WorldError } from './errors.ts';
import { canonicalScene, validateScene, type Scene, type SceneObject } from './scene.ts';
import { BACKGROUNDS, CELLS, COLORS, SHAPES, SIZES, normalizeText, unknownWords, type BackgroundColor, type Cell, type ObjectColor, type Shape, type Size } from './vocabulary.ts';

export function describeObject(o: SceneObject): string {
  return `a ${o.size} ${o.color} ${o.shape} at the ${o.cell}`;
}

export function sceneToCaption(scene: Scene): string {
  const c = canonicalScene(scene);
  return `${c.objects.map(describeObject).join(' and ')} on a ${c.background} background`;
}

/** Throws UNKNOWN_WORDS if the text uses words outside the world's vocabulary. */
export function assertKnownWords(text: string): void {
  const unknown = unknownWords(text);
  if (unknown.length > 0) {
    throw new WorldError('UNKNOWN_WORDS', `unknown word${unknown.length > 1 ? 's' : ''}: ${unknown.map((w) => `"${w}"`).join(', ')}`, { unknownWords: unknown });
  }
}

/** A cursor over words, with errors that say where parsing stopped. */
export class WordReader {
  pos = 0;
  constructor(readonly words: string[], readonly text: string) {}
  get done(): boolean { return this.pos >= this.words.length; }
  peek(offset = 0): string | undefined { return this.words[this.pos + offset]; }
  fail(expected: string): never {
    const got = this.peek();
    throw new WorldError('PARSE_ERROR', `cannot parse "${this.text}": expected ${expected} at word ${this.pos + 1}${got ? `, got "${got}"` : ', got end of text'}`);
  }
  expect(word: string): void {
    if (this.peek() !== word) this.fail(`"${word}"`);
    this.pos++;
  }
  accept(word: string): boolean {
    if (this.peek() === word) { this.pos++; return true; }
    return false;
  }
  oneOf<T extends string>(options: readonly T[], what: string): T {
    const w = this.peek();
    if (w !== undefined && (options as readonly string[]).includes(w)) { this.pos++; return w as T; }
    return this.fail(`${what} (${options.join(', ')})`);
  }
  /** Longest match among multi-word phrases such as "top left". */
  phrase<T extends string>(options: readonly T[], what: string): T {
    const sorted = [...options].sort((a, b) => b.split(' ').length - a.split(' ').length);
    for (const opt of sorted) {
      const parts = opt.split(' ');
      if (parts.every((p, i) => this.peek(i) === p)) { this.pos += parts.length; return opt; }
    }
    return this.fail(`${what} (${options.join(', ')})`);
  }
}

export function readWords(text: string): WordReader {
  assertKnownWords(text);
  const norm = normalizeText(text);
  return new WordReader(norm ? norm.split(' ') : [], norm);
}

export function parseObject(r: WordReader): SceneObject {
  // the world writes "a" before every word; "an" is what people write before a vowel
  if (!r.accept('a') && !r.accept('an')) r.fail('"a" or "an"');
  const size: Size = r.oneOf(SIZES, 'a size');
  const color: ObjectColor = r.oneOf(COLORS, 'a colour');
  const shape: Shape = r.oneOf(SHAPES, 'a shape');
  r.expect('at');
  r.expect('the');
  const cell: Cell = r.phrase(CELLS, 'a position');
  return { shape, color, size, cell };
}

/** Parses a canonical caption back into a validated scene. */
export function parseCaption(text: string): Scene {
  const r = readWords(text);
  const objects: SceneObject[] = [parseObject(r)];
  while (r.accept('and')) objects.push(parseObject(r));
  r.expect('on');
  r.expect('a');
  const background: BackgroundColor = r.oneOf(BACKGROUNDS, 'a background colour');
  r.expect('background');
  if (!r.done) r.fail('end of caption');
  const scene = { background, objects };
  validateScene(scene);
  return canonicalScene(scene);
}
