// Origin policy (cross-site WebSocket hijacking, CORS), per-client rate limiting and slow-socket
// protection.
import WebSocket from 'ws';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { UnderstandEvent, UnderstandRequest } from '../../src/engine/types.ts';
import { allowedOriginsFrom } from '../../src/cli/commands/serve.ts';
import { DEFAULT_LIMITS } from '../../src/gateway/limits.ts';
import { OriginPolicy } from '../../src/gateway/origin.ts';
import { RateLimiter } from '../../src/gateway/rate-limit.ts';
import { SLOW_CONSUMER_CLOSE_CODE, type RunningServer } from '../../src/gateway/server.ts';
import { FakeEngine } from './fake-engine.ts';
import { ackedSocket, gqlPost, start, waitFor, wsClient, wsRun, wsUrl } from './helpers.ts';

const Q = { query: '{ health { status } }' };
const EVIL = 'http://evil.example';

/** Resolves with 101 when the WebSocket handshake succeeds, else the HTTP status the server answered. */
function handshake(s: RunningServer, origin?: string): Promise<number> {
  return new Promise((resolve, reject) => {
    const ws = new WebSocket(wsUrl(s), 'graphql-transport-ws', origin ? { origin } : {});
    ws.once('open', () => {
      ws.close();
      resolve(101);
    });
    ws.once('unexpected-response', (req, res) => {
      resolve(res.statusCode ?? 0);
      req.destroy();
    });
    ws.once('error', (e) => (e.message.includes('Unexpected server response') ? undefined : reject(e)));
  });
}

function post(s: RunningServer, headers: Record<string, string>, method = 'POST') {
  return fetch(s.url, { method, headers: { 'content-type': 'application/json', accept: 'application/json', ...headers }, body: method === 'POST' ? JSON.stringify(Q) : undefined });
}

describe('Origin policy', () => {
  let server: RunningServer;
  let same: string;
  beforeAll(async () => {
    server = await start({ engine: new FakeEngine() });
    same = new URL(server.url).origin;
  });
  afterAll(async () => {
    await server?.close();
  });

  it('WebSocket: accepts no Origin and the same origin, refuses other origins with HTTP 403', async () => {
    expect(await handshake(server)).toBe(101);
    expect(await handshake(server, same)).toBe(101);
    expect(await handshake(server, EVIL)).toBe(403);
    expect(await handshake(server, 'null')).toBe(403);
    expect(await handshake(server, `http://127.0.0.1:${server.port + 1}`)).toBe(403); // another port is another origin
    expect(server.runtime.metrics.originRejected.get({ transport: 'ws' })).toBe(3);
  });

  it('HTTP: same rule; no CORS grant to other origins (yoga alone reflects any Origin)', async () => {
    const ok = await post(server, { origin: same });
    expect(ok.status).toBe(200);
    expect(ok.headers.get('access-control-allow-origin')).toBeNull(); // same origin needs no CORS
    expect((await post(server, {})).status).toBe(200);
    const bad = await post(server, { origin: EVIL });
    expect(bad.status).toBe(403);
    expect(bad.headers.get('access-control-allow-origin')).toBeNull();
    expect(((await bad.json()) as any).errors[0].extensions.code).toBe('FORBIDDEN');
    const preflight = await post(server, { origin: EVIL, 'access-control-request-method': 'POST', 'access-control-request-headers': 'content-type' }, 'OPTIONS');
    expect(preflight.status).toBe(403);
    expect(preflight.headers.get('access-control-allow-origin')).toBeNull();
  });

  it('allowedOrigins lets a listed origin in over both transports, with CORS headers; "*" allows any', async () => {
    const s = await start({ engine: new FakeEngine(), allowedOrigins: ['https://App.Example:443/'] });
    try {
      expect(await handshake(s, 'https://app.example')).toBe(101);
      expect(await handshake(s, EVIL)).toBe(403);
      const pre = await post(s, { origin: 'https://app.example', 'access-control-request-method': 'POST', 'access-control-request-headers': 'content-type,authorization' }, 'OPTIONS');
      expect(pre.status).toBe(204);
      expect(pre.headers.get('access-control-allow-origin')).toBe('https://app.example');
      expect(pre.headers.get('access-control-allow-headers')).toContain('authorization');
      const r = await post(s, { origin: 'https://app.example' });
      expect(r.status).toBe(200);
      expect(r.headers.get('access-control-allow-origin')).toBe('https://app.example');
      expect(r.headers.get('access-control-allow-credentials')).toBeNull();
      expect((await post(s, { origin: EVIL })).status).toBe(403);
    } finally {
      await s.close();
    }
    // a rate-limited answer is readable by an allowed cross-origin page
    const tight = await start({ engine: new FakeEngine(), allowedOrigins: ['https://app.example'], limits: { rateLimitPerSecond: 0.001, rateLimitBurst: 1 } });
    try {
      expect((await post(tight, { origin: 'https://app.example' })).status).toBe(200);
      const limited = await post(tight, { origin: 'https://app.example' });
      expect(limited.status).toBe(429);
      expect(limited.headers.get('access-control-allow-origin')).toBe('https://app.example');
      expect(limited.headers.get('access-control-expose-headers')).toContain('Retry-After');
    } finally {
      await tight.close();
    }
    const any = await start({ engine: new FakeEngine(), allowedOrigins: ['*'] });
    try {
      expect(await handshake(any, EVIL)).toBe(101);
      expect((await post(any, { origin: EVIL })).status).toBe(200);
    } finally {
      await any.close();
    }
  });

  it('publicUrl counts as the server origin; the CLI merges --allow-origin and HYPERBAGEL_ALLOWED_ORIGINS', () => {
    const p = new OriginPolicy([], 'https://api.example.com/base');
    expect(p.allows('https://api.example.com', 'internal:4000')).toBe(true);
    expect(p.allows('https://other.example.com', 'internal:4000')).toBe(false);
    expect(p.allows('http://localhost', 'localhost:80')).toBe(true); // default port
    expect(p.allows(undefined, 'x')).toBe(true);
    expect(allowedOriginsFrom(['https://a.example', 'http://b.example:8080,https://a.example/'], ' https://c.example ,')).toEqual([
      'https://a.example',
      'http://b.example:8080',
      'https://c.example',
    ]);
    expect(() => allowedOriginsFrom(['not an origin'], undefined)).toThrow(/allow-origin/);
    expect(() => allowedOriginsFrom(undefined, 'ftp://x.example')).toThrow(/allow-origin/);
  });
});

describe('rate limiting', () => {
  it('token bucket: burst, refill, retry-after, bounded client map', () => {
    let t = 0;
    const rl = new RateLimiter({ ratePerSecond: 2, burst: 3, maxClients: 4 }, () => t);
    expect([rl.take('a'), rl.take('a'), rl.take('a')]).toEqual([0, 0, 0]);
    expect(rl.take('a')).toBe(500);
    t = 250;
    expect(rl.take('a')).toBe(250);
    t = 500;
    expect(rl.take('a')).toBe(0);
    expect(rl.take('b')).toBe(0); // separate bucket
    for (let i = 0; i < 20; i++) rl.take(`c${i}`);
    expect(rl.size).toBeLessThanOrEqual(4);
    expect(new RateLimiter({ ratePerSecond: 0, burst: 5 }).take('x')).toBe(0);
  });

  it('is on by default with generous limits', () => {
    expect(DEFAULT_LIMITS.rateLimitPerSecond).toBeGreaterThanOrEqual(10);
    expect(DEFAULT_LIMITS.rateLimitBurst).toBeGreaterThanOrEqual(100);
  });

  it('per client IP when auth is off: HTTP 429 + Retry-After, graphql-ws error, both typed RATE_LIMITED', async () => {
    // a token every 1000 s: none comes back during the test, however slowly it runs
    const s = await start({ engine: new FakeEngine(), limits: { rateLimitPerSecond: 0.001, rateLimitBurst: 3 } });
    try {
      for (let i = 0; i < 3; i++) expect((await gqlPost(s, Q)).status).toBe(200);
      const r = await fetch(s.url, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify(Q) });
      expect(r.status).toBe(429);
      const body = (await r.json()) as any;
      const { retryAfterMs, retryAfterSeconds } = body.errors[0].extensions;
      expect(body.errors[0].extensions.code).toBe('RATE_LIMITED');
      // the wait for the next token: 1000 s less what refilled since the first request (well under the test's timeout)
      expect(retryAfterMs).toBeGreaterThan(1000_000 - 60_000);
      expect(retryAfterMs).toBeLessThanOrEqual(1000_000);
      expect(retryAfterSeconds).toBe(Math.ceil(retryAfterMs / 1000));
      expect(r.headers.get('retry-after')).toBe(String(retryAfterSeconds));
      const c = wsClient(s);
      const err = await wsRun(c, Q.query).then(
        () => undefined,
        (e) => e.errors?.[0],
      );
      await c.dispose();
      expect(err?.extensions?.code).toBe('RATE_LIMITED');
      expect(err?.extensions?.retryAfterMs).toBeGreaterThan(0);
      expect(s.runtime.metrics.rateLimited.get({ transport: 'http' })).toBe(1);
      expect(s.runtime.metrics.rateLimited.get({ transport: 'ws' })).toBe(1);
      expect(s.runtime.metrics.render()).toContain('hyperbagel_gateway_rate_limited_total{transport="ws"} 1');
    } finally {
      await s.close();
    }
  });

  it('per API key when auth is on (one key exhausted does not limit another)', async () => {
    const s = await start({ engine: new FakeEngine(), apiKeys: ['k-a', 'k-b'], limits: { rateLimitPerSecond: 0.001, rateLimitBurst: 2 } }); // no refill within the test
    try {
      const a = { authorization: 'Bearer k-a' };
      expect((await gqlPost(s, Q, a)).status).toBe(200);
      expect((await gqlPost(s, Q, a)).status).toBe(200);
      expect((await gqlPost(s, Q, a)).json.errors[0].extensions.code).toBe('RATE_LIMITED');
      expect((await gqlPost(s, Q, { authorization: 'Bearer k-b' })).status).toBe(200);
      // over graphql-ws the key comes from connection_init and shares the HTTP bucket
      const c = wsClient(s, { authorization: 'Bearer k-a' });
      const err = await wsRun(c, Q.query).then(
        () => undefined,
        (e) => e.errors?.[0],
      );
      await c.dispose();
      expect(err?.extensions?.code).toBe('RATE_LIMITED');
      const cb = wsClient(s, { authorization: 'Bearer k-b' });
      expect((await wsRun(cb, Q.query))[0]!.data).toEqual({ health: { status: 'ok' } });
      await cb.dispose();
    } finally {
      await s.close();
    }
  });
});

/**
 * Streams 256 KiB text chunks every 10 ms until aborted. graphql-ws waits for each write, so a stuck
 * client holds about one message per operation in the send buffer: the bound is set below that.
 */
class FloodEngine extends FakeEngine {
  aborted = false;
  private readonly big = 'x'.repeat(256 * 1024);
  override async *understand(req: UnderstandRequest, signal?: AbortSignal): AsyncGenerator<UnderstandEvent> {
    if (!req.prompt.includes('flood')) return yield* super.understand(req, signal);
    try {
      for (let i = 0; i < 1000; i++) {
        await new Promise((r) => setTimeout(r, 10));
        if (signal?.aborted) return;
        yield { kind: 'chunk', text: this.big, tokenIds: [i], acceptedTokens: 1, draftedTokens: 1 };
      }
    } finally {
      // stopped by its signal, or by return() while waiting at a yield
      if (signal?.aborted) this.aborted = true;
    }
  }
}

describe('slow socket protection', () => {
  it('closes a socket whose client stopped reading with 4008 and stops its model work; readers are unaffected', async () => {
    const engine = new FloodEngine({ stepMs: 1, tokens: 20 });
    const s = await start({ engine, limits: { maxSocketBufferedBytes: 128 * 1024, slowSocketGraceMs: 200, maxNewTokens: 1000 } });
    const reader = wsClient(s);
    try {
      const normal = wsRun(reader, 'subscription { understand(input: { prompt: "hi", maxTokens: 20 }) { text done } }');
      const ws = await ackedSocket(s);
      const closed = new Promise<{ code: number; reason: string }>((r) => ws.once('close', (code, reason) => r({ code, reason: String(reason) })));
      ws.send(JSON.stringify({ id: '1', type: 'subscribe', payload: { query: 'subscription { understand(input: { prompt: "flood", maxTokens: 1000 }) { text } }' } }));
      // the client stops reading: the kernel buffers fill, then the server's send buffer grows
      (ws as unknown as { _socket: { pause(): void; resume(): void } })._socket.pause();
      // the unread bytes show on /metrics as the send queue, over the bound before the close
      const sendQueue = () => Number(/^hyperbagel_gateway_ws_send_queue_bytes (\S+)$/m.exec(s.runtime.metrics.render())?.[1]);
      expect(sendQueue()).toBeLessThan(128 * 1024);
      await waitFor(() => sendQueue() > 128 * 1024 || s.runtime.metrics.slowSocketCloses.get() > 0, 'the send queue to pass the bound', 20_000);
      expect(sendQueue()).toBeGreaterThan(128 * 1024);
      await waitFor(() => s.runtime.metrics.slowSocketCloses.get() === 1, 'the slow socket to be closed', 20_000);
      await waitFor(() => engine.aborted, 'the model work to stop');
      (ws as unknown as { _socket: { resume(): void } })._socket.resume();
      const { code, reason } = await closed;
      expect(code).toBe(SLOW_CONSUMER_CLOSE_CODE);
      expect(reason).toMatch(/Slow consumer/);
      const events = await normal;
      expect((events.at(-1)!.data as any).understand.done).toBe(true);
      expect(s.runtime.metrics.slowSocketCloses.get()).toBe(1);
      await waitFor(() => sendQueue() === 0, 'the closed socket to leave the send queue');
    } finally {
      await reader.dispose();
      await s.close();
    }
  }, 30_000);
});

describe('stream backlog bound', () => {
  it("an understand stream whose client falls too far behind ends with SLOW_CONSUMER; the model work stops", async () => {
    const engine = new FloodEngine({ stepMs: 1, tokens: 20 });
    const s = await start({ engine, limits: { maxStreamBacklogChars: 4 * 1024 * 1024, maxSocketBufferedBytes: 1 << 30, maxNewTokens: 1000, wsPingIntervalMs: 0 } });
    const ws = await ackedSocket(s);
    try {
      const errors: unknown[] = [];
      ws.on('message', (raw) => {
        const m = JSON.parse(String(raw));
        if (m.type === 'error') errors.push(m.payload[0]);
        if (m.type === 'next' && m.payload.errors) errors.push(m.payload.errors[0]);
      });
      ws.send(JSON.stringify({ id: '1', type: 'subscribe', payload: { query: 'subscription { understand(input: { prompt: "flood", maxTokens: 1000 }) { text } }' } }));
      const tcp = (ws as unknown as { _socket: { pause(): void; resume(): void } })._socket;
      tcp.pause(); // megabytes pile up in the kernel, then in the stream
      await waitFor(() => engine.aborted, 'the model work to stop', 20_000);
      tcp.resume();
      await waitFor(() => errors.length > 0, 'the error to arrive', 20_000);
      expect(errors[0]).toMatchObject({ extensions: { code: 'SLOW_CONSUMER', limit: 4 * 1024 * 1024 } });
      expect(ws.readyState).toBe(WebSocket.OPEN); // the connection stays; only that stream ended
    } finally {
      ws.terminate();
      await s.close();
    }
  }, 60_000);
});

describe('heartbeat', () => {
  /** a raw graphql-ws client; autoPong: false plays a client that vanished without closing */
  const connect = (s: RunningServer, autoPong: boolean) => ackedSocket(s, { autoPong });

  it('terminates a socket that stops answering pings, and stops its model work; answering clients stay', async () => {
    // slow model steps: the silent client's stream is running but sends nothing meanwhile
    const engine = new FakeEngine({ stepMs: 20_000, tokens: 1000 });
    // 1 s: the answering client shares this process's event loop, and a loaded machine can stall it
    const s = await start({ engine, limits: { wsPingIntervalMs: 1000, maxNewTokens: 1000 } });
    const live = await connect(s, true);
    const gone = await connect(s, false);
    try {
      const closed = new Promise<number>((r) => gone.once('close', (code) => r(code)));
      gone.send(JSON.stringify({ id: '1', type: 'subscribe', payload: { query: 'subscription { understand(input: { prompt: "long", maxTokens: 1000 }) { text } }' } }));
      await waitFor(() => engine.stats.active === 1, 'the stream to run');
      expect(await closed).toBe(1006); // terminated: no close frame
      await waitFor(() => engine.stats.active === 0, 'the model work to stop');
      expect(engine.stats.understandAborted).toBe(1);
      expect(s.runtime.metrics.heartbeatTimeouts.get()).toBe(1);
      // the client that answers has been pinged several times meanwhile and is still served
      let pings = 0;
      live.on('ping', () => pings++);
      await waitFor(() => pings >= 2, 'two more pings');
      expect(live.readyState).toBe(WebSocket.OPEN);
      const answered = new Promise<unknown>((resolve) =>
        live.on('message', (raw) => {
          const m = JSON.parse(String(raw));
          if (m.id === '2' && m.type === 'next') resolve(m.payload.data);
        }),
      );
      live.send(JSON.stringify({ id: '2', type: 'subscribe', payload: { query: '{ health { status } }' } }));
      expect(await answered).toMatchObject({ health: { status: expect.any(String) } });
      expect(s.runtime.metrics.heartbeatTimeouts.get()).toBe(1);
      await waitFor(() => s.runtime.wsConnections === 1, 'the terminated socket to be gone');
    } finally {
      live.terminate();
      gone.terminate();
      await s.close();
    }
  }, 30_000);

  it('a client that never answers is dropped after a few intervals even while its stream keeps the kernel taking data', async () => {
    // the kernel takes data into its send buffer for a peer that is gone, too: taking data buys at most 3 intervals
    const engine = new FakeEngine({ stepMs: 20, tokens: 100_000 });
    const s = await start({ engine, limits: { wsPingIntervalMs: 1000, maxNewTokens: 100_000 } });
    const ws = await connect(s, false);
    try {
      let pings = 0;
      ws.on('ping', () => pings++);
      const closed = new Promise<number>((r) => ws.once('close', (code) => r(code)));
      ws.send(JSON.stringify({ id: '1', type: 'subscribe', payload: { query: 'subscription { understand(input: { prompt: "long", maxTokens: 100000 }) { text } }' } }));
      expect(await closed).toBe(1006);
      // spared while data flowed (a slow reader would be), but not beyond 3 unanswered intervals: the first
      // ping and the two sent while it was spared go unanswered, and the tick after the third drops it
      expect(pings).toBe(3);
      expect(s.runtime.metrics.heartbeatTimeouts.get()).toBe(1);
      await waitFor(() => engine.stats.active === 0, 'the model work to stop');
    } finally {
      ws.terminate();
      await s.close();
    }
  }, 30_000);

  it('wsPingIntervalMs: 0 turns it off', async () => {
    const s = await start({ engine: new FakeEngine({ stepMs: 1, tokens: 2 }), limits: { wsPingIntervalMs: 0 } });
    const ws = await connect(s, false);
    try {
      let pings = 0;
      ws.on('ping', () => pings++);
      await new Promise((r) => setTimeout(r, 300));
      expect(pings).toBe(0);
      expect(ws.readyState).toBe(WebSocket.OPEN);
    } finally {
      ws.terminate();
      await s.close();
    }
  });
});

describe('subscription fast path', () => {
  it('only subscriptions free of @defer/@stream skip the incremental executor', async () => {
    const { parse } = await import('graphql/index.js');
    const { usesIncrementalDelivery } = await import('../../src/gateway/server.ts');
    expect(usesIncrementalDelivery(parse('subscription { understand(input: { prompt: "x" }) { text done } }'))).toBe(false);
    expect(usesIncrementalDelivery(parse('subscription { understand(input: { prompt: "x" }) { tokenIds @stream } }'))).toBe(true);
    expect(usesIncrementalDelivery(parse('subscription { understand(input: { prompt: "x" }) { ...F } } fragment F on UnderstandEvent { ... @defer { text } }'))).toBe(true);
  });

  it('a subscription using @stream in its events still works (incremental executor)', async () => {
    const s = await start({ engine: new FakeEngine({ stepMs: 1, tokens: 3 }) });
    const c = wsClient(s);
    try {
      const out = await wsRun(c, 'subscription { understand(input: { prompt: "x", maxTokens: 3 }) { done tokenIds @stream(initialCount: 1) } }');
      expect(out.some((p) => p.errors)).toBe(false);
      expect(out.some((p) => (p.data as any)?.understand?.done === true)).toBe(true);
    } finally {
      await c.dispose();
      await s.close();
    }
  });
});
