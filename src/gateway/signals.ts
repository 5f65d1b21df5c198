// AbortSignal helpers for work that outlives one call (forwarded requests, relayed streams).

/**
 * A signal that aborts when `parent` does, or `timeoutMs` passes (if given); `dispose` detaches it.
 * Not AbortSignal.any: given the whatwg-node signal of a yoga request, that stops the request's own
 * abort listeners from being called; and composites made from a long-lived signal are not freed.
 */
export function linkedSignal(parent: AbortSignal | undefined, timeoutMs?: number): { signal: AbortSignal; abort: () => void; timedOut: () => boolean; dispose: () => void } {
  const controller = new AbortController();
  let timedOut = false;
  const onAbort = () => controller.abort();
  const timer =
    timeoutMs === undefined
      ? undefined
      : setTimeout(() => {
          timedOut = true;
          controller.abort();
        }, timeoutMs);
  timer?.unref();
  if (parent?.aborted) controller.abort();
  else parent?.addEventListener('abort', onAbort, { once: true });
  return {
    signal: controller.signal,
    abort: () => controller.abort(),
    timedOut: () => timedOut,
    dispose: () => {
      clearTimeout(timer);
      parent?.removeEventListener('abort', onAbort);
    },
  };
}

/** Waits `ms`, or less if `signal` aborts first (never rejects). */
export function sleep(ms: number, signal?: AbortSignal): Promise<void> {
  return new Promise((resolve) => {
    if (signal?.aborted) return resolve();
    const done = () => {
      clearTimeout(timer);
      signal?.removeEventListener('abort', done);
      resolve();
    };
    const timer = setTimeout(done, ms);
    timer.unref();
    signal?.addEventListener('abort', done, { once: true });
  });
}
