// Text limits of understand / generate / edit, checked before any model loads: the same as the
// gateway's (a prompt) and the engine's (stop strings), so the CLI refuses what the API refuses.
import { DEFAULT_LIMITS } from '../gateway/limits.ts';
import { MAX_STOP_CHARS, MAX_STOP_SEQUENCES } from '../engine/understand/pipeline.ts';
import { EngineError } from '../engine/types.ts';

export const MAX_PROMPT_CHARS = DEFAULT_LIMITS.maxPromptChars;
export { MAX_STOP_CHARS, MAX_STOP_SEQUENCES };

/** PROMPT_TOO_LONG over the gateway's maxPromptChars; `what` is "prompt" or "instruction". */
export function checkPromptLength(prompt: string, what = 'prompt'): void {
  if (prompt.length > MAX_PROMPT_CHARS)
    throw new EngineError('PROMPT_TOO_LONG', `${what} has ${prompt.length} characters; the limit is ${MAX_PROMPT_CHARS}`, { length: prompt.length, limit: MAX_PROMPT_CHARS });
}

/** --stop: at most MAX_STOP_SEQUENCES non-empty strings of at most MAX_STOP_CHARS characters (the engine's limits). */
export function checkStops(stops: readonly string[] | undefined): void {
  if (!stops) return;
  if (stops.length > MAX_STOP_SEQUENCES) throw new EngineError('OUT_OF_RANGE', `--stop given ${stops.length} times; the limit is ${MAX_STOP_SEQUENCES}`, { param: 'stop' });
  for (const s of stops) {
    if (!s) throw new EngineError('OUT_OF_RANGE', '--stop must not be empty', { param: 'stop' });
    if (s.length > MAX_STOP_CHARS) throw new EngineError('OUT_OF_RANGE', `--stop has ${s.length} characters; the limit is ${MAX_STOP_CHARS}`, { param: 'stop', length: s.length, limit: MAX_STOP_CHARS });
  }
}
