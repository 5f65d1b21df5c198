// The web demo's HTTP routes: the page at `/`, its static assets under `/demo/*`, and one helper route
// (`/demo/api/render`) that renders a Shapes-world caption to a PNG so the page can attach a known
// image. Everything else (`/graphql`, `/health`, …) is left to the gateway: handleDemoRequest returns
// false for it.
import { readFile, stat } from 'node:fs/promises';
import type { IncomingMessage, ServerResponse } from 'node:http';
import { extname, resolve, sep } from 'node:path';
import { fileURLToPath } from 'node:url';
import sharp from 'sharp';
import { WorldError } from '../world/errors.ts';
import { parseCaption, sceneToCaption } from '../world/caption.ts';
import { renderScene } from '../world/render.ts';
import { sceneFor } from '../world/sampler.ts';

/** The directory holding the page's static files (`web/` at the repository root). */
export const WEB_ROOT = resolve(fileURLToPath(new URL('../../web/', import.meta.url)));

const CONTENT_TYPES: Record<string, string> = {
  '.html': 'text/html; charset=utf-8',
  '.js': 'text/javascript; charset=utf-8',
  '.mjs': 'text/javascript; charset=utf-8',
  '.css': 'text/css; charset=utf-8',
  '.svg': 'image/svg+xml',
  '.png': 'image/png',
  '.ico': 'image/x-icon',
};

/** Sent with every demo response. The page needs only itself, data:/blob: images and the WS endpoint. */
const SECURITY_HEADERS: Record<string, string> = {
  'X-Content-Type-Options': 'nosniff',
  'Referrer-Policy': 'no-referrer',
  'Content-Security-Policy':
    "default-src 'self'; img-src 'self' data: blob:; connect-src 'self' ws: wss:; style-src 'self'; script-src 'self'; object-src 'none'; base-uri 'none'; frame-ancestors 'none'",
};

const MAX_CAPTION_LENGTH = 500;

/** The caption renderer the page calls (the gateway rate-limits it as an operation: `isDemoRender`). */
const DEMO_RENDER_PATH = '/demo/api/render';

/** The request's URL as the demo routes it (dot segments, `%2e` and backslashes resolved); null if unparsable. */
function demoUrl(req: IncomingMessage): URL | null {
  try {
    return new URL(req.url ?? '/', 'http://localhost');
  } catch {
    return null;
  }
}

/** Would `handleDemoRequest` render a caption for this request? (by the path it routes on, not the raw one) */
export function isDemoRender(req: IncomingMessage): boolean {
  return demoUrl(req)?.pathname === DEMO_RENDER_PATH;
}

/**
 * Serves the demo. Returns true when the request is the demo's (the response is then written,
 * possibly asynchronously); false when the caller should route it elsewhere.
 */
export function handleDemoRequest(req: IncomingMessage, res: ServerResponse): boolean {
  const url = demoUrl(req);
  if (!url) return false;
  const path = url.pathname;
  if (path !== '/' && path !== '/demo' && !path.startsWith('/demo/')) return false;

  const method = req.method ?? 'GET';
  if (method !== 'GET' && method !== 'HEAD') {
    sendText(res, 405, 'method not allowed', { Allow: 'GET, HEAD' });
    return true;
  }
  if (path === '/demo') {
    res.writeHead(308, { Location: `/${url.search}`, ...SECURITY_HEADERS }); // the query (?apiKey=…) goes along
    res.end();
    return true;
  }
  if (path === DEMO_RENDER_PATH) {
    void renderRoute(url, res);
    return true;
  }
  const rel = path === '/' || path === '/demo/' ? 'index.html' : path.slice('/demo/'.length);
  void staticRoute(rel, method === 'HEAD', res);
  return true;
}

async function staticRoute(rel: string, headOnly: boolean, res: ServerResponse): Promise<void> {
  try {
    const file = resolveStatic(rel);
    const type = file && CONTENT_TYPES[extname(file).toLowerCase()];
    if (!file || !type) return sendText(res, 404, 'not found');
    const info = await stat(file).catch(() => undefined);
    if (!info?.isFile()) return sendText(res, 404, 'not found');
    const body = await readFile(file);
    res.writeHead(200, { 'Content-Type': type, 'Content-Length': body.length, 'Cache-Control': 'no-cache', ...SECURITY_HEADERS });
    res.end(headOnly ? undefined : body);
  } catch {
    if (!res.headersSent) sendText(res, 500, 'internal error');
    else res.destroy();
  }
}

/**
 * Maps a request path below `/demo/` to a file inside WEB_ROOT, or undefined. The path arrives
 * percent-encoded; it is decoded once, and anything that is not a plain relative name (dot segments,
 * backslashes, NUL, hidden files, absolute paths) is refused before and after resolution.
 */
export function resolveStatic(rel: string): string | undefined {
  let decoded: string;
  try {
    decoded = decodeURIComponent(rel);
  } catch {
    return undefined;
  }
  if (decoded.length === 0 || decoded.includes('\0') || decoded.includes('\\')) return undefined;
  const parts = decoded.split('/');
  if (parts.some((p) => p === '' || p === '.' || p === '..' || p.startsWith('.'))) return undefined;
  const file = resolve(WEB_ROOT, ...parts);
  if (!file.startsWith(WEB_ROOT + sep)) return undefined;
  return file;
}

/**
 * GET /demo/api/render?caption=TEXT → the caption's 64×64 scene as PNG, or ?seed=N → random test-split
 * scene N. The canonical caption comes back in `X-Caption`. Bad input → 400 JSON
 * `{ error: { code, message } }` with the world's error code (UNKNOWN_WORDS, PARSE_ERROR, …).
 */
async function renderRoute(url: URL, res: ServerResponse): Promise<void> {
  try {
    const caption = url.searchParams.get('caption');
    const seed = url.searchParams.get('seed');
    let scene;
    if (caption !== null) {
      if (caption.length > MAX_CAPTION_LENGTH) return sendError(res, 400, 'INVALID_INPUT', `caption longer than ${MAX_CAPTION_LENGTH} characters`);
      scene = parseCaption(caption);
    } else if (seed !== null && /^\d{1,9}$/.test(seed)) {
      scene = sceneFor('test', Number(seed));
    } else {
      return sendError(res, 400, 'INVALID_INPUT', 'give ?caption=TEXT or ?seed=N (a non-negative integer)');
    }
    const img = renderScene(scene);
    const png = await sharp(Buffer.from(img.data.buffer, img.data.byteOffset, img.data.length), {
      raw: { width: img.width, height: img.height, channels: 3 },
    }).png().toBuffer();
    res.writeHead(200, {
      'Content-Type': 'image/png',
      'Content-Length': png.length,
      'Cache-Control': 'no-store',
      // Captions are ASCII words of the world's vocabulary, so they are safe in a header.
      'X-Caption': sceneToCaption(scene),
      ...SECURITY_HEADERS,
    });
    res.end(png);
  } catch (err) {
    if (err instanceof WorldError) return sendError(res, 400, err.code, err.message);
    if (!res.headersSent) sendError(res, 500, 'INTERNAL', 'rendering failed');
    else res.destroy();
  }
}

function sendError(res: ServerResponse, status: number, code: string, message: string): void {
  const body = JSON.stringify({ error: { code, message } });
  res.writeHead(status, { 'Content-Type': 'application/json; charset=utf-8', 'Content-Length': Buffer.byteLength(body), 'Cache-Control': 'no-store', ...SECURITY_HEADERS });
  res.end(body);
}

function sendText(res: ServerResponse, status: number, text: string, extra: Record<string, string> = {}): void {
  res.writeHead(status, { 'Content-Type': 'text/plain; charset=utf-8', 'Content-Length': Buffer.byteLength(text), ...extra, ...SECURITY_HEADERS });
  res.end(text);
}
