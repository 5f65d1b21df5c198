// An understand request that waits in the queue (every engine slot taken) still gets its stream at once:
// over SSE its response and keep-alives start while it waits (a proxy's idle timeout would otherwise cut a
// silent request, and its client could not tell queued from hung), and its events follow when it gets a slot.
// A client that leaves while queued leaves the queue; BUSY beyond the queue stays the request's own error.
import net from 'node:net';
import WebSocket from 'ws';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { RunningServer } from '../../src/gateway/server.ts';
import { afterSlot } from '../../src/gateway/understand-stream.ts';
import { FakeEngine } from './fake-engine.ts';
import { parseSse, start, waitFor, wsClient, wsRun } from './helpers.ts';

let engine: FakeEngine;
let server: RunningServer;
beforeAll(async () => {
  engine = new FakeEngine({ stepMs: 40, tokens: 30 });
  server = await start({ engine, limits: { maxConcurrentJobs: 1, maxQueuedJobs: 1, maxQueuedPerClient: 1 } });
});
afterAll(async () => {
  await server?.close();
});

const U = (n: number, maxTokens = 6) => ({ query: `subscription { understand(input: { prompt: "q${n}", maxTokens: ${maxTokens} }) { text done } }` });
const sse = (body: unknown, signal?: AbortSignal) =>
  fetch(server.url, { method: 'POST', signal, headers: { 'content-type': 'application/json', accept: 'text/event-stream' }, body: JSON.stringify(body) });

describe('a queued understand request', () => {
  it('gets its SSE response while it waits, then its answer; BUSY beyond the queue is the request error it was', async () => {
    const client = wsClient(server);
    try {
      const first = wsRun(client, U(1, 30).query); // holds the one slot for about 1.2 s
      await waitFor(() => server.runtime.scheduler.runningCount === 1, 'the first request running');
      const queued = await sse(U(2));
      expect(queued.status).toBe(200);
      expect(queued.headers.get('content-type')).toMatch(/text\/event-stream/);
      expect(server.runtime.scheduler.queuedCount).toBe(1);
      expect(server.runtime.scheduler.runningCount).toBe(1); // the headers came while it waited
      // the queue (one place) is full: another request is refused as before, with BUSY
      const other = wsClient(server);
      const busy = await wsRun(other, U(3).query);
      await other.dispose();
      expect((busy[0]!.errors as any)[0].extensions.code).toBe('BUSY');
      const events = parseSse(await queued.text()).map((p) => p.data!.understand as { done: boolean });
      expect(events.at(-1)!.done).toBe(true);
      expect((await first).at(-1)!.data!.understand).toMatchObject({ done: true });
    } finally {
      await client.dispose();
    }
  });

  it('a client that leaves while queued leaves the queue, and the slot goes on to the next request', async () => {
    const client = wsClient(server);
    try {
      const first = wsRun(client, U(4, 30).query);
      await waitFor(() => server.runtime.scheduler.runningCount === 1, 'the first request running');
      const ac = new AbortController();
      const started = engine.stats.understandStarted;
      const queued = await sse(U(5), ac.signal);
      expect(queued.status).toBe(200);
      expect(server.runtime.scheduler.queuedCount).toBe(1);
      ac.abort();
      await waitFor(() => server.runtime.scheduler.queuedCount === 0, 'the queue emptied');
      await first;
      await waitFor(() => server.runtime.scheduler.runningCount === 0, 'the slot released');
      expect(engine.stats.understandStarted).toBe(started); // the left request never ran
      const next = await wsRun(client, U(6).query);
      expect(next.at(-1)!.data!.understand).toMatchObject({ done: true });
    } finally {
      await client.dispose();
    }
  });
});

describe('streamed HTTP responses per client', () => {
  it('a client holds at most maxHttpStreamsPerClient of them; one more is 429 naming the limit, and a closed one frees its place', async () => {
    const slow = new FakeEngine({ stepMs: 50, tokens: 1000 });
    const s = await start({ engine: slow, limits: { maxHttpStreamsPerClient: 2 } });
    const open = (ac: AbortController) =>
      fetch(s.url, { method: 'POST', signal: ac.signal, headers: { 'content-type': 'application/json', accept: 'text/event-stream' }, body: JSON.stringify(U(7)) });
    const a = new AbortController();
    const b = new AbortController();
    try {
      expect((await open(a)).status).toBe(200);
      expect((await open(b)).status).toBe(200);
      const c = await fetch(s.url, { method: 'POST', headers: { 'content-type': 'application/json', accept: 'text/event-stream' }, body: JSON.stringify(U(8)) });
      expect(c.status).toBe(429);
      expect(c.headers.get('retry-after')).toBe('5');
      const err = ((await c.json()) as any).errors[0];
      expect(err.extensions.code).toBe('RATE_LIMITED');
      expect(err.message).toMatch(/at most 2/);
      // a plain JSON request is not a stream and is not counted, whatever its Accept header admits (Apollo
      // Client and urql list multipart/mixed or text/event-stream for every operation)
      for (const accept of ['application/json', 'multipart/mixed;deferSpec=20220824,application/graphql-response+json,application/json;q=0.9', 'application/graphql-response+json, application/json, text/event-stream']) {
        const plain = await fetch(s.url, { method: 'POST', headers: { 'content-type': 'application/json', accept }, body: JSON.stringify({ query: '{ health { status } }' }) });
        expect(plain.status, accept).toBe(200);
        expect(plain.headers.get('content-type'), accept).toMatch(/json/);
        expect(((await plain.json()) as any).data.health.status).toBeDefined();
      }
      // the refused stream ran nothing: its subscription was returned at once
      expect(slow.stats.understandStarted).toBe(2);
      a.abort();
      const d = new AbortController();
      let status = 0;
      for (let i = 0; i < 50 && status !== 200; i++) {
        const r = await open(d).catch(() => undefined);
        status = r?.status ?? 0;
        if (status !== 200) await new Promise((r) => setTimeout(r, 50));
      }
      expect(status).toBe(200);
      d.abort();
    } finally {
      b.abort();
      await s.close();
    }
  });

  it('a refusal is counted once in errors_total; a stream pipelined behind another on a connection the client drops stops and frees its place', async () => {
    const slow = new FakeEngine({ stepMs: 50, tokens: 1000 });
    const s = await start({ engine: slow, limits: { maxHttpStreamsPerClient: 2 } });
    const metric = async () => Number(/hyperbagel_gateway_errors_total\{code="RATE_LIMITED"\} (\d+)/.exec(await (await fetch(s.url.replace(/\/graphql$/, '/metrics'))).text())?.[1] ?? 0);
    const open = (ac: AbortController, n: number) =>
      fetch(s.url, { method: 'POST', signal: ac.signal, headers: { 'content-type': 'application/json', accept: 'text/event-stream' }, body: JSON.stringify(U(n, 1000)) });
    const acs = [new AbortController(), new AbortController()];
    try {
      // two pipelined streams on one socket; the client leaves while the second waits for the first to end
      const { port } = new URL(s.url);
      const raw = (body: string) => `POST /graphql HTTP/1.1\r\nHost: localhost:${port}\r\nContent-Type: application/json\r\nAccept: text/event-stream\r\nContent-Length: ${Buffer.byteLength(body)}\r\n\r\n${body}`;
      const sock = net.connect(Number(port), '127.0.0.1');
      await new Promise((r) => sock.once('connect', r));
      sock.write(raw(JSON.stringify(U(20, 20))) + raw(JSON.stringify(U(21, 20))));
      sock.resume();
      await waitFor(() => slow.stats.understandStarted >= 1, 'the first stream running');
      sock.destroy();
      await waitFor(() => slow.stats.active === 0, 'the dropped streams over', 20_000);
      // both stopped, the pipelined one too (it never got the socket, yet its client is gone)
      expect(slow.stats.understandAborted).toBe(slow.stats.understandStarted);
      // the client holds nothing now: two fresh streams fit, a third is refused, once
      expect((await open(acs[0]!, 22)).status).toBe(200);
      expect((await open(acs[1]!, 23)).status).toBe(200);
      const before = await metric();
      expect((await fetch(s.url, { method: 'POST', headers: { 'content-type': 'application/json', accept: 'text/event-stream' }, body: JSON.stringify(U(24)) })).status).toBe(429);
      expect(await metric()).toBe(before + 1);
    } finally {
      for (const ac of acs) ac.abort();
      await s.close();
    }
  }, 30_000);

  it('a stream whose slot is refused fails once and is over (it threw on every pull: SSE looped on it)', async () => {
    const it = afterSlot<number>(Promise.reject(new Error('shutting down')));
    await expect(it.next()).rejects.toThrow('shutting down');
    expect(await it.next()).toEqual({ done: true, value: undefined });
  });

  it('a server closing with an SSE understand queued and a graphql-ws connection open closes, the stream ending with one error', async () => {
    const slow = new FakeEngine({ stepMs: 40, tokens: 200 });
    const s = await start({ engine: slow, limits: { maxConcurrentJobs: 1, maxQueuedJobs: 4 } });
    // an open graphql-ws connection (a web demo keeps one): closing waits on its close handshake
    const idle = new WebSocket(s.url.replace(/^http/, 'ws'), 'graphql-transport-ws');
    idle.on('open', () => idle.send(JSON.stringify({ type: 'connection_init' })));
    idle.on('error', () => undefined);
    // an image job holds the one slot
    await fetch(s.url, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ query: 'mutation { generateImage(input: { prompt: "a red circle", mode: BASELINE, steps: 250 }) { id } }' }) });
    await waitFor(() => s.runtime.scheduler.runningCount === 1, 'the slot taken');
    const queued = await fetch(s.url, { method: 'POST', headers: { 'content-type': 'application/json', accept: 'text/event-stream' }, body: JSON.stringify(U(30)) });
    await waitFor(() => s.runtime.scheduler.queuedCount === 1, 'the SSE request queued');
    // every byte that arrives, also when the connection is cut part way (text() would reject)
    let text = '';
    const body = (async () => {
      const rd = queued.body!.getReader();
      for (let r = await rd.read(); !r.done; r = await rd.read()) text += Buffer.from(r.value).toString();
    })().catch(() => undefined);
    const closed = await Promise.race([s.close().then(() => 'closed'), new Promise((r) => setTimeout(() => r('still closing'), 5000))]);
    expect(closed).toBe('closed');
    await body;
    expect(text.length).toBeLessThan(10_000); // one error event (it sent megabytes of the same error, a loop)
    expect(parseSse(text).filter((p) => p.errors).length).toBeLessThanOrEqual(1);
    idle.terminate();
  }, 20_000);
});

describe('closing the server', () => {
  it('cuts off a graphql-ws client that does not answer its close (not reading) after a grace, instead of ws\'s 30 s', async () => {
    const s = await start({ engine: new FakeEngine({ stepMs: 5, tokens: 3 }) });
    const ws = new WebSocket(s.url.replace(/^http/, 'ws'), 'graphql-transport-ws');
    ws.on('error', () => undefined);
    await new Promise<void>((r) => {
      ws.on('open', () => ws.send(JSON.stringify({ type: 'connection_init' })));
      ws.on('message', () => r());
    });
    // the client stops reading: the server's close frame is never read, so never answered
    (ws as unknown as { _socket: net.Socket })._socket.pause();
    const t0 = performance.now();
    const closed = await Promise.race([s.close().then(() => 'closed'), new Promise((r) => setTimeout(() => r('still closing'), 10_000))]);
    expect(closed).toBe('closed');
    expect(performance.now() - t0).toBeLessThan(10_000);
    ws.terminate();
  }, 40_000);
});

describe('closing the server with image jobs', () => {
  it('an imageJob subscriber over graphql-ws gets its job\'s CANCELLED before the 1001 close', async () => {
    const s = await start({ engine: new FakeEngine({ nfeMs: 50 }), limits: { maxConcurrentJobs: 1, maxQueuedJobs: 4 } });
    const post = async (query: string) => (await fetch(s.url, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ query }) })).json();
    const running = (await post('mutation { generateImage(input: { prompt: "x", mode: BASELINE, steps: 250 }) { id } }')).data.generateImage.id;
    const queued = (await post('mutation { generateImage(input: { prompt: "y", mode: BASELINE, steps: 250 }) { id } }')).data.generateImage.id;
    const ws = new WebSocket(s.url.replace(/^http/, 'ws'), 'graphql-transport-ws');
    ws.on('error', () => undefined);
    const got: string[] = [];
    const closeCode = new Promise<number>((r) => ws.on('close', (c) => r(c)));
    await new Promise<void>((r) => {
      ws.on('open', () => ws.send(JSON.stringify({ type: 'connection_init' })));
      ws.on('message', (d) => {
        const m = JSON.parse(String(d));
        if (m.type === 'connection_ack') {
          for (const [n, id] of [running, queued].entries()) ws.send(JSON.stringify({ id: String(n), type: 'subscribe', payload: { query: `subscription { imageJob(id: "${id}") { status done } }` } }));
          r();
        }
        if (m.type === 'next' && m.payload.data?.imageJob?.done) got.push(`${m.id}:${m.payload.data.imageJob.status}`);
      });
    });
    await waitFor(() => s.runtime.scheduler.queuedCount === 1 && s.runtime.scheduler.runningCount === 1, 'one job running, one queued');
    await waitFor(() => s.runtime.activeStreamCount === 2, 'both subscriptions open (a queued job has no event yet)');
    await s.close();
    expect(await closeCode).toBe(1001);
    expect(got.sort()).toEqual(['0:CANCELLED', '1:CANCELLED']);
  }, 20_000);
});
