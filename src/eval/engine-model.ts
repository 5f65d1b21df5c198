// Adapter: the real engine (src/engine, Engine in types.ts) as an EvalModel for the harness.
import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import type { Engine, GenerationMode, RgbImage } from '../engine/types.ts';
import { EngineError } from '../engine/types.ts';
import type { EvalModel } from './model.ts';

/**
 * The embedded default pack, found from the repository (not the current directory), as every
 * command finds it; with --pack and $HYPERBAGEL_PACK, resolvePack in src/engine/pack-location.ts.
 */
export { DEFAULT_PACK } from '../engine/pack-location.ts';
/** Used when the pack's manifest names no caption prompt; the recipes train with this one. */
export const DEFAULT_CAPTION_PROMPT = 'describe the image';
export const EVAL_MAX_TOKENS = 64;

/** The caption prompt a pack was trained with (manifest.prompts.caption). */
export function captionPrompt(packDir: string): string {
  try {
    const m = JSON.parse(readFileSync(join(packDir, 'manifest.json'), 'utf8')) as { prompts?: { caption?: unknown } };
    if (typeof m.prompts?.caption === 'string') return m.prompts.caption;
  } catch { /* fall through: the engine reports a bad pack itself */ }
  return DEFAULT_CAPTION_PROMPT;
}

/** Wraps an engine; greedy decoding for understanding, `mode` (and `think`) for generation, `mode` for editing. */
export function engineModel(engine: Engine, opts: { mode: GenerationMode; captionPrompt?: string; think?: boolean; thinkTemperature?: number }): EvalModel {
  const understand = async (image: RgbImage | undefined, prompt: string, session?: ReturnType<Engine['createSession']>): Promise<string> => {
    let text: string | undefined;
    for await (const ev of engine.understand({ prompt, ...(image ? { image } : {}), ...(session ? { session } : {}), temperature: 0, maxTokens: EVAL_MAX_TOKENS })) {
      if (ev.kind === 'done') text = ev.text;
    }
    if (text === undefined) throw new EngineError('INTERNAL', 'understand() ended without a summary');
    return text;
  };
  const captionText = opts.captionPrompt ?? DEFAULT_CAPTION_PROMPT;
  const finalFrame = async (req: Parameters<Engine['generate']>[0]): Promise<{ image: RgbImage; thought?: string }> => {
    for await (const frame of engine.generate(req)) if (frame.stage === 'final') return { image: frame.rgb, ...(frame.thought !== undefined ? { thought: frame.thought } : {}) };
    throw new EngineError('INTERNAL', 'generate() ended without a final frame');
  };
  const lastFrame = async (req: Parameters<Engine['generate']>[0]): Promise<RgbImage> => (await finalFrame(req)).image;
  const t2i = (prompt: string, seed: number) => ({
    prompt, mode: opts.mode, seed,
    ...(opts.think ? { think: true, ...(opts.thinkTemperature !== undefined ? { thinkTemperature: opts.thinkTemperature } : {}) } : {}),
  });
  return {
    caption: (image) => understand(image, captionText),
    answer: (image, question) => understand(image, question),
    followUp: async (image, question) => {
      const session = engine.createSession();
      try {
        await understand(image, captionText, session);
        return await understand(undefined, question, session);
      } finally {
        engine.closeSession(session);
      }
    },
    generate: (prompt, seed) => lastFrame(t2i(prompt, seed)),
    generateDetailed: (prompt, seed) => finalFrame(t2i(prompt, seed)),
    edit: (image, instruction, seed) => lastFrame({ prompt: instruction, sourceImage: image, mode: opts.mode, seed }),
  };
}

/**
 * Opens the pack with the engine (src/engine/index.ts createEngine). The engine module is imported
 * lazily, so the evaluator's other commands never load onnxruntime.
 */
export async function openEngine(packDir: string): Promise<Engine> {
  if (!existsSync(join(packDir, 'manifest.json'))) {
    throw new EngineError('MODEL_LOAD_FAILED', `no model pack at "${packDir}" (expected ${join(packDir, 'manifest.json')}); pass --pack DIR`);
  }
  let mod: { createEngine?: unknown };
  try {
    mod = await import('../engine/index.ts');
  } catch (err) {
    throw new EngineError('MODEL_LOAD_FAILED', `the engine is not available (cannot import src/engine/index.ts: ${(err as Error).message})`);
  }
  if (typeof mod.createEngine !== 'function') {
    throw new EngineError('MODEL_LOAD_FAILED', 'the engine is not available: src/engine/index.ts exports no createEngine()');
  }
  return await (mod.createEngine as (dir: string) => Promise<Engine>)(packDir);
}
