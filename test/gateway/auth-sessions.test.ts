import sharp from 'sharp';
import WebSocket from 'ws';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { RunningServer } from '../../src/gateway/server.ts';
import { FakeEngine } from './fake-engine.ts';
import { gqlPost, start, waitFor, wsClient, wsRun, wsUrl } from './helpers.ts';

describe('auth', () => {
  let server: RunningServer;
  beforeAll(async () => {
    server = await start({ engine: new FakeEngine(), apiKeys: ['k-one', 'k-two'] });
  });
  afterAll(async () => {
    await server?.close();
  });
  const Q = { query: '{ health { status } }' };

  it('HTTP: 401 without a key, ok with a Bearer key', async () => {
    const none = await gqlPost(server, Q);
    expect(none.status).toBe(401);
    expect(none.json.errors[0].extensions.code).toBe('UNAUTHENTICATED');
    expect((await gqlPost(server, Q, { authorization: 'Bearer wrong' })).status).toBe(401);
    const ok = await gqlPost(server, Q, { authorization: 'Bearer k-two' });
    expect(ok.json.data.health.status).toBe('ok');
    const base = server.url.replace('/graphql', '');
    expect((await fetch(`${base}/metrics`)).status).toBe(401);
    expect((await fetch(`${base}/metrics`, { headers: { authorization: 'Bearer k-one' } })).status).toBe(200);
    expect((await fetch(`${base}/health`)).status).toBe(200);
  });

  it('graphql-ws: closes with 4403 without a key; accepts it in connection_init or the upgrade header', async () => {
    let closed: number | undefined;
    const bad = wsClient(server, { authorization: 'Bearer nope' }, (c) => (closed = c));
    await wsRun(bad, Q.query).catch(() => undefined);
    expect(closed).toBe(4403);
    await bad.dispose();
    closed = undefined;
    const none = wsClient(server, undefined, (c) => (closed = c));
    await wsRun(none, Q.query).catch(() => undefined);
    expect(closed).toBe(4403);
    await none.dispose();

    const good = wsClient(server, { authorization: 'Bearer k-one' });
    const out = await wsRun(good, Q.query);
    expect((out[0]!.data as any).health.status).toBe('ok');
    await good.dispose();

    const ws = new WebSocket(wsUrl(server), 'graphql-transport-ws', { headers: { authorization: 'Bearer k-two' } });
    await new Promise((r) => ws.once('open', r));
    ws.send(JSON.stringify({ type: 'connection_init' }));
    const ack = JSON.parse(String(await new Promise((r) => ws.once('message', r))));
    expect(ack.type).toBe('connection_ack');
    ws.close();
  });

  it('is off by default', async () => {
    const open = await start({ engine: new FakeEngine() });
    try {
      expect((await gqlPost(open, Q)).json.data.health.status).toBe('ok');
      const c = wsClient(open);
      expect((await wsRun(c, Q.query))[0]!.data).toEqual({ health: { status: 'ok' } });
      await c.dispose();
    } finally {
      await open.close();
    }
  });
});

describe('sessions', () => {
  let engine: FakeEngine;
  let server: RunningServer;
  beforeAll(async () => {
    engine = new FakeEngine({ stepMs: 2, tokens: 3, nfeMs: 2 });
    server = await start({ engine, limits: { maxSessions: 2, maxSessionTokens: 20 } });
  });
  afterAll(async () => {
    await server?.close();
  });
  const create = async () => (await gqlPost(server, { query: 'mutation { createSession }' })).json.data.createSession as string;
  const U = `subscription U($input: UnderstandInput!) { understand(input: $input) { done fullText } }`;

  it('shares one context across understand, generate and edit', async () => {
    const id = await create();
    const png = await sharp({ create: { width: 8, height: 8, channels: 3, background: '#0000ff' } }).png().toBuffer();
    const client = wsClient(server);
    try {
      const out = await wsRun(client, U, { input: { prompt: 'describe this image', sessionId: id, image: { base64: png.toString('base64') } } });
      expect((out.at(-1)!.data as any).understand.done).toBe(true);
      const handle = engine.requests.understand.at(-1)!.session!;
      expect(handle).toBeTruthy();
      // "now make the circle green": no image needed, the session holds it
      const r = await gqlPost(server, { query: `mutation($s: ID!) { editImage(input: { instruction: "now make the circle green", sessionId: $s, mode: ONE_STEP }) { result { nfe } } }`, variables: { s: id } });
      expect(r.json.errors).toBeUndefined();
      const req = engine.requests.generate.at(-1)!;
      expect(req.session).toBe(handle);
      // the engine keeps the session's latest image: the gateway asks it to edit that one
      expect(req.edit).toBe(true);
      expect(req.sourceImage).toBeUndefined();
      expect([...engine.editedImages.at(-1)!.data.slice(0, 3)]).toEqual([0, 0, 255]);
      // the edit's result becomes the session's image
      await gqlPost(server, { query: `mutation($s: ID!) { editImage(input: { instruction: "again", sessionId: $s, mode: ONE_STEP }) { id } }`, variables: { s: id } });
      await waitFor(() => engine.stats.active === 0, 'edit to finish');
      expect(engine.requests.generate.at(-1)!.edit).toBe(true);
      expect([...engine.editedImages.at(-1)!.data.slice(0, 3)]).toEqual([200, 200, 200]);
      // and an understand turn without an image is about it
      const asked = await wsRun(client, `subscription U($input: UnderstandInput!) { understand(input: $input) { done inputImage { source width originalWidth } } }`, {
        input: { prompt: 'what colour is the circle now?', sessionId: id },
      });
      expect(engine.requests.understand.at(-1)!.image).toBeUndefined();
      expect(engine.requests.understand.at(-1)!.session).toBe(handle);
      expect((asked.at(-1)!.data as any).understand).toEqual({ done: true, inputImage: { source: 'SESSION', width: 8, originalWidth: 8 } });
    } finally {
      await client.dispose();
    }
  });

  it('an edit without an image needs a session holding one; the source image is reported', async () => {
    const id = await create();
    const client = wsClient(server);
    try {
      const edit = (vars: Record<string, unknown>) =>
        gqlPost(server, {
          query: `mutation($i: EditImageInput!) { editImage(input: $i) { result { stage sourceImage { source originalWidth originalHeight width height resized cropped } } } }`,
          variables: { i: { instruction: 'make it green', mode: 'ONE_STEP', ...vars } },
        });
      const calls = engine.requests.generate.length;
      expect((await edit({})).json.errors[0].extensions.code).toBe('INVALID_INPUT');
      // the session has no image yet (the engine's sessionInfo says so): rejected before any work
      expect((await edit({ sessionId: id })).json.errors[0].extensions.code).toBe('INVALID_INPUT');
      expect(engine.requests.generate.length).toBe(calls);
      // and the session is not left locked
      // a non-square image of any size is sent on to the engine as decoded (it centre-crops and resizes)
      const wide = await sharp({ create: { width: 40, height: 20, channels: 3, background: '#ff0000' } }).png().toBuffer();
      const r = await edit({ sessionId: id, image: { base64: wide.toString('base64') } });
      expect(r.json.errors).toBeUndefined();
      expect([engine.requests.generate.at(-1)!.sourceImage!.width, engine.requests.generate.at(-1)!.sourceImage!.height]).toEqual([40, 20]);
      expect(r.json.data.editImage.result.sourceImage).toEqual({ source: 'REQUEST', originalWidth: 40, originalHeight: 20, width: 8, height: 8, resized: true, cropped: true });
      // now the session holds the edit's result: an edit without an image works
      const again = await edit({ sessionId: id });
      expect(again.json.errors).toBeUndefined();
      expect(again.json.data.editImage.result.sourceImage).toMatchObject({ source: 'SESSION', originalWidth: 8, resized: false, cropped: false });
    } finally {
      await client.dispose();
      await gqlPost(server, { query: `mutation($s: ID!) { closeSession(id: $s) }`, variables: { s: id } });
    }
  });

  it('a generated image becomes the session image the next understand turn is about', async () => {
    const id = await create();
    const client = wsClient(server);
    try {
      const g = await gqlPost(server, { query: `mutation($s: ID!) { generateImage(input: { prompt: "a red circle", sessionId: $s, mode: ONE_STEP }) { result { stage sourceImage { source } } } }`, variables: { s: id } });
      expect(g.json.data.generateImage.result).toEqual({ stage: 'FINAL', sourceImage: null });
      const q = `subscription U($input: UnderstandInput!) { understand(input: $input) { done inputImage { source } } }`;
      const first = await wsRun(client, q, { input: { prompt: 'describe it', sessionId: id } });
      expect((first.at(-1)!.data as any).understand.inputImage).toEqual({ source: 'SESSION' });
      // already in the conversation: not fed again
      const second = await wsRun(client, q, { input: { prompt: 'and now', sessionId: id } });
      expect((second.at(-1)!.data as any).understand.inputImage).toBeNull();
    } finally {
      await client.dispose();
    }
  });

  it('rejects unknown sessions, concurrent use and full contexts with typed errors', async () => {
    const client = wsClient(server);
    const codeOf = (p: Promise<unknown[]>) =>
      p.then(
        (out: any) => out.at(-1)?.errors?.[0]?.extensions?.code,
        (e) => e.errors?.[0]?.extensions?.code,
      );
    try {
      expect(await codeOf(wsRun(client, U, { input: { prompt: 'x', sessionId: 'nope' } }))).toBe('SESSION_NOT_FOUND');
      const id = await create();
      engine.stepMs = 50;
      const first = wsRun(client, U, { input: { prompt: 'x', sessionId: id, maxTokens: 5 } });
      await waitFor(() => engine.stats.active === 1, 'first to run');
      expect(await codeOf(wsRun(client, U, { input: { prompt: 'y', sessionId: id } }))).toBe('SESSION_BUSY');
      await first;
      engine.stepMs = 2;
      await wsRun(client, U, { input: { prompt: 'x', sessionId: id, maxTokens: 10 } });
      // 8 + 13 tokens > 20
      expect(await codeOf(wsRun(client, U, { input: { prompt: 'x', sessionId: id } }))).toBe('SESSION_FULL');
    } finally {
      await client.dispose();
    }
  });

  it('closeSession on a busy session is SESSION_BUSY and leaves the running request alone', async () => {
    const close = (s: string) => gqlPost(server, { query: `mutation($s: ID!) { closeSession(id: $s) }`, variables: { s } });
    const client = wsClient(server);
    try {
      const id = await create();
      const handle = server.runtime.sessions.get(id).handle;
      engine.stepMs = 40;
      const stream = wsRun(client, U, { input: { prompt: 'x', sessionId: id, maxTokens: 4 } });
      await waitFor(() => engine.stats.active === 1, 'the understand turn to run');
      const busy = await close(id);
      expect(busy.json.data).toBeNull();
      expect(busy.json.errors[0].extensions.code).toBe('SESSION_BUSY');
      expect(engine.liveSessions.has(handle.id)).toBe(true);
      // the stream ends normally, not with "unknown sequence" / INTERNAL
      const out = await stream;
      expect(out.every((p) => p.errors === undefined)).toBe(true);
      expect((out.at(-1)!.data as any).understand).toMatchObject({ done: true, fullText: 'w0 w1 w2 w3 ' });

      // an image job (detached: the mutation returns at once) holds the session until it ends
      engine.nfeMs = 40;
      const job = await gqlPost(server, { query: `mutation($s: ID!) { generateImage(input: { prompt: "x", sessionId: $s, mode: SIX_STEP }) { id } }`, variables: { s: id } });
      const jobId = job.json.data.generateImage.id as string;
      expect((await close(id)).json.errors[0].extensions.code).toBe('SESSION_BUSY');
      await waitFor(() => server.runtime.jobs.get(jobId).terminal, 'the job to end');
      expect(server.runtime.jobs.get(jobId).status).toBe('SUCCEEDED');
      // idle again: closed, in the engine too; a second close and an unknown id say false
      expect((await close(id)).json.data.closeSession).toBe(true);
      expect(engine.liveSessions.has(handle.id)).toBe(false);
      expect((await close(id)).json.data.closeSession).toBe(false);
      expect((await close('nope')).json.data.closeSession).toBe(false);
    } finally {
      engine.stepMs = 2;
      engine.nfeMs = 2;
      await client.dispose();
    }
  });

  it('is bounded in count (LRU eviction closes the engine session) and expires', async () => {
    const before = engine.stats.sessionsClosed;
    const a = await create();
    const b = await create();
    const c = await create();
    expect(server.runtime.sessions.size).toBe(2);
    expect(engine.stats.sessionsClosed).toBeGreaterThan(before);
    expect(engine.liveSessions.size).toBe(2);
    const use = (id: string) => gqlPost(server, { query: `mutation($s: ID!) { generateImage(input: { prompt: "x", sessionId: $s, mode: ONE_STEP }) { id } }`, variables: { s: id } });
    expect((await use(a)).json.errors[0].extensions.code).toBe('SESSION_NOT_FOUND');
    expect((await use(b)).json.errors).toBeUndefined();
    await waitFor(() => engine.stats.active === 0, 'job end');
    expect((await gqlPost(server, { query: `mutation($s: ID!) { closeSession(id: $s) }`, variables: { s: c } })).json.data.closeSession).toBe(true);

    const short = await start({ engine, limits: { sessionTtlMs: 30 } });
    try {
      const id = (await gqlPost(short, { query: 'mutation { createSession }' })).json.data.createSession;
      await new Promise((r) => setTimeout(r, 80));
      const r = await gqlPost(short, { query: `mutation($s: ID!) { generateImage(input: { prompt: "x", sessionId: $s }) { id } }`, variables: { s: id } });
      expect(r.json.errors[0].extensions.code).toBe('SESSION_NOT_FOUND');
    } finally {
      await short.close();
    }
  });

  it('an expired session not swept yet is a missing one: closeSession false, understand/generate/edit SESSION_NOT_FOUND; closeSession is counted', async () => {
    const fresh = new FakeEngine({ stepMs: 2, tokens: 3, nfeMs: 2 });
    // the TTL leaves room for four creations on a loaded machine (40 ms did not: the first session could expire
    // before the last was made); the sweep timer runs only every second, so the calls below still meet them listed
    const short = await start({ engine: fresh, limits: { sessionTtlMs: 250 } });
    const client = wsClient(short);
    try {
      const post = (query: string, s: string) => gqlPost(short, { query, variables: { s } });
      const ids: string[] = [];
      const handles: string[] = [];
      for (let i = 0; i < 4; i++) {
        ids.push((await gqlPost(short, { query: 'mutation { createSession }' })).json.data.createSession);
        handles.push(short.runtime.sessions.get(ids[i]!).handle.id);
      }
      const [a, b, c, d] = ids as [string, string, string, string];
      const closes = () => short.runtime.metrics.operations.get({ field: 'closeSession' });
      const closesBefore = closes();
      await new Promise((r) => setTimeout(r, 300)); // all four expired
      // each call below meets its own expired, still-listed session (nothing here sweeps the others)
      const closed = await post(`mutation($s: ID!) { closeSession(id: $s) }`, a);
      expect(closed.json).toEqual({ data: { closeSession: false } });
      expect(closes()).toBe(closesBefore + 1);
      const understood = await wsRun(client, U, { input: { prompt: 'x', sessionId: b } }).then(
        (out) => (out.at(-1) as any).errors?.[0]?.extensions?.code,
        (e) => e.errors?.[0]?.extensions?.code,
      );
      expect(understood).toBe('SESSION_NOT_FOUND');
      const edited = await post(`mutation($s: ID!) { editImage(input: { instruction: "make it blue", sessionId: $s, mode: ONE_STEP }) { id } }`, c);
      expect(edited.json.errors[0].extensions.code).toBe('SESSION_NOT_FOUND');
      const generated = await post(`mutation($s: ID!) { generateImage(input: { prompt: "x", sessionId: $s, mode: ONE_STEP }) { id } }`, d);
      expect(generated.json.errors[0].extensions.code).toBe('SESSION_NOT_FOUND');
      expect(fresh.requests.understand).toHaveLength(0);
      expect(fresh.requests.generate).toHaveLength(0);
      // all four were expired (and closed in the engine), none closed by the client
      expect(short.runtime.sessions.expirations).toBe(4);
      for (const h of handles) expect(fresh.liveSessions.has(h)).toBe(false);
      expect(short.runtime.sessions.size).toBe(0);
      const text = await (await fetch(short.url.replace(/\/graphql$/, '/metrics'))).text();
      expect(text).toMatch(/^hyperbagel_gateway_operations_total\{field="closeSession"\} 1$/m);
    } finally {
      await client.dispose();
      await short.close();
    }
  });
});
