// Text-to-image scoring, GenEval-style (Hyper-Bagel Table 2 categories): a generated image counts for
// its prompt when the detected scene satisfies the prompt's specification (world/prompts.ts).
import type { RgbImage } from '../engine/types.ts';
import { PROMPT_CATEGORIES, satisfies, type PromptCategory, type PromptSpec } from '../world/prompts.ts';
import type { Scene } from '../world/scene.ts';
import { detectScene } from './detector.ts';

export interface T2iSample { category: PromptCategory; spec: PromptSpec; image: RgbImage }
export interface T2iJudgement { category: PromptCategory; correct: boolean; detected: Scene }

export function judgeT2i(spec: PromptSpec, image: RgbImage): T2iJudgement {
  const detected = detectScene(image);
  return { category: spec.category, correct: satisfies(spec, detected), detected };
}

export interface T2iScores {
  /** mean of the category scores present (GenEval's overall) */
  overall: number;
  /** per category: fraction of images that satisfy their prompt */
  categories: Partial<Record<PromptCategory, number>>;
  /** number of images judged per category */
  counts: Partial<Record<PromptCategory, number>>;
}

export function aggregateT2i(judgements: T2iJudgement[]): T2iScores {
  const categories: T2iScores['categories'] = {};
  const counts: T2iScores['counts'] = {};
  for (const c of PROMPT_CATEGORIES) {
    const js = judgements.filter((j) => j.category === c);
    if (js.length === 0) continue;
    categories[c] = js.filter((j) => j.correct).length / js.length;
    counts[c] = js.length;
  }
  const vals = Object.values(categories);
  return { overall: vals.length ? vals.reduce((a, b) => a + b, 0) / vals.length : 0, categories, counts };
}
