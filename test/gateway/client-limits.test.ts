// Per-client identity behind a reverse proxy (X-Forwarded-For, only from trusted proxies) and the
// graphql-ws connection limits (total and per client), which both use it.
import type { IncomingMessage } from 'node:http';
import WebSocket from 'ws';
import { describe, expect, it } from 'vitest';
import { clientAddress, clientIdentity, normalizeAddress, parseTrustedProxies } from '../../src/gateway/client-address.ts';
import { parseServeArgs, serveOptions, trustedProxiesFrom } from '../../src/cli/commands/serve.ts';
import { UsageError } from '../../src/cli/args.ts';
import type { RunningServer } from '../../src/gateway/server.ts';
import { FakeEngine } from './fake-engine.ts';
import { gqlPost, start, waitFor, wsUrl } from './helpers.ts';

const req = (remoteAddress: string | undefined, xff?: string | string[]) => ({ socket: { remoteAddress }, headers: xff === undefined ? {} : { 'x-forwarded-for': xff } }) as unknown as IncomingMessage;

describe('clientAddress', () => {
  const trusted = parseTrustedProxies(['127.0.0.1', '10.0.0.0/24', '::1', '2001:0db8::0001']);

  it('is the direct peer unless that peer is a trusted proxy', () => {
    expect(clientAddress(req('203.0.113.9', '198.51.100.1'), trusted)).toBe('203.0.113.9'); // a client cannot choose its identity
    expect(clientAddress(req('203.0.113.9', '198.51.100.1'), parseTrustedProxies([]))).toBe('203.0.113.9');
    expect(clientAddress(req('127.0.0.1', '198.51.100.1'), trusted)).toBe('198.51.100.1');
    expect(clientAddress(req('::ffff:127.0.0.1', '198.51.100.1'), trusted)).toBe('198.51.100.1'); // IPv4-mapped peer
    expect(clientAddress(req('10.0.0.77', '198.51.100.1'), trusted)).toBe('198.51.100.1'); // inside a trusted range
    expect(clientAddress(req('10.0.1.77', '198.51.100.1'), trusted)).toBe('10.0.1.77'); // outside it
    expect(clientAddress(req('2001:db8::1', '198.51.100.1'), trusted)).toBe('198.51.100.1'); // configured as 2001:0db8::0001
  });

  it('takes the rightmost hop that is not a trusted proxy; what the client prepended is ignored', () => {
    expect(clientAddress(req('127.0.0.1', '6.6.6.6, 198.51.100.1, 10.0.0.2'), trusted)).toBe('198.51.100.1');
    expect(clientAddress(req('127.0.0.1', ['6.6.6.6', '198.51.100.1']), trusted)).toBe('198.51.100.1'); // repeated header
    expect(clientAddress(req('127.0.0.1', '2001:db8::7'), trusted)).toBe('2001:db8::7');
    // proxies that append a port
    expect(clientAddress(req('127.0.0.1', '198.51.100.1:4431'), trusted)).toBe('198.51.100.1');
    expect(clientAddress(req('127.0.0.1', '[2001:db8::7]:443'), trusted)).toBe('2001:db8::7');
    expect(clientAddress(req('127.0.0.1', '[2001:db8::7]'), trusted)).toBe('2001:db8::7');
  });

  it('falls back to the proxy itself: no header, only trusted hops, or a hop that is not an address', () => {
    expect(clientAddress(req('127.0.0.1'), trusted)).toBe('127.0.0.1');
    expect(clientAddress(req('127.0.0.1', ''), trusted)).toBe('127.0.0.1');
    expect(clientAddress(req('127.0.0.1', '10.0.0.2, ::1'), trusted)).toBe('127.0.0.1');
    for (const bad of ['198.51.100.1, unknown', '[1.2.3.4]', 'host:80', '2001:db8::7:443x', 'fe80::1%eth0', 'a:b:c:d:e:f::1%a:b:c:d', '[fe80::1%25eth0]:80'])
      expect(clientAddress(req('127.0.0.1', bad), trusted), bad).toBe('127.0.0.1');
    expect(clientAddress(req(undefined, '198.51.100.1'), trusted)).toBe('unknown');
  });

  it('trusted proxies are IP addresses or CIDR ranges; the command line says which one is not', () => {
    expect(normalizeAddress(' ::FFFF:10.0.0.2 ')).toBe('10.0.0.2');
    // every spelling of an address is one client
    expect(normalizeAddress('::ffff:a00:2')).toBe('10.0.0.2');
    expect(normalizeAddress('0:0:0:0:0:ffff:10.0.0.2')).toBe('10.0.0.2');
    expect(normalizeAddress('2001:0DB8:0000::0001')).toBe('2001:db8::1');
    expect(normalizeAddress('fe80::1%eth0')).toBe('fe80::1%eth0'); // a zone id: left as it is
    expect(parseTrustedProxies(['10.0.0.2', 'fd00::/8']).size).toBe(2);
    for (const bad of ['proxy.local', '10.0.0.2:80', '999.1.1.1', '10.0.0.0/33', '10.0.0.0/8/1', '10.0.0.0/x'])
      expect(() => parseTrustedProxies([bad]), bad).toThrow(`trusted proxy "${bad}" is not an IP address or CIDR range`);
    expect(() => parseTrustedProxies([' '])).toThrow(/empty trusted proxy/);
    expect(trustedProxiesFrom(['10.0.0.2'], ' 10.0.0.3 ,')).toEqual(['10.0.0.2', '10.0.0.3']);
    expect(() => trustedProxiesFrom(undefined, '10.0.0.2,lb')).toThrow(new UsageError('HYPERBAGEL_TRUST_PROXY: trusted proxy "lb" is not an IP address or CIDR range (e.g. 10.0.0.5, 10.0.0.0/8, fd00::/8; no ports)'));
    expect(() => trustedProxiesFrom([''], undefined)).toThrow(/--trust-proxy: an empty trusted proxy/);
  });
});

describe('clientIdentity', () => {
  it('an IPv4 address is itself; an IPv6 address counts by its /64', () => {
    expect(clientIdentity('198.51.100.1')).toBe('198.51.100.1');
    expect(clientIdentity('2001:db8:0:7::1')).toBe('2001:db8:0:7::/64');
    expect(clientIdentity('2001:db8:0:7:ffff:1:2:3')).toBe('2001:db8:0:7::/64');
    expect(clientIdentity('2001:0db8:0000:0007::5')).toBe('2001:db8:0:7::/64');
    expect(clientIdentity('::1')).toBe('0:0:0:0::/64');
    expect(clientIdentity('::ffff:1.2.3.4'.slice(7))).toBe('1.2.3.4');
    expect(clientIdentity('64:ff9b::198.51.100.1')).toBe('64:ff9b:0:0::/64');
    expect(clientIdentity('unknown')).toBe('unknown');
    // addresses Node's isIP accepts but no proxy forwards: never an exception (it would escape a request listener)
    for (const odd of ['a:b:c:d:e:f::1%a:b:c:d', 'a:b:c:d:e:f:1:2%x::y', 'a::b:c:d:e:f:1%x.y', 'fe80::1%eth0']) expect(clientIdentity(odd), odd).toBe(odd);
  });
});

const Q = { query: '{ health { status } }' };

describe('the demo\'s caption renderer', () => {
  it('counts against the client\'s rate limit like an operation: 429, typed, with Retry-After', async () => {
    const s = await start({ engine: new FakeEngine(), webDemo: true, limits: { rateLimitPerSecond: 0.001, rateLimitBurst: 2 } }); // no refill within the test
    try {
      const render = () => fetch(s.url.replace(/\/graphql$/, '/demo/api/render?caption=' + encodeURIComponent('a large red circle at the center on a white background')));
      expect([(await render()).status, (await render()).status]).toEqual([200, 200]);
      const over = await render();
      expect(over.status).toBe(429);
      expect(Number(over.headers.get('retry-after'))).toBeGreaterThan(0);
      expect(((await over.json()) as any).errors[0].extensions.code).toBe('RATE_LIMITED');
      expect((await gqlPost(s, Q)).status).toBe(429); // one bucket per client, for both
      // the same route by another spelling of its path is the same route
      const { request } = await import('node:http');
      const raw = (p: string) => new Promise<number>((resolve, reject) => {
        const u = new URL(s.url);
        request({ host: u.hostname, port: u.port, path: p }, (r) => { r.resume(); resolve(r.statusCode ?? 0); }).on('error', reject).end();
      });
      for (const p of ['/demo/./api/render?caption=x', '/demo/x/../api/render?caption=x', '/demo/%2e/api/render?caption=x', '/demo\\api\\render?caption=x'])
        expect(await raw(p), p).toBe(429);
    } finally {
      await s.close();
    }
  });
});

describe('behind a trusted proxy', () => {
  it('a forwarded address Node accepts but cannot group (a zone id) neither crashes nor picks an identity', async () => {
    const s = await start({ engine: new FakeEngine(), limits: { rateLimitPerSecond: 0.001, rateLimitBurst: 1 }, trustedProxies: ['127.0.0.1', '::1'] });
    try {
      expect((await gqlPost(s, Q, { 'x-forwarded-for': 'a:b:c:d:e:f::1%a:b:c:d' })).status).toBe(200);
      // it counted as the proxy itself: the proxy's bucket is now empty, another client's is not
      expect((await gqlPost(s, Q)).status).toBe(429);
      expect((await gqlPost(s, Q, { 'x-forwarded-for': '198.51.100.9' })).status).toBe(200);
    } finally {
      await s.close();
    }
  });

  it('rate limits each forwarded client on its own; without the proxy trusted, all of them share one bucket', async () => {
    for (const trusted of [true, false]) {
      const s = await start({ engine: new FakeEngine(), limits: { rateLimitPerSecond: 0.001, rateLimitBurst: 2 }, ...(trusted ? { trustedProxies: ['127.0.0.1', '::1'] } : {}) });
      try {
        const a = { 'x-forwarded-for': '198.51.100.1' };
        const b = { 'x-forwarded-for': '198.51.100.2' };
        expect([(await gqlPost(s, Q, a)).status, (await gqlPost(s, Q, a)).status, (await gqlPost(s, Q, a)).status]).toEqual([200, 200, 429]);
        expect((await gqlPost(s, Q, b)).status, `trusted: ${trusted}`).toBe(trusted ? 200 : 429);
      } finally {
        await s.close();
      }
    }
  });
});

/** Opens a graphql-ws connection; resolves with the socket, or with the HTTP status the upgrade got. */
function open(s: RunningServer, headers: Record<string, string> = {}): Promise<WebSocket | number> {
  return new Promise((resolve, reject) => {
    const ws = new WebSocket(wsUrl(s), 'graphql-transport-ws', { headers });
    ws.once('open', () => resolve(ws));
    ws.once('unexpected-response', (_req, res) => {
      resolve(res.statusCode ?? 0);
      res.resume();
    });
    ws.once('error', reject);
  });
}

describe('graphql-ws connection limits', () => {
  it('refuses upgrades past the per-client and the total limit with HTTP 429, and takes them again once sockets close', async () => {
    const logs: string[] = [];
    const s = await start({ engine: new FakeEngine(), limits: { maxWsConnectionsPerClient: 2, maxWsConnections: 3 }, trustedProxies: ['127.0.0.1', '::1'], log: (m) => logs.push(m) });
    const sockets: WebSocket[] = [];
    const keep = (r: WebSocket | number) => {
      if (typeof r !== 'number') sockets.push(r);
      return typeof r === 'number' ? r : 'open';
    };
    try {
      const a = { 'x-forwarded-for': '198.51.100.1' };
      expect(keep(await open(s, a))).toBe('open');
      expect(keep(await open(s, a))).toBe('open');
      expect(keep(await open(s, a))).toBe(429); // a's third
      expect(keep(await open(s, a))).toBe(429); // and fourth: logged once for the operator
      expect(logs.filter((l) => l.includes('refusing WebSocket connections from ip:198.51.100.1: 2 already open'))).toHaveLength(1);
      expect(keep(await open(s, { 'x-forwarded-for': '198.51.100.2' }))).toBe('open'); // another client
      expect(keep(await open(s, { 'x-forwarded-for': '198.51.100.3' }))).toBe(429); // the fourth in all
      const text = s.runtime.metrics.render();
      expect(text).toMatch(/^hyperbagel_gateway_ws_connections_refused_total\{reason="per_client"\} 2$/m);
      expect(text).toMatch(/^hyperbagel_gateway_ws_connections_refused_total\{reason="total"\} 1$/m);
      // a closed socket frees its place, for its client and in all
      sockets.shift()!.close();
      await waitFor(() => s.runtime.wsConnections === 2, 'the socket to close');
      expect(keep(await open(s, a))).toBe('open');
      // the refused upgrades held nothing: the sockets are the three open ones
      expect(s.runtime.wsConnections).toBe(3);
      expect(s.wsSocketStats()).toHaveLength(3);
    } finally {
      for (const ws of sockets) ws.terminate();
      await s.close();
    }
  });
});

describe('serve flags', () => {
  it('--trust-proxy, the connection limits and the ping interval reach the gateway; 0 turns a limit off', () => {
    const o = serveOptions(parseServeArgs(['--trust-proxy', '10.0.0.5', '--max-ws-connections', '0', '--max-ws-per-client', '8', '--ws-ping-interval', '0']), { HYPERBAGEL_TRUST_PROXY: '10.1.0.0/16' });
    expect(o.trustedProxies).toEqual(['10.0.0.5', '10.1.0.0/16']);
    expect(o.limits).toMatchObject({ maxWsConnections: 0, maxWsConnectionsPerClient: 8, wsPingIntervalMs: 0 });
    expect(serveOptions(parseServeArgs([]), {}).limits).toMatchObject({ maxWsConnections: 10_000, maxWsConnectionsPerClient: 256, wsPingIntervalMs: 30_000 });
    expect(() => serveOptions(parseServeArgs(['--max-ws-per-client', '-1']), {})).toThrow(UsageError);
    expect(() => serveOptions(parseServeArgs(['--trust-proxy', '']), {})).toThrow(/option --trust-proxy needs a value, got an empty one/);
    expect(() => serveOptions(parseServeArgs(['--ws-ping-interval', '500']), {})).toThrow(/--ws-ping-interval must be 0 \(off\) or at least 1000 ms, got 500/);
    expect(serveOptions(parseServeArgs(['--ws-ping-interval', '1000']), {}).limits?.wsPingIntervalMs).toBe(1000);
  });

  it('a connection limit of 0 is no limit', async () => {
    const s = await start({ engine: new FakeEngine(), limits: { maxWsConnectionsPerClient: 0, maxWsConnections: 0 } });
    const sockets: WebSocket[] = [];
    try {
      for (let i = 0; i < 5; i++) {
        const r = await open(s);
        expect(typeof r).not.toBe('number');
        sockets.push(r as WebSocket);
      }
    } finally {
      for (const ws of sockets) ws.terminate();
      await s.close();
    }
  });
});
