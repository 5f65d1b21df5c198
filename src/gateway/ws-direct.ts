// The per-event `next` path of a graphql-ws subscription, without graphql-ws's per-event machinery.
//
// graphql-ws (6.x) delivers a subscription with `for await (const result of stream) await
// emit.next(result)` inside its `onMessage` async function; each event then costs an async-function
// resumption, `emit.next` (an async function awaiting the absent onNext hook), two object spreads,
// validateMessage + JSON.stringify of the message, and a fresh Promise around ws's send callback.
// At 10k events/s that is a large share of the gateway's per-event JavaScript, and it makes V8
// optimise graphql-ws's whole `onMessage` (the biggest compile job of a fresh server's first
// second of streaming, on the same two cores that serve the traffic).
//
// Here graphql-ws still owns the connection and the operation (connection_init/ack, subscribe,
// validation, `error`, `complete` in both directions, ping/pong, close codes): it is handed an
// async generator whose single next() settles when the stream ends. Meanwhile the events are
// written to the socket here, as the same `next` messages graphql-ws would send (byte for byte:
// `{"id":…,"type":"next","payload":…}`, errors as `toJSON()`), one at a time: the next event is
// pulled only once ws has flushed the previous write, exactly like graphql-ws's
// `await socket.send(...)`, so a slow client still makes the understand stream coalesce.
//  - stream ends: next() resolves done -> graphql-ws sends `complete` (after every `next` written here)
//  - stream fails: next() rejects with the stream's error -> graphql-ws sends `error`, as for its own loop
//  - a write fails: the stream is returned, then next() rejects -> `error` (graphql-ws's loop body throwing)
//  - client `complete` / socket close: graphql-ws calls return() -> the stream is returned, next() resolves done
// Only for servers without an `onNext` hook (graphql-ws would call it per event).
import type { ExecutionResult } from 'graphql/index.js';

/** What is needed of ws's WebSocket (the socket graphql-ws's `use/ws` adapter sends on). */
export interface DirectSocket {
  readonly readyState: number;
  readonly OPEN: number;
  send(data: string, cb: (err?: Error | null) => void): void;
}

const DONE: IteratorResult<ExecutionResult> = { value: undefined, done: true };

/** The parts of ws's WebSocket (8.x) that writeTextFrame reads: its net socket and its Sender's state. */
interface WsInternals {
  _socket?: { write(chunk: Buffer, cb: (err?: Error | null) => void): boolean } | null;
  _sender?: { _state: number; _firstFragment: boolean; _queue: unknown[] } | null;
  _extensions?: Record<string, unknown>;
}

/**
 * Writes the text message `head + body + "}"` (`head` all ASCII, `headBytes` its length) as one
 * unmasked, unfragmented text frame, which is what ws's `send(text, cb)` puts on the wire for a
 * server socket, with a single socket write of one buffer. Returns false, having written nothing,
 * whenever ws itself must frame the message: an extension such as permessage-deflate is in use, or
 * its Sender is busy (compressing, reading a Blob, queueing, mid-fragment).
 *
 * ws frames a server message as a header buffer plus the string and writes them with
 * cork/write/write/uncork, i.e. through Writable's buffered-request list and a writev with mixed
 * encodings: about 1 KB of allocation and a few microseconds per message, where one buffer is one write.
 */
export function writeTextFrame(socket: unknown, head: string, headBytes: number, body: string, cb: (err?: Error | null) => void): boolean {
  const ws = socket as WsInternals;
  const raw = ws._socket;
  const sender = ws._sender;
  if (!raw || !sender || sender._state !== 0 || !sender._firstFragment || sender._queue.length !== 0) return false;
  for (const _ in ws._extensions) return false;
  const bodyBytes = Buffer.byteLength(body);
  const length = headBytes + bodyBytes + 1;
  const offset = length < 126 ? 2 : length < 65536 ? 4 : 10;
  const frame = Buffer.allocUnsafe(offset + length);
  frame[0] = 0x81; // FIN + text
  if (offset === 2) frame[1] = length;
  else if (offset === 4) {
    frame[1] = 126;
    frame.writeUInt16BE(length, 2);
  } else {
    frame[1] = 127;
    frame.writeUInt32BE(Math.floor(length / 2 ** 32), 2);
    frame.writeUInt32BE(length >>> 0, 6);
  }
  frame.write(head, offset, headBytes, 'latin1');
  frame.write(body, offset + headBytes, bodyBytes, 'utf8');
  frame[offset + length - 1] = 0x7d; // "}"
  raw.write(frame, cb);
  return true;
}

/** graphql-ws's `next` payload for a result (emit.next: errors omitted when absent, else as toJSON()). */
function payloadJson(result: ExecutionResult): string {
  const errors = result.errors;
  if (errors) {
    const { errors: _omit, ...rest } = result;
    return JSON.stringify({ ...rest, errors: errors.map((e) => e.toJSON()) });
  }
  if ('errors' in result) {
    const { errors: _omit, ...rest } = result;
    return JSON.stringify(rest);
  }
  return JSON.stringify(result);
}

/**
 * Wraps `stream` for graphql-ws: events go straight to `socket` as `next` messages for operation
 * `id`; graphql-ws sees one long next() that settles with the stream's end or error.
 */
export function directNextStream(
  stream: AsyncIterator<ExecutionResult>,
  socket: DirectSocket,
  id: string,
): AsyncGenerator<ExecutionResult> {
  const prefix = `{"id":${JSON.stringify(id)},"type":"next","payload":`;
  // JSON.stringify leaves non-ASCII characters as they are: the fast frame needs an ASCII head
  const prefixBytes = /^[\x00-\x7f]*$/.test(prefix) ? prefix.length : -1;
  let stopped = false;
  let settle: ((r: IteratorResult<ExecutionResult>) => void) | undefined;
  let fail: ((e: unknown) => void) | undefined;
  let started = false;

  const end = () => {
    stopped = true;
    const s = settle;
    settle = fail = undefined;
    s?.(DONE);
  };
  const error = (e: unknown) => {
    if (stopped) return;
    stopped = true;
    const f = fail;
    settle = fail = undefined;
    f?.(e);
  };

  /**
   * A failure of our own (encoding, a failed write): graphql-ws's loop body would have thrown, and
   * `for await` then returns the stream before graphql-ws sends `error`; do the same.
   */
  const ownError = (e: unknown) => {
    if (stopped) return;
    let p: unknown;
    try {
      p = stream.return?.();
    } catch {
      // keep the original error
    }
    const rethrow = () => error(e);
    Promise.resolve(p).then(rethrow, rethrow);
  };

  const onWritten = (err?: Error | null) => {
    if (err) return ownError(err); // as graphql-ws: a failed send fails the operation
    pull();
  };

  const onResult = (r: IteratorResult<ExecutionResult>) => {
    if (stopped) return;
    if (r.done) return end();
    let body: string;
    try {
      body = payloadJson(r.value);
    } catch (e) {
      return ownError(e);
    }
    // graphql-ws's ws adapter: a socket that is no longer open drops the message and carries on
    if (socket.readyState !== socket.OPEN) return pull();
    try {
      if (prefixBytes >= 0 && writeTextFrame(socket, prefix, prefixBytes, body, onWritten)) return;
      socket.send(prefix + body + '}', onWritten);
    } catch (e) {
      ownError(e);
    }
  };

  const pull = () => {
    if (stopped) return;
    let p: Promise<IteratorResult<ExecutionResult>>;
    try {
      p = stream.next();
    } catch (e) {
      return error(e);
    }
    p.then(onResult, error);
  };

  const gen: AsyncGenerator<ExecutionResult> = {
    next(): Promise<IteratorResult<ExecutionResult>> {
      if (stopped || started) return Promise.resolve(DONE);
      started = true;
      return new Promise<IteratorResult<ExecutionResult>>((resolve, reject) => {
        settle = resolve;
        fail = reject;
        pull();
      });
    },
    return(): Promise<IteratorResult<ExecutionResult>> {
      const wasStopped = stopped;
      end();
      if (wasStopped || typeof stream.return !== 'function') return Promise.resolve(DONE);
      return Promise.resolve(stream.return()).then(() => DONE);
    },
    throw(e: unknown): Promise<IteratorResult<ExecutionResult>> {
      return gen.return(undefined).then(() => Promise.reject(e));
    },
    [Symbol.asyncIterator]() {
      return gen;
    },
  } as AsyncGenerator<ExecutionResult>;
  return gen;
}
