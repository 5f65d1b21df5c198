// Per-client identity behind a reverse proxy (X-Forwarded-For, only from trusted proxies) and the
// graphql-ws connection limits (total and per client), which both use it.
import type { IncomingMessage } from 'node:http';
import WebSocket from 'ws';
import { describe, expect, it } from 'vitest';
import { clientAddress, normalizeAddress, parseTrustedProxies } from '../../src/gateway/client-address.ts';
import { trustedProxiesFrom } from '../../src/cli/commands/serve.ts';
import { UsageError } from '../../src/cli/args.ts';
import type { RunningServer } from '../../src/gateway/server.ts';
import { FakeEngine } from './fake-engine.ts';
import { gqlPost, start, waitFor, wsUrl } from './helpers.ts';

const req = (remoteAddress: string | undefined, xff?: string | string[]) => ({ socket: { remoteAddress }, headers: xff === undefined ? {} : { 'x-forwarded-for': xff } }) as unknown as IncomingMessage;

describe('clientAddress', () => {
  const trusted = parseTrustedProxies(['127.0.0.1', '10.0.0.2', '::1']);

  it('is the direct peer unless that peer is a trusted proxy', () => {
    expect(clientAddress(req('203.0.113.9', '198.51.100.1'), trusted)).toBe('203.0.113.9'); // a client cannot choose its identity
    expect(clientAddress(req('203.0.113.9', '198.51.100.1'), new Set())).toBe('203.0.113.9');
    expect(clientAddress(req('127.0.0.1', '198.51.100.1'), trusted)).toBe('198.51.100.1');
    expect(clientAddress(req('::ffff:127.0.0.1', '198.51.100.1'), trusted)).toBe('198.51.100.1'); // IPv4-mapped peer
  });

  it('takes the rightmost hop that is not a trusted proxy; what the client prepended is ignored', () => {
    expect(clientAddress(req('127.0.0.1', '6.6.6.6, 198.51.100.1, 10.0.0.2'), trusted)).toBe('198.51.100.1');
    expect(clientAddress(req('127.0.0.1', ['6.6.6.6', '198.51.100.1']), trusted)).toBe('198.51.100.1'); // repeated header
    expect(clientAddress(req('127.0.0.1', '2001:db8::7'), trusted)).toBe('2001:db8::7');
  });

  it('falls back to the proxy itself: no header, only trusted hops, or a hop that is not an address', () => {
    expect(clientAddress(req('127.0.0.1'), trusted)).toBe('127.0.0.1');
    expect(clientAddress(req('127.0.0.1', ''), trusted)).toBe('127.0.0.1');
    expect(clientAddress(req('127.0.0.1', '10.0.0.2, ::1'), trusted)).toBe('127.0.0.1');
    expect(clientAddress(req('127.0.0.1', '198.51.100.1, unknown'), trusted)).toBe('127.0.0.1');
    expect(clientAddress(req('127.0.0.1', '198.51.100.1:4431'), trusted)).toBe('127.0.0.1');
    expect(clientAddress(req(undefined, '198.51.100.1'), trusted)).toBe('unknown');
  });

  it('trusted proxies must be IP addresses; the command line says which one is not', () => {
    expect(normalizeAddress(' ::FFFF:10.0.0.2 ')).toBe('10.0.0.2');
    expect([...parseTrustedProxies(['10.0.0.2', ' ', '::ffff:10.0.0.3'])]).toEqual(['10.0.0.2', '10.0.0.3']);
    for (const bad of ['10.0.0.0/8', 'proxy.local', '10.0.0.2:80', '999.1.1.1']) expect(() => parseTrustedProxies([bad])).toThrow(new RegExp(`"${bad.replace(/[./]/g, '\\$&')}" is not an IP address`));
    expect(trustedProxiesFrom(['10.0.0.2'], ' 10.0.0.3 ,')).toEqual(['10.0.0.2', '10.0.0.3']);
    expect(() => trustedProxiesFrom(undefined, '10.0.0.2,lb')).toThrow(UsageError);
  });
});

const Q = { query: '{ health { status } }' };

describe('behind a trusted proxy', () => {
  it('rate limits each forwarded client on its own; without the proxy trusted, all of them share one bucket', async () => {
    for (const trusted of [true, false]) {
      const s = await start({ engine: new FakeEngine(), limits: { rateLimitPerSecond: 0.5, rateLimitBurst: 2 }, ...(trusted ? { trustedProxies: ['127.0.0.1', '::1'] } : {}) });
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
    const s = await start({ engine: new FakeEngine(), limits: { maxWsConnectionsPerClient: 2, maxWsConnections: 3 }, trustedProxies: ['127.0.0.1', '::1'] });
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
      expect(keep(await open(s, { 'x-forwarded-for': '198.51.100.2' }))).toBe('open'); // another client
      expect(keep(await open(s, { 'x-forwarded-for': '198.51.100.3' }))).toBe(429); // the fourth in all
      const text = s.runtime.metrics.render();
      expect(text).toMatch(/^hyperbagel_gateway_ws_connections_refused_total\{reason="per_client"\} 1$/m);
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
