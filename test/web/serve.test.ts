// handleDemoRequest: the page, its assets, the render route, and what it must refuse or pass on.
import { createServer, request, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import sharp from 'sharp';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { handleDemoRequest, resolveStatic, WEB_ROOT } from '../../src/web/serve.ts';

let server: Server;
let port: number;

beforeAll(async () => {
  server = createServer((req, res) => {
    if (handleDemoRequest(req, res)) return;
    res.writeHead(418, { 'Content-Type': 'text/plain' });
    res.end('gateway');
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  port = (server.address() as AddressInfo).port;
});
afterAll(() => new Promise<void>((r) => server.close(() => r())));

/** Raw GET with the path sent exactly as given (fetch would normalise dot segments). */
function get(path: string, method = 'GET'): Promise<{ status: number; headers: Record<string, string | string[] | undefined>; body: Buffer }> {
  return new Promise((resolve, reject) => {
    const req = request({ host: '127.0.0.1', port, path, method }, (res) => {
      const chunks: Buffer[] = [];
      res.on('data', (c: Buffer) => chunks.push(c));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, headers: res.headers, body: Buffer.concat(chunks) }));
    });
    req.on('error', reject);
    req.end();
  });
}

describe('handleDemoRequest', () => {
  it('serves the page at / with its assets and content types', async () => {
    const page = await get('/');
    expect(page.status).toBe(200);
    expect(page.headers['content-type']).toBe('text/html; charset=utf-8');
    expect(page.body.toString()).toContain('<script type="module" src="/demo/app.js">');
    expect(page.headers['content-security-policy']).toContain("connect-src 'self' ws: wss:");
    for (const [path, type] of [
      ['/demo/app.js', 'text/javascript; charset=utf-8'],
      ['/demo/gql-ws.js', 'text/javascript; charset=utf-8'],
      ['/demo/incremental.js', 'text/javascript; charset=utf-8'],
      ['/demo/style.css', 'text/css; charset=utf-8'],
    ] as const) {
      const r = await get(path);
      expect(r.status, path).toBe(200);
      expect(r.headers['content-type'], path).toBe(type);
      expect(r.headers['x-content-type-options']).toBe('nosniff');
      expect(r.body.length).toBeGreaterThan(100);
    }
    const head = await get('/demo/app.js', 'HEAD');
    expect(head.status).toBe(200);
    expect(head.body.length).toBe(0);
  });

  it('leaves every other path to the gateway', async () => {
    for (const path of ['/graphql', '/health', '/metrics', '/demox', '/index.html']) {
      const r = await get(path);
      expect(r.status, path).toBe(418);
    }
  });

  it('refuses directory traversal, hidden files and unknown file types', async () => {
    for (const path of [
      '/demo/..%2f..%2fpackage.json',
      '/demo/%2e%2e/package.json',
      '/demo/..%5cpackage.json',
      '/demo/%2e%2e%2fsrc%2fweb%2fserve.ts',
      '/demo/tsconfig.json/../../package.json',
      '/demo/.hidden',
      '/demo/tsconfig.json', // not an asset type
      '/demo/nope.js',
      '/demo/app.js%00.css',
      '/demo/%E0%A4%A',
    ]) {
      const r = await get(path);
      // Either refused by us (404) or normalised by URL parsing to a path outside /demo (gateway's 418).
      expect([404, 418], path).toContain(r.status);
      expect(r.body.toString(), path).not.toContain('"name": "hyperbagel"');
    }
    expect(resolveStatic('../package.json')).toBeUndefined();
    expect(resolveStatic('%2e%2e/package.json')).toBeUndefined();
    expect(resolveStatic('a/../../x.js')).toBeUndefined();
    expect(resolveStatic('app.js')).toBe(`${WEB_ROOT}/app.js`);
  });

  it('redirects /demo to / with its query (the page reads ?apiKey= from it)', async () => {
    for (const [from, to] of [['/demo', '/'], ['/demo?apiKey=K', '/?apiKey=K'], ['/demo?a=1&b=%20', '/?a=1&b=%20']]) {
      const r = await get(from!);
      expect(r.status).toBe(308);
      expect(r.headers['location']).toBe(to);
    }
  });

  it('answers other methods with 405', async () => {
    const r = await get('/demo/app.js', 'POST');
    expect(r.status).toBe(405);
    expect(r.headers.allow).toBe('GET, HEAD');
  });

  it('renders a caption to a 64×64 PNG and names the canonical caption', async () => {
    const caption = 'a small blue square at the center and a large red circle at the top left on a white background';
    const r = await get(`/demo/api/render?caption=${encodeURIComponent(caption)}`);
    expect(r.status).toBe(200);
    expect(r.headers['content-type']).toBe('image/png');
    expect(r.headers['x-caption']).toBe('a large red circle at the top left and a small blue square at the center on a white background');
    const { data, info } = await sharp(r.body).raw().toBuffer({ resolveWithObject: true });
    expect([info.width, info.height, info.channels]).toEqual([64, 64, 3]);
    // Centre pixel is the blue square, top-left cell centre the red circle, a corner the white background.
    const px = (x: number, y: number) => [...data.subarray((y * 64 + x) * 3, (y * 64 + x) * 3 + 3)];
    expect(px(32, 32)).toEqual([40, 80, 220]);
    expect(px(10, 10)).toEqual([220, 40, 40]);
    expect(px(0, 63)).toEqual([245, 245, 245]);

    const seeded = await get('/demo/api/render?seed=7');
    expect(seeded.status).toBe(200);
    expect(String(seeded.headers['x-caption'])).toMatch(/ on a \w+ background$/);
  });

  it('reports bad captions as typed JSON errors', async () => {
    const unknown = await get(`/demo/api/render?caption=${encodeURIComponent('a large red blob at the top on a white background')}`);
    expect(unknown.status).toBe(400);
    expect(JSON.parse(unknown.body.toString())).toEqual({ error: { code: 'UNKNOWN_WORDS', message: 'unknown word: "blob"' } });
    const parse = await get(`/demo/api/render?caption=${encodeURIComponent('red circle')}`);
    expect(JSON.parse(parse.body.toString()).error.code).toBe('PARSE_ERROR');
    const none = await get('/demo/api/render?seed=-1');
    expect(none.status).toBe(400);
    expect(JSON.parse(none.body.toString()).error.code).toBe('INVALID_INPUT');
  });
});
