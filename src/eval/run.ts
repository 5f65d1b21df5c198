// The model-facing evaluation harness: runs an EvalModel over the committed suites and scores it with
// the independent detector. Returns the JSON objects `hyperbagel eval …` prints.
import { renderScene } from '../world/render.ts';
import { sceneToCaption } from '../world/caption.ts';
import type { Scene } from '../world/scene.ts';
import type { EvalModel } from './model.ts';
import { aggregateT2i, judgeT2i, type T2iJudgement, type T2iScores } from './score-t2i.ts';
import { aggregateEdits, judgeEdit, type EditJudgement, type EditScores } from './score-edit.ts';
import { answerCorrect, captionExact } from './score-understand.ts';
import { limitPerGroup, loadEditSuite, loadT2iSuite, loadUnderstandSuite, type EvalSplit } from './suites.ts';

export interface RunOptions {
  /** at most this many items per category (t2i), per kind (edit), or images (understanding), per split */
  limit?: number;
  /** called after every item, for progress output */
  onProgress?: (what: string, done: number, total: number) => void;
  /** called with a record of every judged item (suite, id, what was asked, what came back, the verdict) */
  onItem?: (record: Record<string, unknown>) => void;
}

/** A detected scene as text: its caption, or what was found when no caption describes it. */
const sceneText = (s: Scene) => (s.objects.length ? sceneToCaption(s) : `nothing on a ${s.background} background`);

export interface UnderstandResult {
  caption_exact: number;
  vqa: number;
  heldout_caption_exact: number;
  heldout_vqa: number;
  counts: { images: number; questions: number; heldout_images: number; heldout_questions: number };
}

async function understandSplit(model: EvalModel, split: EvalSplit, opts: RunOptions) {
  const items = loadUnderstandSuite(split).items.slice(0, opts.limit);
  let captions = 0, answers = 0, questions = 0;
  for (const [n, it] of items.entries()) {
    const img = renderScene(it.scene);
    const caption = await model.caption(img);
    const captionOk = captionExact(caption, it.caption);
    if (captionOk) captions++;
    const qs = [];
    for (const q of it.questions) {
      questions++;
      const answer = await model.answer(img, q.question);
      const ok = answerCorrect(answer, q.answer);
      if (ok) answers++;
      qs.push({ question: q.question, expected: q.answer, answer, correct: ok });
    }
    opts.onItem?.({ suite: `understand-${split}`, id: it.id, expected: it.caption, caption, correct: captionOk, questions: qs });
    opts.onProgress?.(`understand ${split}`, n + 1, items.length);
  }
  return { caption: items.length ? captions / items.length : 0, vqa: questions ? answers / questions : 0, images: items.length, questions };
}

export async function evaluateUnderstanding(model: EvalModel, opts: RunOptions = {}): Promise<UnderstandResult> {
  const t = await understandSplit(model, 'test', opts);
  const h = await understandSplit(model, 'heldout', opts);
  return {
    caption_exact: t.caption, vqa: t.vqa, heldout_caption_exact: h.caption, heldout_vqa: h.vqa,
    counts: { images: t.images, questions: t.questions, heldout_images: h.images, heldout_questions: h.questions },
  };
}

export interface GenEvalResult extends T2iScores {
  heldout: T2iScores;
  /** per split, the judgement of every image (prompt, correct, detected caption-level scene) when `details` */
  details?: Record<EvalSplit, T2iJudgement[]>;
}

async function t2iSplit(model: EvalModel, split: EvalSplit, opts: RunOptions): Promise<T2iJudgement[]> {
  const items = limitPerGroup(loadT2iSuite(split).items, (it) => it.category, opts.limit);
  const out: T2iJudgement[] = [];
  for (const [n, it] of items.entries()) {
    const made = model.generateDetailed ? await model.generateDetailed(it.prompt, it.seed) : { image: await model.generate(it.prompt, it.seed) };
    const j = judgeT2i(it.spec, made.image);
    out.push(j);
    opts.onItem?.({
      suite: `t2i-${split}`, id: it.id, category: it.category, prompt: it.prompt, seed: it.seed,
      ...(made.thought !== undefined ? { thought: made.thought } : {}), correct: j.correct, detected: sceneText(j.detected),
    });
    opts.onProgress?.(`geneval ${split}`, n + 1, items.length);
  }
  return out;
}

/** GenEval-style text-to-image evaluation: {overall, categories, counts, heldout: {…}}. */
export async function evaluateGenEval(model: EvalModel, opts: RunOptions & { details?: boolean } = {}): Promise<GenEvalResult> {
  const t = await t2iSplit(model, 'test', opts);
  const h = await t2iSplit(model, 'heldout', opts);
  return { ...aggregateT2i(t), heldout: aggregateT2i(h), ...(opts.details ? { details: { test: t, heldout: h } } : {}) };
}

export interface GEditResult extends EditScores {
  heldout: EditScores;
}

async function editSplit(model: EvalModel, split: EvalSplit, opts: RunOptions): Promise<EditJudgement[]> {
  const items = limitPerGroup(loadEditSuite(split).items, (it) => it.kind, opts.limit);
  const out: EditJudgement[] = [];
  for (const [n, it] of items.entries()) {
    const edited = await model.edit(renderScene(it.source), it.instruction, it.seed);
    const j = judgeEdit(it.kind, it.source, it.expected, edited);
    out.push(j);
    opts.onItem?.({ suite: `edit-${split}`, id: it.id, kind: it.kind, instruction: it.instruction, seed: it.seed, source: sceneToCaption(it.source), expected: sceneToCaption(it.expected), detected: sceneText(j.detected), instruction_ok: j.instruction, preserved: j.preserved, quality: j.quality, overall: j.overall });
    opts.onProgress?.(`gedit ${split}`, n + 1, items.length);
  }
  return out;
}

/** GEdit-style editing evaluation: {overall, categories: {instruction, preserved, quality}, by_kind, heldout: {…}}. */
export async function evaluateGEdit(model: EvalModel, opts: RunOptions = {}): Promise<GEditResult> {
  const t = await editSplit(model, 'test', opts);
  const h = await editSplit(model, 'heldout', opts);
  return { ...aggregateEdits(t), heldout: aggregateEdits(h) };
}
