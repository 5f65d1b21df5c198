// The contract at the transport edges: the response format is settled before anything executes (a
// streamed operation whose Accept header admits no streaming format gets 406 and a typed JSON error,
// and the model never runs); every error a client sees, request-level ones included, carries an
// ErrorCode from the schema on every transport, without yoga's internals; and errors_total counts
// each error a client gets exactly once, subscription start errors included.
import { request as httpRequest } from 'node:http';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { acceptsAny, type RunningServer } from '../../src/gateway/server.ts';
import { ErrorCodeValues } from '../../src/gateway/schema-types.ts';
import { FakeEngine } from './fake-engine.ts';
import { gqlPost, parseMultipart, parseSse, start, waitFor, wsClient, wsRun, type Payload } from './helpers.ts';

const BODY_LIMIT = 64 * 1024;
let engine: FakeEngine;
let server: RunningServer;
beforeAll(async () => {
  engine = new FakeEngine({ stepMs: 2, tokens: 3, nfeMs: 2 });
  server = await start({ engine, limits: { maxBodyBytes: BODY_LIMIT, maxImageBytes: 2048 } });
});
afterAll(async () => {
  await server?.close();
});

interface Res {
  status: number;
  contentType: string;
  text: string;
  json: any;
}

/** An HTTP request through node:http, so that a missing Accept header stays missing (fetch adds one). */
function send(s: RunningServer, method: 'GET' | 'POST' | 'PUT', body: unknown, headers: Record<string, string | undefined> = {}): Promise<Res> {
  const url = new URL(s.url);
  let payload: string | undefined;
  if (method === 'GET') url.search = new URLSearchParams(body as Record<string, string>).toString();
  else payload = typeof body === 'string' ? body : JSON.stringify(body);
  const h: Record<string, string> = {};
  for (const [k, v] of Object.entries({ 'content-type': payload === undefined ? undefined : 'application/json', ...headers })) if (v !== undefined) h[k] = v;
  return new Promise((resolve, reject) => {
    const req = httpRequest(url, { method, headers: h }, (res) => {
      let text = '';
      res.setEncoding('utf8');
      res.on('data', (c: string) => (text += c));
      res.on('end', () => {
        let json: unknown;
        try {
          json = JSON.parse(text);
        } catch {
          json = undefined;
        }
        resolve({ status: res.statusCode!, contentType: String(res.headers['content-type'] ?? ''), text, json });
      });
      res.on('error', reject);
    });
    req.on('error', reject);
    req.end(payload);
  });
}

/** application/json, or application/graphql-response+json when the client asked for that */
const JSON_TYPE = /^application\/(graphql-response\+)?json/;
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

async function metricsText(s: RunningServer): Promise<string> {
  return (await fetch(s.url.replace(/\/graphql$/, '/metrics'))).text();
}
/** A sample of a series (0 when absent); `labels` as they appear between the braces. */
async function sample(s: RunningServer, name: string, labels?: string): Promise<number> {
  const series = labels ? `${name}{${labels}}` : name;
  const line = (await metricsText(s)).split('\n').find((l) => l.startsWith(`${series} `));
  return line ? Number(line.slice(series.length + 1)) : 0;
}
const ERRORS = 'hyperbagel_gateway_errors_total';
const errorsOf = (s: RunningServer, code: string) => sample(s, ERRORS, `code="${code}"`);
/** errors_total by code */
async function errorCounts(s: RunningServer): Promise<Record<string, number>> {
  const out: Record<string, number> = {};
  for (const m of (await metricsText(s)).matchAll(/^hyperbagel_gateway_errors_total\{code="([^"]+)"\} (\S+)$/gm)) out[m[1]!] = Number(m[2]);
  return out;
}
const delta = (before: Record<string, number>, after: Record<string, number>) => {
  const d: Record<string, number> = {};
  for (const k of new Set([...Object.keys(before), ...Object.keys(after)])) if ((after[k] ?? 0) !== (before[k] ?? 0)) d[k] = (after[k] ?? 0) - (before[k] ?? 0);
  return d;
};

const CODES = new Set<string>(ErrorCodeValues);
/** Every error is typed with the schema's ErrorCode and carries none of yoga's internals. */
function expectTyped(errors: any[] | undefined, code?: string): void {
  expect(errors?.length).toBeGreaterThan(0);
  for (const e of errors!) {
    expect(CODES.has(e.extensions?.code), JSON.stringify(e)).toBe(true);
    if (code) expect(e.extensions.code).toBe(code);
    expect(e.extensions).not.toHaveProperty('originalError');
    expect(e.extensions).not.toHaveProperty('http');
    expect(e.extensions).not.toHaveProperty('unexpected');
  }
}

/** The errors a graphql-ws operation ended with: an `error` message, or errors in its last `next`. */
async function wsErrors(s: RunningServer, query: string, variables?: Record<string, unknown>): Promise<any[] | undefined> {
  const client = wsClient(s);
  try {
    return await wsRun(client, query, variables).then(
      (out) => out.at(-1)?.errors as any[] | undefined,
      (e) => e.errors as any[],
    );
  } finally {
    await client.dispose();
  }
}

const DEFER = 'mutation { generateImage(input: { prompt: "a photo of a red circle", mode: BASELINE }) { id ... @defer { result { stage } } } }';
const SUB = 'subscription { understand(input: { prompt: "x", maxTokens: 3 }) { text done } }';
const TOKENS = 'hyperbagel_gateway_generated_tokens_total';

describe('acceptsAny', () => {
  it('reads an Accept header as yoga\'s result processors do', () => {
    const SSE = ['text/event-stream'];
    const STREAMS = ['text/event-stream', 'multipart/mixed'];
    for (const accept of [null, undefined, '', '*/*', 'text/*', 'Text/Event-Stream', 'application/json, text/event-stream', 'text/event-stream;charset=utf-8'])
      expect(acceptsAny(accept, SSE), String(accept)).toBe(true);
    // yoga ignores q-values (q=0 included) and skips an entry with another charset
    expect(acceptsAny('text/event-stream;q=0', SSE)).toBe(true);
    expect(acceptsAny('text/event-stream; charset=latin1', SSE)).toBe(false);
    expect(acceptsAny('application/json', STREAMS)).toBe(false);
    expect(acceptsAny('multipart/mixed', SSE)).toBe(false);
    // Apollo Client's Accept for @defer
    expect(acceptsAny('multipart/mixed;deferSpec=20220824,application/json', STREAMS)).toBe(true);
  });
});

describe('Accept is settled before anything executes', () => {
  it('@defer with Accept: application/json: 406 with a typed JSON error naming the streaming types; no job is created', async () => {
    const jobs = server.runtime.jobs.size;
    const generated = engine.requests.generate.length;
    for (const accept of ['application/json', 'application/graphql-response+json', 'text/html']) {
      const r = await send(server, 'POST', { query: DEFER }, { accept });
      expect(r.status, accept).toBe(406);
      expect(r.contentType).toMatch(JSON_TYPE);
      expectTyped(r.json.errors, 'INVALID_INPUT');
      expect(r.json.errors[0].message).toContain('text/event-stream');
      expect(r.json.errors[0].message).toContain('multipart/mixed');
      expect(r.json.data).toBeUndefined();
    }
    await sleep(50);
    expect(engine.requests.generate.length).toBe(generated);
    expect(server.runtime.jobs.size).toBe(jobs);
  });

  it('a subscription over GET or POST with an Accept that admits no event stream: 406, and the engine never runs', async () => {
    const understood = engine.requests.understand.length;
    const tokens = await sample(server, TOKENS);
    // yoga streams a subscription only as SSE: multipart/mixed is no way to receive one either
    for (const accept of ['application/json', 'application/graphql-response+json', 'multipart/mixed', 'text/html'])
      for (const method of ['GET', 'POST'] as const) {
        if (method === 'GET' && accept === 'text/html') continue; // GraphiQL's page (dev), prefilled: nothing runs either
        const r = await send(server, method, { query: SUB }, { accept });
        expect(r.status, `${method} ${accept}`).toBe(406);
        expect(r.contentType).toMatch(JSON_TYPE);
        expectTyped(r.json.errors, 'INVALID_INPUT');
        expect(r.json.errors[0].message).toContain('text/event-stream');
      }
    await sleep(50);
    expect(engine.requests.understand.length).toBe(understood);
    expect(await sample(server, TOKENS)).toBe(tokens);
  });

  it('keeps streaming for every Accept yoga streams in (none, */*, text/*, the media type itself, a list naming it)', async () => {
    for (const accept of [undefined, '*/*', 'text/*', 'text/event-stream', 'application/json, text/event-stream', 'text/event-stream; charset=utf-8']) {
      const r = await send(server, 'POST', { query: SUB }, { accept });
      expect(r.status, String(accept)).toBe(200);
      expect(r.contentType).toContain('text/event-stream');
      expect((parseSse(r.text).at(-1)!.data as any).understand.done).toBe(true);
    }
    for (const accept of [undefined, '*/*', 'multipart/mixed', 'multipart/*', 'text/event-stream', 'application/json, multipart/mixed']) {
      const r = await send(server, 'POST', { query: DEFER }, { accept });
      expect(r.status, String(accept)).toBe(200);
      const payloads: Payload[] = r.contentType.includes('multipart/mixed') ? parseMultipart(r.text) : parseSse(r.text);
      expect(payloads.length, String(accept)).toBeGreaterThan(1);
      expect(r.text).toContain('"FINAL"');
    }
  });

  it('answers single results as before (@defer turned off included), and refuses one whose Accept admits no format before running it', async () => {
    for (const accept of [undefined, '*/*', 'application/json', 'application/graphql-response+json', 'text/event-stream', 'multipart/mixed']) {
      const r = await send(server, 'POST', { query: '{ health { status } }' }, { accept });
      expect(r.status, String(accept)).toBe(200);
      expect(r.text).toContain('"ok"');
    }
    // @defer/@stream turned off, or only in an operation that does not run: a single JSON result
    const single = [
      { query: DEFER.replace('@defer', '@defer(if: false)') },
      { query: DEFER.replace('mutation {', 'mutation M($d: Boolean!) {').replace('@defer', '@defer(if: $d)'), variables: { d: false } },
      { query: DEFER.replace('mutation {', 'mutation M($d: Boolean = false) {').replace('@defer', '@defer(if: $d)') },
      { query: `${DEFER.replace('mutation {', 'mutation Streamed {')} query Plain { health { status } }`, operationName: 'Plain' },
    ];
    for (const body of single) {
      const r = await send(server, 'POST', body, { accept: 'application/json' });
      expect(r.status, body.query).toBe(200);
      expect(r.json.errors, body.query).toBeUndefined();
      expect(r.text).toMatch(/"FINAL"|"ok"/);
    }
    const generated = engine.requests.generate.length;
    const r = await send(server, 'POST', { query: 'mutation { generateImage(input: { prompt: "x" }) { id } }' }, { accept: 'text/html' });
    expect(r.status).toBe(406);
    expectTyped(r.json.errors, 'INVALID_INPUT');
    expect(r.json.errors[0].message).toContain('application/json');
    await sleep(50);
    expect(engine.requests.generate.length).toBe(generated);
  });
});

describe('every error carries an ErrorCode from the schema', () => {
  const MUT = 'mutation($i: GenerateImageInput!) { generateImage(input: $i) { id } }';
  const JSON_ACCEPT = { accept: 'application/json' };

  it('HTTP request-level errors are INVALID_INPUT (limits stay QUERY_TOO_COMPLEX), with the statuses yoga sets and no internals', async () => {
    const cases: Array<[string, Promise<Res>, number, string]> = [
      ['syntax error', send(server, 'POST', { query: '{ health {' }, JSON_ACCEPT), 200, 'INVALID_INPUT'],
      ['syntax error (graphql-response+json)', send(server, 'POST', { query: '{ health {' }, { accept: 'application/graphql-response+json' }), 400, 'INVALID_INPUT'],
      ['unknown field', send(server, 'POST', { query: '{ nope }' }, JSON_ACCEPT), 200, 'INVALID_INPUT'],
      ['input: null', send(server, 'POST', { query: 'mutation { generateImage(input: null) { id } }' }, JSON_ACCEPT), 200, 'INVALID_INPUT'],
      ['missing variable', send(server, 'POST', { query: MUT }, JSON_ACCEPT), 400, 'INVALID_INPUT'],
      ['invalid JSON body', send(server, 'POST', '{"query": ', JSON_ACCEPT), 400, 'INVALID_INPUT'],
      ['a batch', send(server, 'POST', [{ query: '{ health { status } }' }], JSON_ACCEPT), 400, 'INVALID_INPUT'],
      ['no query', send(server, 'POST', {}, JSON_ACCEPT), 200, 'INVALID_INPUT'],
      ['two operations, no operationName', send(server, 'POST', { query: 'query A { health { status } } query B { health { status } }' }, JSON_ACCEPT), 400, 'INVALID_INPUT'],
      ['an unknown operationName', send(server, 'POST', { query: 'query A { health { status } }', operationName: 'B' }, JSON_ACCEPT), 400, 'INVALID_INPUT'],
      ['a mutation over GET', send(server, 'GET', { query: 'mutation { createSession }' }, JSON_ACCEPT), 405, 'INVALID_INPUT'],
      ['PUT', send(server, 'PUT', { query: '{ health { status } }' }, JSON_ACCEPT), 405, 'INVALID_INPUT'],
      ['body over the limit', send(server, 'POST', { query: `{ health { status } }${' '.repeat(BODY_LIMIT)}` }, JSON_ACCEPT), 413, 'INVALID_INPUT'],
      ['too many aliases', send(server, 'POST', { query: `{ ${Array.from({ length: 20 }, (_, i) => `a${i}: health { status }`).join(' ')} }` }, JSON_ACCEPT), 200, 'QUERY_TOO_COMPLEX'],
    ];
    for (const [name, p, status, code] of cases) {
      const r = await p;
      expect(r.status, name).toBe(status);
      expect(r.contentType, name).toMatch(JSON_TYPE);
      expectTyped(r.json.errors, code);
    }
    const bad = await send(server, 'POST', '{"query": ', JSON_ACCEPT);
    expect(bad.json.errors[0].message).toBe('POST body sent invalid JSON.');
    expect(bad.text).not.toContain('SyntaxError');
  });

  it('graphql-ws: the same errors are typed, without yoga\'s extensions.http', async () => {
    const cases: Array<[string, string, Record<string, unknown> | undefined, string]> = [
      ['syntax error', '{ health {', undefined, 'INVALID_INPUT'],
      ['unknown field', '{ nope }', undefined, 'INVALID_INPUT'],
      ['input: null', 'mutation { generateImage(input: null) { id } }', undefined, 'INVALID_INPUT'],
      ['missing variable', MUT, undefined, 'INVALID_INPUT'],
      ['two operations, no operationName', 'query A { health { status } } query B { health { status } }', undefined, 'INVALID_INPUT'],
      ['too many aliases', `{ ${Array.from({ length: 20 }, (_, i) => `a${i}: health { status }`).join(' ')} }`, undefined, 'QUERY_TOO_COMPLEX'],
      ['subscription, unknown session', 'subscription { understand(input: { prompt: "x", sessionId: "nope" }) { text } }', undefined, 'SESSION_NOT_FOUND'],
    ];
    for (const [name, query, variables, code] of cases) {
      const errors = await wsErrors(server, query, variables);
      expect(errors, name).toBeDefined();
      expectTyped(errors, code);
    }
  });

  it('SSE: a subscription refused by validation gets a typed error', async () => {
    const r = await send(server, 'POST', { query: 'subscription { understand(input: null) { text } }' }, { accept: 'text/event-stream' });
    expect(r.contentType).toContain('text/event-stream');
    expectTyped(parseSse(r.text)[0]!.errors as any[], 'INVALID_INPUT');
  });
});

describe('errors_total counts every error a client gets, once', () => {
  const U = 'subscription U($input: UnderstandInput!) { understand(input: $input) { text done } }';
  const J = 'subscription J($id: ID!, $after: Int) { imageJob(id: $id, after: $after) { seq } }';
  const big = Buffer.alloc(4000, 7).toString('base64');
  const starts: Array<[string, string, Record<string, unknown>]> = [
    ['SESSION_NOT_FOUND', U, { input: { prompt: 'x', sessionId: 'nope' } }],
    ['BAD_IMAGE', U, { input: { prompt: 'x', image: { base64: '!!!!' } } }],
    ['IMAGE_TOO_LARGE', U, { input: { prompt: 'x', image: { base64: big } } }],
    ['OUT_OF_RANGE', U, { input: { prompt: 'x', maxTokens: 100_000 } }],
    ['JOB_NOT_FOUND', J, { id: 'nope' }],
  ];

  it('counts the errors a subscription fails with at its start, over SSE and graphql-ws', async () => {
    const before = await errorCounts(server);
    const seen: Record<string, number> = {};
    for (const [code, query, variables] of starts) {
      const r = await send(server, 'POST', { query, variables }, { accept: 'text/event-stream' });
      expectTyped(parseSse(r.text)[0]!.errors as any[], code);
      expectTyped(await wsErrors(server, query, variables), code);
      seen[code] = 2;
    }
    // a job that exists, resumed from a negative cursor
    const job = await gqlPost(server, { query: 'mutation { generateImage(input: { prompt: "x", mode: ONE_STEP }) { id } }' });
    const id = job.json.data.generateImage.id as string;
    expectTyped(await wsErrors(server, J, { id, after: -1 }), 'OUT_OF_RANGE');
    seen['OUT_OF_RANGE']! += 1;
    expect(delta(before, await errorCounts(server))).toEqual(seen);
  });

  it('counts BUSY on understand like busy_rejections_total does', async () => {
    const slow = new FakeEngine({ stepMs: 50, tokens: 1000 });
    const s = await start({ engine: slow, limits: { maxConcurrentJobs: 1, maxQueuedJobs: 0 } });
    const client = wsClient(s);
    try {
      const hold = client.subscribe({ query: SUB.replace('maxTokens: 3', 'maxTokens: 1000') }, { next: () => {}, error: () => {}, complete: () => {} });
      await waitFor(() => s.runtime.scheduler.runningCount === 1, 'the slot to be taken');
      for (let i = 0; i < 3; i++) {
        expectTyped(await wsErrors(s, SUB), 'BUSY');
        const r = await send(s, 'POST', { query: SUB }, { accept: 'text/event-stream' });
        expectTyped(parseSse(r.text)[0]!.errors as any[], 'BUSY');
      }
      expect(code(await gqlPost(s, { query: 'mutation { generateImage(input: { prompt: "x" }) { id } }' }))).toBe('BUSY');
      hold();
      const busy = await sample(s, 'hyperbagel_gateway_busy_rejections_total');
      expect(busy).toBe(7);
      expect(await errorsOf(s, 'BUSY')).toBe(busy);
    } finally {
      await client.dispose();
      await s.close();
    }
  });

  it('counts an understand stream failing mid-way and a failed image job once each', async () => {
    const before = await errorCounts(server);
    // the fake engine throws after its first chunk: resolvers count it where the stream ends
    const ws = await wsErrors(server, U, { input: { prompt: 'explode' } });
    expectTyped(ws, 'INTERNAL');
    const sse = await send(server, 'POST', { query: U, variables: { input: { prompt: 'explode' } } }, { accept: 'text/event-stream' });
    expectTyped(parseSse(sse.text).at(-1)!.errors as any[], 'INTERNAL');
    expect(delta(before, await errorCounts(server))).toEqual({ INTERNAL: 2 });
    // a failed job is counted when it fails; its `result` reporting it is the same error
    const plain = await gqlPost(server, { query: 'mutation { generateImage(input: { prompt: "explode" }) { id result { stage } } }' });
    expectTyped(plain.json.errors, 'INTERNAL');
    const deferred = await send(server, 'POST', { query: 'mutation { generateImage(input: { prompt: "explode" }) { id ... @defer { result { stage } } } }' }, { accept: 'multipart/mixed' });
    expect(deferred.text).toContain('"INTERNAL"');
    await waitFor(() => engine.stats.active === 0, 'the engine to settle');
    expect(delta(before, await errorCounts(server))).toEqual({ INTERNAL: 4 });
  });

  it('counts request-level errors and refusals: syntax, validation, 406, graphql-ws refusals', async () => {
    const before = await errorCounts(server);
    await send(server, 'POST', { query: '{ health {' });
    await send(server, 'POST', { query: '{ nope }' });
    await send(server, 'POST', '{"query": ');
    await send(server, 'POST', { query: SUB }, { accept: 'application/json' });
    await wsErrors(server, '{ nope }');
    await wsErrors(server, 'query A { health { status } } query B { health { status } }');
    expect(delta(before, await errorCounts(server))).toEqual({ INVALID_INPUT: 6 });
  });
});

const code = (r: { json: any }) => r.json.errors?.[0]?.extensions?.code;
