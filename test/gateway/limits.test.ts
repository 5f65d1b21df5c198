// Malformed inputs and limits: bad base64, corrupt, huge and unsupported images, uploads, unknown
// fields, deep, aliased, costly, oversized and batched queries, range checks, BUSY and per-socket caps.
import { randomBytes } from 'node:crypto';
import sharp from 'sharp';
import { getIntrospectionQuery } from 'graphql';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { RunningServer } from '../../src/gateway/server.ts';
import { FakeEngine } from './fake-engine.ts';
import { gqlPost, parseSse, start, waitFor, wsClient, wsRun } from './helpers.ts';

let engine: FakeEngine;
let server: RunningServer;
let png: Buffer;
beforeAll(async () => {
  engine = new FakeEngine({ stepMs: 2, tokens: 3, nfeMs: 2 });
  server = await start({ engine, limits: { maxImageBytes: 4096, maxImagePixels: 64 * 64, maxPromptChars: 100 } });
  png = await sharp({ create: { width: 16, height: 12, channels: 3, background: '#ff0000' } }).png().toBuffer();
});
afterAll(async () => {
  await server?.close();
});

const EDIT = `mutation E($input: EditImageInput!) { editImage(input: $input) { id result { nfe } } }`;
const code = (r: { json: any }) => r.json.errors?.[0]?.extensions?.code;
const edit = (image: Record<string, unknown>) => gqlPost(server, { query: EDIT, variables: { input: { instruction: 'make it blue', mode: 'ONE_STEP', image } } });

describe('image inputs', () => {
  it('accepts base64 and data URLs and hands RGB to the engine', async () => {
    const a = await edit({ base64: png.toString('base64') });
    expect(a.json.errors).toBeUndefined();
    const src = engine.requests.generate.at(-1)!.sourceImage!;
    expect([src.width, src.height, src.data.length]).toEqual([16, 12, 16 * 12 * 3]);
    expect([...src.data.slice(0, 3)]).toEqual([255, 0, 0]);
    const b = await edit({ dataUrl: `data:image/png;base64,${png.toString('base64')}` });
    expect(b.json.errors).toBeUndefined();
  });

  it('turns an image upright from its EXIF orientation, as a viewer shows it, and flattens alpha on white', async () => {
    // 16x8 pixels, red left half and blue right half, stored with orientation 3 (rotated 180°): upright it is blue, then red
    const raw = Buffer.alloc(16 * 8 * 3);
    for (let i = 0; i < 16 * 8; i++) raw.set((i % 16) < 8 ? [255, 0, 0] : [0, 0, 255], i * 3);
    const big = await sharp(raw, { raw: { width: 16, height: 8, channels: 3 } }).jpeg({ quality: 100, chromaSubsampling: '4:4:4' }).withMetadata({ orientation: 3 }).toBuffer();
    expect((await sharp(big).metadata()).orientation).toBe(3);
    expect((await edit({ base64: big.toString('base64') })).json.errors).toBeUndefined();
    const src = engine.requests.generate.at(-1)!.sourceImage!;
    const px = (x: number) => [...src.data.slice(x * 3, x * 3 + 3)];
    expect(px(0)[2]).toBeGreaterThan(200); // left is blue
    expect(px(15)[0]).toBeGreaterThan(200); // right is red
    // a fully transparent PNG reads white, not black
    const clear = await sharp({ create: { width: 10, height: 10, channels: 4, background: { r: 0, g: 0, b: 0, alpha: 0 } } }).png().toBuffer();
    expect((await edit({ base64: clear.toString('base64') })).json.errors).toBeUndefined();
    expect([...engine.requests.generate.at(-1)!.sourceImage!.data.slice(0, 3)]).toEqual([255, 255, 255]);
  });

  it('accepts a multipart upload over HTTP (with the CSRF header)', async () => {
    const form = () => {
      const f = new FormData();
      f.set('operations', JSON.stringify({ query: EDIT, variables: { input: { instruction: 'blue', mode: 'ONE_STEP', image: { upload: null } } } }));
      f.set('map', JSON.stringify({ 0: ['variables.input.image.upload'] }));
      f.set('0', new Blob([new Uint8Array(png)], { type: 'image/png' }), 'a.png');
      return f;
    };
    const ok = await fetch(server.url, { method: 'POST', body: form(), headers: { 'graphql-require-preflight': '1' } });
    const j = (await ok.json()) as any;
    expect(j.errors).toBeUndefined();
    expect(j.data.editImage.result.nfe).toBe(1);
    expect(engine.requests.generate.at(-1)!.sourceImage!.width).toBe(16);
    const csrf = await fetch(server.url, { method: 'POST', body: form() });
    expect(csrf.status).toBe(400);
    expect(((await csrf.json()) as any).errors[0]).toMatchObject({ message: expect.stringMatching(/^A multipart request \(a file upload\) needs the header "GraphQL-Require-Preflight: 1"/), extensions: { code: 'INVALID_INPUT' } });
  });

  it('a body GraphQL is not sent in gets a typed error naming its Content-Type, with or without the preflight header', async () => {
    const body = JSON.stringify({ query: '{ health { status } }' });
    const plain = await fetch(server.url, { method: 'POST', body, headers: { 'content-type': 'text/plain' } });
    expect(plain.status).toBe(400);
    expect(((await plain.json()) as any).errors[0]).toEqual({
      message: 'A text/plain request needs the header "GraphQL-Require-Preflight: 1" (a page on any site could send one); send GraphQL requests as application/json',
      extensions: { code: 'INVALID_INPUT' },
    });
    for (const ct of ['text/plain; charset=utf-8', 'application/xml']) {
      const r = await fetch(server.url, { method: 'POST', body, headers: { 'content-type': ct, 'graphql-require-preflight': '1' } });
      expect(r.status, ct).toBe(415);
      expect(r.headers.get('content-type')).toMatch(/application\/json/);
      expect(((await r.json()) as any).errors[0]).toEqual({
        message: `Content-Type ${ct.split(';')[0]} is not a GraphQL request; send application/json (multipart/form-data for uploads)`,
        extensions: { code: 'INVALID_INPUT' },
      });
    }
    // a media type yoga would take, written with capitals: the message says so, not "send application/json"
    const caps = await fetch(server.url, { method: 'POST', body, headers: { 'content-type': 'Application/JSON' } });
    expect(caps.status).toBe(415);
    expect(((await caps.json()) as any).errors[0].message).toBe('Content-Type Application/JSON must be written in lower case: application/json');
    const form = await fetch(server.url, { method: 'POST', body: 'query=x', headers: { 'content-type': 'application/x-www-form-urlencoded' } });
    expect(((await form.json()) as any).errors[0].message).toMatch(/^An application\/x-www-form-urlencoded request needs the header/);
    // another method is still yoga's typed 405, not a 415
    const put = await fetch(server.url, { method: 'PUT' });
    expect(put.status).toBe(405);
    expect(((await put.json()) as any).errors[0].extensions.code).toBe('INVALID_INPUT');
    // what GraphQL is sent in still works
    const ok = await fetch(server.url, { method: 'POST', body, headers: { 'content-type': 'application/json' } });
    expect(((await ok.json()) as any).data.health.status).toBeDefined();
  });

  it('accepts JPEG and WebP; refuses GIF, TIFF and SVG (decodable, but not PNG, JPEG or WebP) in every input form', async () => {
    const src = sharp({ create: { width: 10, height: 10, channels: 3, background: '#00ff00' } });
    for (const bytes of [await src.clone().jpeg().toBuffer(), await src.clone().webp().toBuffer()]) expect((await edit({ base64: bytes.toString('base64') })).json.errors).toBeUndefined();
    const gif = await src.clone().gif().toBuffer();
    expect((await sharp(gif).metadata()).format).toBe('gif'); // a real GIF, which sharp decodes fine
    const tiff = await src.clone().tiff().toBuffer();
    const svg = Buffer.from('<svg xmlns="http://www.w3.org/2000/svg" width="10" height="10"><rect width="10" height="10" fill="red"/></svg>');
    const calls = engine.requests.generate.length;
    const unsupported = (r: { json: any }) => {
      expect(code(r)).toBe('BAD_IMAGE');
      expect(r.json.errors[0].message).toBe('Unsupported image format; use PNG, JPEG or WebP');
    };
    for (const bytes of [gif, tiff, svg]) unsupported(await edit({ base64: bytes.toString('base64') }));
    unsupported(await edit({ dataUrl: `data:image/gif;base64,${gif.toString('base64')}` }));
    // a GIF sent with a PNG name and type is still a GIF
    const f = new FormData();
    f.set('operations', JSON.stringify({ query: EDIT, variables: { input: { instruction: 'blue', mode: 'ONE_STEP', image: { upload: null } } } }));
    f.set('map', JSON.stringify({ 0: ['variables.input.image.upload'] }));
    f.set('0', new Blob([new Uint8Array(gif)], { type: 'image/png' }), 'a.png');
    const up = await fetch(server.url, { method: 'POST', body: f, headers: { 'graphql-require-preflight': '1' } });
    unsupported({ json: await up.json() });
    expect(engine.requests.generate.length).toBe(calls);
  });

  it('accepts a multipart upload on the understand subscription (SSE), and refuses a corrupt one', async () => {
    const U = `subscription U($input: UnderstandInput!) { understand(input: $input) { done inputImage { source originalWidth originalHeight } } }`;
    const send = async (bytes: Buffer, headers: Record<string, string> = { 'graphql-require-preflight': '1' }) => {
      const f = new FormData();
      f.set('operations', JSON.stringify({ query: U, variables: { input: { prompt: 'describe it', image: { upload: null } } } }));
      f.set('map', JSON.stringify({ 0: ['variables.input.image.upload'] }));
      f.set('0', new Blob([new Uint8Array(bytes)], { type: 'image/png' }), 'a.png');
      const res = await fetch(server.url, { method: 'POST', body: f, headers: { accept: 'text/event-stream', ...headers } });
      return { status: res.status, text: await res.text() };
    };
    const calls = engine.requests.understand.length;
    const ok = await send(png);
    expect(ok.status).toBe(200);
    const events = parseSse(ok.text);
    expect((events.at(-1)!.data as any).understand).toEqual({ done: true, inputImage: { source: 'REQUEST', originalWidth: 16, originalHeight: 12 } });
    const img = engine.requests.understand.at(-1)!.image!;
    expect([img.width, img.height, ...img.data.slice(0, 3)]).toEqual([16, 12, 255, 0, 0]);
    expect(engine.requests.understand.length).toBe(calls + 1);
    // corrupt bytes: a typed error and no engine call; no preflight header: refused (CSRF)
    const bad = await send(png.subarray(0, png.length - 20));
    const badEvents = parseSse(bad.text);
    expect(badEvents).toHaveLength(1);
    expect((badEvents[0]!.errors as any)[0].extensions.code).toBe('BAD_IMAGE');
    expect((await send(png, {})).status).toBe(400);
    expect(engine.requests.understand.length).toBe(calls + 1);
  });

  it('rejects bad base64, corrupt and oversized images with typed errors', async () => {
    expect(code(await edit({ base64: 'not base64!!' }))).toBe('BAD_IMAGE');
    expect(code(await edit({ dataUrl: 'data:text/plain,hello' }))).toBe('BAD_IMAGE');
    expect(code(await edit({ base64: Buffer.from('definitely not an image').toString('base64') }))).toBe('BAD_IMAGE');
    expect(code(await edit({ base64: png.subarray(0, png.length - 20).toString('base64') }))).toBe('BAD_IMAGE');
    const big = await sharp({ create: { width: 100, height: 100, channels: 3, background: '#00ff00' } }).png().toBuffer();
    const r = await edit({ base64: big.toString('base64') });
    expect(code(r)).toBe('IMAGE_TOO_LARGE');
    const noisy = await sharp(randomBytes(60 * 60 * 3), { raw: { width: 60, height: 60, channels: 3 } }).png().toBuffer();
    expect(noisy.length).toBeGreaterThan(4096);
    expect(code(await edit({ base64: noisy.toString('base64') }))).toBe('IMAGE_TOO_LARGE');
    expect(code(await edit({ base64: png.toString('base64'), dataUrl: 'data:image/png;base64,AA==' }))).toBe('INVALID_INPUT');
    expect(engine.requests.generate.length).toBeGreaterThan(0);
  });
});

describe('query limits', () => {
  it('rejects unknown fields, in the query and in variables', async () => {
    const a = await gqlPost(server, { query: `mutation { generateImage(input: { prompt: "x", bogus: 1 }) { id } }` });
    expect(a.json.errors?.length).toBeGreaterThan(0);
    expect(a.json.data).toBeUndefined();
    const b = await gqlPost(server, { query: `mutation G($input: GenerateImageInput!) { generateImage(input: $input) { id } }`, variables: { input: { prompt: 'x', bogus: 1 } } });
    expect(b.json.errors?.length).toBeGreaterThan(0);
    expect(JSON.stringify(b.json.errors)).toContain('bogus');
    const c = await gqlPost(server, { query: `{ health { nope } }` });
    expect(c.json.errors?.length).toBeGreaterThan(0);
  });

  it('rejects too many aliases, tokens and repeated fields', async () => {
    const aliases = Array.from({ length: 16 }, (_, i) => `a${i}: health { status }`).join(' ');
    expect(code(await gqlPost(server, { query: `{ ${aliases} }` }))).toBe('QUERY_TOO_COMPLEX');
    const repeated = `{ health { ${'status '.repeat(2000)} } }`;
    expect(code(await gqlPost(server, { query: repeated }))).toBe('QUERY_TOO_COMPLEX');
    // within limits is fine
    expect((await gqlPost(server, { query: `{ a: health { status } b: health { status } }` })).json.data.a.status).toBe('ok');
  });

  it('rejects a query over the cost limit alone (within the token, depth and alias limits)', async () => {
    // models is a list: each selected field under it costs 1 x 1.5 x 10 = 15; 2 + 400 x 15 > 5000
    const over = `{ models { ${'name '.repeat(400)}} }`;
    const r = await gqlPost(server, { query: over });
    expect(code(r)).toBe('QUERY_TOO_COMPLEX');
    expect(r.json.errors[0].message).toBe('Query cost exceeds the limit of 5000');
    expect(r.json.data).toBeUndefined();
    // 2 + 300 x 15 = 4502: the same shape under the limit runs
    const under = await gqlPost(server, { query: `{ models { ${'name '.repeat(300)}} }` });
    expect(under.json.errors).toBeUndefined();
    expect(under.json.data.models[0].name).toBe('fake');
  });

  it('lets GraphiQL\'s schema query through, but counts aliases inside introspection (reused aliased fragments would blow up)', async () => {
    const full = await gqlPost(server, { query: getIntrospectionQuery() });
    expect(full.json.errors).toBeUndefined();
    expect(full.json.data.__schema.queryType.name).toBe('Query');
    // 4 fragments of 3 aliases each, each reused by the next: 3^4 copies of every type's name, in 120 tokens
    const k = 3;
    const many = (body: (i: number) => string) => Array.from({ length: k }, (_, i) => body(i)).join(' ');
    const blowUp = `{ ${many((i) => `s${i}: __schema { types { ...T } }`)} }
      fragment T on __Type { ${many((i) => `f${i}: fields(includeDeprecated: true) { ...F }`)} }
      fragment F on __Field { ${many((i) => `t${i}: type { ...L }`)} }
      fragment L on __Type { ${many((i) => `n${i}: name`)} }`;
    const r = await gqlPost(server, { query: blowUp });
    expect(code(r)).toBe('QUERY_TOO_COMPLEX');
    expect(r.json.errors[0].message).toBe('Query uses more than 15 aliases');
    expect(r.json.data).toBeUndefined();
  });

  it('rejects deep queries, fragments included', async () => {
    const s = await start({ engine, limits: { maxDepth: 3 } });
    try {
      const deep = `subscription { imageJob(id: "x") { frame { image { url } } } }`;
      const r = await gqlPost(s, { query: deep });
      expect(code(r)).toBe('QUERY_TOO_COMPLEX');
      const viaFragment = `query { job(id: "x") { ...F } } fragment F on ImageJob { result { image { url } } }`;
      expect(code(await gqlPost(s, { query: viaFragment }))).toBe('QUERY_TOO_COMPLEX');
      const client = wsClient(s);
      try {
        const err = await wsRun(client, deep).then(
          () => undefined,
          (e) => e.errors,
        );
        expect(err?.[0]?.extensions?.code).toBe('QUERY_TOO_COMPLEX');
      } finally {
        await client.dispose();
      }
    } finally {
      await s.close();
    }
  });

  it('has batching off', async () => {
    const r = await gqlPost(server, [{ query: '{ health { status } }' }, { query: '{ health { status } }' }]);
    expect(r.status).toBeGreaterThanOrEqual(400);
  });

  it('checks prompt length and numeric ranges', async () => {
    const U = `subscription U($input: UnderstandInput!) { understand(input: $input) { done } }`;
    const client = wsClient(server);
    try {
      const run = (input: Record<string, unknown>) =>
        wsRun(client, U, { input }).then(
          (out) => out.at(-1)!.errors?.[0]?.extensions?.code,
          (e) => e.errors?.[0]?.extensions?.code,
        );
      expect(await run({ prompt: 'x'.repeat(101) })).toBe('PROMPT_TOO_LONG');
      expect(await run({ prompt: 'x', maxTokens: 100_000 })).toBe('OUT_OF_RANGE');
      expect(await run({ prompt: 'x', topP: 0 })).toBe('OUT_OF_RANGE');
      expect(await run({ prompt: 'x', stop: ['a', 'b', 'c', 'd', 'e', 'f', 'g', 'h', 'i'] })).toBe('OUT_OF_RANGE');
      expect(await run({ prompt: 'x', speculation: { mode: 'BOGUS' } })).toBe('INVALID_INPUT'); // not a SpeculationMode
      expect(await run({ prompt: 'x' })).toBeUndefined();
    } finally {
      await client.dispose();
    }
    const g = await gqlPost(server, { query: `mutation { generateImage(input: { prompt: "x", steps: 3 }) { id } }` });
    expect(code(g)).toBe('INVALID_INPUT');
  });

  it('stop limits configured above the engine\'s are capped at its (8 strings of 1 to 64 characters), before the stream starts', async () => {
    const U = `subscription U($input: UnderstandInput!) { understand(input: $input) { done } }`;
    const eng = new FakeEngine({ stepMs: 2, tokens: 3 });
    const s = await start({ engine: eng, limits: { maxStopSequences: 20, maxStopChars: 200 } });
    const client = wsClient(s);
    try {
      const run = (stop: string[]) =>
        wsRun(client, U, { input: { prompt: 'x', stop } }).then(
          (out) => ({ events: out.filter((p) => p.data).length, error: out.at(-1)!.errors?.[0] as any }),
          (e) => ({ events: 0, error: e.errors?.[0] }),
        );
      const nine = await run(['a', 'b', 'c', 'd', 'e', 'f', 'g', 'h', 'i']);
      expect(nine.error?.extensions).toMatchObject({ code: 'OUT_OF_RANGE', argument: 'stop', limit: 8 });
      expect(nine.error?.message).toBe('At most 8 stop sequences');
      const long = await run(['x'.repeat(65)]);
      expect(long.error?.extensions).toMatchObject({ code: 'OUT_OF_RANGE', argument: 'stop', limit: 64 });
      expect(long.error?.message).toBe('Stop sequences must have 1 to 64 characters');
      // refused before any event and before the engine saw the request
      expect([nine.events, long.events]).toEqual([0, 0]);
      expect(eng.requests.understand).toHaveLength(0);
      // at the engine's limits it runs
      expect((await run(['a', 'b', 'c', 'd', 'e', 'f', 'g', 'x'.repeat(64)])).error).toBeUndefined();
      expect(eng.requests.understand).toHaveLength(1);
    } finally {
      await client.dispose();
      await s.close();
    }
    // a gateway configured below the engine keeps its own limit
    const low = await start({ engine: new FakeEngine(), limits: { maxStopSequences: 2, maxStopChars: 5 } });
    const c2 = wsClient(low);
    try {
      const err = await wsRun(c2, U, { input: { prompt: 'x', stop: ['a', 'b', 'c'] } }).then(
        (out) => out.at(-1)!.errors?.[0] as any,
        (e) => e.errors?.[0],
      );
      expect(err?.message).toBe('At most 2 stop sequences');
    } finally {
      await c2.dispose();
      await low.close();
    }
  });
});

describe('capacity', () => {
  it('one client (API key) holds at most its share of the queue; another client still gets a place', async () => {
    const slow = new FakeEngine({ stepMs: 100, tokens: 1000, nfeMs: 200 });
    const s = await start({ engine: slow, apiKeys: ['key-a', 'key-b'], limits: { maxConcurrentJobs: 1, maxQueuedJobs: 4, maxQueuedPerClient: 2 } });
    const job = (key: string) => gqlPost(s, { query: 'mutation { generateImage(input: { prompt: "x", mode: BASELINE, steps: 50 }) { id } }' }, { authorization: `Bearer ${key}` });
    const ids: string[] = [];
    try {
      for (let i = 0; i < 3; i++) {
        const r = await job('key-a'); // one runs, two wait
        ids.push(r.json.data.generateImage.id);
      }
      await waitFor(() => s.runtime.scheduler.runningCount === 1 && s.runtime.scheduler.queuedCount === 2, 'one running, two queued');
      const refused = await job('key-a');
      expect(refused.json.errors[0].extensions).toMatchObject({ code: 'BUSY', clientQueued: 2, clientLimit: 2 });
      expect(refused.json.errors[0].message).toMatch(/This client already has 2 jobs waiting/);
      const other = await job('key-b');
      expect(other.json.errors).toBeUndefined();
      ids.push(other.json.data.generateImage.id);
      expect(s.runtime.scheduler.queuedCount).toBe(3);
    } finally {
      for (const id of ids) await gqlPost(s, { query: 'mutation($id: ID!) { cancelJob(id: $id) }', variables: { id } }, { authorization: 'Bearer key-a' });
      await s.close();
    }
  });

  it('queues up to the limit, then answers BUSY', async () => {
    const slow = new FakeEngine({ stepMs: 100, tokens: 1000 });
    const s = await start({ engine: slow, limits: { maxConcurrentJobs: 1, maxQueuedJobs: 1 } });
    const client = wsClient(s);
    try {
      const U = `subscription { understand(input: { prompt: "x" }) { text } }`;
      const first = client.subscribe({ query: U }, { next: () => {}, error: () => {}, complete: () => {} });
      await waitFor(() => s.runtime.scheduler.runningCount === 1, 'first to run');
      const second = client.subscribe({ query: U }, { next: () => {}, error: () => {}, complete: () => {} });
      await waitFor(() => s.runtime.scheduler.queuedCount === 1, 'second to queue');
      const third = await wsRun(client, U).then(
        (out) => out.at(-1)!.errors?.[0],
        (e) => e.errors?.[0],
      );
      expect(third.extensions.code).toBe('BUSY');
      expect(third.message).toMatch(/busy/i);
      const gen = await gqlPost(s, { query: `mutation { generateImage(input: { prompt: "x" }) { id } }` });
      expect(code(gen)).toBe('BUSY');
      // leaving the queue frees its place
      second();
      await waitFor(() => s.runtime.scheduler.queuedCount === 0, 'second to leave the queue');
      first();
      await waitFor(() => s.runtime.scheduler.runningCount === 0 && slow.stats.active === 0, 'first to stop');
      const m = await (await fetch(s.url.replace('/graphql', '/metrics'))).text();
      expect(m).toMatch(/hyperbagel_gateway_busy_rejections_total [1-9]/);
    } finally {
      await client.dispose();
      await s.close();
    }
  });

  it('caps concurrent operations per graphql-ws connection', async () => {
    const slow = new FakeEngine({ stepMs: 100, tokens: 1000 });
    const s = await start({ engine: slow, limits: { maxSubscriptionsPerSocket: 2 } });
    const client = wsClient(s);
    try {
      const U = `subscription { understand(input: { prompt: "x" }) { text } }`;
      const subs = [0, 1].map(() => client.subscribe({ query: U }, { next: () => {}, error: () => {}, complete: () => {} }));
      await waitFor(() => slow.stats.active === 2, 'two streams');
      const err = await wsRun(client, U).then(
        () => undefined,
        (e) => e.errors,
      );
      expect(err?.[0]?.extensions?.code).toBe('TOO_MANY_SUBSCRIPTIONS');
      subs[0]!();
      await waitFor(() => slow.stats.active === 1, 'one to stop');
      // a freed place can be used again
      const again = client.subscribe({ query: U }, { next: () => {}, error: () => {}, complete: () => {} });
      await waitFor(() => slow.stats.active === 2, 'a new stream');
      again();
      subs[1]!();
    } finally {
      await client.dispose();
      await s.close();
    }
  });
});
