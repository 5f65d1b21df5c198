// Fixed evaluation suites: generated from fixed seeds, committed as JSON under src/eval/suites/, so
// that scores compare across versions. `hyperbagel eval suites --write` regenerates them; a test
// checks the committed files equal a regeneration.
import { mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { Rng } from '../world/rng.ts';
import { canonicalScene, validateScene, type Scene, type SceneObject } from '../world/scene.ts';
import { sampleScene } from '../world/sampler.ts';
import { sceneToCaption } from '../world/caption.ts';
import { PROMPT_CATEGORIES, promptText, satisfies, type PromptCategory, type PromptSpec } from '../world/prompts.ts';
import { questionsForScene, type QA } from '../world/questions.ts';
import { applyEdit, EDIT_KINDS, editInstruction, randomEdit, type EditKind } from '../world/edits.ts';
import { HELDOUT_COLOR_SHAPE, hasHeldoutCombination } from '../world/splits.ts';
import { BACKGROUNDS, CELLS, COLORS, RELATIONS, SHAPES, SIZES, type ObjectColor, type Shape } from '../world/vocabulary.ts';

export const SUITE_DIR = fileURLToPath(new URL('./suites/', import.meta.url));
export const SUITE_VERSION = 1;
/**
 * Suite sets. `test` reports numbers; `val` is for choosing between recipe variants (training lengths,
 * loss weights, …), so that what is reported on test was not selected on it. Both are built by the
 * same generators with the same sizes and balance; val from its own seeds and the world's `val` split,
 * with no item equal to a test item (`buildAllSuites`).
 */
export const EVAL_SUITES = ['test', 'val'] as const;
export type EvalSuite = (typeof EVAL_SUITES)[number];
/** The splits of the test set, in order: its main part, then its held-out part. */
export const EVAL_SPLITS = ['test', 'heldout'] as const;
/** The split a suite part draws its scenes from: its set's own split (`test` / `val`), or `heldout`. */
export type EvalSplit = 'test' | 'val' | 'heldout';
/** The two parts of a suite set: its main split, then the held-out one. */
export function suiteSplits(suite: EvalSuite): readonly [EvalSplit, EvalSplit] {
  return [suite, 'heldout'];
}
/** Generator seeds (t2i, edit) of val items are offset by this, so no val (prompt, seed) is a test one. */
export const VAL_SEED_BASE = 100_000;

export const T2I_PER_CATEGORY = 50;
export const EDITS_PER_KIND = 50;
export const UNDERSTAND_IMAGES = 200;
export const QUESTIONS_PER_IMAGE = 3;
/** The held-out t2i suite measures the held-out colour×shape pairs, which only these categories can name. */
export const HELDOUT_T2I_CATEGORIES: readonly PromptCategory[] = ['colors', 'color_attr'];

export interface T2iItem { id: number; category: PromptCategory; prompt: string; spec: PromptSpec; seed: number; reference: Scene }
export interface EditItem { id: number; kind: EditKind; instruction: string; seed: number; source: Scene; expected: Scene }
export interface UnderstandItem { id: number; scene: Scene; caption: string; questions: QA[] }
/** `suite` is written in the val files only, so the test files did not change when val was added. */
export interface Suite<T> { name: string; version: number; split: EvalSplit; suite?: EvalSuite; description: string; items: T[] }

type SuiteKind = 't2i' | 'edit' | 'understand';
/** A part's tag, naming its file and seeding its generator: `test`, `heldout` (test set); `val`, `heldout-val` (val set). */
export type SuiteTag = 'test' | 'heldout' | 'val' | 'heldout-val';
export type SuiteName = `${SuiteKind}-${SuiteTag}`;

/** The set a split belongs to when none is said: val for `val`, else test. */
const defaultSuite = (split: EvalSplit): EvalSuite => (split === 'val' ? 'val' : 'test');

export function suiteTag(split: EvalSplit, suite: EvalSuite = defaultSuite(split)): SuiteTag {
  if (split !== 'heldout' && split !== suite) throw new Error(`the ${suite} suite set has no ${split} part (its parts: ${suiteSplits(suite).join(', ')})`);
  if (suite === 'test') return split === 'heldout' ? 'heldout' : 'test';
  return split === 'heldout' ? 'heldout-val' : 'val';
}

export function suiteName(kind: SuiteKind, split: EvalSplit, suite: EvalSuite = defaultSuite(split)): SuiteName {
  return `${kind}-${suiteTag(split, suite)}`;
}

const seedBase = (suite: EvalSuite) => (suite === 'val' ? VAL_SEED_BASE : 0);
/** Identity of a scene, whatever its object order. */
export const sceneKey = (s: Scene): string => JSON.stringify(canonicalScene(s));
/** Identity of an edit case: its source scene and instruction. */
export const editKey = (it: Pick<EditItem, 'source' | 'instruction'>): string => `${sceneKey(it.source)}|${it.instruction}`;

function suiteHead(kind: SuiteKind, split: EvalSplit, suite: EvalSuite): Pick<Suite<unknown>, 'name' | 'version' | 'split' | 'suite'> {
  return { name: suiteName(kind, split, suite), version: SUITE_VERSION, split, ...(suite === 'val' ? { suite } : {}) };
}
const valNote = (suite: EvalSuite) => (suite === 'val' ? '; val set (for choosing recipes), no item equal to a test item' : '');

const isHeldoutPair = (color: ObjectColor, shape: Shape) => HELDOUT_COLOR_SHAPE.some((h) => h.color === color && h.shape === shape);

/** A random spec of `category`; for heldout, one that names a held-out colour×shape pair. */
function randomSpec(category: PromptCategory, split: EvalSplit, rng: Rng): PromptSpec {
  const twoShapes = (): [Shape, Shape] => { const [a, b] = rng.shuffle(SHAPES); return [a!, b!]; };
  const colored = (): { shape: Shape; color: ObjectColor } => {
    for (;;) {
      const shape = rng.pick(SHAPES), color = rng.pick(COLORS);
      if (!isHeldoutPair(color, shape)) return { shape, color };
    }
  };
  switch (category) {
    case 'single_object': return { category, shape: rng.pick(SHAPES) };
    case 'two_objects': return { category, shapes: twoShapes() };
    case 'counting': return { category, shape: rng.pick(SHAPES), count: rng.int(2, 4) };
    case 'colors': return split === 'heldout' ? { category, ...rng.pick(HELDOUT_COLOR_SHAPE) } : { category, ...colored() };
    case 'position': { const [a, b] = twoShapes(); return { category, a, relation: rng.pick(RELATIONS), b }; }
    case 'color_attr': {
      for (;;) {
        const a = split === 'heldout' ? { ...rng.pick(HELDOUT_COLOR_SHAPE) } : colored();
        const b = colored();
        if (a.shape !== b.shape && a.color !== b.color) return { category, ...(rng.next() < 0.5 ? { a, b } : { a: b, b: a }) };
      }
    }
  }
}

/** A scene that satisfies `spec` exactly (just the prompt's objects), valid for `split`. */
function referenceScene(spec: PromptSpec, split: EvalSplit, rng: Rng): Scene {
  for (;;) {
    const cells = rng.shuffle(CELLS);
    const obj = (shape: Shape, color: ObjectColor = rng.pick(COLORS)): SceneObject => ({ shape, color, size: rng.pick(SIZES), cell: cells.pop()! });
    let objects: SceneObject[];
    switch (spec.category) {
      case 'single_object': objects = [obj(spec.shape)]; break;
      case 'two_objects': objects = [obj(spec.shapes[0]), obj(spec.shapes[1])]; break;
      case 'counting': { const colors = rng.shuffle(COLORS); objects = Array.from({ length: spec.count }, (_, i) => obj(spec.shape, colors[i])); break; }
      case 'colors': objects = [obj(spec.shape, spec.color)]; break;
      case 'position': objects = [obj(spec.a), obj(spec.b)]; break;
      case 'color_attr': objects = [obj(spec.a.shape, spec.a.color), obj(spec.b.shape, spec.b.color)]; break;
    }
    const scene: Scene = { background: rng.pick(BACKGROUNDS), objects };
    try { validateScene(scene); } catch { continue; }
    if (!satisfies(spec, scene)) continue;
    if (split !== 'heldout' && hasHeldoutCombination(scene)) continue;
    return canonicalScene(scene);
  }
}

/**
 * GenEval-style prompts. No val item equals a test one: val seeds are offset by VAL_SEED_BASE (the
 * prompt space is small, e.g. one single-object prompt per shape, so prompts themselves recur).
 */
export function buildT2iSuite(split: EvalSplit, suite: EvalSuite = defaultSuite(split)): Suite<T2iItem> {
  const tag = suiteTag(split, suite);
  const items: T2iItem[] = [];
  const categories = split === 'heldout' ? HELDOUT_T2I_CATEGORIES : PROMPT_CATEGORIES;
  for (const category of categories) {
    for (let i = 0; i < T2I_PER_CATEGORY; i++) {
      const rng = new Rng(`eval:t2i:${tag}:${category}:${i}`);
      const spec = randomSpec(category, split, rng);
      const id = items.length;
      items.push({ id, category, prompt: promptText(spec), spec, seed: seedBase(suite) + id, reference: referenceScene(spec, split, rng) });
    }
  }
  return {
    ...suiteHead('t2i', split, suite), items,
    description: (split === 'heldout'
      ? `GenEval-style prompts naming a held-out colour×shape pair (categories ${HELDOUT_T2I_CATEGORIES.join(', ')}), ${T2I_PER_CATEGORY} per category; reference = one scene that satisfies the prompt`
      : `GenEval-style prompts, ${T2I_PER_CATEGORY} per category; reference = one scene that satisfies the prompt (no held-out combination)`) + valNote(suite),
  };
}

/** Edit cases; those in `avoid` (by editKey) are redrawn, which is how val leaves out every test case. */
export function buildEditSuite(split: EvalSplit, suite: EvalSuite = defaultSuite(split), avoid: ReadonlySet<string> = defaultAvoid(suite, 'edit')): Suite<EditItem> {
  const tag = suiteTag(split, suite);
  const items: EditItem[] = [];
  for (const kind of EDIT_KINDS) {
    for (let i = 0; i < EDITS_PER_KIND; i++) {
      const rng = new Rng(`eval:edit:${tag}:${kind}:${i}`);
      for (;;) {
        const source = sampleScene(rng, { split });
        const edit = randomEdit(source, kind, rng);
        if (!edit) continue;
        const expected = applyEdit(source, edit);
        // test/val: nothing held-out anywhere; heldout: the edit's result shows a held-out combination
        if (split === 'heldout' ? !hasHeldoutCombination(expected) : hasHeldoutCombination(expected)) continue;
        const instruction = editInstruction(edit);
        if (avoid.size && avoid.has(editKey({ source, instruction }))) continue;
        const id = items.length;
        items.push({ id, kind, instruction, seed: seedBase(suite) + id, source: canonicalScene(source), expected });
        break;
      }
    }
  }
  return {
    ...suiteHead('edit', split, suite), items,
    description: (split === 'heldout'
      ? `edit cases whose edited scene contains a held-out combination, ${EDITS_PER_KIND} per kind`
      : `edit cases with no held-out combination in source or result, ${EDITS_PER_KIND} per kind`) + valNote(suite),
  };
}

/** Understanding items; scenes in `avoid` (by sceneKey) are redrawn, which is how val leaves out every test scene. */
export function buildUnderstandSuite(split: EvalSplit, suite: EvalSuite = defaultSuite(split), avoid: ReadonlySet<string> = defaultAvoid(suite, 'understand')): Suite<UnderstandItem> {
  const tag = suiteTag(split, suite);
  const items: UnderstandItem[] = [];
  for (let i = 0; i < UNDERSTAND_IMAGES; i++) {
    const rng = new Rng(`eval:understand:${tag}:${i}`);
    let scene: Scene;
    do scene = canonicalScene(sampleScene(rng, { split })); while (avoid.size && avoid.has(sceneKey(scene)));
    const qa = questionsForScene(scene, rng);
    // questions of distinct kinds, so one image does not ask the same template thrice
    const questions: QA[] = [];
    for (const q of rng.shuffle(qa)) {
      if (questions.length < QUESTIONS_PER_IMAGE && !questions.some((p) => p.kind === q.kind)) questions.push(q);
    }
    items.push({ id: i, scene, caption: sceneToCaption(scene), questions });
  }
  return {
    ...suiteHead('understand', split, suite), items,
    description: `${UNDERSTAND_IMAGES} ${split} scenes, each with its canonical caption and ${QUESTIONS_PER_IMAGE} questions of distinct kinds` + valNote(suite),
  };
}

/** What a val part must not repeat: every case (edit) or scene (understand) of both test parts. */
function testKeys(kind: 'edit' | 'understand'): Set<string> {
  const keys = new Set<string>();
  for (const split of EVAL_SPLITS) {
    if (kind === 'edit') for (const it of buildEditSuite(split, 'test').items) keys.add(editKey(it));
    else for (const it of buildUnderstandSuite(split, 'test').items) keys.add(sceneKey(it.scene));
  }
  return keys;
}
function defaultAvoid(suite: EvalSuite, kind: 'edit' | 'understand'): ReadonlySet<string> {
  return suite === 'val' ? testKeys(kind) : new Set();
}

/** Every suite of both sets, freshly generated (the val parts avoiding the test parts generated here). */
export function buildAllSuites(): Record<SuiteName, Suite<unknown>> {
  const out = {} as Record<SuiteName, Suite<unknown>>;
  const edits: EditItem[] = [], scenes: Scene[] = [];
  for (const split of EVAL_SPLITS) {
    const e = buildEditSuite(split, 'test'), u = buildUnderstandSuite(split, 'test');
    out[suiteName('t2i', split)] = buildT2iSuite(split);
    out[suiteName('edit', split)] = e;
    out[suiteName('understand', split)] = u;
    edits.push(...e.items);
    scenes.push(...u.items.map((it) => it.scene));
  }
  const avoidEdits = new Set(edits.map(editKey)), avoidScenes = new Set(scenes.map(sceneKey));
  for (const split of suiteSplits('val')) {
    out[suiteName('t2i', split, 'val')] = buildT2iSuite(split, 'val');
    out[suiteName('edit', split, 'val')] = buildEditSuite(split, 'val', avoidEdits);
    out[suiteName('understand', split, 'val')] = buildUnderstandSuite(split, 'val', avoidScenes);
  }
  return out;
}

/** The committed text of a suite file: stable JSON, one item per line for readable diffs. */
export function suiteFileText(suite: Suite<unknown>): string {
  const { items, ...head } = suite;
  const headJson = JSON.stringify(head);
  return `${headJson.slice(0, -1)},"items":[\n${items.map((it) => JSON.stringify(it)).join(',\n')}\n]}\n`;
}

export function writeSuites(dir = SUITE_DIR): string[] {
  mkdirSync(dir, { recursive: true });
  const written: string[] = [];
  for (const [name, suite] of Object.entries(buildAllSuites())) {
    const path = join(dir, `${name}.json`);
    writeFileSync(path, suiteFileText(suite));
    written.push(path);
  }
  return written;
}

export function loadT2iSuite(split: EvalSplit, suite: EvalSuite = defaultSuite(split)): Suite<T2iItem> { return loadSuite(suiteName('t2i', split, suite)) as Suite<T2iItem>; }
export function loadEditSuite(split: EvalSplit, suite: EvalSuite = defaultSuite(split)): Suite<EditItem> { return loadSuite(suiteName('edit', split, suite)) as Suite<EditItem>; }
export function loadUnderstandSuite(split: EvalSplit, suite: EvalSuite = defaultSuite(split)): Suite<UnderstandItem> { return loadSuite(suiteName('understand', split, suite)) as Suite<UnderstandItem>; }

export function loadSuite(name: SuiteName, dir = SUITE_DIR): Suite<unknown> {
  return JSON.parse(readFileSync(join(dir, `${name}.json`), 'utf8')) as Suite<unknown>;
}

/** Items of `items` limited to the first `limit` of every group (category / kind), or all. */
export function limitPerGroup<T>(items: T[], group: (t: T) => string, limit?: number): T[] {
  if (limit === undefined) return items;
  const seen = new Map<string, number>();
  return items.filter((it) => { const g = group(it); const n = seen.get(g) ?? 0; seen.set(g, n + 1); return n < limit; });
}
