// The graphql-ws `next` fast path (src/gateway/ws-direct.ts): the frames it writes are the bytes ws
// would write, it keeps one write in flight per operation (so a slow client still coalesces), and
// end / error / return() reach graphql-ws as before. End to end: text that needs every frame length
// form and non-ASCII characters arrives intact, and a raw graphql-transport-ws client sees the same
// message sequence as the protocol prescribes.
import type { ExecutionResult } from 'graphql/index.js';
import { GraphQLError } from 'graphql/index.js';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createRequire } from 'node:module';
import WebSocket from 'ws';
import type { UnderstandEvent, UnderstandRequest } from '../../src/engine/types.ts';
import type { RunningServer } from '../../src/gateway/server.ts';
import { directNextStream, writeTextFrame } from '../../src/gateway/ws-direct.ts';
import { FakeEngine } from './fake-engine.ts';
import { start, wsClient, wsRun, wsUrl } from './helpers.ts';

/** What ws itself writes for `send(text)` on a server socket. */
function wsFrame(text: string): Buffer {
  const out: Buffer[] = [];
  const sink = { cork() {}, uncork() {}, write: (b: Buffer | string) => (out.push(Buffer.from(b)), true) };
  const { Sender } = createRequire(import.meta.url)('ws') as { Sender: new (s: unknown, e: object) => { send(d: string, o: object, cb?: () => void): void } };
  const sender = new Sender(sink, {});
  sender.send(text, { binary: false, fin: true, mask: false, compress: false });
  return Buffer.concat(out);
}

function fakeWs() {
  const writes: Buffer[] = [];
  const callbacks: Array<(err?: Error | null) => void> = [];
  const ws = {
    OPEN: 1,
    readyState: 1,
    _socket: { write: (b: Buffer, cb: (err?: Error | null) => void) => (writes.push(b), callbacks.push(cb), true) },
    _sender: { _state: 0, _firstFragment: true, _queue: [] as unknown[] },
    _extensions: {} as Record<string, unknown>,
    sent: [] as string[],
    send(data: string, cb: (err?: Error | null) => void) {
      this.sent.push(data);
      callbacks.push(cb);
    },
  };
  return { ws, writes, callbacks };
}

describe('writeTextFrame', () => {
  it('writes exactly the frame ws writes, for every length form and non-ASCII text', () => {
    for (const body of ['', 'a', 'x'.repeat(120), 'x'.repeat(122), 'é'.repeat(70), 'x'.repeat(65_000), '日本語 ✓'.repeat(9000), 'y'.repeat(70_000)]) {
      const { ws, writes } = fakeWs();
      const head = '{"id":"1","type":"next","payload":';
      expect(writeTextFrame(ws, head, head.length, body, () => {})).toBe(true);
      expect(writes).toHaveLength(1);
      expect(writes[0]!.equals(wsFrame(head + body + '}'))).toBe(true);
    }
  });

  it('leaves the message to ws when an extension is on or its Sender is busy', () => {
    for (const tweak of [
      (w: ReturnType<typeof fakeWs>['ws']) => (w._extensions['permessage-deflate'] = {}),
      (w: ReturnType<typeof fakeWs>['ws']) => (w._sender._state = 1),
      (w: ReturnType<typeof fakeWs>['ws']) => (w._sender._firstFragment = false),
      (w: ReturnType<typeof fakeWs>['ws']) => w._sender._queue.push([]),
    ]) {
      const { ws, writes } = fakeWs();
      tweak(ws);
      expect(writeTextFrame(ws, '{', 1, '"a":1', () => {})).toBe(false);
      expect(writes).toHaveLength(0);
    }
  });
});

/** A hand-fed result stream. */
function manualStream() {
  const waiting: Array<{ resolve: (r: IteratorResult<ExecutionResult>) => void; reject: (e: unknown) => void }> = [];
  let pulls = 0;
  let returned = 0;
  const it: AsyncIterator<ExecutionResult> = {
    next: () => (pulls++, new Promise((resolve, reject) => waiting.push({ resolve, reject }))),
    return: async () => (returned++, { value: undefined, done: true }),
  };
  return {
    it,
    get pulls() {
      return pulls;
    },
    get returned() {
      return returned;
    },
    emit: (v: ExecutionResult) => waiting.shift()!.resolve({ value: v, done: false }),
    end: () => waiting.shift()!.resolve({ value: undefined, done: true }),
    fail: (e: unknown) => waiting.shift()!.reject(e),
  };
}

const flush = () => new Promise((r) => setImmediate(r));

describe('directNextStream', () => {
  it('writes graphql-ws next messages one at a time and ends when the stream does', async () => {
    const { ws, writes, callbacks } = fakeWs();
    const src = manualStream();
    const gen = directNextStream(src.it, ws, 'op"1');
    const done = gen.next();
    await flush();
    src.emit({ data: { understand: { text: 'a' } } });
    await flush();
    expect(writes).toHaveLength(1);
    // graphql-ws's message, byte for byte (id escaped as JSON)
    expect(writes[0]!.subarray(2).toString()).toBe(JSON.stringify({ id: 'op"1', type: 'next', payload: { data: { understand: { text: 'a' } } } }));
    // no further pull until the write is flushed (backpressure: the source coalesces meanwhile)
    expect(src.pulls).toBe(1);
    callbacks[0]!();
    await flush();
    expect(src.pulls).toBe(2);
    const err = new GraphQLError('boom', { extensions: { code: 'X' } });
    src.emit({ data: null, errors: [err] });
    await flush();
    expect(JSON.parse(writes[1]!.subarray(2).toString()).payload).toEqual({ data: null, errors: [err.toJSON()] });
    callbacks[1]!();
    await flush();
    src.end();
    expect(await done).toEqual({ value: undefined, done: true });
    expect(src.returned).toBe(0);
  });

  it('rejects its next() with the stream error (graphql-ws then sends `error`)', async () => {
    const { ws } = fakeWs();
    const src = manualStream();
    const done = directNextStream(src.it, ws, '1').next();
    await flush();
    const e = new Error('stalled');
    src.fail(e);
    await expect(done).rejects.toBe(e);
  });

  it('a failed write returns the source, then rejects next() with the write error', async () => {
    const { ws, callbacks } = fakeWs();
    const src = manualStream();
    const done = directNextStream(src.it, ws, '1').next();
    await flush();
    src.emit({ data: { x: 1 } });
    await flush();
    const e = new Error('EPIPE');
    callbacks[0]!(e);
    await expect(done).rejects.toBe(e);
    expect(src.returned).toBe(1);
    expect(src.pulls).toBe(1);
  });

  it('return() (client complete, socket closed) returns the source and ends the pending next()', async () => {
    const { ws, writes } = fakeWs();
    const src = manualStream();
    const gen = directNextStream(src.it, ws, '1');
    const done = gen.next();
    await flush();
    await gen.return(undefined);
    expect(await done).toEqual({ value: undefined, done: true });
    expect(src.returned).toBe(1);
    src.emit({ data: { x: 1 } }); // late event: dropped
    await flush();
    expect(writes).toHaveLength(0);
  });

  it('uses ws send when the fast frame does not apply, and drops events for a socket no longer open', async () => {
    const { ws, writes, callbacks } = fakeWs();
    ws._extensions['permessage-deflate'] = {};
    const src = manualStream();
    void directNextStream(src.it, ws, '1').next();
    await flush();
    src.emit({ data: { x: 1 } });
    await flush();
    expect(writes).toHaveLength(0);
    expect(ws.sent).toEqual(['{"id":"1","type":"next","payload":{"data":{"x":1}}}']);
    ws.readyState = 3;
    callbacks[0]!();
    await flush();
    src.emit({ data: { x: 2 } });
    await flush();
    expect(ws.sent).toHaveLength(1);
    expect(src.pulls).toBe(3);
  });
});

/** Emits chunks whose text is given by the prompt's shape: long, non-ASCII, and each frame length form. */
class TextEngine extends FakeEngine {
  static readonly CHUNKS = ['héllo ✓ ', 'x'.repeat(200), '日本'.repeat(40_000), 'y'.repeat(70_000), '"quoted" \\ \n end'];
  override async *understand(_req: UnderstandRequest): AsyncGenerator<UnderstandEvent> {
    let text = '';
    for (const [i, t] of TextEngine.CHUNKS.entries()) {
      await new Promise((r) => setTimeout(r, 2));
      text += t;
      yield { kind: 'chunk', text: t, tokenIds: [i], acceptedTokens: 1, draftedTokens: 1 };
    }
    yield {
      kind: 'done',
      finishReason: 'eos',
      text,
      usage: { promptTokens: 1, completionTokens: 5, totalTokens: 6 },
      timings: { queueMs: 0, timeToFirstTokenMs: 1, totalMs: 10, tokensPerSecond: 500 },
      speculation: { mode: 'off', drafts: 0, draftedTokens: 0, acceptedTokens: 0, meanAcceptedLength: 1, acceptanceRate: 0, acceptancePerPosition: [] },
    };
  }
}

describe('understand over graphql-ws through the fast path', () => {
  let server: RunningServer;
  beforeAll(async () => {
    server = await start({ engine: new TextEngine() });
  });
  afterAll(async () => {
    await server?.close();
  });

  it('delivers long and non-ASCII text intact (graphql-ws client)', async () => {
    const client = wsClient(server);
    try {
      const out = await wsRun(client, 'subscription { understand(input: { prompt: "p" }) { text done fullText } }');
      const events = out.map((p) => p.data!.understand as { text: string; done: boolean; fullText?: string });
      expect(events.at(-1)!.done).toBe(true);
      expect(events.slice(0, -1).map((e) => e.text).join('')).toBe(TextEngine.CHUNKS.join(''));
      expect(events.at(-1)!.fullText).toBe(TextEngine.CHUNKS.join(''));
    } finally {
      await client.dispose();
    }
  });

  it('speaks graphql-transport-ws: ack, next messages, then complete (raw client)', async () => {
    const ws = new WebSocket(wsUrl(server), 'graphql-transport-ws');
    const messages: Array<{ type: string; id?: string; payload?: any }> = [];
    await new Promise<void>((resolve, reject) => {
      ws.on('open', () => ws.send(JSON.stringify({ type: 'connection_init' })));
      ws.on('message', (raw, isBinary) => {
        expect(isBinary).toBe(false);
        const m = JSON.parse(String(raw));
        messages.push(m);
        if (m.type === 'connection_ack') ws.send(JSON.stringify({ id: 'a', type: 'subscribe', payload: { query: 'subscription { understand(input: { prompt: "p" }) { text done } }' } }));
        if (m.type === 'complete' || m.type === 'error') resolve();
      });
      ws.on('error', reject);
    });
    ws.close();
    expect(messages[0]).toEqual({ type: 'connection_ack' });
    expect(messages.at(-1)).toEqual({ id: 'a', type: 'complete' });
    const nexts = messages.slice(1, -1);
    expect(nexts.every((m) => m.type === 'next' && m.id === 'a' && Object.keys(m).join() === 'id,type,payload')).toBe(true);
    expect(nexts.map((m) => m.payload.data.understand.text).join('')).toBe(TextEngine.CHUNKS.join(''));
  });
});
