// The model-facing evaluation harness: runs an EvalModel over the committed suites and scores it with
// the independent detector. Returns the JSON objects `hyperbagel eval …` prints.
import { renderScene } from '../world/render.ts';
import { parseCaption, sceneToCaption } from '../world/caption.ts';
import { satisfies, type PromptSpec } from '../world/prompts.ts';
import type { Scene } from '../world/scene.ts';
import { heldoutCombinations, isHeldoutObject } from '../world/splits.ts';
import { questionObject } from '../world/questions.ts';
import { shiftImage } from './degrade.ts';
import type { EvalModel } from './model.ts';
import { aggregateT2i, judgeT2i, type T2iJudgement, type T2iScores } from './score-t2i.ts';
import { aggregateEdits, judgeEdit, type EditJudgement, type EditScores } from './score-edit.ts';
import { answerCorrect, captionExact } from './score-understand.ts';
import { limitPerGroup, loadEditSuite, loadT2iSuite, loadUnderstandSuite, suiteName, suiteSplits, suiteTag, type EvalSplit, type EvalSuite } from './suites.ts';

export interface RunOptions {
  /**
   * which suite set: `test` (default; the reported numbers) or `val` (for choosing recipe variants).
   * Results have the same shape either way: the unprefixed fields (and `test` keys) are the set's main
   * part, the `heldout` ones its held-out part.
   */
  suite?: EvalSuite;
  /** at most this many items per category (t2i), per kind (edit), or images (understanding), per split */
  limit?: number;
  /**
   * understanding only: show the model every image moved this many pixels right and down (edge pixels
   * replicated; degrade.shiftImage), answers unchanged. A robustness probe: the world draws every object
   * at its cell's centre, so a model can learn one pixel pattern per shape and cell.
   */
  shift?: number;
  /**
   * understanding only: also ask every question as a follow-up, in one conversation after the model
   * captioned the image, without the image again (EvalModel.followUp): followup_vqa
   */
  followup?: boolean;
  /**
   * geneval/gedit: images per prompt (default 1). GenEval itself draws 4 per prompt; one per prompt leaves a
   * 300-prompt score with a standard error of about 0.03, too wide to choose between recipe variants that
   * differ by less. Sample k uses the item's seed + k × SAMPLE_SEED_STRIDE, so sample 0 is the fixed suite's
   * own image and `samples: 1` reproduces the default numbers. Every image is judged and counted.
   */
  samples?: number;
  /** called after every item, for progress output */
  onProgress?: (what: string, done: number, total: number) => void;
  /** called with a record of every judged item (suite, id, what was asked, what came back, the verdict) */
  onItem?: (record: Record<string, unknown>) => void;
}

/** Seed offset between the samples of one item: above every suite seed (val's start at VAL_SEED_BASE). */
export const SAMPLE_SEED_STRIDE = 1_000_000;
export const MAX_SAMPLES = 16;

/** What is added to an item's seed for each of its samples under opts.samples (checked before any image is made). */
function sampleOffsets(opts: RunOptions): number[] {
  const n = opts.samples ?? 1;
  if (!Number.isInteger(n) || n < 1 || n > MAX_SAMPLES) throw new RangeError(`samples must be an integer in [1, ${MAX_SAMPLES}], got ${n}`);
  return Array.from({ length: n }, (_, k) => k * SAMPLE_SEED_STRIDE);
}

/** A detected scene as text: its caption, or what was found when no caption describes it. */
const sceneText = (s: Scene) => (s.objects.length ? sceneToCaption(s) : `nothing on a ${s.background} background`);

export interface UnderstandResult {
  caption_exact: number;
  vqa: number;
  heldout_caption_exact: number;
  heldout_vqa: number;
  /**
   * held-out caption exact over the images that contain each held-out combination ("yellow star",
   * "triangle at top left", …; world/splits.ts), with how many images that is
   */
  heldout_caption_by_combination: Record<string, { exact: number; images: number }>;
  /**
   * held-out VQA over the questions about a held-out object ("where is the cyan triangle", "what shape is at the
   * top left" when a triangle is there): heldout_vqa also counts questions about the scene's other objects
   */
  heldout_object_vqa: number;
  counts: { images: number; questions: number; heldout_images: number; heldout_questions: number; heldout_object_questions: number };
  /** with `followup`: VQA accuracy of the same questions asked as a second turn after the caption */
  followup_vqa?: number;
  heldout_followup_vqa?: number;
}

async function understandSplit(model: EvalModel, split: EvalSplit, suite: EvalSuite, opts: RunOptions) {
  const name = suiteName('understand', split, suite);
  const items = loadUnderstandSuite(split, suite).items.slice(0, opts.limit);
  let captions = 0, answers = 0, questions = 0, followUps = 0, objectQuestions = 0, objectAnswers = 0;
  const followUp = opts.followup ? model.followUp?.bind(model) : undefined;
  if (opts.followup && !followUp) throw new RangeError('this model has no conversations to ask follow-up questions in');
  const byCombination: Record<string, { exact: number; images: number }> = {};
  for (const [n, it] of items.entries()) {
    const img = opts.shift ? shiftImage(renderScene(it.scene), opts.shift, opts.shift) : renderScene(it.scene);
    const caption = await model.caption(img);
    const captionOk = captionExact(caption, it.caption);
    if (captionOk) captions++;
    for (const k of heldoutCombinations(it.scene)) {
      const c = (byCombination[k] ??= { exact: 0, images: 0 });
      c.images++;
      if (captionOk) c.exact++;
    }
    const qs = [];
    for (const q of it.questions) {
      questions++;
      const answer = await model.answer(img, q.question);
      const ok = answerCorrect(answer, q.answer);
      if (ok) answers++;
      const about = questionObject(q, it.scene);
      if (about && isHeldoutObject(about)) {
        objectQuestions++;
        if (ok) objectAnswers++;
      }
      const rec: Record<string, unknown> = { question: q.question, expected: q.answer, answer, correct: ok };
      if (followUp) {
        const second = await followUp(img, q.question);
        const okSecond = answerCorrect(second, q.answer);
        if (okSecond) followUps++;
        Object.assign(rec, { followup_answer: second, followup_correct: okSecond });
      }
      qs.push(rec);
    }
    opts.onItem?.({ suite: name, id: it.id, expected: it.caption, caption, correct: captionOk, questions: qs });
    opts.onProgress?.(`understand ${suiteTag(split, suite)}`, n + 1, items.length);
  }
  for (const c of Object.values(byCombination)) c.exact /= c.images;
  return { caption: items.length ? captions / items.length : 0, vqa: questions ? answers / questions : 0, followupVqa: questions ? followUps / questions : 0, images: items.length, questions, byCombination, objectVqa: objectQuestions ? objectAnswers / objectQuestions : 0, objectQuestions };
}

export async function evaluateUnderstanding(model: EvalModel, opts: RunOptions = {}): Promise<UnderstandResult> {
  const suite = opts.suite ?? 'test';
  const [main, heldout] = suiteSplits(suite);
  const t = await understandSplit(model, main, suite, opts);
  const h = await understandSplit(model, heldout, suite, opts);
  return {
    caption_exact: t.caption, vqa: t.vqa, heldout_caption_exact: h.caption, heldout_vqa: h.vqa,
    heldout_caption_by_combination: Object.fromEntries(Object.entries(h.byCombination).sort(([a], [b]) => a.localeCompare(b))),
    heldout_object_vqa: h.objectVqa,
    counts: { images: t.images, questions: t.questions, heldout_images: h.images, heldout_questions: h.questions, heldout_object_questions: h.objectQuestions },
    ...(opts.followup ? { followup_vqa: t.followupVqa, heldout_followup_vqa: h.followupVqa } : {}),
  };
}

/**
 * Think mode: how good the model's scene descriptions are before anything is drawn. `parsed`: the
 * fraction that are valid scene captions (world/caption.ts); `satisfied`: the fraction whose scene
 * satisfies the prompt's specification (the rendering is judged separately by the overall score).
 */
export interface ThoughtScores { parsed: number; satisfied: number; count: number }

export interface GenEvalResult extends T2iScores {
  heldout: T2iScores;
  /** think mode only, per part (`test`: the suite set's main part, `val` under --suite val) */
  thoughts?: { test: ThoughtScores; heldout: ThoughtScores };
  /** per split, the judgement of every image (prompt, correct, detected caption-level scene) when `details` */
  details?: { test: T2iJudgement[]; heldout: T2iJudgement[] };
}

/** Is the thought a scene caption, and does its scene satisfy the prompt? */
function judgeThought(spec: PromptSpec, thought: string): { parsed: boolean; satisfied: boolean } {
  let scene: Scene;
  try {
    scene = parseCaption(thought);
  } catch {
    return { parsed: false, satisfied: false };
  }
  return { parsed: true, satisfied: satisfies(spec, scene) };
}

async function t2iSplit(model: EvalModel, split: EvalSplit, suite: EvalSuite, opts: RunOptions): Promise<{ judgements: T2iJudgement[]; thoughts: ThoughtScores | null }> {
  const name = suiteName('t2i', split, suite);
  const items = limitPerGroup(loadT2iSuite(split, suite).items, (it) => it.category, opts.limit);
  const out: T2iJudgement[] = [];
  let thought = { parsed: 0, satisfied: 0, count: 0 };
  const offsets = sampleOffsets(opts);
  for (const [n, it] of items.entries()) {
    for (const seed of offsets.map((o) => it.seed + o)) {
      const made = model.generateDetailed ? await model.generateDetailed(it.prompt, seed) : { image: await model.generate(it.prompt, seed) };
      const j = judgeT2i(it.spec, made.image);
      out.push(j);
      const tj = made.thought !== undefined ? judgeThought(it.spec, made.thought) : null;
      if (tj) thought = { parsed: thought.parsed + +tj.parsed, satisfied: thought.satisfied + +tj.satisfied, count: thought.count + 1 };
      opts.onItem?.({
        suite: name, id: it.id, category: it.category, prompt: it.prompt, seed,
        ...(tj ? { thought: made.thought, thought_parsed: tj.parsed, thought_satisfies: tj.satisfied } : {}), correct: j.correct, detected: sceneText(j.detected),
      });
    }
    opts.onProgress?.(`geneval ${suiteTag(split, suite)}`, n + 1, items.length);
  }
  const rate = (k: number) => (thought.count ? k / thought.count : 0);
  return { judgements: out, thoughts: thought.count ? { parsed: rate(thought.parsed), satisfied: rate(thought.satisfied), count: thought.count } : null };
}

/** GenEval-style text-to-image evaluation: {overall, categories, counts, heldout: {…}}. */
export async function evaluateGenEval(model: EvalModel, opts: RunOptions & { details?: boolean } = {}): Promise<GenEvalResult> {
  const suite = opts.suite ?? 'test';
  const [main, heldout] = suiteSplits(suite);
  const t = await t2iSplit(model, main, suite, opts);
  const h = await t2iSplit(model, heldout, suite, opts);
  return {
    ...aggregateT2i(t.judgements),
    heldout: aggregateT2i(h.judgements),
    ...(t.thoughts && h.thoughts ? { thoughts: { test: t.thoughts, heldout: h.thoughts } } : {}),
    ...(opts.details ? { details: { test: t.judgements, heldout: h.judgements } } : {}),
  };
}

export interface GEditResult extends EditScores {
  heldout: EditScores;
}

async function editSplit(model: EvalModel, split: EvalSplit, suite: EvalSuite, opts: RunOptions): Promise<EditJudgement[]> {
  const name = suiteName('edit', split, suite);
  const items = limitPerGroup(loadEditSuite(split, suite).items, (it) => it.kind, opts.limit);
  const out: EditJudgement[] = [];
  const offsets = sampleOffsets(opts);
  for (const [n, it] of items.entries()) {
    for (const seed of offsets.map((o) => it.seed + o)) {
      // rendered per sample: the engine may transfer the pixels to its worker
      const edited = await model.edit(renderScene(it.source), it.instruction, seed);
      const j = judgeEdit(it.kind, it.source, it.expected, edited);
      out.push(j);
      opts.onItem?.({ suite: name, id: it.id, kind: it.kind, instruction: it.instruction, seed, source: sceneToCaption(it.source), expected: sceneToCaption(it.expected), detected: sceneText(j.detected), instruction_ok: j.instruction, preserved: j.preserved, quality: j.quality, overall: j.overall });
    }
    opts.onProgress?.(`gedit ${suiteTag(split, suite)}`, n + 1, items.length);
  }
  return out;
}

/** GEdit-style editing evaluation: {overall, categories: {instruction, preserved, quality}, by_kind, heldout: {…}}. */
export async function evaluateGEdit(model: EvalModel, opts: RunOptions = {}): Promise<GEditResult> {
  const suite = opts.suite ?? 'test';
  const [main, heldout] = suiteSplits(suite);
  const t = await editSplit(model, main, suite, opts);
  const h = await editSplit(model, heldout, suite, opts);
  return { ...aggregateEdits(t), heldout: aggregateEdits(h) };
}
