// API keys and the GraphiQL page: only the page itself (GraphiQL on, a GET carrying no operation) is
// served without a key. An Accept header that merely names text/html never exempts an operation,
// over GET or POST, for single results or SSE subscriptions, with GraphiQL on or off.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { isGraphiqlPage, type RunningServer } from '../../src/gateway/server.ts';
import { FakeEngine } from './fake-engine.ts';
import { httpStream, parseSse, start } from './helpers.ts';

const KEY = { authorization: 'Bearer k-one' };
const HEALTH = '{ health { status } }';
const UNDERSTAND = 'subscription { understand(input: { prompt: "x", maxTokens: 2 }) { text done } }';

async function get(s: RunningServer, params: Record<string, string> | string, headers: Record<string, string>) {
  const qs = typeof params === 'string' ? params : new URLSearchParams(params).toString();
  const res = await fetch(`${s.url}${qs ? `?${qs}` : ''}`, { headers });
  return { status: res.status, contentType: res.headers.get('content-type') ?? '', body: await res.text() };
}

const unauthenticated = (r: { status: number; body: string }) => {
  expect(r.status).toBe(401);
  expect(JSON.parse(r.body).errors[0].extensions.code).toBe('UNAUTHENTICATED');
};

/**
 * A GET for HTML that carries an operation, without a key: with GraphiQL on, yoga answers it with
 * the page (prefilled, nothing executed) before the key check runs; with it off, 401. Never data.
 */
const refusedHtmlGet = (dev: boolean, r: { status: number; contentType: string; body: string }) => {
  if (!dev) return unauthenticated(r);
  expect(r.status).toBe(200);
  expect(r.contentType).toContain('text/html');
  expect(r.body.trimStart().toLowerCase().startsWith('<!doctype html>')).toBe(true);
  expect(r.body.toLowerCase()).toContain('graphiql');
  expect(r.body).not.toContain('"health":{"status"'); // the page, not the query's result
};

describe('isGraphiqlPage', () => {
  it('is the page only with GraphiQL on, for a GET asking for HTML with no operation parameters', () => {
    expect(isGraphiqlPage(true, 'GET', 'text/html', '/graphql')).toBe(true);
    expect(isGraphiqlPage(true, 'GET', 'text/html,application/xhtml+xml', '/graphql?theme=dark')).toBe(true);
    expect(isGraphiqlPage(false, 'GET', 'text/html', '/graphql')).toBe(false);
    expect(isGraphiqlPage(true, 'POST', 'text/html', '/graphql')).toBe(false);
    expect(isGraphiqlPage(true, 'GET', 'application/json', '/graphql')).toBe(false);
    expect(isGraphiqlPage(true, 'GET', undefined, '/graphql')).toBe(false);
    for (const q of ['query={a}', 'query=', 'query', 'variables={}', 'operationName=A', 'extensions={}', '%71uery=%7Ba%7D', 'x=1&query=%7Ba%7D'])
      expect(isGraphiqlPage(true, 'GET', 'text/html', `/graphql?${q}`), q).toBe(false);
  });
});

for (const dev of [false, true]) {
  describe(`API keys with GraphiQL ${dev ? 'on' : 'off'}`, () => {
    let engine: FakeEngine;
    let server: RunningServer;
    beforeAll(async () => {
      engine = new FakeEngine({ stepMs: 2, tokens: 2 });
      server = await start({ engine, apiKeys: ['k-one'], dev });
    });
    afterAll(async () => {
      await server?.close();
    });

    it('GET with a query and Accept: text/html needs the key', async () => {
      for (const accept of ['text/html, application/json', 'text/html', 'application/json, text/html;q=0.9']) {
        refusedHtmlGet(dev, await get(server, { query: HEALTH }, { accept }));
        refusedHtmlGet(dev, await get(server, { query: HEALTH, operationName: '' }, { accept }));
      }
      // the other GET parameters alone, or a percent-encoded name, are operations too
      refusedHtmlGet(dev, await get(server, 'extensions=%7B%7D', { accept: 'text/html' }));
      refusedHtmlGet(dev, await get(server, '%71uery=%7B%20health%20%7B%20status%20%7D%20%7D', { accept: 'text/html, application/json' }));
      unauthenticated(await get(server, { query: HEALTH }, { accept: 'application/json' }));
      const ok = await get(server, { query: HEALTH }, { accept: 'application/json', ...KEY });
      expect(JSON.parse(ok.body).data.health.status).toBe('ok');
    });

    it('SSE over GET needs the key and runs no model work without it', async () => {
      const started = engine.stats.understandStarted;
      refusedHtmlGet(dev, await get(server, { query: UNDERSTAND }, { accept: 'text/html, text/event-stream' }));
      unauthenticated(await get(server, { query: UNDERSTAND }, { accept: 'text/event-stream' }));
      expect(engine.stats.understandStarted).toBe(started);
      const ok = await get(server, { query: UNDERSTAND }, { accept: 'text/event-stream', ...KEY });
      expect(ok.contentType).toContain('text/event-stream');
      expect((parseSse(ok.body).at(-1)!.data as any).understand.done).toBe(true);
      expect(engine.stats.understandStarted).toBe(started + 1);
    });

    it('SSE over POST needs the key and runs no model work without it', async () => {
      const started = engine.stats.understandStarted;
      for (const accept of ['text/html, text/event-stream', 'text/event-stream'] as const) {
        const res = await fetch(server.url, { method: 'POST', headers: { 'content-type': 'application/json', accept }, body: JSON.stringify({ query: UNDERSTAND }) });
        unauthenticated({ status: res.status, body: await res.text() });
      }
      expect(engine.stats.understandStarted).toBe(started);
      const ok = await httpStream(server, 'text/event-stream', { query: UNDERSTAND }, { headers: KEY });
      expect((ok.payloads.at(-1)!.data as any).understand.done).toBe(true);
      expect(engine.stats.understandStarted).toBe(started + 1);
    });

    it(dev ? 'serves the GraphiQL page without a key' : 'has no public page: a bare GET for HTML needs the key too', async () => {
      const page = await get(server, '', { accept: 'text/html' });
      if (dev) {
        expect(page.status).toBe(200);
        expect(page.body.toLowerCase()).toContain('graphiql');
        // self-contained: no script, stylesheet or icon fetched from elsewhere (it must work offline)
        expect(page.body).not.toMatch(/<script[^>]*\ssrc=/i);
        expect(page.body).not.toMatch(/<link[^>]*\shref="(https?:)?\/\//i);
        expect(page.body).not.toContain('unpkg.com');
      } else unauthenticated(page);
    });
  });
}

describe('the GraphiQL page', () => {
  let server: RunningServer;
  beforeAll(async () => {
    server = await start({ engine: new FakeEngine(), dev: true, limits: { rateLimitPerSecond: 0.001, rateLimitBurst: 4 } });
  });
  afterAll(async () => {
    await server?.close();
  });

  it('is rendered once and sent as the same bytes (gzipped when asked, 304 when held), and counts in the rate limit', async () => {
    const a = await fetch(server.url, { headers: { accept: 'text/html' } });
    const body = await a.text();
    expect(a.status).toBe(200);
    expect(body.toLowerCase()).toContain('graphiql');
    const etag = a.headers.get('etag')!;
    expect(etag).toMatch(/^"[\w-]{22}"$/);
    // node's fetch asks for gzip and decodes it: the same page, in fewer bytes on the wire
    const b = await fetch(server.url, { headers: { accept: 'text/html', 'accept-encoding': 'gzip' } });
    expect(b.headers.get('content-encoding')).toBe('gzip');
    expect(Number(b.headers.get('content-length'))).toBeLessThan(body.length / 2);
    expect(await b.text()).toBe(body);
    const held = await fetch(server.url, { headers: { accept: 'text/html', 'if-none-match': etag } });
    expect(held.status).toBe(304);
    // a GET with a query (GraphiQL prefills it) gets the same cached page
    const prefilled = await fetch(`${server.url}?query=${encodeURIComponent('{ health { status } }')}`, { headers: { accept: 'text/html', 'if-none-match': etag } });
    expect(prefilled.status).toBe(304);
    // the burst of 4 is spent: the page is refused like an operation would be
    const over = await fetch(server.url, { headers: { accept: 'text/html' } });
    expect(over.status).toBe(429);
  });
});
