// Question templates with their answers, computed from the scene.
import type { Rng } from './rng.ts';
import type { Scene, SceneObject } from './scene.ts';
import { COLORS, NUMBER_WORDS, PLURAL, SHAPES } from './vocabulary.ts';
import { HELDOUT_COLOR_SHAPE } from './splits.ts';

export const QUESTION_KINDS = ['color_of', 'count_all', 'count_shape', 'where', 'exists', 'shape_at', 'background', 'size_of'] as const;
export type QuestionKind = (typeof QUESTION_KINDS)[number];

export interface QA {
  kind: QuestionKind;
  question: string;
  answer: string;
}

/** All questions of every kind that have a well-defined answer for the scene. */
export function questionsForScene(scene: Scene, rng: Rng): QA[] {
  const qa: QA[] = [];
  const objs = scene.objects;
  for (const o of objs) {
    if (objs.filter((p) => p.shape === o.shape).length === 1) qa.push({ kind: 'color_of', question: `what color is the ${o.shape}`, answer: o.color });
    qa.push({ kind: 'where', question: `where is the ${o.color} ${o.shape}`, answer: o.cell });
    qa.push({ kind: 'size_of', question: `what size is the ${o.color} ${o.shape}`, answer: o.size });
    qa.push({ kind: 'shape_at', question: `what shape is at the ${o.cell}`, answer: o.shape });
  }
  qa.push({ kind: 'count_all', question: 'how many objects are there', answer: NUMBER_WORDS[objs.length]! });
  const shape = rng.pick(SHAPES);
  qa.push({ kind: 'count_shape', question: `how many ${PLURAL[shape]} are there`, answer: NUMBER_WORDS[objs.filter((o) => o.shape === shape).length]! });
  // One positive and one negative existence question, so "yes" and "no" are balanced.
  const present = rng.pick(objs);
  qa.push({ kind: 'exists', question: `is there a ${present.color} ${present.shape}`, answer: 'yes' });
  for (let i = 0; i < 20; i++) {
    const color = rng.pick(COLORS);
    const s = rng.pick(SHAPES);
    // Never name a held-out colour×shape pair: training text must not mention it either (docs/world.md).
    if (HELDOUT_COLOR_SHAPE.some((h) => h.color === color && h.shape === s)) continue;
    if (!objs.some((o) => o.color === color && o.shape === s)) {
      qa.push({ kind: 'exists', question: `is there a ${color} ${s}`, answer: 'no' });
      break;
    }
  }
  qa.push({ kind: 'background', question: 'what color is the background', answer: scene.background });
  return qa;
}

/**
 * The object a question asks about, if it asks about one ("where is the red circle", "what shape is at the
 * top left"); counts, the background and a "no" existence question ask about none.
 */
export function questionObject(q: QA, scene: Scene): SceneObject | undefined {
  const objs = scene.objects;
  switch (q.kind) {
    case 'color_of':
      return objs.find((o) => q.question === `what color is the ${o.shape}`);
    case 'shape_at':
      return objs.find((o) => q.question === `what shape is at the ${o.cell}`);
    case 'where':
    case 'size_of':
    case 'exists':
      return q.answer === 'no' ? undefined : objs.find((o) => q.question.endsWith(` ${o.color} ${o.shape}`));
    default:
      return undefined;
  }
}
