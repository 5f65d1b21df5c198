// What forwarding must not leak or trust (src/gateway/peer-client.ts): credentials in extra headers
// or across a redirect, the peers' internal addresses in clients' errors, unbounded peer answers,
// and a peer-secret mismatch nobody is told about.
import { createServer, type IncomingHttpHeaders, type IncomingMessage, type ServerResponse } from 'node:http';
import { connect, createServer as createTcpServer, type Socket } from 'node:net';
import type { Client } from 'graphql-ws';
import { afterAll, describe, expect, it } from 'vitest';
import { PeerClient } from '../../src/gateway/peer-client.ts';
import { FakeEngine } from './fake-engine.ts';
import { gqlPost, start, waitFor, wsClient, wsRun, type Payload } from './helpers.ts';

const clients: Client[] = [];
afterAll(async () => {
  await Promise.all(clients.map((c) => c.dispose()));
});

/** A plain HTTP server standing in for a peer (or for whatever a peer URL points at); closed by the returned close(). */
async function fakePeer(handler: (req: IncomingMessage, res: ServerResponse) => void) {
  const sockets = new Set<Socket>();
  const server = createServer(handler);
  server.on('connection', (s) => void sockets.add(s));
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  const origin = `http://127.0.0.1:${(server.address() as { port: number }).port}`;
  const close = () => {
    for (const s of sockets) s.destroy();
    server.close();
  };
  return { url: `${origin}/graphql`, origin, close };
}

/** A port nothing listens on. */
async function closedPort(): Promise<number> {
  const s = createTcpServer();
  await new Promise<void>((r) => s.listen(0, '127.0.0.1', r));
  const port = (s.address() as { port: number }).port;
  await new Promise((r) => s.close(r));
  return port;
}

/** A TCP hop to `port` (the owner's host, as a peer URL reaches it): its own port, and cut() takes it away. */
async function tcpHop(port: number) {
  const socks = new Set<Socket>();
  const hop = createTcpServer((c) => {
    const up = connect(port, '127.0.0.1');
    socks.add(c).add(up);
    c.pipe(up).pipe(c);
    c.on('error', () => undefined);
    up.on('error', () => c.destroy());
  });
  await new Promise<void>((r) => hop.listen(0, '127.0.0.1', r));
  const cut = () => {
    hop.close();
    for (const s of socks) s.destroy();
  };
  return { port: String((hop.address() as { port: number }).port), cut };
}

const drain = async (client: PeerClient, owner: string, url: string, signal = new AbortController().signal) => {
  for await (const _ of client.subscribe(owner, url, 'subscription { x }', {}, {}, signal));
};

describe('what a forwarded request carries', () => {
  it('sends the forwarded-for identity only for an address: with auth on, the key travels once, as Authorization', async () => {
    const got: IncomingHttpHeaders[] = [];
    const owner = await fakePeer((req, res) => {
      if (req.headers['hyperbagel-forwarded-by']) got.push(req.headers);
      req.resume();
      res.writeHead(200, { 'content-type': 'application/json' }).end(JSON.stringify({ data: { job: null } }));
    });
    const key = 'sk-live-REAL-CLIENT-KEY-123';
    const withAuth = await start({ engine: new FakeEngine(), apiKeys: [key], replica: { id: 'b', peers: new Map([['a', owner.url]]), requestTimeoutMs: 1000, secret: 'peer-secret-0123456789' } });
    const noAuth = await start({ engine: new FakeEngine(), replica: { id: 'c', peers: new Map([['a', owner.url]]), requestTimeoutMs: 1000 } });
    try {
      expect((await gqlPost(withAuth, { query: '{ job(id: "a.1") { id } }' }, { authorization: `Bearer ${key}` })).json.data.job).toBeNull();
      const h = got.find((x) => x['hyperbagel-forwarded-by'] === 'b' && x['content-type'] === 'application/json' && x.authorization);
      expect(h?.authorization).toBe(`Bearer ${key}`);
      expect(h?.['hyperbagel-forwarded-for']).toBeUndefined();
      expect(JSON.stringify(got)).not.toContain(`key:${key}`);
      // auth off: the client's address is what the owner counts, and it still travels
      expect((await gqlPost(noAuth, { query: '{ job(id: "a.1") { id } }' })).json.data.job).toBeNull();
      expect(got.find((x) => x['hyperbagel-forwarded-by'] === 'c' && x['hyperbagel-forwarded-for'])?.['hyperbagel-forwarded-for']).toMatch(/^ip:/);
    } finally {
      await withAuth.close();
      await noAuth.close();
      owner.close();
    }
  });

  it('follows no redirect from a peer URL: the peer secret and the client\'s key stay with this replica, and the answer is a wrong one', async () => {
    const reached: IncomingHttpHeaders[] = [];
    const elsewhere = await fakePeer((req, res) => {
      reached.push(req.headers);
      req.resume();
      if (req.url?.includes('health')) res.writeHead(200, { 'content-type': 'application/json' }).end(JSON.stringify({ replica: 'a' }));
      else if (req.url?.includes('images')) res.writeHead(200, { 'content-type': 'image/png' }).end(Buffer.from([1, 2, 3]));
      else res.writeHead(200, { 'content-type': 'application/json' }).end(JSON.stringify({ data: { job: null } }));
    });
    // the peer URL answers everything but /health with a redirect to another origin
    const redirector = await fakePeer((req, res) => {
      req.resume();
      if (req.url === '/health') res.writeHead(200, { 'content-type': 'application/json' }).end(JSON.stringify({ replica: 'a' }));
      else res.writeHead(307, { location: `${elsewhere.origin}${req.url}` }).end();
    });
    const logs: string[] = [];
    const client = new PeerClient({ id: 'b', peers: new Map([['a', redirector.url]]), requestTimeoutMs: 2000, secret: 'the-shared-peer-secret-0123' });
    const stop = new AbortController();
    try {
      await expect(client.request('a', redirector.url, '{ job(id: "a.1") { id } }', {}, { apiKey: 'client-api-key-B' })).rejects.toMatchObject({
        code: 'UNAVAILABLE',
        message: 'Replica "a" answered HTTP 307, not as a gateway: check the --peer URL given for it',
      });
      await expect(client.image('a', `a_${'0'.repeat(32)}.png`)).rejects.toMatchObject({ code: 'UNAVAILABLE', message: expect.stringMatching(/answered HTTP 307, not as a gateway/) });
      await expect(drain(client, 'a', redirector.url)).rejects.toMatchObject({ code: 'UNAVAILABLE', message: expect.stringMatching(/answered HTTP 307, not as a gateway/) });
      // the start-up check says so
      const checked = client.checkPeers((m) => logs.push(m), stop.signal, 50);
      await waitFor(() => logs.length > 0, 'the check of peer a');
      stop.abort();
      await checked;
      expect(logs).toEqual([expect.stringMatching(/WARNING: peer a \(http:\/\/127\.0\.0\.1:\d+\/graphql\) answers this replica's requests with a redirect \(HTTP 307\)/)]);
      expect(reached).toEqual([]);
    } finally {
      stop.abort();
      redirector.close();
      elsewhere.close();
    }
  });
});

describe('a peer\'s internal address in what clients see', () => {
  it('shows a fixed message when the owner refuses a forwarded request (401/403), and logs the owner\'s words here, once', async () => {
    const a = await start({ engine: new FakeEngine(), replica: { id: 'a', peers: new Map(), requestTimeoutMs: 1000 } });
    // b calls a by an address whose Host a does not accept (its loopback names on its own port only)
    const hop = await tcpHop(Number(new URL(a.url).port));
    const port = hop.port;
    const peerUrl = `http://127.0.0.1:${port}/graphql`;
    const logs: string[] = [];
    const b = await start({ engine: new FakeEngine(), log: (m) => logs.push(m), replica: { id: 'b', peers: new Map([['a', peerUrl]]), requestTimeoutMs: 1000 } });
    try {
      for (let i = 0; i < 2; i++) {
        const res = await gqlPost(b, { query: '{ job(id: "a.1") { id } }' });
        expect(res.json.errors[0].extensions).toEqual({ code: 'UNAVAILABLE', replica: 'a' });
        expect(res.json.errors[0].message).toBe('Replica "a" refused a request forwarded from this replica (HTTP 403); replicas must share their API keys and accept each other\'s Host (this replica\'s log says more)');
      }
      const sub = await wsRun(ws(b), 'subscription { imageJob(id: "a.1") { seq } }').catch((e) => [{ errors: e.errors }] as Payload[]);
      expect(JSON.stringify(sub)).not.toContain(port);
      // the start-up check warns about the Host check too; the forwarded requests' refusal is logged once, with the owner's words
      const refusals = logs.filter((l) => l.includes('refuses requests forwarded from this replica'));
      expect(refusals).toHaveLength(1);
      expect(refusals[0]).toContain(`WARNING: peer a (${peerUrl}) refuses requests forwarded from this replica (HTTP 403: "Host header \\"127.0.0.1:${port}\\" is not allowed`);
    } finally {
      await b.close();
      await a.close();
      hop.cut();
    }
  });

  it('reduces a connection error on the SSE path to its code, as on the fetch path', async () => {
    const port = await closedPort();
    const url = `http://127.0.0.1:${port}/graphql`;
    const client = new PeerClient({ id: 'b', peers: new Map([['a', url]]), requestTimeoutMs: 2000 });
    await expect(drain(client, 'a', url)).rejects.toMatchObject({ code: 'UNAVAILABLE', message: 'Replica "a" did not answer (ECONNREFUSED); retry shortly' });
    await expect(client.request('a', url, '{ x }', {}, {})).rejects.toMatchObject({ message: expect.stringMatching(/^Replica "a" did not answer \(fetch failed: ECONNREFUSED\); retry shortly$/) });
    // a name that does not resolve: the name stays here
    const dns = 'http://replica-a.internal.invalid:4000/graphql';
    const named = new PeerClient({ id: 'b', peers: new Map([['a', dns]]), requestTimeoutMs: 2000 });
    const e = await drain(named, 'a', dns).then(() => undefined, (e: Error) => e);
    expect(e).toMatchObject({ code: 'UNAVAILABLE' });
    expect(e!.message).not.toContain('internal.invalid');
  });

  it('does not show a relayed imageJob\'s client the owner\'s address when the owner goes away mid-stream', async () => {
    const a = await start({ engine: new FakeEngine({ nfeMs: 30 }), allowedHosts: ['127.0.0.1'], replica: { id: 'a', peers: new Map(), requestTimeoutMs: 1000 } });
    // b reaches a through a TCP hop this test cuts (the owner's host gone)
    const hop = await tcpHop(Number(new URL(a.url).port));
    const hopPort = hop.port;
    const b = await start({ engine: new FakeEngine(), replica: { id: 'b', peers: new Map([['a', `http://127.0.0.1:${hopPort}/graphql`]]), requestTimeoutMs: 1000 } });
    try {
      const id = (await gqlPost(a, { query: 'mutation { generateImage(input: { prompt: "a red circle", mode: BASELINE, steps: 200 }) { id } }' })).json.data.generateImage.id;
      let cut = false;
      const out = await wsRun(ws(b), 'subscription($id: ID!) { imageJob(id: $id) { seq } }', { id }, () => {
        if (cut) return;
        cut = true;
        hop.cut();
      }).catch((e) => [{ errors: e.errors }] as Payload[]);
      const last = out.at(-1)!;
      expect((last.errors?.[0] as { extensions?: { code?: string } }).extensions?.code).toBe('UNAVAILABLE');
      expect(JSON.stringify(last)).toMatch(/did not answer \(ECONNREFUSED\)/);
      expect(JSON.stringify(out)).not.toContain(hopPort);
    } finally {
      await b.close();
      await a.close();
      hop.cut();
    }
  });
});

describe('peer answers of unbounded size', () => {
  it('reads no more of a JSON answer than a gateway would send, declared or streamed', async () => {
    let streamed = false;
    const peer = await fakePeer((req, res) => {
      req.resume();
      const body = JSON.stringify({ data: { job: null }, pad: 'x'.repeat(2000) });
      if (streamed) {
        res.writeHead(200, { 'content-type': 'application/json' });
        for (let i = 0; i < 4; i++) res.write(body.slice(i * 600, (i + 1) * 600));
        res.end(body.slice(2400));
      } else res.writeHead(200, { 'content-type': 'application/json', 'content-length': String(Buffer.byteLength(body)) }).end(body);
    });
    const client = new PeerClient({ id: 'b', peers: new Map([['a', peer.url]]), requestTimeoutMs: 2000 });
    try {
      expect(await client.request('a', peer.url, '{ x }', {}, {})).toEqual({ job: null });
      client.maxAnswerBytes = 1000;
      for (const s of [false, true]) {
        streamed = s;
        await expect(client.request('a', peer.url, '{ x }', {}, {}), `streamed ${s}`).rejects.toMatchObject({
          code: 'UNAVAILABLE',
          message: 'Replica "a" answered more than a gateway would, not as one: check the --peer URL given for it',
        });
      }
    } finally {
      peer.close();
    }
  });

  it('bounds an SSE event: a peer that never ends one fails the stream, as a wrong answer, not after the idle timeout', async () => {
    const peer = await fakePeer((req, res) => {
      req.resume();
      res.writeHead(200, { 'content-type': 'text/event-stream' });
      res.write(`event: next\ndata: ${JSON.stringify({ data: { x: 1 } })}\n\n`);
      const more = setInterval(() => res.write('y'.repeat(500)), 5);
      res.on('close', () => clearInterval(more));
    });
    const client = new PeerClient({ id: 'b', peers: new Map([['a', peer.url]]), requestTimeoutMs: 2000, streamIdleMs: 20_000 });
    client.maxEventChars = 4000;
    try {
      const got: unknown[] = [];
      await expect(
        (async () => {
          for await (const d of client.subscribe('a', peer.url, 'subscription { x }', {}, {}, new AbortController().signal)) got.push(d);
        })(),
      ).rejects.toMatchObject({ code: 'UNAVAILABLE', message: expect.stringMatching(/answered more than a gateway would/) });
      expect(got).toEqual([{ x: 1 }]); // events below the bound pass
    } finally {
      peer.close();
    }
  }, 10_000); // a wait for the 20 s idle timeout exceeds it
});

describe('a peer secret the owner does not accept', () => {
  /** An owner that answers every request with the header it sends when it did not take one as forwarded. */
  const rejecting = (why: string | undefined) =>
    fakePeer((req, res) => {
      req.resume();
      const headers: Record<string, string> = why ? { 'hyperbagel-peer-rejected': why } : {};
      if (req.headers.accept === 'text/event-stream') res.writeHead(200, { ...headers, 'content-type': 'text/event-stream' }).end('event: complete\ndata:\n\n');
      else res.writeHead(200, { ...headers, 'content-type': 'application/json' }).end(JSON.stringify({ data: { job: null } }));
    });

  it('logs a warning naming the setting to fix, once, however many requests meet it', async () => {
    const owner = await rejecting('secret');
    const logs: string[] = [];
    const client = new PeerClient({ id: 'b', peers: new Map([['a', owner.url]]), requestTimeoutMs: 2000, secret: 'secret-version-1-xxxxxxxx' }, fetch, (m) => logs.push(m));
    try {
      for (let i = 0; i < 3; i++) expect(await client.request('a', owner.url, '{ x }', {}, {})).toEqual({ job: null });
      await drain(client, 'a', owner.url);
      expect(logs).toEqual([
        expect.stringMatching(/^hyperbagel: WARNING: peer a \(http:\/\/127\.0\.0\.1:\d+\/graphql\) did not accept this replica's peer secret: give every replica the same --peer-secret \/ HYPERBAGEL_PEER_SECRET\. .*rate limit counts them again/),
      ]);
      // over SSE alone too
      const sse = new PeerClient({ id: 'b', peers: new Map([['a', owner.url]]), requestTimeoutMs: 2000 }, fetch, (m) => logs.push(m));
      await drain(sse, 'a', owner.url);
      expect(logs[1]).toMatch(/peer a .* expects a peer secret, and this replica has none/);
    } finally {
      owner.close();
    }
  });

  it('says so at start, through the server\'s log; an owner that accepts this replica logs nothing', async () => {
    for (const why of ['address', undefined]) {
      const owner = await fakePeer((req, res) => {
        req.resume();
        if (req.url === '/health') return void res.writeHead(200, { 'content-type': 'application/json' }).end(JSON.stringify({ replica: 'a' }));
        res.writeHead(200, { 'content-type': 'application/json', ...(why ? { 'hyperbagel-peer-rejected': why } : {}) }).end(JSON.stringify({ data: { __typename: 'Query' } }));
      });
      const logs: string[] = [];
      const b = await start({ engine: new FakeEngine(), log: (m) => logs.push(m), replica: { id: 'b', peers: new Map([['a', owner.url]]), requestTimeoutMs: 1000 } });
      try {
        if (why) {
          await waitFor(() => logs.length > 0, 'the warning');
          expect(logs).toEqual([expect.stringMatching(/peer a .* does not see this replica's requests come from the address of its --peer entry for this replica: give the replicas a shared --peer-secret/)]);
        } else {
          await gqlPost(b, { query: '{ job(id: "a.1") { id } }' });
          await new Promise((r) => setTimeout(r, 200));
          expect(logs).toEqual([]);
        }
      } finally {
        await b.close();
        owner.close();
      }
    }
  });
});

function ws(s: Parameters<typeof wsClient>[0]): Client {
  const c = wsClient(s);
  clients.push(c);
  return c;
}
