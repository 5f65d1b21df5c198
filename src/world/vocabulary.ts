// The Shapes world's finite vocabulary: every attribute value and every word the language uses.

export const SHAPES = ['circle', 'square', 'triangle', 'star'] as const;
export type Shape = (typeof SHAPES)[number];

/** Object colours, with their exact RGB. Kept far apart so an analytic detector can separate them. */
export const OBJECT_COLORS = {
  red: [220, 40, 40],
  orange: [245, 140, 20],
  yellow: [240, 220, 30],
  green: [40, 170, 60],
  cyan: [40, 200, 210],
  blue: [40, 80, 220],
  purple: [140, 60, 190],
  pink: [245, 130, 190],
} as const satisfies Record<string, readonly [number, number, number]>;
export type ObjectColor = keyof typeof OBJECT_COLORS;
export const COLORS = Object.keys(OBJECT_COLORS) as ObjectColor[];

/** Background colours: disjoint from object colours. */
export const BACKGROUND_COLORS = {
  white: [245, 245, 245],
  black: [20, 20, 20],
  gray: [128, 128, 128],
  beige: [225, 205, 160],
} as const satisfies Record<string, readonly [number, number, number]>;
export type BackgroundColor = keyof typeof BACKGROUND_COLORS;
export const BACKGROUNDS = Object.keys(BACKGROUND_COLORS) as BackgroundColor[];

export const SIZES = ['small', 'large'] as const;
export type Size = (typeof SIZES)[number];

/** 3×3 grid cells in row-major order; index = row * 3 + col. */
export const CELLS = [
  'top left', 'top', 'top right',
  'left', 'center', 'right',
  'bottom left', 'bottom', 'bottom right',
] as const;
export type Cell = (typeof CELLS)[number];

export const RELATIONS = ['left of', 'right of', 'above', 'below'] as const;
export type Relation = (typeof RELATIONS)[number];

export const NUMBER_WORDS = ['zero', 'one', 'two', 'three', 'four'] as const;

export const PLURAL: Record<Shape, string> = { circle: 'circles', square: 'squares', triangle: 'triangles', star: 'stars' };

/** Function words used by captions, prompts, questions and edits. */
const FUNCTION_WORDS = [
  'a', 'an', 'the', 'at', 'and', 'on', 'background', 'of', 'photo', 'left', 'right', 'above', 'below',
  'what', 'color', 'colour', 'is', 'shape', 'how', 'many', 'objects', 'object', 'are', 'there', 'where',
  'size', 'yes', 'no', 'make', 'move', 'to', 'remove', 'add', 'change', 'describe', 'image', 'this', 'picture',
  'in', 'it', 'now',
];

function wordsOf(phrases: readonly string[]): string[] {
  return phrases.flatMap((p) => p.split(' '));
}

/** Every word the world knows, sorted, without duplicates. */
export const VOCABULARY: readonly string[] = [
  ...new Set([
    ...SHAPES,
    ...Object.values(PLURAL),
    ...COLORS,
    ...BACKGROUNDS,
    ...SIZES,
    ...wordsOf(CELLS),
    ...wordsOf(RELATIONS),
    ...NUMBER_WORDS,
    ...FUNCTION_WORDS,
  ]),
].sort();

const VOCAB_SET = new Set(VOCABULARY);

/** Lower-cases, drops punctuation and collapses whitespace: the world's one text normal form. */
export function normalizeText(text: string): string {
  return text
    .toLowerCase()
    .replace(/[?.!,;:]/g, ' ')
    .replace(/\s+/g, ' ')
    .trim();
}

/** Words of `text` (after normalisation) that the world does not know, in order of first appearance. */
export function unknownWords(text: string): string[] {
  const out: string[] = [];
  for (const w of normalizeText(text).split(' ')) {
    if (w && !VOCAB_SET.has(w) && !out.includes(w)) out.push(w);
  }
  return out;
}

export function isKnownWord(word: string): boolean {
  return VOCAB_SET.has(word);
}
