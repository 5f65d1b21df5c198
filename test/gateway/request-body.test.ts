// HTTP bodies and query strings yoga's parsers let through: JSON nested deep enough to hold the event
// loop, `variables` that are not JSON in a GET or form request (the client got INTERNAL), and multipart
// requests with unchecked parts and maps. Each is refused with a 400 (413 for sizes) that names the problem.
import http from 'node:http';
import sharp from 'sharp';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { RunningServer } from '../../src/gateway/server.ts';
import { FakeEngine } from './fake-engine.ts';
import { start } from './helpers.ts';

let engine: FakeEngine;
let server: RunningServer;
let png: Buffer;
beforeAll(async () => {
  engine = new FakeEngine({ stepMs: 1, tokens: 2, nfeMs: 1 });
  server = await start({ engine, limits: { maxImageBytes: 4096, maxBodyBytes: 200_000 } });
  png = await sharp({ create: { width: 8, height: 8, channels: 3, background: '#ff0000' } }).png().toBuffer();
});
afterAll(async () => {
  await server?.close();
});

const EDIT = `mutation E($input: EditImageInput!) { editImage(input: $input) { id result { nfe } } }`;
const first = async (r: Response) => ({ status: r.status, error: ((await r.json()) as any).errors?.[0] });
const PREFLIGHT = { 'graphql-require-preflight': '1' };

describe('JSON bodies', () => {
  it('a body nested deeper than 64 levels is refused before JSON.parse; a large shallow one is parsed', async () => {
    const deep = `{"query":"{ health { status } }","variables":{"x":${'['.repeat(70_000)}${']'.repeat(70_000)}}}`;
    const r = await first(await fetch(server.url, { method: 'POST', body: deep, headers: { 'content-type': 'application/json' } }));
    expect(r).toMatchObject({ status: 400, error: { message: 'The JSON body is nested deeper than 64 levels', extensions: { code: 'INVALID_INPUT' } } });
    const wide = JSON.stringify({ query: '{ health { status } }', variables: { pad: 'x'.repeat(100_000) } });
    const ok = await fetch(server.url, { method: 'POST', body: wide, headers: { 'content-type': 'application/json' } });
    expect(((await ok.json()) as any).data.health.status).toBeDefined();
    // yoga's own answers stay: invalid JSON, a body that is not an object
    expect((await first(await fetch(server.url, { method: 'POST', body: '{x', headers: { 'content-type': 'application/json' } }))).error.extensions.code).toBe('INVALID_INPUT');
  });
});

describe('query strings and form bodies', () => {
  for (const accept of ['application/json', 'application/graphql-response+json']) {
    it(`variables or extensions that are not JSON are INVALID_INPUT (400), not INTERNAL (Accept: ${accept})`, async () => {
      for (const k of ['variables', 'extensions']) {
        const u = new URL(server.url);
        u.searchParams.set('query', '{ health { status } }');
        u.searchParams.set(k, '{x');
        const r = await first(await fetch(u, { headers: { accept } }));
        expect(r).toMatchObject({ status: 400, error: { message: `The "${k}" parameter is not valid JSON`, extensions: { code: 'INVALID_INPUT' } } });
      }
      const form = await fetch(server.url, { method: 'POST', body: 'query=%7Bhealth%7Bstatus%7D%7D&variables=%7Bx', headers: { 'content-type': 'application/x-www-form-urlencoded', accept, ...PREFLIGHT } });
      expect(await first(form)).toMatchObject({ status: 400, error: { message: 'The "variables" parameter is not valid JSON' } });
      // and well-formed ones still run
      const good = await fetch(server.url, { method: 'POST', body: 'query=%7Bhealth%7Bstatus%7D%7D&variables=%7B%7D', headers: { 'content-type': 'application/x-www-form-urlencoded', accept, ...PREFLIGHT } });
      expect(((await good.json()) as any).data.health.status).toBeDefined();
    });
  }
});

describe('multipart uploads', () => {
  const ops = (image: unknown = { upload: null }) => JSON.stringify({ query: EDIT, variables: { input: { instruction: 'blue', mode: 'ONE_STEP', image } } });
  const send = (f: FormData) => fetch(server.url, { method: 'POST', body: f, headers: PREFLIGHT });
  const form = (parts: Array<[string, string | Blob]>) => {
    const f = new FormData();
    for (const [k, v] of parts) f.append(k, v);
    return f;
  };
  const file = () => new Blob([new Uint8Array(png)], { type: "image/png" });

  it('JSON nested deeper than 64 levels in operations, a map over 64 KiB, or a deep form variable is refused before it is parsed', async () => {
    const deep = `${'['.repeat(70_000)}${']'.repeat(70_000)}`;
    const ops2 = `{"query":"{ health { status } }","variables":{"x":${deep}}}`;
    expect(await first(await send(form([['operations', ops2]])))).toMatchObject({ status: 400, error: { message: 'Multipart field "operations" is nested deeper than 64 levels' } });
    expect(await first(await send(form([['operations', ops()], ['map', deep]])))).toMatchObject({ status: 400, error: { message: expect.stringMatching(/^Multipart field "map" is over 65536 characters/) } });
    const body = `query=${encodeURIComponent('{ health { status } }')}&variables={"x":${deep}}`; // (brackets need no escaping in a form body)
    const r = await fetch(server.url, { method: 'POST', body, headers: { 'content-type': 'application/x-www-form-urlencoded', ...PREFLIGHT } });
    expect(await first(r)).toMatchObject({ status: 400, error: { message: 'The "variables" parameter is nested deeper than 64 levels' } });
  });

  it('a well-formed upload runs', async () => {
    const r = await send(form([['operations', ops()], ['map', JSON.stringify({ 0: ['variables.input.image.upload'] })], ['0', file()]]));
    const body = (await r.json()) as any;
    expect(body.errors).toBeUndefined();
    expect(body.data.editImage.result.nfe).toBeGreaterThan(0);
  });

  const cases: Array<[string, Array<[string, string | Blob]>, RegExp]> = [
    ['map names a file the request does not carry', [['operations', ops()], ['map', JSON.stringify({ 1: ['variables.input.image.upload'] })], ['0', file()]], /^"map" names file "1", which the request does not carry$/],
    ['files but no map', [['operations', ops()], ['0', file()]], /^The request carries file "0" but no "map" field/],
    ['a map that is a string', [['operations', ops()], ['map', JSON.stringify('v')], ['0', file()]], /^Multipart field "map" must be a JSON object/],
    ['a map entry that is not a list', [['operations', ops()], ['map', JSON.stringify({ 0: 'variables.input.image.upload' })], ['0', file()]], /^"map" entry "0" must be a non-empty list of paths/],
    ['a path outside variables', [['operations', ops()], ['map', JSON.stringify({ 0: ['query'] })], ['0', file()]], /must start with "variables\."$/],
    ['a path to no variable', [['operations', ops()], ['map', JSON.stringify({ 0: ['variables.input.picture.upload'] })], ['0', file()]], /names no variable in "operations"$/],
    ['a path to a value, not a null placeholder', [['operations', ops({ upload: 'x' })], ['map', JSON.stringify({ 0: ['variables.input.image.upload'] })], ['0', file()]], /must point to a null placeholder/],
    ['a prototype path', [['operations', ops()], ['map', JSON.stringify({ 0: ['variables.__proto__.x'] })], ['0', file()]], /is not a variable path$/],
    ['a file the map does not name', [['operations', ops()], ['map', JSON.stringify({ 0: ['variables.input.image.upload'] })], ['0', file()], ['1', file()]], /^The request carries file "1" that "map" does not name$/],
    ['more files than any operation takes', [['operations', ops()], ['map', '{}'], ...[0, 1, 2, 3, 4].map((i): [string, Blob] => [String(i), file()])], /^A multipart request carries at most 4 files/],
    ['another text field', [['operations', ops()], ['map', '{}'], ['note', 'hi']], /carries the fields "operations" and "map" and its files, nothing else/],
    ['operations as a file', [['operations', new Blob([ops()])]], /^Multipart field "operations" must be a text field, not a file$/],
    ['operations that is a list (a batch)', [['operations', '[]']], /^Multipart field "operations" must be a JSON object/],
  ];
  for (const [what, parts, message] of cases) {
    it(`refuses ${what}, naming the problem (400 INVALID_INPUT), and runs no model work`, async () => {
      const before = engine.requests.generate.length;
      const r = await first(await send(form(parts)));
      expect(r.status).toBe(400);
      expect(r.error.extensions.code).toBe('INVALID_INPUT');
      expect(r.error.message).toMatch(message);
      expect(engine.requests.generate.length).toBe(before);
    });
  }

  it('a file over the image limit is 413 naming the limit; a chunked body over the body limit is 413 too', async () => {
    const big = await send(form([['operations', ops()], ['map', JSON.stringify({ 0: ['variables.input.image.upload'] })], ['0', new Blob([Buffer.alloc(5000)])]]));
    expect(await first(big)).toMatchObject({ status: 413, error: { message: 'An uploaded image is over the limit of 4096 bytes', extensions: { code: 'IMAGE_TOO_LARGE', limit: 4096 } } });
    // no Content-Length: yoga learns the size while reading (it answered 400 "invalid multipart data")
    const boundary = 'b0undary';
    // (a text field, so the body's limit is met before the file size limit would be)
    const head = `--${boundary}\r\nContent-Disposition: form-data; name="operations"\r\n\r\n`;
    const status = await new Promise<{ status: number; body: string }>((resolve, reject) => {
      const u = new URL(server.url);
      const req = http.request({ host: u.hostname, port: u.port, path: u.pathname, method: 'POST', headers: { 'content-type': `multipart/form-data; boundary=${boundary}`, 'transfer-encoding': 'chunked', ...PREFLIGHT } }, (res) => {
        let body = '';
        res.on('data', (c) => (body += c));
        res.on('end', () => resolve({ status: res.statusCode!, body }));
      });
      req.on('error', reject);
      req.write(head);
      for (let i = 0; i < 30; i++) req.write(Buffer.alloc(10_000, 0x20));
      req.end(`\r\n--${boundary}--\r\n`);
    });
    expect(status.status).toBe(413);
    expect(JSON.parse(status.body).errors[0].extensions.code).toBe('INVALID_INPUT');
  });

  it('an operations field over 1 MiB is not cut at busboy\'s default field size', async () => {
    const s2 = await start({ engine, limits: { maxBodyBytes: 4_000_000 } });
    try {
      const long = JSON.stringify({ query: '{ health { status } }', variables: { pad: 'x'.repeat(1_500_000) } });
      const r = await fetch(s2.url, { method: 'POST', body: form([['operations', long]]), headers: PREFLIGHT });
      expect(((await r.json()) as any).data.health.status).toBeDefined();
    } finally {
      await s2.close();
    }
  });
});
