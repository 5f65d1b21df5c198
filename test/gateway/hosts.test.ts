// Host allowlist (DNS rebinding) and the Origin policy on /metrics and /images/<token>.
import { request } from 'node:http';
import WebSocket from 'ws';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { allowedHostsFrom } from '../../src/cli/commands/serve.ts';
import { HostPolicy } from '../../src/gateway/origin.ts';
import type { RunningServer } from '../../src/gateway/server.ts';
import { FakeEngine } from './fake-engine.ts';
import { gqlPost, start, wsClient, wsRun, wsUrl } from './helpers.ts';

const EVIL = 'http://evil.example';

/** Raw request with exactly these headers (fetch will not send an arbitrary Host). */
function raw(s: RunningServer, path: string, headers: Record<string, string>, method = 'GET', body?: string) {
  return new Promise<{ status: number; headers: Record<string, string | string[] | undefined>; body: string }>((resolve, reject) => {
    const req = request({ host: '127.0.0.1', port: s.port, path, method, headers: { host: `127.0.0.1:${s.port}`, ...headers } }, (res) => {
      const chunks: Buffer[] = [];
      res.on('data', (c: Buffer) => chunks.push(c));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, headers: res.headers, body: Buffer.concat(chunks).toString() }));
    });
    req.on('error', reject);
    req.end(body);
  });
}

const gql = (s: RunningServer, headers: Record<string, string>) =>
  raw(s, '/graphql', { 'content-type': 'application/json', accept: 'application/json', ...headers }, 'POST', JSON.stringify({ query: '{ health { status } }' }));

/** 101 when the handshake succeeds, else the HTTP status. */
function handshake(s: RunningServer, headers: Record<string, string>): Promise<number> {
  return new Promise((resolve, reject) => {
    const ws = new WebSocket(wsUrl(s), 'graphql-transport-ws', { headers });
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

describe('Host allowlist (DNS rebinding)', () => {
  let server: RunningServer;
  beforeAll(async () => {
    server = await start({ engine: new FakeEngine(), webDemo: true });
  });
  afterAll(async () => {
    await server?.close();
  });

  it('accepts localhost, 127.0.0.1 and [::1] on the server port; refuses a rebound name with 403 and a clear message', async () => {
    for (const host of [`localhost:${server.port}`, `127.0.0.1:${server.port}`, `[::1]:${server.port}`, `LOCALHOST:${server.port}`]) expect((await gql(server, { host })).status).toBe(200);
    // the attacker's page: Host and Origin agree, so the Origin check alone would pass it
    const port = server.port;
    const bad = await gql(server, { host: `evil.example:${port}`, origin: `${EVIL}:${port}` });
    expect(bad.status).toBe(403);
    expect(JSON.parse(bad.body).errors[0].message).toMatch(/Host header "evil\.example:\d+" is not allowed.*--allow-host/);
    expect((await gql(server, { host: `localhost:${port + 1}` })).status).toBe(403); // loopback names only on our port
    expect((await gql(server, { host: 'localhost@evil.example' })).status).toBe(403);
    for (const path of ['/metrics', '/', `/images/${'0'.repeat(32)}.png`]) expect((await raw(server, path, { host: `evil.example:${port}` })).status).toBe(403);
    // health checks (load balancers, orchestrators) send whatever Host they like
    expect((await raw(server, '/health', { host: '10.1.2.3:80' })).status).toBe(200);
    expect((await raw(server, '/ready', { host: '10.1.2.3:80' })).status).toBe(200);
  });

  it('WebSocket upgrade: a foreign Host is refused with 403 before the handshake', async () => {
    expect(await handshake(server, { host: `localhost:${server.port}`, origin: `http://localhost:${server.port}` })).toBe(101);
    expect(await handshake(server, { host: `evil.example:${server.port}`, origin: `${EVIL}:${server.port}` })).toBe(403);
  });

  it('the web demo and GraphiQL still work from the gateway\'s own origin', async () => {
    for (const h of [`127.0.0.1:${server.port}`, `localhost:${server.port}`]) {
      const origin = `http://${h}`;
      const page = await raw(server, '/', { host: h });
      expect(page.status).toBe(200);
      expect(page.body).toContain('/demo/app.js');
      const graphiql = await raw(server, '/graphql', { host: h, accept: 'text/html' });
      expect(graphiql.status).toBe(200);
      expect(graphiql.body.toLowerCase()).toContain('graphiql');
      expect((await gql(server, { host: h, origin })).status).toBe(200);
      expect(await handshake(server, { host: h, origin })).toBe(101);
      expect((await raw(server, '/metrics', { host: h, origin })).status).toBe(200);
    }
  });

  it('publicUrl with a trailing slash: image URLs have one slash before images/, over HTTP and graphql-ws alike', async () => {
    const s = await start({ engine: new FakeEngine({ nfeMs: 1 }), publicUrl: 'https://public.example/hb/' });
    const Q = 'mutation { generateImage(input: { prompt: "a red circle", mode: ONE_STEP }) { result { image { url } } } }';
    try {
      const http = (await gqlPost(s, { query: Q })).json.data.generateImage.result.image.url as string;
      const client = wsClient(s);
      const ws = ((await wsRun(client, Q)).at(-1)!.data as any).generateImage.result.image.url as string;
      await client.dispose();
      for (const url of [http, ws]) expect(url).toMatch(/^https:\/\/public\.example\/hb\/images\/[0-9a-f]{32}\.png$/);
    } finally {
      await s.close();
    }
  });

  it('allowedHosts: "name" for any port, "name:port" for one; publicUrl host and the bound address count; "*" disables', async () => {
    const s = await start({ engine: new FakeEngine(), allowedHosts: ['api.example.com', 'alt.example:8443'], publicUrl: 'https://public.example' });
    try {
      expect((await gql(s, { host: 'api.example.com' })).status).toBe(200);
      expect((await gql(s, { host: 'API.example.com:9999' })).status).toBe(200);
      expect((await gql(s, { host: 'alt.example:8443' })).status).toBe(200);
      expect((await gql(s, { host: 'alt.example:8444' })).status).toBe(403);
      expect((await gql(s, { host: 'public.example' })).status).toBe(200); // behind a proxy that keeps Host
      expect((await gql(s, { host: `public.example:${s.port}` })).status).toBe(200);
      expect((await gql(s, { host: 'evil.example' })).status).toBe(403);
    } finally {
      await s.close();
    }
    const any = await start({ engine: new FakeEngine(), allowedHosts: ['*'] });
    try {
      expect((await gql(any, { host: 'evil.example' })).status).toBe(200);
    } finally {
      await any.close();
    }
    const p = new HostPolicy([], '192.168.1.5');
    p.port = 4000;
    expect(p.allows('192.168.1.5:4000')).toBe(true);
    expect(p.allows('192.168.1.5:4001')).toBe(false);
    // any address on the server's port (a scraper reaching it by IP): rebinding never sends an address
    const named = new HostPolicy(['api.example.com'], '0.0.0.0');
    named.port = 4733;
    for (const h of ['192.0.2.2:4733', '10.1.2.3:4733', '[2001:db8::1]:4733']) expect(named.allows(h), h).toBe(true);
    for (const h of ['192.0.2.2:4734', 'evil.example:4733', '192.0.2.2.nip.io:4733']) expect(named.allows(h), h).toBe(false);
    expect(p.allows(undefined)).toBe(false);
    const v6 = new HostPolicy([], '::1');
    v6.port = 80;
    expect(v6.allows('[::1]')).toBe(true);
  });

  it('binding 0.0.0.0 with no allowed hosts warns and accepts any Host; with allowed hosts the check is on', async () => {
    const logs: string[] = [];
    const open = await start({ engine: new FakeEngine(), host: '0.0.0.0', log: (m) => logs.push(m) });
    try {
      expect(logs.some((m) => /WARNING.*0\.0\.0\.0.*any Host header is accepted.*--allow-host/.test(m))).toBe(true);
      expect((await gql(open, { host: 'evil.example' })).status).toBe(200);
    } finally {
      await open.close();
    }
    const logs2: string[] = [];
    const closed = await start({ engine: new FakeEngine(), host: '0.0.0.0', allowedHosts: ['box.lan'], log: (m) => logs2.push(m) });
    try {
      expect(logs2.some((m) => m.includes('WARNING'))).toBe(false);
      expect((await gql(closed, { host: 'evil.example' })).status).toBe(403);
      expect((await gql(closed, { host: `box.lan:${closed.port}` })).status).toBe(200);
      expect((await gql(closed, { host: `localhost:${closed.port}` })).status).toBe(200);
    } finally {
      await closed.close();
    }
  });

  it('the CLI merges --allow-host and HYPERBAGEL_ALLOWED_HOSTS and refuses malformed entries', () => {
    expect(allowedHostsFrom(['A.example', 'b.example:8080,a.example'], ' [::1] ,*')).toEqual(['a.example', 'b.example:8080', '[::1]', '*']);
    expect(() => allowedHostsFrom(['http://x.example'], undefined)).toThrow(/allow-host/);
    expect(() => allowedHostsFrom(undefined, 'x.example/path')).toThrow(/allow-host/);
    expect(() => allowedHostsFrom(['a b'], undefined)).toThrow(/allow-host/);
  });
});

describe('Origin policy on /metrics and /images/<token>', () => {
  let server: RunningServer;
  let token: string;
  let same: string;
  beforeAll(async () => {
    server = await start({ engine: new FakeEngine(), allowedOrigins: ['https://app.example'] });
    token = server.runtime.images.put(new Uint8Array([0x89, 0x50, 0x4e, 0x47]), 'image/png', 'f'.repeat(64));
    same = `http://127.0.0.1:${server.port}`;
  });
  afterAll(async () => {
    await server?.close();
  });

  it('/metrics: no Origin and the same origin are served; another origin gets 403', async () => {
    expect((await raw(server, '/metrics', {})).status).toBe(200);
    expect((await raw(server, '/metrics', { origin: same })).status).toBe(200);
    const bad = await raw(server, '/metrics', { origin: EVIL });
    expect(bad.status).toBe(403);
    expect(bad.body).not.toContain('hyperbagel_');
    expect(bad.headers['access-control-allow-origin']).toBeUndefined();
  });

  it('/images: another origin gets 403; an allowed origin gets the bytes with CORS; same origin needs none', async () => {
    const path = `/images/${token}.png`;
    const none = await raw(server, path, {});
    expect(none.status).toBe(200);
    expect(none.headers['content-type']).toBe('image/png');
    const own = await raw(server, path, { origin: same });
    expect(own.status).toBe(200);
    expect(own.headers['access-control-allow-origin']).toBeUndefined();
    const allowed = await raw(server, path, { origin: 'https://app.example' });
    expect(allowed.status).toBe(200);
    expect(allowed.headers['access-control-allow-origin']).toBe('https://app.example');
    const bad = await raw(server, path, { origin: EVIL });
    expect(bad.status).toBe(403);
    expect(bad.headers['access-control-allow-origin']).toBeUndefined();
    expect(server.runtime.metrics.originRejected.get({ transport: 'http' })).toBeGreaterThanOrEqual(1);
  });
});
