// The understand subscription's source stream. The engine is drained eagerly into a tiny buffer;
// the transport pulls (graphql-ws awaits each socket write, SSE pulls on demand). Chunks that pile
// up while the client is slow are coalesced into one event (text and token ids concatenated,
// counts and engine `steps` summed); the terminal summary is never dropped. Memory per stream is bounded
// by the request's maxTokens and, however long an engine's tokens are, its text by `maxPendingChars`: a
// client that far behind gets a SLOW_CONSUMER error instead of the backlog.
//
// This is the gateway's per-token hot path, so it is written with plain promise callbacks rather
// than async generators (each async-generator layer costs several microtask hops and allocations
// per event): one engine `next()` reaction per chunk in, one resolved promise per event out. It also
// does the stall/abort guarding itself (see guard.ts for the generic version): when the client
// leaves, the stream ends at once and the slot is released even if the engine ignores the signal;
// an engine silent for `stallMs` fails the stream with a typed error.
import type { UnderstandChunk, UnderstandSummary } from '../engine/types.ts';
import { GatewayError, toGatewayError } from './errors.ts';
import { EngineStallError } from './guard.ts';

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
  /**
   * called exactly once when the engine is done or abandoned; `cancelled` when the client left.
   * `engineStopped`, when the stream ended before the engine did (the client left, a stall), settles once
   * the engine has stopped (after the model step in progress): what it holds (a session) is not free before.
   */
  onEnd: (info: { cancelled: boolean; error?: unknown; summary?: UnderstandSummary; engineStopped?: Promise<void> }) => void;
}

interface Waiter<T> {
  resolve: (r: IteratorResult<T>) => void;
  reject: (e: unknown) => void;
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
  maxPendingChars = Infinity,
): AsyncIterableIterator<T> {
  let pending: MergedChunk | undefined;
  /** pending.tokenIds is a copy we may append to (the first chunk's array is borrowed) */
  let pendingOwned = false;
  let summary: UnderstandSummary | undefined;
  let summaryDelivered = false;
  let error: unknown;
  let ended = false;
  let closed = false;
  let aborted = false;
  let engineDone = false;
  let firstChunkAt: number | undefined;
  let lastEventAt = performance.now();
  let timer: NodeJS.Timeout | undefined;
  const waiters: Array<Waiter<T>> = [];
  const DONE: IteratorResult<T> = { value: undefined, done: true };

  const engine = source[Symbol.asyncIterator]();

  /** The next result if one is ready; throws the stream's error once; undefined when nothing is ready. */
  const take = (): IteratorResult<T> | undefined => {
    if (closed) return DONE;
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
      return DONE;
    }
    return undefined;
  };

  const notify = () => {
    while (waiters.length) {
      let r: IteratorResult<T> | undefined;
      try {
        r = take();
      } catch (e) {
        waiters.shift()!.reject(e);
        continue;
      }
      if (!r) return;
      waiters.shift()!.resolve(r);
    }
  };

  const finish = () => {
    if (ended) return;
    ended = true;
    clearTimeout(timer);
    signal?.removeEventListener('abort', close);
    const engineStopped = engineDone
      ? undefined
      : Promise.resolve(engine.return?.()).then(
          () => undefined,
          () => undefined,
        );
    try {
      hooks.onEnd({ cancelled: aborted && error === undefined, error, summary, engineStopped });
    } catch (e) {
      error ??= e; // the consumer learns of it; the stream still ends
    }
    notify();
  };

  const onAbort = () => {
    aborted = true;
    finish(); // stop at once, even if the engine ignores the signal
  };
  controller.signal.addEventListener('abort', onAbort, { once: true });

  const fail = (e: unknown) => {
    // after a client cancel, whatever the engine throws is moot
    if (aborted || ended) return;
    error = e;
    controller.abort(); // tell the engine to stop (e.g. after a stall); ends the stream via onAbort
    finish();
  };

  const onEngine = (r: IteratorResult<UnderstandChunk | UnderstandSummary>) => {
    if (ended) return;
    lastEventAt = performance.now();
    if (r.done) {
      engineDone = true;
      controller.signal.removeEventListener('abort', onAbort);
      return finish();
    }
    const ev = r.value;
    if (ev.kind === 'chunk') {
      firstChunkAt ??= lastEventAt;
      hooks.onEngineChunk?.(ev);
      if (pending) {
        if (pending.text.length + ev.text.length > maxPendingChars) {
          // the client is this far behind: end its stream with a typed error, not a bigger backlog
          pending = undefined;
          return fail(new GatewayError('SLOW_CONSUMER', `The stream was ended: more than ${maxPendingChars} characters waited for this client to read them`, { limit: maxPendingChars }));
        }
        pending.text += ev.text;
        if (!pendingOwned) {
          pending.tokenIds = pending.tokenIds.slice();
          pendingOwned = true;
        }
        for (const t of ev.tokenIds) pending.tokenIds.push(t);
        pending.acceptedTokens += ev.acceptedTokens;
        pending.draftedTokens += ev.draftedTokens;
        pending.steps += ev.steps ?? 1;
        hooks.onCoalesced?.();
      } else {
        pending = { text: ev.text, tokenIds: ev.tokenIds, acceptedTokens: ev.acceptedTokens, draftedTokens: ev.draftedTokens, steps: ev.steps ?? 1 };
        pendingOwned = false;
      }
    } else {
      summary = ev;
    }
    notify();
    pull();
  };

  const pull = () => {
    if (ended) return;
    let p: Promise<IteratorResult<UnderstandChunk | UnderstandSummary>>;
    try {
      p = engine.next();
    } catch (e) {
      return fail(e);
    }
    // onEngine throwing (a hook, or anything unforeseen) fails the stream rather than the process
    p.then(onEngine, fail).catch(fail);
  };

  const arm = (ms: number) => {
    timer = setTimeout(() => {
      const idle = performance.now() - lastEventAt;
      if (idle >= stallMs) fail(new EngineStallError(stallMs));
      else arm(stallMs - idle);
    }, ms);
    timer.unref();
  };

  function close() {
    if (closed) return;
    closed = true;
    if (!ended) controller.abort();
    signal?.removeEventListener('abort', close);
    notify();
  }

  if (controller.signal.aborted) onAbort();
  if (signal?.aborted) close();
  else signal?.addEventListener('abort', close, { once: true });
  if (!ended) {
    if (Number.isFinite(stallMs) && stallMs > 0) arm(stallMs);
    pull();
  }

  const it: AsyncIterableIterator<T> = {
    next(): Promise<IteratorResult<T>> {
      try {
        const r = waiters.length ? undefined : take();
        if (r) return Promise.resolve(r);
      } catch (e) {
        return Promise.reject(e);
      }
      return new Promise<IteratorResult<T>>((resolve, reject) => waiters.push({ resolve, reject }));
    },
    return(): Promise<IteratorResult<T>> {
      close();
      return Promise.resolve(DONE);
    },
    [Symbol.asyncIterator]() {
      return it;
    },
  };
  return it;
}

/**
 * A stream that exists before its source does: `source` settles when the request gets its engine slot.
 * The first next() waits for it; a client that leaves before then ends this stream at once, and the
 * source, should it still arrive, is returned unread (its slot released).
 */
export function afterSlot<T>(source: Promise<AsyncIterableIterator<T>>): AsyncIterableIterator<T> {
  let inner: AsyncIterableIterator<T> | undefined;
  let closed = false;
  const close = async (): Promise<IteratorResult<T>> => {
    closed = true;
    if (inner) await inner.return?.();
    else void source.then((it) => it.return?.(), () => undefined);
    return { done: true, value: undefined };
  };
  return {
    async next() {
      if (closed) return { done: true, value: undefined };
      if (!inner) {
        try {
          inner = await source;
        } catch (e) {
          // no slot (refused, the server draining): the stream fails once and is over. Thrown again on every
          // next(), a transport that pulls after an error event (SSE) looped on it, starving the event loop
          closed = true;
          throw e;
        }
      }
      if (closed) {
        await inner.return?.();
        return { done: true, value: undefined };
      }
      return inner.next();
    },
    return: close,
    throw: async (e?: unknown) => {
      await close();
      throw e;
    },
    [Symbol.asyncIterator]() {
      return this;
    },
  };
}
