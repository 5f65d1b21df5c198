// Reference models built from the world itself, for testing the scorers: an oracle that must score 1.0
// and trivially wrong models that must score low.
import type { RgbImage } from '../engine/types.ts';
import { WorldError } from '../world/errors.ts';
import { sceneToCaption } from '../world/caption.ts';
import { applyEdit, parseInstruction } from '../world/edits.ts';
import { renderScene } from '../world/render.ts';
import { MAX_OBJECTS, type Scene } from '../world/scene.ts';
import { CELLS, NUMBER_WORDS, normalizeText, PLURAL, SHAPES, type Shape } from '../world/vocabulary.ts';
import { detectScene } from './detector.ts';
import type { EvalModel } from './model.ts';
import { EVAL_SUITES, loadT2iSuite, suiteSplits } from './suites.ts';

/** Answers any question of the templates in world/questions.ts from a scene. */
export function answerQuestion(scene: Scene, question: string): string {
  const q = normalizeText(question);
  const objs = scene.objects;
  let m: RegExpMatchArray | null;
  if (q === 'what color is the background') return scene.background;
  if (q === 'how many objects are there') return NUMBER_WORDS[objs.length] ?? String(objs.length); // (a detected scene may hold more than the world's 4)
  if ((m = q.match(/^how many (\w+) are there$/))) {
    const shape = SHAPES.find((s) => PLURAL[s] === m![1]);
    if (shape) {
      const n = objs.filter((o) => o.shape === shape).length;
      return NUMBER_WORDS[n] ?? String(n);
    }
  }
  if ((m = q.match(/^what color is the (\w+)$/))) { const o = objs.find((p) => p.shape === m![1]); if (o) return o.color; }
  if ((m = q.match(/^where is the (\w+) (\w+)$/))) { const o = objs.find((p) => p.color === m![1] && p.shape === m![2]); if (o) return o.cell; }
  if ((m = q.match(/^what size is the (\w+) (\w+)$/))) { const o = objs.find((p) => p.color === m![1] && p.shape === m![2]); if (o) return o.size; }
  if ((m = q.match(/^what shape is at the (.+)$/)) && (CELLS as readonly string[]).includes(m[1]!)) { const o = objs.find((p) => p.cell === m![1]); if (o) return o.shape; }
  if ((m = q.match(/^is there a (\w+) (\w+)$/))) return objs.some((p) => p.color === m![1] && p.shape === (m![2] as Shape)) ? 'yes' : 'no';
  throw new WorldError('PARSE_ERROR', `no answer for "${question}" in this scene`);
}

/**
 * The oracle: sees through the detector (which is exact on clean renders) and renders ground truth.
 * generate() renders the reference scene the suites (test, then val) store for the prompt.
 */
export function oracleModel(): EvalModel {
  const refs = new Map<string, Scene>();
  // test first: a prompt in both sets keeps its test reference (either satisfies the prompt)
  for (const suite of EVAL_SUITES) for (const split of suiteSplits(suite)) for (const it of loadT2iSuite(split, suite).items) if (!refs.has(it.prompt)) refs.set(it.prompt, it.reference);
  // a degraded image can hide the object a question names: no answer (scored wrong), not a failed run
  const answer = async (img: RgbImage, q: string): Promise<string> => {
    try {
      return answerQuestion(detectScene(img), q);
    } catch (e) {
      if (e instanceof WorldError && e.code === 'PARSE_ERROR') return '';
      throw e;
    }
  };
  return {
    caption: async (img) => sceneToCaption(detectScene(img)),
    answer,
    // the oracle remembers the image across turns perfectly: a follow-up is answered as a first question
    followUp: answer,
    generate: async (prompt) => {
      const s = refs.get(prompt);
      if (!s) throw new WorldError('PARSE_ERROR', `oracle has no reference scene for "${prompt}"`);
      return renderScene(s);
    },
    // (the detector reports every object it sees; an edit applies to a world scene: one object per colour and
    // shape, at most MAX_OBJECTS, as the first of each)
    edit: async (img, instruction) => renderScene(applyEdit(asWorldScene(detectScene(img)), parseInstruction(instruction))),
  };
}

/** A detected scene as a valid world scene: the first object of each colour and shape, at most MAX_OBJECTS. */
function asWorldScene(scene: Scene): Scene {
  const seen = new Set<string>();
  const objects = scene.objects
    .filter((o) => {
      const k = `${o.color} ${o.shape}`;
      if (seen.has(k)) return false;
      seen.add(k);
      return true;
    })
    .slice(0, MAX_OBJECTS);
  return { ...scene, objects };
}

/** Wraps a model so every image it produces is post-processed (e.g. degraded). */
export function mapImages(model: EvalModel, f: (img: RgbImage, seed: number) => RgbImage): EvalModel {
  return {
    caption: (img) => model.caption(img),
    answer: (img, q) => model.answer(img, q),
    generate: async (p, seed) => f(await model.generate(p, seed), seed),
    edit: async (img, ins, seed) => f(await model.edit(img, ins, seed), seed),
  };
}

/** Trivially wrong: a fixed caption, always "yes", a blank canvas for every prompt, the source unchanged for every edit. */
export function constantModel(): EvalModel {
  return {
    caption: async () => 'a large red circle at the center on a white background',
    answer: async () => 'yes',
    generate: async () => renderBlank(),
    edit: async (img) => ({ width: img.width, height: img.height, data: img.data.slice() }),
  };
}

function renderBlank(): RgbImage {
  const data = new Uint8Array(64 * 64 * 3).fill(245);
  return { width: 64, height: 64, data };
}
