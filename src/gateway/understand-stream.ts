// The understand subscription's source stream. The engine is drained eagerly into a tiny buffer;
// the transport pulls (graphql-ws awaits each socket write, SSE pulls on demand). Chunks that pile
// up while the client is slow are coalesced into one event (text and token ids concatenated,
// counts summed, `steps` > 1); the terminal summary is never dropped. Memory per stream is bounded
// by the request's maxTokens.
import type { UnderstandChunk, UnderstandSummary } from '../engine/types.ts';
import { toGatewayError } from './errors.ts';
import { guarded } from './guard.ts';

export interface MergedChunk {
  text: string;
  tokenIds: number[];
  acceptedTokens: number;
  draftedTokens: number;
  steps: number;
}

export interface StreamHooks<T> {
  /** map a (possibly coalesced) chunk to the payload yielded to GraphQL */
  chunk: (c: MergedChunk) => T;
  summary: (s: UnderstandSummary, firstChunkAt: number | undefined) => T;
  /** called once per engine step, at the engine boundary */
  onEngineChunk?: (c: UnderstandChunk) => void;
  onCoalesced?: () => void;
  /** called exactly once when the engine is done or abandoned; `cancelled` when the client left */
  onEnd: (info: { cancelled: boolean; error?: unknown; summary?: UnderstandSummary }) => void;
}

/**
 * @param source the engine's event stream, already bound to `controller.signal`
 * @param controller aborted when the client goes away (return() or `signal`)
 */
export function coalescingStream<T>(
  source: AsyncIterable<UnderstandChunk | UnderstandSummary>,
  controller: AbortController,
  hooks: StreamHooks<T>,
  signal?: AbortSignal,
  stallMs = Infinity,
): AsyncIterableIterator<T> {
  let pending: MergedChunk | undefined;
  let summary: UnderstandSummary | undefined;
  let summaryDelivered = false;
  let error: unknown;
  let ended = false;
  let closed = false;
  let firstChunkAt: number | undefined;
  let wake: (() => void) | undefined;
  const notify = () => {
    const w = wake;
    wake = undefined;
    w?.();
  };

  const close = () => {
    if (closed) return;
    closed = true;
    if (!ended) controller.abort();
    signal?.removeEventListener('abort', close);
    notify();
  };
  if (signal?.aborted) close();
  else signal?.addEventListener('abort', close, { once: true });

  void (async () => {
    try {
      for await (const ev of guarded(source, controller.signal, stallMs)) {
        if (controller.signal.aborted) break;
        if (ev.kind === 'chunk') {
          firstChunkAt ??= performance.now();
          hooks.onEngineChunk?.(ev);
          if (pending) {
            pending.text += ev.text;
            for (const t of ev.tokenIds) pending.tokenIds.push(t);
            pending.acceptedTokens += ev.acceptedTokens;
            pending.draftedTokens += ev.draftedTokens;
            pending.steps++;
            hooks.onCoalesced?.();
          } else {
            pending = { text: ev.text, tokenIds: [...ev.tokenIds], acceptedTokens: ev.acceptedTokens, draftedTokens: ev.draftedTokens, steps: 1 };
          }
        } else {
          summary = ev;
        }
        notify();
      }
    } catch (e) {
      // after a client cancel, whatever the engine throws is moot
      if (!controller.signal.aborted) {
        error = e;
        controller.abort(); // tell the engine to stop (e.g. after a stall)
      }
    } finally {
      ended = true;
      hooks.onEnd({ cancelled: controller.signal.aborted && error === undefined, error, summary });
      notify();
    }
  })();

  const it: AsyncIterableIterator<T> = {
    async next(): Promise<IteratorResult<T>> {
      for (;;) {
        if (closed) return { value: undefined, done: true };
        if (pending) {
          const c = pending;
          pending = undefined;
          return { value: hooks.chunk(c), done: false };
        }
        // the summary goes out once the engine stream has ended and onEnd has released the slot and
        // session, so a client may send its next request on the same session right away
        if (summary && !summaryDelivered && ended) {
          summaryDelivered = true;
          return { value: hooks.summary(summary, firstChunkAt), done: false };
        }
        if (ended) {
          closed = true;
          if (error !== undefined) throw toGatewayError(error);
          if (!summaryDelivered) throw toGatewayError(new Error('engine stream ended without a summary'));
          return { value: undefined, done: true };
        }
        await new Promise<void>((r) => (wake = r));
      }
    },
    async return(): Promise<IteratorResult<T>> {
      close();
      return { value: undefined, done: true };
    },
    [Symbol.asyncIterator]() {
      return it;
    },
  };
  return it;
}
