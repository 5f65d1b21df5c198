import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { EngineError, type UnderstandEvent } from '../../src/engine/types.ts';
import { processLogits, type SamplingParams } from '../../src/engine/understand/logits.ts';
import { causalMask } from '../../src/engine/understand/target.ts';
import { WorkerSequence } from '../../src/engine/understand/worker-target.ts';
import type { WorkerClient } from '../../src/runtime/client.ts';

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

/** Input embeddings of token ids, looked up in the pack's embedding table (the worker's 'embed_table'). */
export async function embedLookup(client: WorkerClient, dim: number): Promise<(ids: number[]) => Float32Array> {
  const table = await client.call<Float32Array>({ op: 'embed_table' });
  return (ids) => {
    const out = new Float32Array(ids.length * dim);
    ids.forEach((x, i) => out.set(table.subarray(x * dim, x * dim + dim), i * dim));
    return out;
  };
}

/**
 * Opens a target sequence on `ids` followed by `extra` and returns it with the last row's logits, and
 * its hidden-state features when `featureDim` > 0 (the sequence is the caller's to close).
 */
export function prefixOpener(client: WorkerClient, vocab: number, ids: number[], featureDim = 0) {
  return async (extra: number[] = []) => {
    const s = await WorkerSequence.open(client, vocab, 64, featureDim);
    const all = [...ids, ...extra];
    const l = await s.forward(Int32Array.from(all), Int32Array.from(all.map((_, i) => i)), causalMask(all.length), 'all', featureDim > 0);
    return { s, l: l.slice((all.length - 1) * vocab), feats: s.lastFeatures! };
  };
}

/**
 * The exact joint distribution of the first two sampled tokens after the opener's prefix under
 * `sampling`: p(a)·p(c | a), keyed "a,c", plus the support of c for every first token a (ascending a).
 */
export async function exactTwoTokenJoint(
  open: ReturnType<typeof prefixOpener>,
  vocab: number,
  sampling: SamplingParams,
): Promise<{ exact: Map<string, number>; support: Map<number, number[]> }> {
  const exact = new Map<string, number>();
  const support = new Map<number, number[]>();
  const base = await open();
  const p1 = processLogits(base.l, 0, vocab, sampling);
  for (let a = 0; a < vocab; a++) {
    if (!p1[a]) continue;
    const b = await open([a]);
    const p2 = processLogits(b.l, 0, vocab, sampling);
    const cs: number[] = [];
    for (let c = 0; c < vocab; c++)
      if (p2[c]) {
        exact.set(`${a},${c}`, p1[a]! * p2[c]!);
        cs.push(c);
      }
    support.set(a, cs);
    await b.s.close();
  }
  await base.s.close();
  return { exact, support };
}

/**
 * Runs `f` with `before` called ahead of every request the worker client sends (given its op), then
 * restores the client: for tests that cancel, crash or fail at a chosen model call.
 */
export async function withWorkerCalls<T>(client: WorkerClient, before: (op: string) => void | Promise<void>, f: () => Promise<T>): Promise<T> {
  const call = client.call.bind(client);
  client.call = (async (msg: { op: string }, ...rest: unknown[]) => {
    await before(msg.op);
    return (call as (...a: unknown[]) => unknown)(msg, ...rest);
  }) as typeof client.call;
  try {
    return await f();
  } finally {
    client.call = call;
  }
}
