// Think mode (BAGEL's prompt rewriting / "thinking" before generation): the model first expands a short
// text-to-image prompt into a full scene description in a text-only understanding turn, then the
// generator renders that description. A short prompt leaves attributes open ("a photo of a square":
// which colour, size, place, background?); a small flow model averages the open choices into a blank
// image, whereas sampling the description commits to one scene first. The expansion runs through the
// ordinary understanding path, so it is speculatively decoded and seeded like any sampled answer.
import type { Admission } from '../admission.ts';
import type { EngineCtx } from '../context.ts';
import { runUnderstand, type ConversationState } from '../understand/pipeline.ts';
import * as V from '../validate.ts';
import { EngineError, type GenerateRequest } from '../types.ts';
import { validateGenerate, type ValidatedGenerate } from './pipeline.ts';

/**
 * Below 1, so descriptions stay close to the modes of the learned p(description | prompt) yet still vary
 * with the seed: on release 2 (full GenEval suite, baseline sampler) 1.0 / 0.7 / 0.5 / 0.3 score
 * 0.797 / 0.833 / 0.857 / 0.860, and even at 0.3 98 % of a prompt's seeds get distinct descriptions
 * (docs/results.md); 0.5 keeps more of the variety for the same score.
 */
export const THINK_TEMPERATURE = 0.5;
/** Scene descriptions of the Shapes world are ≤ ~40 words; the generator's prompt limit caps it too. */
export const THINK_MAX_TOKENS = 48;

export interface Thought {
  /** the description generation will render (the prompt itself if the model wrote nothing) */
  text: string;
  /** time spent writing it */
  ms: number;
}

/** Can this pack think? Its manifest says the model was trained on prompt expansion. */
export const canThink = (ctx: EngineCtx): boolean => ctx.manifest.prompts?.think === true && !!ctx.manifest.graphs.denoiser;

/** A think request checked as a generation request, plus the think options. */
export function validateThink(ctx: EngineCtx, req: GenerateRequest, conversation: ConversationState | null): { v: ValidatedGenerate; temperature: number } {
  if (typeof req.think !== 'boolean') throw new EngineError('INVALID_INPUT', 'think must be a boolean', { param: 'think' });
  const v = validateGenerate(ctx, req, conversation);
  if (v.edit) throw new EngineError('INVALID_INPUT', 'think applies to text-to-image only, not to edits', { param: 'think' });
  if (!canThink(ctx)) throw new EngineError('INVALID_INPUT', 'this model pack was not trained to think (manifest prompts.think)', { param: 'think' });
  return { v, temperature: V.opt(req.thinkTemperature, (t) => V.num('thinkTemperature', t, 0, 2), THINK_TEMPERATURE) };
}

/**
 * Validates a think request (validateThink) and writes the thought.
 * Returns the request generation should run: the thought as its prompt, the seed fixed (drawn here if
 * absent), so one seed reproduces both the thought and the image.
 */
export async function thinkFirst(
  ctx: EngineCtx,
  req: GenerateRequest,
  signal: AbortSignal | undefined,
  conversation: ConversationState | null,
  /** the request's admission, held by the caller for the thought and the drawing alike */
  admitted?: Admission,
): Promise<{ request: GenerateRequest; thought: Thought }> {
  const { v, temperature } = validateThink(ctx, req, conversation);
  const maxTokens = Math.min(THINK_MAX_TOKENS, ctx.opts.maxPromptWords);
  const t0 = performance.now();
  let text = '';
  let cancelled = false;
  for await (const ev of runUnderstand(ctx, { prompt: thinkPrompt(ctx, req.prompt), temperature, seed: v.seed, maxTokens }, signal, null, admitted)) {
    if (ev.kind !== 'done') continue;
    text = ev.text.trim();
    cancelled = ev.finishReason === 'cancelled';
  }
  if (cancelled || signal?.aborted) throw new EngineError('CANCELLED', 'request cancelled');
  // a thought the generator cannot read (no words, or a sampled word the pack declares untrained) would
  // fail its prompt check on words the user never typed: fall back to the prompt
  if (!usable(ctx, text)) text = req.prompt;
  const { think: _t, thinkTemperature: _tt, ...rest } = req;
  return { request: { ...rest, prompt: text, seed: v.seed }, thought: { text, ms: performance.now() - t0 } };
}

/**
 * The prompt as the model learned to expand it: framed with the pack's `prompts.think_prefix` when it does
 * not already begin with those words (compared as the tokenizer reads them, so "A photo of" counts).
 */
export function thinkPrompt(ctx: EngineCtx, prompt: string): string {
  const prefix = ctx.manifest.prompts?.think_prefix;
  if (!prefix) return prompt;
  const want = ctx.tokenizer.encodeWords(prefix);
  const have = ctx.tokenizer.encodeWords(prompt);
  // (a prompt the frame would take past the word limit it passed goes as given)
  if (want.every((id, i) => have[i] === id) || want.length + have.length > ctx.opts.maxPromptWords) return prompt;
  return `${prefix.trim()} ${prompt.trim()}`;
}

function usable(ctx: EngineCtx, text: string): boolean {
  try {
    return ctx.tokenizer.encodeWords(text).length > 0;
  } catch (e) {
    if (e instanceof EngineError && e.code === 'UNKNOWN_WORDS') return false;
    throw e;
  }
}
