import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { EngineError, type UnderstandEvent } from '../../src/engine/types.ts';

export const FIXTURE = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../fixtures/tiny-pack');

export async function collect<T>(it: AsyncIterable<T>): Promise<T[]> {
  const out: T[] = [];
  for await (const x of it) out.push(x);
  return out;
}

/** Resolves to the EngineError thrown by `f` (sync or while iterating). */
export async function engineError(f: () => unknown): Promise<EngineError> {
  try {
    const r = f();
    if (r && typeof (r as AsyncIterable<unknown>)[Symbol.asyncIterator] === 'function') await collect(r as AsyncIterable<unknown>);
    else await r;
  } catch (e) {
    if (e instanceof EngineError) return e;
    throw e;
  }
  throw new Error('expected an EngineError, nothing was thrown');
}

/** The answer's token ids: every chunk's, then the summary's trailing textless steps'. */
export function answerIds(evs: UnderstandEvent[]): number[] {
  return evs.flatMap((e) => (e.kind === 'chunk' ? e.tokenIds : (e.trailing?.tokenIds ?? [])));
}
