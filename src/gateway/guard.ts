// Guards the gateway against an engine stream that stops responding: iteration ends at once when
// the client's signal aborts (the slot is released even if the engine ignores the signal), and a
// stream that produces nothing for `stallMs` fails with a typed error instead of hanging.
import { GatewayError } from './errors.ts';

export class EngineStallError extends GatewayError {
  constructor(ms: number) {
    super('INTERNAL', `The engine produced nothing for ${Math.round(ms / 1000)} s; the request was abandoned`);
  }
}

/**
 * @param onAbandon  called when iteration ends before the source did, with a promise that settles once the
 *   source has actually stopped (its return() after the step in progress), for a caller that must not hand
 *   on what the source holds before then
 */
export async function* guarded<T>(source: AsyncIterable<T>, signal: AbortSignal, stallMs: number, onAbandon?: (stopped: Promise<void>) => void): AsyncGenerator<T> {
  const it = source[Symbol.asyncIterator]();
  let finished = false;
  let last = performance.now();
  // A stop reason, and the resolver of the current wait. (Not Promise.race against one long-lived
  // promise: that adds a reaction to it per event which is only freed when the stream ends.)
  let stopped: 'aborted' | 'stalled' | undefined;
  let interrupt: ((v: 'aborted' | 'stalled') => void) | undefined;
  const stop = (why: 'aborted' | 'stalled') => {
    stopped ??= why;
    interrupt?.(stopped);
  };
  const onAbort = () => stop('aborted');
  signal.addEventListener('abort', onAbort, { once: true });
  let timer: NodeJS.Timeout | undefined;
  const arm = (ms: number) => {
    timer = setTimeout(() => {
      const idle = performance.now() - last;
      if (idle >= stallMs) stop('stalled');
      else arm(stallMs - idle);
    }, ms);
    timer.unref();
  };
  if (Number.isFinite(stallMs) && stallMs > 0) arm(stallMs);
  try {
    for (;;) {
      if (signal.aborted) return;
      const r = await new Promise<IteratorResult<T> | 'aborted' | 'stalled'>((resolve, reject) => {
        if (stopped) return resolve(stopped);
        interrupt = resolve;
        it.next().then(resolve, reject);
      });
      interrupt = undefined;
      if (r === 'aborted') return;
      if (r === 'stalled') throw new EngineStallError(stallMs);
      last = performance.now();
      if (r.done) {
        finished = true;
        return;
      }
      yield r.value;
    }
  } finally {
    clearTimeout(timer);
    signal.removeEventListener('abort', onAbort);
    if (!finished) {
      const stopped = Promise.resolve(it.return?.()).then(
        () => undefined,
        () => undefined,
      );
      onAbandon?.(stopped);
    }
  }
}
