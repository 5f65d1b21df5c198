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
export const EVAL_SPLITS = ['test', 'heldout'] as const;
export type EvalSplit = (typeof EVAL_SPLITS)[number];

export const T2I_PER_CATEGORY = 50;
export const EDITS_PER_KIND = 50;
export const UNDERSTAND_IMAGES = 200;
export const QUESTIONS_PER_IMAGE = 3;
/** The held-out t2i suite measures the held-out colour×shape pairs, which only these categories can name. */
export const HELDOUT_T2I_CATEGORIES: readonly PromptCategory[] = ['colors', 'color_attr'];

export interface T2iItem { id: number; category: PromptCategory; prompt: string; spec: PromptSpec; seed: number; reference: Scene }
export interface EditItem { id: number; kind: EditKind; instruction: string; seed: number; source: Scene; expected: Scene }
export interface UnderstandItem { id: number; scene: Scene; caption: string; questions: QA[] }
export interface Suite<T> { name: string; version: number; split: EvalSplit; description: string; items: T[] }

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
    if (split === 'test' && hasHeldoutCombination(scene)) continue;
    return canonicalScene(scene);
  }
}

export function buildT2iSuite(split: EvalSplit): Suite<T2iItem> {
  const items: T2iItem[] = [];
  const categories = split === 'heldout' ? HELDOUT_T2I_CATEGORIES : PROMPT_CATEGORIES;
  for (const category of categories) {
    for (let i = 0; i < T2I_PER_CATEGORY; i++) {
      const rng = new Rng(`eval:t2i:${split}:${category}:${i}`);
      const spec = randomSpec(category, split, rng);
      const id = items.length;
      items.push({ id, category, prompt: promptText(spec), spec, seed: id, reference: referenceScene(spec, split, rng) });
    }
  }
  return {
    name: `t2i-${split}`, version: SUITE_VERSION, split, items,
    description: split === 'heldout'
      ? `GenEval-style prompts naming a held-out colour×shape pair (categories ${HELDOUT_T2I_CATEGORIES.join(', ')}), ${T2I_PER_CATEGORY} per category; reference = one scene that satisfies the prompt`
      : `GenEval-style prompts, ${T2I_PER_CATEGORY} per category; reference = one scene that satisfies the prompt (no held-out combination)`,
  };
}

export function buildEditSuite(split: EvalSplit): Suite<EditItem> {
  const items: EditItem[] = [];
  for (const kind of EDIT_KINDS) {
    for (let i = 0; i < EDITS_PER_KIND; i++) {
      const rng = new Rng(`eval:edit:${split}:${kind}:${i}`);
      for (;;) {
        const source = sampleScene(rng, { split });
        const edit = randomEdit(source, kind, rng);
        if (!edit) continue;
        const expected = applyEdit(source, edit);
        // test: nothing held-out anywhere; heldout: the edit's result shows a held-out combination
        if (split === 'heldout' ? !hasHeldoutCombination(expected) : hasHeldoutCombination(expected)) continue;
        const id = items.length;
        items.push({ id, kind, instruction: editInstruction(edit), seed: id, source: canonicalScene(source), expected });
        break;
      }
    }
  }
  return {
    name: `edit-${split}`, version: SUITE_VERSION, split, items,
    description: split === 'heldout'
      ? `edit cases whose edited scene contains a held-out combination, ${EDITS_PER_KIND} per kind`
      : `edit cases with no held-out combination in source or result, ${EDITS_PER_KIND} per kind`,
  };
}

export function buildUnderstandSuite(split: EvalSplit): Suite<UnderstandItem> {
  const items: UnderstandItem[] = [];
  for (let i = 0; i < UNDERSTAND_IMAGES; i++) {
    const rng = new Rng(`eval:understand:${split}:${i}`);
    const scene = canonicalScene(sampleScene(rng, { split }));
    const qa = questionsForScene(scene, rng);
    // questions of distinct kinds, so one image does not ask the same template thrice
    const questions: QA[] = [];
    for (const q of rng.shuffle(qa)) {
      if (questions.length < QUESTIONS_PER_IMAGE && !questions.some((p) => p.kind === q.kind)) questions.push(q);
    }
    items.push({ id: i, scene, caption: sceneToCaption(scene), questions });
  }
  return {
    name: `understand-${split}`, version: SUITE_VERSION, split, items,
    description: `${UNDERSTAND_IMAGES} ${split} scenes, each with its canonical caption and ${QUESTIONS_PER_IMAGE} questions of distinct kinds`,
  };
}

export type SuiteName = `${'t2i' | 'edit' | 'understand'}-${EvalSplit}`;

/** Every suite, freshly generated. */
export function buildAllSuites(): Record<SuiteName, Suite<unknown>> {
  const out = {} as Record<SuiteName, Suite<unknown>>;
  for (const split of EVAL_SPLITS) {
    out[`t2i-${split}`] = buildT2iSuite(split);
    out[`edit-${split}`] = buildEditSuite(split);
    out[`understand-${split}`] = buildUnderstandSuite(split);
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

export function loadT2iSuite(split: EvalSplit): Suite<T2iItem> { return loadSuite(`t2i-${split}`) as Suite<T2iItem>; }
export function loadEditSuite(split: EvalSplit): Suite<EditItem> { return loadSuite(`edit-${split}`) as Suite<EditItem>; }
export function loadUnderstandSuite(split: EvalSplit): Suite<UnderstandItem> { return loadSuite(`understand-${split}`) as Suite<UnderstandItem>; }

export function loadSuite(name: SuiteName, dir = SUITE_DIR): Suite<unknown> {
  return JSON.parse(readFileSync(join(dir, `${name}.json`), 'utf8')) as Suite<unknown>;
}

/** Items of `items` limited to the first `limit` of every group (category / kind), or all. */
export function limitPerGroup<T>(items: T[], group: (t: T) => string, limit?: number): T[] {
  if (limit === undefined) return items;
  const seen = new Map<string, number>();
  return items.filter((it) => { const g = group(it); const n = seen.get(g) ?? 0; seen.set(g, n + 1); return n < limit; });
}
