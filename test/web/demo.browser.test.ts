// The web demo in a real browser (Debian's Chromium via playwright-core) against the real gateway
// (startServer, which serves the page at /) and the real engine on the random-weight tiny pack.
//
// The tiny pack answers in milliseconds, faster than a test can look at a preview or press Stop, and
// this machine is shared, so timing alone would make these tests flaky. The engine is therefore wrapped
// in `controlled()`: events of the real engine pass through unchanged, but a test can *hold* them
// (e.g. "hold the final frame", "hold every chunk after the first") until it releases the hold or the
// gateway aborts the engine's signal. The wrapper also records whether the signal was aborted and the
// engine's iterator closed, which is how the cancellation tests see that Stop reached the model.
import { cpSync, existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { chromium, type BrowserContext, type Page, type WebSocket as PwWebSocket } from 'playwright-core';
import sharp from 'sharp';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import type { Engine, GenerateRequest, ImageFrame, UnderstandEvent, UnderstandRequest } from '../../src/engine/types.ts';
import { rateLimitedError } from '../../src/gateway/rate-limit.ts';
import { startServer, type RunningServer } from '../../src/gateway/server.ts';

const ROOT = fileURLToPath(new URL('../../', import.meta.url));
const CHROMIUM = '/usr/bin/chromium';
const ARTIFACTS = join(ROOT, 'test-artifacts', 'web');
const haveChromium = existsSync(CHROMIUM);
if (!haveChromium && !process.env.CI) {
  console.warn(`test/web/demo.browser.test.ts: SKIPPED, ${CHROMIUM} is missing (apt-get install -y chromium). CI installs it and runs these tests.`);
}
const suite = haveChromium || process.env.CI ? describe : describe.skip;

/** What the wrapper saw of each call. */
interface CallLog {
  kind: 'understand' | 'generate';
  prompt: string;
  hadImage: boolean;
  /** events passed on to the gateway */
  events: number;
  /** an event was held back */
  held: boolean;
  aborted: boolean;
  /** the engine's iterator was closed */
  ended: boolean;
}

type Kind = CallLog['kind'];
interface Hold {
  kind: Kind;
  match: (ev: UnderstandEvent | ImageFrame, index: number) => boolean;
  released: Promise<void>;
  release: () => void;
}

/**
 * The real engine, plus holds. `chunkDelayMs` spaces chunks a little so streaming is visible in the
 * screenshots; nothing depends on it.
 */
function controlled(inner: Engine, chunkDelayMs: number) {
  const calls: CallLog[] = [];
  let hold: Hold | null = null;
  // The abort listener goes when either side settles: `sleep` runs once per chunk on the same
  // per-call signal, and leaving one listener behind per chunk tripped Node's MaxListeners warning.
  const until = (p: Promise<void>, signal?: AbortSignal) =>
    new Promise<void>((resolve) => {
      if (signal?.aborted) return resolve();
      const done = () => {
        signal?.removeEventListener('abort', done);
        resolve();
      };
      signal?.addEventListener('abort', done, { once: true });
      void p.then(done);
    });
  const sleep = (ms: number, signal?: AbortSignal) => until(new Promise((r) => setTimeout(r, ms)), signal);
  async function* pass<T extends UnderstandEvent | ImageFrame>(log: CallLog, source: AsyncIterable<T>, signal?: AbortSignal): AsyncGenerator<T> {
    signal?.addEventListener('abort', () => { log.aborted = true; }, { once: true });
    try {
      let i = 0;
      for await (const ev of source) {
        const h = hold;
        if (h && h.kind === log.kind && h.match(ev, i)) {
          log.held = true;
          await until(h.released, signal);
        } else if (log.kind === 'understand' && chunkDelayMs > 0) {
          await sleep(chunkDelayMs, signal);
        }
        i++;
        log.events++;
        yield ev;
      }
    } finally {
      log.ended = true;
    }
  }
  const engine: Engine = {
    get info() { return inner.info; },
    understand(req: UnderstandRequest, signal?: AbortSignal): AsyncIterable<UnderstandEvent> {
      const log: CallLog = { kind: 'understand', prompt: req.prompt, hadImage: !!req.image, events: 0, held: false, aborted: false, ended: false };
      calls.push(log);
      return pass(log, inner.understand(req, signal), signal);
    },
    generate(req: GenerateRequest, signal?: AbortSignal): AsyncIterable<ImageFrame> {
      const log: CallLog = { kind: 'generate', prompt: req.prompt, hadImage: !!req.sourceImage || !!req.edit, events: 0, held: false, aborted: false, ended: false };
      calls.push(log);
      return pass(log, inner.generate(req, signal), signal);
    },
    createSession: () => inner.createSession(),
    closeSession: (s) => inner.closeSession(s),
    close: () => inner.close(),
  };
  return {
    engine,
    calls,
    /** Holds matching events of `kind` until the returned function is called (or the call is aborted). */
    hold(kind: Kind, match: Hold['match']): () => void {
      let release!: () => void;
      const released = new Promise<void>((r) => { release = r; });
      const h: Hold = { kind, match, released, release };
      hold = h;
      return () => {
        if (hold === h) hold = null;
        h.release();
      };
    },
  };
}

/** The tiny pack, copied with `prompts.think` set so the page offers think mode (the weights are random either way). */
async function realEngine(): Promise<Engine> {
  const mod = (await import('../../src/engine/index.ts')) as { createEngine: (packDir: string, options?: Record<string, unknown>) => Promise<Engine> };
  const dir = mkdtempSync(join(tmpdir(), 'hb-demo-pack-'));
  cpSync(join(ROOT, 'test', 'fixtures', 'tiny-pack'), dir, { recursive: true });
  const manifest = JSON.parse(readFileSync(join(dir, 'manifest.json'), 'utf8'));
  writeFileSync(join(dir, 'manifest.json'), JSON.stringify({ ...manifest, prompts: { ...(manifest.prompts ?? {}), think: true } }));
  packCopy = dir;
  return mod.createEngine(dir);
}
let packCopy = '';

/** graphql-ws traffic seen by the browser, parsed. */
interface WsLog {
  sent: any[];
  received: any[];
}

function recordWs(page: Page): WsLog {
  const log: WsLog = { sent: [], received: [] };
  page.on('websocket', (ws: PwWebSocket) => {
    if (!ws.url().endsWith('/graphql')) return;
    ws.on('framesent', (f) => { try { log.sent.push(JSON.parse(String(f.payload))); } catch { /* not JSON */ } });
    ws.on('framereceived', (f) => { try { log.received.push(JSON.parse(String(f.payload))); } catch { /* not JSON */ } });
  });
  return log;
}

/**
 * Waits until the browser's WebSocket log (CDP events, which may trail the DOM) holds the end of the
 * last operation whose query contains `needle`.
 */
/** Waits until the page shows its session id (it has a session). */
const sessionShown = (p: Page) => p.waitForFunction(() => /\w{8}/.test(document.getElementById('session-id')?.textContent ?? ''));

async function settled(log: WsLog, needle: string): Promise<{ subscribe: any; messages: any[] }> {
  await expect.poll(() => {
    try {
      return operation(log, needle).messages.some((m) => m.type === 'complete' || m.type === 'error');
    } catch {
      return false;
    }
  }, { timeout: 5_000 }).toBe(true);
  return operation(log, needle);
}

/** The `subscribe` message of the last operation whose query contains `needle`, and the messages for its id. */
function operation(log: WsLog, needle: string): { subscribe: any; messages: any[] } {
  const subscribe = [...log.sent].reverse().find((m) => m.type === 'subscribe' && String(m.payload?.query).includes(needle));
  if (!subscribe) throw new Error(`no operation containing "${needle}" was sent`);
  return { subscribe, messages: log.received.filter((m) => m.id === subscribe.id) };
}

/** Whether the server still holds the session (`get` throws SESSION_NOT_FOUND otherwise; it does not touch it). */
/** @param client  with auth on, the key that owns the session (`key:<API key>`): to any other it does not exist */
function sessionAlive(s: RunningServer, id: string, client?: string): boolean {
  try {
    s.runtime.sessions.get(id, client);
    return true;
  } catch {
    return false;
  }
}

suite('web demo in Chromium', () => {
  let server: RunningServer;
  let engine: ReturnType<typeof controlled>;
  let context: BrowserContext;
  let page: Page;
  let ws: WsLog;
  let userDataDir: string;
  const pageErrors: string[] = [];

  const dismissError = async () => {
    if (await page.isVisible('#error')) await page.click('#error-close');
    expect(await page.isVisible('#error')).toBe(false);
  };
  const shot = (name: string) => page.screenshot({ path: join(ARTIFACTS, `${name}.png`), fullPage: true });
  const dismissErrorOn = async (p: Page) => {
    if (await p.isVisible('#error')) await p.click('#error-close');
  };
  /**
   * A new page whose graphql-ws socket goes through Playwright: each message the page sends is recorded
   * in `sent`, then given to `intercept`, which may answer it in the server's place (`reply`) and return
   * true to keep it from the server.
   */
  const routedPage = async (intercept: (m: any, reply: (answer: object) => void) => boolean) => {
    const p = await context.newPage();
    const sent: any[] = [];
    await p.routeWebSocket(/\/graphql$/, (route) => {
      const upstream = route.connectToServer();
      route.onMessage((raw) => {
        let m: any;
        try { m = JSON.parse(String(raw)); sent.push(m); } catch { /* not JSON */ }
        if (m && intercept(m, (answer) => route.send(JSON.stringify(answer)))) return;
        upstream.send(raw);
      });
    });
    return { page: p, sent };
  };

  beforeAll(async () => {
    // Screenshots of this run only.
    rmSync(ARTIFACTS, { recursive: true, force: true });
    mkdirSync(ARTIFACTS, { recursive: true });
    engine = controlled(await realEngine(), 40);
    // One running job at a time and no queue, so a second job while one runs is BUSY.
    server = await startServer({ port: 0, engine: engine.engine, closeEngine: true, limits: { maxConcurrentJobs: 1, maxQueuedJobs: 0 }, log: () => {} });
    userDataDir = mkdtempSync(join(tmpdir(), 'hyperbagel-chromium-'));
    context = await chromium.launchPersistentContext(userDataDir, {
      executablePath: CHROMIUM,
      headless: true,
      // --disable-dev-shm-usage: containers often give /dev/shm only 64 MiB, which crashes Chromium's renderer.
      args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run', '--disable-background-networking', '--disable-component-update', '--disable-sync', '--disable-dev-shm-usage'],
      viewport: { width: 1280, height: 900 },
    });
    page = context.pages()[0] ?? (await context.newPage());
    page.on('pageerror', (e) => pageErrors.push(e.message));
    ws = recordWs(page);
    // Records, with timestamps, every frame added to the page and every change of the main image's
    // label, so the order in which things appeared on screen can be checked afterwards.
    await page.addInitScript(() => {
      const w = window as unknown as { __seen: { t: number; what: string }[] };
      w.__seen = [];
      const start = () => {
        new MutationObserver((records) => {
          for (const r of records) {
            for (const n of r.addedNodes) {
              if (n instanceof HTMLElement && n.classList.contains('frame')) w.__seen.push({ t: performance.now(), what: `frame:${n.dataset.stage}:${n.dataset.nfe}` });
            }
            if (r.target instanceof HTMLElement && r.target.id === 'image-label') w.__seen.push({ t: performance.now(), what: `label:${r.target.textContent}` });
            if (r.target.parentElement?.id === 'image-label') w.__seen.push({ t: performance.now(), what: `label:${r.target.parentElement.textContent}` });
          }
        }).observe(document.body, { subtree: true, childList: true, characterData: true });
      };
      if (document.readyState === 'loading') document.addEventListener('DOMContentLoaded', start);
      else start();
    });
    await page.goto(server.url.replace(/\/graphql$/, '/'));
    await page.waitForSelector('body[data-ready="true"]');
    await sessionShown(page);
  }, 120_000);

  afterEach(async (ctx) => {
    if (ctx.task.result?.state === 'fail' && page) await shot(`FAILED-${ctx.task.name.replace(/\W+/g, '-').slice(0, 60)}`).catch(() => undefined);
  });

  afterAll(async () => {
    await context?.close();
    await server?.close();
    if (userDataDir) rmSync(userDataDir, { recursive: true, force: true });
    if (packCopy) rmSync(packCopy, { recursive: true, force: true });
  });

  it('loads, connects and shows the model and a session', async () => {
    expect(await page.textContent('#conn')).toBe('connected');
    expect(await page.textContent('#model')).toContain(engine.engine.info.name);
    // The page says what it does: frames come from `subscription imageJob` (not @stream/@defer), and
    // unchecking "attach image" does not hide the session's images from the model.
    const footer = await page.textContent('footer');
    expect(footer).toContain('imageJob');
    expect(footer).not.toContain('@defer');
    expect(await page.getAttribute('label:has(#chat-attach)', 'title')).toMatch(/Unchecked.*still sees.*New session/);
    await shot('01-loaded');
    expect(pageErrors).toEqual([]);
  });

  it('renders a caption, attaches it, and streams the answer in more than one chunk with live stats', async () => {
    await page.fill('#caption-input', 'a large red square at the top left and a small blue circle at the center on a white background');
    await page.click('#render-form button[type=submit]');
    await page.waitForSelector('#current-image:not([hidden])');
    expect(await page.textContent('#image-label')).toContain('rendered: a large red square at the top left');

    // AUTO (the server's default: the fastest measured drafter) is preselected
    expect(await page.isChecked('input[name="spec"][value="AUTO"]')).toBe(true);
    await page.check('input[name="spec"][value="OFF"]');
    await page.fill('#chat-input', 'what is in this picture?');
    await page.fill('#chat-max', '24');
    const before = engine.calls.length;
    await page.click('#chat-send');
    // While it streams, the bubble grows: catch it part-way.
    await page.waitForFunction(() => Number(document.querySelector('.msg.assistant:last-child')?.getAttribute('data-chunks')) >= 2);
    await shot('02-chat-streaming');
    await page.waitForSelector('.msg.assistant:last-child:not([data-state="streaming"])', { timeout: 30_000 });
    await shot('03-chat-done');
    expect(await page.getAttribute('.msg.assistant:last-child', 'data-state')).toBe('done');

    const op = await settled(ws, 'understand(');
    expect(op.subscribe.payload.variables.input).toMatchObject({ prompt: 'what is in this picture?', maxTokens: 24, speculation: { mode: 'OFF' } });
    expect(op.subscribe.payload.variables.input.sessionId).toMatch(/\w{8}/);
    expect(op.subscribe.payload.variables.input.image.dataUrl).toMatch(/^data:image\/png;base64,/);
    expect(engine.calls[before]).toMatchObject({ kind: 'understand', hadImage: true });

    // More than one `next` carried text, and the page shows exactly the text the server said it generated.
    const nexts = op.messages.filter((m) => m.type === 'next').map((m) => m.payload.data.understand);
    const textChunks = nexts.filter((e) => !e.done && e.text.length > 0);
    expect(textChunks.length).toBeGreaterThan(1);
    const last = nexts[nexts.length - 1];
    expect(last.done).toBe(true);
    // The toggle reached the engine: the server reports the mode it decoded with.
    expect(last.speculation.mode).toBe('OFF');
    expect(await page.textContent('.msg.assistant:last-child .meta')).toContain('OFF');
    expect(await page.textContent('.msg.assistant:last-child .body')).toBe(nexts.map((e) => e.text).join(''));
    const tokenEvents = nexts.filter((e) => e.text.length || e.tokenIds.length).length; // the done event may carry the trailing (e.g. EOS) step
    expect(Number(await page.getAttribute('.msg.assistant:last-child', 'data-chunks'))).toBe(tokenEvents);
    // Stats come from the server's final event.
    expect(await page.textContent('#st-tokens')).toBe(String(last.usage.completionTokens));
    expect(last.speculation.drafts).toBe(0);
    expect(await page.textContent('#st-mal')).toBe('1.00 (no drafts)');
    expect(await page.textContent('#st-tps')).toBe(Number(last.timings.tokensPerSecond).toFixed(1));
    // One bar per verification-step event.
    expect(await page.locator('#steps-chart .bar').count()).toBe(tokenEvents);
  });

  it('shows the fast preview before the final replaces it, each labelled with its NFE count and ms', async () => {
    await page.selectOption('#gen-mode', 'PROGRESSIVE');
    await page.fill('#gen-prompt', 'a large green circle at the center on a black background');
    await page.evaluate(() => { (window as unknown as { __seen: unknown[] }).__seen.length = 0; });
    const releaseFinal = engine.hold('generate', (ev) => 'stage' in ev && ev.stage === 'final');
    try {
      await page.click('#gen-generate');
      await page.waitForSelector('.frame[data-stage="PREVIEW"]', { timeout: 30_000 });
      // The engine has produced the final but it is held: the preview is on screen alone.
      await expect.poll(() => engine.calls[engine.calls.length - 1]?.held, { timeout: 30_000 }).toBe(true);
      expect(await page.locator('.frame[data-stage="FINAL"]').count()).toBe(0);
      expect(await page.getAttribute('#gen-status', 'data-state')).toBe('running');
      await shot('04-preview');
    } finally {
      releaseFinal();
    }
    const previewLabel = (await page.evaluate(() => (window as unknown as { __seen: { what: string }[] }).__seen.find((e) => e.what.startsWith('label:'))?.what ?? '')).replace(/^label:/, '');
    await page.waitForSelector('#gen-status[data-state="done"]', { timeout: 30_000 });
    const finalLabel = await page.textContent('#image-label');
    await shot('05-final');

    // Over the wire: the mutation starts the job, and `imageJob` delivers the preview in an earlier event
    // than the final.
    const op = await settled(ws, 'imageJob(');
    expect(op.subscribe.payload.variables.after).toBe(0);
    const events = op.messages.filter((m) => m.type === 'next').map((m) => m.payload.data.imageJob);
    const previewMsg = events.findIndex((e) => e.frame?.stage === 'PREVIEW');
    const finalMsg = events.findIndex((e) => e.frame?.stage === 'FINAL');
    expect(previewMsg).toBeGreaterThanOrEqual(0);
    expect(finalMsg).toBeGreaterThan(previewMsg);
    expect(events[events.length - 1]).toMatchObject({ done: true, status: 'SUCCEEDED' });
    expect(op.messages[op.messages.length - 1].type).toBe('complete');
    const preview = events[previewMsg].frame;
    const final = events[finalMsg].frame;
    expect(preview.nfe).toBeLessThan(final.nfe);
    expect(previewLabel).toBe(`preview · ${preview.nfe} NFE · ${Number(preview.elapsedMs).toFixed(0)} ms`);
    expect(finalLabel).toBe(`final · ${final.nfe} NFE · ${Number(final.elapsedMs).toFixed(0)} ms`);

    const seen = await page.evaluate(() => (window as unknown as { __seen: { t: number; what: string }[] }).__seen);
    const previewAt = seen.find((e) => e.what === `frame:PREVIEW:${preview.nfe}`)?.t;
    const finalAt = seen.find((e) => e.what === `frame:FINAL:${final.nfe}`)?.t;
    expect(previewAt).toBeDefined();
    expect(finalAt).toBeDefined();
    expect(finalAt!).toBeGreaterThan(previewAt!);
    expect(seen.filter((e) => e.what.startsWith('label:')).map((e) => e.what.replace(/ · \d+ ms$/, ''))).toEqual([
      `label:preview · ${preview.nfe} NFE`,
      `label:final · ${final.nfe} NFE`,
    ]);
  });

  it('continues the session: an edit without re-sending the image, then a question about the result', async () => {
    await page.fill('#gen-prompt', 'make the circle blue');
    const before = engine.calls.length;
    await page.click('#gen-edit');
    await page.waitForSelector('#gen-status[data-state="done"]', { timeout: 30_000 });
    const edit = await settled(ws, 'editImage(');
    const input = edit.subscribe.payload.variables.input;
    expect(input.instruction).toBe('make the circle blue');
    // The generated image is already the session's latest: the server supplies it.
    expect(input.image).toBeUndefined();
    expect(engine.calls[before]).toMatchObject({ kind: 'generate', prompt: 'make the circle blue', hadImage: true });

    await page.check('input[name="spec"][value="TREE"]');
    await page.fill('#chat-input', 'what color is the circle now?');
    await page.click('#chat-send');
    await page.waitForSelector('.msg.assistant:last-child:not([data-state="streaming"])', { timeout: 30_000 });
    const ask = await settled(ws, 'understand(');
    expect(ask.subscribe.payload.variables.input.sessionId).toBe(input.sessionId);
    expect(ask.subscribe.payload.variables.input.image.dataUrl).toMatch(/^data:image\/png;base64,/);
    expect(ask.subscribe.payload.variables.input.speculation).toEqual({ mode: 'TREE' });
    const done = ask.messages.find((m) => m.type === 'next' && m.payload.data.understand.done)?.payload.data.understand;
    expect(done?.speculation.mode).toBe('TREE');
    expect(await page.textContent('#st-mal')).toBe(done.speculation.drafts ? Number(done.speculation.meanAcceptedLength).toFixed(2) : '1.00 (no drafts)');
    // OFF (first answer) and TREE side by side, each with the server's numbers.
    const rows = await page.$$eval('#spec-compare tbody tr', (trs) => trs.map((tr) => [...tr.children].map((td) => td.textContent)));
    expect(rows.map((r) => r[0])).toEqual(['OFF', 'TREE']);
    const tree = rows[1]!;
    expect(tree[1]).toBe(String(done.usage.completionTokens));
    expect(tree[5]).toBe(Number(done.timings.tokensPerSecond).toFixed(1));
    expect(await page.getAttribute('.msg.assistant:last-child', 'data-state')).toBe('done');
    await shot('06-session');
  });

  it('attaches an image by upload and by drag-and-drop; a corrupt one is refused with BAD_IMAGE', async () => {
    await page.click('#new-session');
    await page.waitForFunction(() => /\w{8}/.test(document.getElementById('session-id')?.textContent ?? '') && document.querySelectorAll('.msg').length === 0);
    // A 160×96 photo-like upload: the page centre-crops and scales it to the model's 64×64 input.
    const png = await sharp({ create: { width: 160, height: 96, channels: 3, background: { r: 40, g: 170, b: 60 } } }).png().toBuffer();
    await page.setInputFiles('#file-input', { name: 'green.png', mimeType: 'image/png', buffer: png });
    await page.waitForFunction(() => document.getElementById('image-label')?.textContent?.startsWith('uploaded: green.png'));
    expect(await page.textContent('#image-label')).toBe('uploaded: green.png (160×96 → 64×64)');
    await page.check('input[name="spec"][value="OFF"]');
    await page.fill('#chat-max', '6');
    await page.fill('#chat-input', 'what color is the square?');
    const before = engine.calls.length;
    await page.click('#chat-send');
    await page.waitForSelector('.msg.assistant:last-child:not([data-state="streaming"])', { timeout: 30_000 });
    expect(await page.getAttribute('.msg.assistant:last-child', 'data-state')).toBe('done');
    const sent = (await settled(ws, 'understand(')).subscribe.payload.variables.input;
    const [, b64] = /^data:image\/png;base64,(.+)$/.exec(sent.image.dataUrl) ?? [];
    const { data, info } = await sharp(Buffer.from(b64!, 'base64')).removeAlpha().raw().toBuffer({ resolveWithObject: true });
    expect([info.width, info.height]).toEqual([64, 64]);
    expect([...data.subarray(0, 3)]).toEqual([40, 170, 60]);
    expect([...data.subarray(data.length - 3)]).toEqual([40, 170, 60]);
    expect(engine.calls[before]).toMatchObject({ kind: 'understand', hadImage: true });

    // Drop a file that claims to be a PNG but is not one.
    const dataTransfer = await page.evaluateHandle(() => {
      const dt = new DataTransfer();
      dt.items.add(new File([new TextEncoder().encode('definitely not a png')], 'broken.png', { type: 'image/png' }));
      return dt;
    });
    await page.dispatchEvent('#dropzone', 'drop', { dataTransfer });
    await page.waitForFunction(() => document.getElementById('image-label')?.textContent?.startsWith('uploaded: broken.png'));
    await page.click('#chat-send');
    await page.waitForSelector('#error:not([hidden])', { timeout: 30_000 });
    expect(await page.getAttribute('#error', 'data-code')).toBe('BAD_IMAGE');
    expect(await page.getAttribute('.msg.assistant:last-child', 'data-state')).toBe('error');
    // The refused image is dropped, so the next question does not send it again.
    expect(await page.textContent('#image-label')).toBe('refused by the server (BAD_IMAGE): uploaded: broken.png (1 KiB)');
    expect(await page.isVisible('#current-image')).toBe(false);
    await shot('07-bad-image');
    await dismissError();
  });

  it('Stop cancels a streaming answer on the server and in the engine', async () => {
    await page.check('input[name="spec"][value="CHAIN"]');
    await page.fill('#chat-max', '200');
    await page.fill('#chat-input', 'describe this image');
    const before = engine.calls.length;
    // Every chunk after the first is held until Stop aborts the call.
    const release = engine.hold('understand', (ev, i) => i >= 1);
    try {
      await page.click('#chat-send');
      await page.waitForFunction(() => Number(document.querySelector('.msg.assistant:last-child')?.getAttribute('data-chunks')) >= 1);
      await expect.poll(() => engine.calls[before]?.held, { timeout: 30_000 }).toBe(true);
      await page.click('#chat-stop');
    } finally {
      release();
    }
    expect(await page.getAttribute('.msg.assistant:last-child', 'data-state')).toBe('cancelled');
    const call = engine.calls[before]!;
    await expect.poll(() => call.aborted && call.ended, { timeout: 5_000 }).toBe(true);
    await expect.poll(() => server.runtime.activeStreamCount, { timeout: 5_000 }).toBe(0);
    const textAtStop = await page.textContent('.msg.assistant:last-child .body');
    await page.waitForTimeout(300);
    expect(await page.textContent('.msg.assistant:last-child .body')).toBe(textAtStop);
    expect(await page.textContent('.msg.assistant:last-child .meta')).toMatch(/^stopped after \d+ chunks?$/);
    const op = operation(ws, 'understand(');
    expect(ws.sent.some((m) => m.type === 'complete' && m.id === op.subscribe.id)).toBe(true);
    expect(op.messages.some((m) => m.type === 'next' && m.payload.data?.understand?.done)).toBe(false);
    await shot('08-chat-stopped');
  });

  it('Stop cancels an image job: no final, and the server reports the job CANCELLED', async () => {
    await page.fill('#gen-prompt', 'a small red star at the bottom right on a gray background');
    const before = engine.calls.length;
    const release = engine.hold('generate', (ev) => 'stage' in ev && ev.stage === 'final');
    try {
      await page.click('#gen-generate');
      await page.waitForSelector('.frame[data-stage="PREVIEW"]', { timeout: 30_000 });
      await expect.poll(() => engine.calls[before]?.held, { timeout: 30_000 }).toBe(true);
      await page.click('#gen-stop');
      // release only once the server has aborted the job: releasing right after the click let the held final
      // win the race against the client's cancel (seen once in CI: SUCCEEDED instead of CANCELLED)
      await expect.poll(() => engine.calls[before]!.aborted, { timeout: 10_000 }).toBe(true);
    } finally {
      release();
    }
    await page.waitForSelector('#gen-status[data-server-status]', { timeout: 10_000 });
    expect(await page.getAttribute('#gen-status', 'data-server-status')).toBe('CANCELLED');
    expect(await page.textContent('#gen-status')).toMatch(/^cancelled job \S+ · server status CANCELLED$/);
    const call = engine.calls[before]!;
    await expect.poll(() => call.aborted && call.ended, { timeout: 5_000 }).toBe(true);
    await page.waitForTimeout(300);
    expect(await page.locator('.frame[data-stage="FINAL"]').count()).toBe(0);
    expect(await page.textContent('#image-label')).toMatch(/^preview · \d+ NFE/);
    await shot('09-image-stopped');
  });

  it('resumes an image job after the socket drops mid-job: imageJob(id, after) brings the final', async () => {
    // A second page whose WebSocket goes through Playwright, so the test can cut it like a network drop.
    const other = await context.newPage();
    const routes: { page: { close: (o?: { code?: number; reason?: string }) => Promise<void> } }[] = [];
    const sent: any[] = [];
    await other.routeWebSocket(/\/graphql$/, (route) => {
      const server = route.connectToServer();
      route.onMessage((m) => {
        try { sent.push(JSON.parse(String(m))); } catch { /* not JSON */ }
        server.send(m);
      });
      routes.push({ page: route });
    });
    const release = engine.hold('generate', (ev) => 'stage' in ev && ev.stage === 'final');
    try {
      await other.goto(page.url());
      await sessionShown(other);
      await other.fill('#gen-prompt', 'a small yellow triangle at the top on a black background');
      const before = engine.calls.length;
      await other.click('#gen-generate');
      await other.waitForSelector('.frame[data-stage="PREVIEW"]', { timeout: 30_000 });
      await expect.poll(() => engine.calls[before]?.held, { timeout: 30_000 }).toBe(true);
      // The final is held in the engine; drop the connection (closing one side closes the other).
      expect(routes.length).toBe(1);
      await routes[0]!.page.close({ code: 1012, reason: 'test: connection dropped' });
      await other.waitForSelector('#gen-status[data-state="reconnecting"]', { timeout: 10_000 });
      expect(await other.textContent('#gen-status')).toMatch(/^connection lost · reconnecting in \d+ ms \(attempt 1\/5\)/);
      await other.screenshot({ path: join(ARTIFACTS, '09b-reconnecting.png'), fullPage: true });
      // The page comes back on a new socket and resumes after the events it already has.
      await expect.poll(() => sent.filter((m) => m.type === 'subscribe' && String(m.payload?.query).includes('imageJob(')).length, { timeout: 10_000 }).toBe(2);
      release();
      await other.waitForSelector('#gen-status[data-state="done"]', { timeout: 30_000 });
      const subs = sent.filter((m) => m.type === 'subscribe' && String(m.payload?.query).includes('imageJob('));
      expect(subs[0].payload.variables.after).toBe(0);
      expect(subs[1].payload.variables.after).toBeGreaterThanOrEqual(1);
      expect(subs[1].payload.variables.id).toBe(subs[0].payload.variables.id);
      expect(routes.length).toBe(2);
      expect(await other.locator('.frame[data-stage="FINAL"]').count()).toBe(1);
      expect(await other.locator('.frame[data-stage="PREVIEW"]').count()).toBe(1);
      expect(await other.textContent('#image-label')).toMatch(/^final · \d+ NFE/);
      expect(await other.textContent('#conn')).toBe('connected');
      // One engine call: the job was resumed, not started again.
      expect(engine.calls.length).toBe(before + 1);
      expect(engine.calls[before]).toMatchObject({ aborted: false, ended: true });
      await other.screenshot({ path: join(ARTIFACTS, '09c-resumed.png'), fullPage: true });
    } finally {
      release();
      await other.close();
    }
  });

  it('shows invalid input clearly: unknown words from the server (with the words the model knows) and from the caption renderer', async () => {
    await dismissError();
    // The words the model knows (models.words) are listed, closed, under the prompt and under the question.
    const words = server.runtime.engine.info.words;
    expect(words.length).toBeGreaterThan(10);
    expect(operation(ws, 'models').subscribe.payload.query).toMatch(/\bwords\b/);
    for (const id of ['#gen-vocab', '#chat-vocab']) {
      expect(await page.textContent(`${id} summary`)).toBe(`Words the model knows (${words.length})`);
      expect(await page.textContent(`${id} .words`)).toBe(words.join(' '));
      expect(await page.getAttribute(id, 'open')).toBeNull();
    }
    await page.fill('#gen-prompt', 'a large red squircle at the center on a white background');
    await page.click('#gen-generate');
    await page.waitForSelector('#error:not([hidden])', { timeout: 30_000 });
    expect(await page.getAttribute('#error', 'data-code')).toBe('UNKNOWN_WORDS');
    expect(await page.textContent('#error-message')).toContain('squircle');
    expect(await page.textContent('#error-message')).toContain('see “Words the model knows”');
    expect(await page.textContent('#gen-status')).toBe('failed: UNKNOWN_WORDS');
    // the list next to the prompt opens; the one under the question stays closed
    expect(await page.getAttribute('#gen-vocab', 'open')).toBe('');
    expect(await page.getAttribute('#chat-vocab', 'open')).toBeNull();
    await shot('10-unknown-words');
    await page.$eval('#gen-vocab', (d) => { (d as HTMLDetailsElement).open = false; });

    await dismissError();
    await page.fill('#caption-input', 'a large red blob at the top on a white background');
    await page.click('#render-form button[type=submit]');
    await page.waitForSelector('#error:not([hidden])');
    expect(await page.getAttribute('#error', 'data-code')).toBe('UNKNOWN_WORDS');
    expect(await page.textContent('#error-message')).toContain('"blob"');

    await dismissError();
    await page.fill('#chat-max', '5000');
    await page.fill('#chat-input', 'what is in this picture?');
    await page.click('#chat-send');
    await page.waitForSelector('#error:not([hidden])', { timeout: 30_000 });
    expect(await page.getAttribute('#error', 'data-code')).toBe('OUT_OF_RANGE');
    expect(await page.textContent('#error-message')).toContain('outside what the server accepts');
    expect(await page.getAttribute('.msg.assistant:last-child', 'data-state')).toBe('error');
    await shot('11-out-of-range');
    await page.fill('#chat-max', '24');
  });

  it('while this page\'s answer uses the session, Generate and Edit wait and say why (they met SESSION_BUSY); BUSY when another client holds every job slot', async () => {
    await dismissError();
    // Answers stay open (every chunk after the first is held) for the whole test.
    const release = engine.hold('understand', (ev, i) => i >= 1);
    const other = await context.newPage();
    try {
      await page.fill('#chat-max', '200');
      await page.fill('#chat-input', 'describe this image');
      await page.click('#chat-send');
      await page.waitForFunction(() => Number(document.querySelector('.msg.assistant:last-child')?.getAttribute('data-chunks')) >= 1);
      // Same session, while it answers: a session runs one request at a time, so Generate and Edit wait.
      await page.fill('#gen-prompt', 'a large red circle at the top left on a white background');
      expect(await page.isDisabled('#gen-generate')).toBe(true);
      expect(await page.isDisabled('#gen-edit')).toBe(true);
      expect(await page.textContent('#gen-hint')).toBe('Generate and Edit wait for this session’s answer (a session runs one request at a time): Stop it, or start a New session.');
      await page.click('#chat-stop');
      expect(await page.isDisabled('#gen-generate')).toBe(false);
      expect(await page.textContent('#gen-hint')).not.toContain('answer');
      await expect.poll(() => server.runtime.activeStreamCount, { timeout: 5_000 }).toBe(0);

      // Another visitor's answer takes the only job slot (the server runs 1 job and queues none).
      await other.goto(page.url());
      await sessionShown(other);
      await other.fill('#chat-max', '200');
      await other.click('#chat-send');
      await other.waitForFunction(() => Number(document.querySelector('.msg.assistant:last-child')?.getAttribute('data-chunks')) >= 1);
      await dismissError();
      await page.click('#gen-generate');
      await page.waitForSelector('#error:not([hidden])', { timeout: 30_000 });
      expect(await page.getAttribute('#error', 'data-code')).toBe('BUSY');
      expect(await page.textContent('#error-message')).toContain('try again in a moment');
      expect(await page.textContent('#gen-status')).toBe('failed: BUSY');
      await shot('12-busy');
      await other.click('#chat-stop');
    } finally {
      release();
      await other.close();
    }
    await expect.poll(() => server.runtime.activeStreamCount, { timeout: 5_000 }).toBe(0);
    expect(pageErrors).toEqual([]);
  });

  it('with API keys configured, the page says the key is missing and works with #apiKey= or ?apiKey=, which it takes out of its address', async () => {
    const secured = await startServer({ port: 0, engine: engine.engine, closeEngine: false, apiKeys: ['demo-key-1'], log: () => {} });
    const other = await context.newPage();
    try {
      const base = secured.url.replace(/\/graphql$/, '/');
      await other.goto(base);
      await other.waitForSelector('#error:not([hidden])', { timeout: 10_000 });
      expect(await other.getAttribute('#error', 'data-code')).toBe('UNAUTHENTICATED');
      expect(await other.textContent('#error-message')).toContain('#apiKey=');
      expect(await other.textContent('#conn')).toContain('forbidden');
      await other.screenshot({ path: join(ARTIFACTS, '13-auth-missing.png'), fullPage: true });

      // the old form still works; the key leaves the address (and so the history) at once
      await other.goto(`${base}?apiKey=demo-key-1&x=1`);
      await sessionShown(other);
      expect(await other.textContent('#conn')).toBe('connected');
      expect(other.url()).toBe(`${base}?x=1`);
      await other.goto(`${base}#apiKey=demo-key-1`);
      await sessionShown(other);
      expect(await other.textContent('#conn')).toBe('connected');
      expect(await other.isVisible('#error')).toBe(false);
      expect(other.url()).toBe(base);
      // Leaving the page closes its session: a keepalive POST that carries the key.
      const sid = (await other.textContent('#session-id'))!;
      expect(sessionAlive(secured, sid, 'key:demo-key-1')).toBe(true);
      await other.goto('about:blank');
      await expect.poll(() => sessionAlive(secured, sid, 'key:demo-key-1'), { timeout: 5_000 }).toBe(false);
    } finally {
      await other.close();
      await secured.close();
    }
  });

  it('think first: offered when the model can think; the thought is shown above the frames and sent as think: true', async () => {
    expect(await page.isVisible('#gen-think')).toBe(true);
    expect(await page.isVisible('#gen-thought')).toBe(false);
    await page.fill('#gen-prompt', 'a photo of a square');
    await page.check('#gen-think');
    const before = engine.calls.length;
    await page.click('#gen-generate');
    await page.waitForSelector('#gen-status[data-state="done"]', { timeout: 30_000 });
    const op = await settled(ws, 'generateImage(');
    expect(op.subscribe.payload.variables.input).toMatchObject({ prompt: 'a photo of a square', think: true });
    const job = await settled(ws, 'imageJob(');
    const final = job.messages.filter((m) => m.type === 'next').map((m) => m.payload.data.imageJob.frame).find((f) => f?.stage === 'FINAL');
    expect(typeof final.thought).toBe('string');
    expect(await page.textContent('#gen-thought')).toBe(`thought: ${final.thought}`);
    expect(engine.calls[before]).toMatchObject({ kind: 'generate', prompt: 'a photo of a square' });
    // the box does not apply to edits: an edit sends no think
    await page.fill('#gen-prompt', 'make the square red');
    await page.click('#gen-edit');
    await page.waitForSelector('#gen-status[data-state="done"]', { timeout: 30_000 });
    expect((await settled(ws, 'editImage(')).subscribe.payload.variables.input.think).toBeUndefined();
    expect(await page.isVisible('#gen-thought')).toBe(false);
    await page.uncheck('#gen-think');
    expect(pageErrors).toEqual([]);
  });

  it('Clear: Edit waits for an image on screen, and a question then says the model still sees the session\'s image', async () => {
    await dismissError();
    // (think first ended with an edit: its final, the session's latest image, is on screen)
    expect(await page.isDisabled('#gen-edit')).toBe(false);
    expect(await page.isVisible('#gen-hint')).toBe(false);
    await page.click('#clear-image');
    expect(await page.textContent('#image-label')).toBe('no image');
    expect(await page.isDisabled('#gen-edit')).toBe(true);
    expect(await page.isDisabled('#gen-generate')).toBe(false);
    expect(await page.textContent('#gen-hint')).toBe('Edit current image: no image on screen (upload, render or generate one).');
    // Ask sends no image, but the session still holds its final and the model sees it: the chat says so
    await page.fill('#chat-max', '4');
    await page.fill('#chat-input', 'what is in this picture?');
    await page.click('#chat-send');
    await page.waitForSelector('.msg.assistant:last-child:not([data-state="streaming"])', { timeout: 30_000 });
    expect((await settled(ws, 'understand(')).subscribe.payload.variables.input.image).toBeUndefined();
    expect(await page.locator('.msg.user').last().locator('.meta').textContent()).toBe('no image on screen · the model still sees the image this session holds (New session asks without it)');
    await shot('14a-cleared');
  });

  it('an image left on screen that is not the session\'s latest (a stopped preview, a final after New session, an upload during a job) is sent with the next edit', async () => {
    await dismissError();
    await page.selectOption('#gen-mode', 'PROGRESSIVE');
    const editInput = async () => {
      await page.waitForSelector('#gen-status[data-state="done"]', { timeout: 30_000 });
      return (await settled(ws, 'editImage(')).subscribe.payload.variables.input;
    };
    const onScreen = () => page.getAttribute('#current-image', 'src');
    /** Starts a job whose final is held; resolves once its preview is on screen. */
    const startHeld = async (prompt: string) => {
      await page.fill('#gen-prompt', prompt);
      const before = engine.calls.length;
      const release = engine.hold('generate', (ev) => 'stage' in ev && ev.stage === 'final');
      await page.click('#gen-generate');
      await page.waitForSelector('.frame[data-stage="PREVIEW"]', { timeout: 30_000 });
      await expect.poll(() => engine.calls[before]?.held, { timeout: 30_000 }).toBe(true);
      return { release, call: engine.calls[before]! };
    };

    // 1. A final (the session's latest image), then a job stopped after its preview: the server still
    //    holds the older final, so the edit must send the preview that is on screen.
    await page.fill('#gen-prompt', 'a large red circle at the top left on a white background');
    await page.click('#gen-generate');
    await page.waitForSelector('#gen-status[data-state="done"]', { timeout: 30_000 });
    const stopped = await startHeld('a large blue square at the bottom right on a black background');
    try {
      await page.click('#gen-stop');
      await expect.poll(() => stopped.call.aborted, { timeout: 10_000 }).toBe(true);
    } finally {
      stopped.release();
    }
    await page.waitForSelector('#gen-status[data-server-status="CANCELLED"]', { timeout: 10_000 });
    const preview = await onScreen();
    expect(await page.textContent('#image-label')).toMatch(/^preview · /);
    await page.fill('#gen-prompt', 'make the square green');
    let before = engine.calls.length;
    await page.click('#gen-edit');
    let input = await editInput();
    expect(input.image?.dataUrl).toBe(preview);
    expect(engine.calls[before]).toMatchObject({ kind: 'generate', hadImage: true });

    // 2. New session while a job runs: its final belongs to the old session, so the next edit (in the
    //    new session) sends it. The old session is closed once the job has let go of it.
    const oldSid = (await page.textContent('#session-id'))!;
    const moved = await startHeld('a large red circle at the top left on a white background');
    try {
      await page.click('#new-session');
      await page.waitForFunction((old) => /\w{8}/.test(document.getElementById('session-id')?.textContent ?? '') && document.getElementById('session-id')?.textContent !== old, oldSid);
      expect(sessionAlive(server, oldSid)).toBe(true); // still busy with the job
    } finally {
      moved.release();
    }
    await page.waitForSelector('#gen-status[data-state="done"]', { timeout: 30_000 });
    await expect.poll(() => sessionAlive(server, oldSid), { timeout: 10_000 }).toBe(false);
    const final = await onScreen();
    expect(await page.textContent('#image-label')).toMatch(/^final · /);
    await page.fill('#gen-prompt', 'make the circle blue');
    before = engine.calls.length;
    await page.click('#gen-edit');
    input = await editInput();
    expect(input.sessionId).not.toBe(oldSid);
    expect(input.image?.dataUrl).toBe(final);
    expect(engine.calls[before]).toMatchObject({ kind: 'generate', hadImage: true });

    // 3. An upload while a job runs stays on screen; the job says where its frames went, and the next
    //    edit edits the upload.
    const png = await sharp({ create: { width: 64, height: 64, channels: 3, background: { r: 200, g: 30, b: 30 } } }).png().toBuffer();
    const running = await startHeld('a large green circle at the center on a black background');
    try {
      await page.setInputFiles('#file-input', { name: 'mine.png', mimeType: 'image/png', buffer: png });
      await page.waitForFunction(() => document.getElementById('image-label')?.textContent?.startsWith('uploaded: mine.png'));
    } finally {
      running.release();
    }
    await page.waitForSelector('#gen-status[data-state="done"]', { timeout: 30_000 });
    expect(await page.textContent('#image-label')).toBe('uploaded: mine.png (64×64 → 64×64)');
    expect(await page.textContent('#gen-status')).toContain('not put on screen');
    expect(await page.locator('.frame[data-stage="FINAL"]').count()).toBe(1);
    const upload = await onScreen();
    await page.fill('#gen-prompt', 'make the circle blue');
    await page.click('#gen-edit');
    input = await editInput();
    expect(input.image?.dataUrl).toBe(upload);
    expect(await page.isVisible('#error')).toBe(false);
    await shot('14-edit-what-is-on-screen');
  });

  it('closes sessions it leaves (New session, reload) and replaces an expired one, asking again', async () => {
    const other = await context.newPage();
    const sent: any[] = [];
    other.on('websocket', (w) => w.on('framesent', (f) => { try { sent.push(JSON.parse(String(f.payload))); } catch { /* not JSON */ } }));
    const sid = () => other.textContent('#session-id').then((t) => t ?? '');
    const newSid = (old: string) => other.waitForFunction((o) => { const t = document.getElementById('session-id')?.textContent ?? ''; return /\w{8}/.test(t) && t !== o; }, old);
    try {
      await other.goto(page.url());
      await sessionShown(other);
      const first = await sid();
      await other.click('#new-session');
      await newSid(first);
      await expect.poll(() => sessionAlive(server, first), { timeout: 5_000 }).toBe(false);
      const second = await sid();
      expect(sessionAlive(server, second)).toBe(true);
      await other.reload();
      await expect.poll(() => sessionAlive(server, second), { timeout: 5_000 }).toBe(false);
      await sessionShown(other);

      // The session disappears on the server (expiry, eviction): the question is asked again in a new one.
      const third = await sid();
      server.runtime.sessions.close(third);
      await other.fill('#chat-max', '4');
      await other.fill('#chat-input', 'what is in this picture?');
      await other.click('#chat-send');
      await newSid(third);
      await other.waitForSelector('.msg.assistant:last-child:not([data-state="streaming"])', { timeout: 30_000 });
      expect(await other.getAttribute('.msg.assistant:last-child', 'data-state')).toBe('done');
      expect(await other.locator('.msg.user').count()).toBe(1);
      const asks = sent.filter((m) => m.type === 'subscribe' && String(m.payload?.query).includes('understand('));
      expect(asks.map((m) => m.payload.variables.input.sessionId)).toEqual([third, await sid()]);
      expect(await other.getAttribute('#error', 'data-code')).toBe('SESSION_NOT_FOUND');
      expect(await other.textContent('#error-message')).toContain('asked again');
      expect(await other.textContent('#error-message')).not.toContain('the next request starts a new one');

      // The same for an image job.
      const fourth = await sid();
      server.runtime.sessions.close(fourth);
      await other.click('#gen-generate');
      await newSid(fourth);
      await other.waitForSelector('#gen-status[data-state="done"]', { timeout: 30_000 });
      expect(await other.textContent('#error-message')).toContain('started again');
      await other.goto('about:blank');
    } finally {
      await other.close();
    }
  });

  it('New session while an answer streams stops that answer (engine call ended) and Ask works at once in the new session', async () => {
    const other = await context.newPage();
    const release = engine.hold('understand', (ev, i) => i >= 1);
    try {
      await other.goto(page.url());
      await sessionShown(other);
      const first = (await other.textContent('#session-id')) ?? '';
      await other.fill('#chat-max', '200');
      await other.fill('#chat-input', 'describe this image');
      const before = engine.calls.length;
      await other.click('#chat-send');
      await other.waitForFunction(() => Number(document.querySelector('.msg.assistant:last-child')?.getAttribute('data-chunks')) >= 1);
      // announced once complete, not chunk by chunk
      expect(await other.getAttribute('.msg.assistant:last-child', 'aria-busy')).toBe('true');
      await expect.poll(() => engine.calls[before]?.held, { timeout: 30_000 }).toBe(true);
      await other.click('#new-session');
      await expect.poll(() => engine.calls[before]!.aborted && engine.calls[before]!.ended, { timeout: 5_000 }).toBe(true);
      release();
      await other.waitForFunction((o) => { const t = document.getElementById('session-id')?.textContent ?? ''; return /\w{8}/.test(t) && t !== o; }, first);
      expect(await other.locator('.msg').count()).toBe(0);
      expect(await other.isDisabled('#chat-send')).toBe(false);
      await other.fill('#chat-max', '4');
      await other.fill('#chat-input', 'what is in this picture?');
      await other.click('#chat-send');
      await other.waitForSelector('.msg.assistant:last-child:not([data-state="streaming"])', { timeout: 30_000 });
      expect(await other.getAttribute('.msg.assistant:last-child', 'data-state')).toBe('done');
      expect(await other.getAttribute('.msg.assistant:last-child', 'aria-busy')).toBeNull();
      expect(await other.locator('.msg.assistant').count()).toBe(1);
    } finally {
      release();
      await other.close();
    }
  });

  it('a job whose mutation reply is lost with the socket may still finish on the server: the next edit sends the image on screen', async () => {
    const other = await context.newPage();
    const sent: any[] = [];
    let armed = false;
    let dropId: string | null = null;
    await other.routeWebSocket(/\/graphql$/, (route) => {
      const upstream = route.connectToServer();
      route.onMessage((m) => {
        let j: any;
        try { j = JSON.parse(String(m)); sent.push(j); } catch { /* not JSON */ }
        if (armed && j?.type === 'subscribe' && String(j.payload?.query).includes('generateImage(')) {
          armed = false;
          dropId = j.id;
        }
        upstream.send(m);
      });
      upstream.onMessage((m) => {
        let j: any;
        try { j = JSON.parse(String(m)); } catch { /* not JSON */ }
        if (dropId !== null && j?.id === dropId && j.type === 'next') {
          // the server started the job and answered; the page never hears it
          dropId = null;
          void route.close({ code: 1012, reason: 'test: reply lost' });
          return;
        }
        route.send(m);
      });
    });
    try {
      await other.goto(page.url());
      await sessionShown(other);
      // a final on screen that is the session's latest image
      await other.fill('#gen-prompt', 'a small red circle at the center on a white background');
      await other.click('#gen-generate');
      await other.waitForSelector('#gen-status[data-state="done"]', { timeout: 30_000 });
      const before = engine.calls.length;
      armed = true;
      await other.fill('#gen-prompt', 'a large blue square at the top left on a black background');
      await other.click('#gen-generate');
      await other.waitForSelector('#gen-status[data-state="error"]', { timeout: 30_000 });
      expect(await other.textContent('#gen-status')).toMatch(/^failed: CONNECTION_CLOSED · the job may still run on the server; the next edit sends the image on screen$/);
      // it did run, to the end: its final is now the session's latest image, not the one on screen
      await expect.poll(() => engine.calls[before]?.ended, { timeout: 30_000 }).toBe(true);
      // the job's end reaches the session (unlocked) just after the engine's
      const sid = (await other.textContent('#session-id'))!;
      await expect.poll(() => server.runtime.sessions.get(sid).busy, { timeout: 10_000 }).toBe(false);
      await other.fill('#gen-prompt', 'make the circle blue');
      await other.click('#gen-edit');
      await other.waitForSelector('#gen-status[data-state="done"], #gen-status[data-state="error"]', { timeout: 30_000 });
      const edit = [...sent].reverse().find((m) => m.type === 'subscribe' && String(m.payload?.query).includes('editImage('));
      expect(edit.payload.variables.input.image?.dataUrl).toMatch(/^data:image\/png;base64,/);
      expect(await other.getAttribute('#gen-status', 'data-state')).toBe('done');
    } finally {
      await other.close();
    }
  });

  it('Stop before the job id arrives: the buttons come back only once cancelJob went out, so a Generate at once is not SESSION_BUSY', async () => {
    const other = await context.newPage();
    const sent: any[] = [];
    let hold: { id: string; reply: () => void } | null = null;
    let holdNext = false;
    await other.routeWebSocket(/\/graphql$/, (route) => {
      const upstream = route.connectToServer();
      route.onMessage((m) => {
        try {
          const j = JSON.parse(String(m));
          sent.push(j);
          if (holdNext && j.type === 'subscribe' && String(j.payload?.query).includes('generateImage(')) { holdNext = false; hold = { id: j.id, reply: () => undefined }; }
        } catch { /* not JSON */ }
        upstream.send(m);
      });
      upstream.onMessage((m) => {
        let j: any;
        try { j = JSON.parse(String(m)); } catch { /* not JSON */ }
        const h = hold;
        if (h && j?.id === h.id) {
          // the mutation's reply waits until the test lets it go
          const prev = h.reply;
          h.reply = () => { prev(); route.send(m); };
          return;
        }
        route.send(m);
      });
    });
    const release = engine.hold('generate', (ev) => 'stage' in ev && ev.stage === 'final');
    try {
      await other.goto(page.url());
      await sessionShown(other);
      await other.fill('#gen-prompt', 'a small green star at the bottom on a white background');
      const before = engine.calls.length;
      holdNext = true;
      await other.click('#gen-generate');
      await expect.poll(() => engine.calls[before]?.held, { timeout: 30_000 }).toBe(true); // the job runs; its id is held back
      await other.click('#gen-stop');
      expect(await other.getAttribute('#gen-status', 'data-state')).toBe('cancelling');
      expect(await other.isDisabled('#gen-generate')).toBe(true);
      const h = hold as { id: string; reply: () => void } | null;
      hold = null;
      h!.reply();
      await other.waitForSelector('#gen-status[data-state="cancelled"]', { timeout: 10_000 });
      // cancelJob was answered before the buttons came back: it answers once the job has ended, engine work stopped
      expect(sent.some((m) => m.type === 'subscribe' && String(m.payload?.query).includes('cancelJob('))).toBe(true);
      expect(engine.calls[before]).toMatchObject({ aborted: true, ended: true });
      release(); // (the hold would catch the next job's final too)
      await other.click('#gen-generate'); // at once
      await other.waitForSelector('#gen-status[data-state="done"], #gen-status[data-state="error"]', { timeout: 30_000 });
      expect(await other.textContent('#gen-status')).toMatch(/^job \S+ done/);
    } finally {
      release();
      await other.close();
    }
  });

  it('an imageJob refused RATE_LIMITED is followed again after the wait; one refused otherwise is cancelled, and the next edit sends the image on screen', async () => {
    // The page's socket goes through Playwright; `refuse` answers the next imageJob subscription in the
    // server's place (over graphql-ws a refusal before execution is an `error` message; a resolver's is a
    // `next` with errors, then `complete`).
    let refuse: { code: string; message: string; extensions?: Record<string, unknown>; asNext?: boolean } | null = null;
    const { page: other, sent } = await routedPage((m, reply) => {
      if (!refuse || m.type !== 'subscribe' || !String(m.payload?.query).includes('imageJob(')) return false;
      const r = refuse;
      refuse = null;
      const error = { message: r.message, extensions: { code: r.code, ...r.extensions } };
      if (r.asNext) {
        reply({ id: m.id, type: 'next', payload: { data: null, errors: [error] } });
        reply({ id: m.id, type: 'complete' });
      } else {
        reply({ id: m.id, type: 'error', payload: [error] });
      }
      return true;
    });
    const imageJobs = () => sent.filter((m) => m.type === 'subscribe' && String(m.payload?.query).includes('imageJob('));
    let release = engine.hold('generate', (ev) => 'stage' in ev && ev.stage === 'final');
    try {
      await other.goto(page.url());
      await sessionShown(other);
      // 1. RATE_LIMITED: the page waits retryAfterMs, then follows the job again (the job ran on meanwhile)
      refuse = { code: 'RATE_LIMITED', message: 'Too many operations; retry in 1 s', extensions: { retryAfterMs: 300, retryAfterSeconds: 1 } };
      await other.fill('#gen-prompt', 'a small red circle at the center on a white background');
      let before = engine.calls.length;
      await other.click('#gen-generate');
      await other.waitForSelector('#gen-status[data-state="reconnecting"]', { timeout: 10_000 });
      expect(await other.textContent('#gen-status')).toMatch(/^rate limited by the server · following job \S+ again in 300 ms · 0 events received$/);
      await expect.poll(() => imageJobs().length, { timeout: 10_000 }).toBe(2);
      expect(imageJobs()[1].payload.variables).toEqual(imageJobs()[0].payload.variables); // same id, after: 0 (nothing seen yet)
      release();
      await other.waitForSelector('#gen-status[data-state="done"]', { timeout: 30_000 });
      expect(engine.calls.length).toBe(before + 1);
      expect(await other.isVisible('#error')).toBe(false);
      const finalOnScreen = await other.getAttribute('#current-image', 'src');

      // 2. TOO_MANY_SUBSCRIPTIONS: nobody would see the job, and its final would become the session's
      //    latest image unseen: the page cancels it, and the next edit sends the image on screen.
      release = engine.hold('generate', (ev) => 'stage' in ev && ev.stage === 'final');
      refuse = { code: 'TOO_MANY_SUBSCRIPTIONS', message: 'At most 16 concurrent operations per connection' };
      await other.fill('#gen-prompt', 'a large blue square at the top left on a black background');
      before = engine.calls.length;
      await other.click('#gen-generate');
      await other.waitForSelector('#gen-status[data-state="error"]', { timeout: 10_000 });
      expect(await other.getAttribute('#error', 'data-code')).toBe('TOO_MANY_SUBSCRIPTIONS');
      const cancels = () => sent.filter((m) => m.type === 'subscribe' && String(m.payload?.query).includes('cancelJob(')).map((m) => m.payload.variables.id);
      await expect.poll(cancels, { timeout: 5_000 }).toEqual([imageJobs().at(-1).payload.variables.id]);
      await expect.poll(() => engine.calls[before]?.aborted, { timeout: 10_000 }).toBe(true);
      await expect.poll(() => other.textContent('#gen-status'), { timeout: 10_000 }).toMatch(/^failed: TOO_MANY_SUBSCRIPTIONS · stopped following job \S+, cancel sent · cancelled on the server$/);
      release();
      expect(await other.getAttribute('#current-image', 'src')).toBe(finalOnScreen);
      await dismissErrorOn(other);
      await other.fill('#gen-prompt', 'make the circle blue');
      await other.click('#gen-edit');
      await other.waitForSelector('#gen-status[data-state="done"]', { timeout: 30_000 });
      const edit = [...sent].reverse().find((m) => m.type === 'subscribe' && String(m.payload?.query).includes('editImage('));
      expect(edit.payload.variables.input.image?.dataUrl).toBe(finalOnScreen);

      // 3. JOB_NOT_FOUND (a resolver's error: next, then complete): the hint says what to do
      refuse = { code: 'JOB_NOT_FOUND', message: 'No job "x" (it may have expired)', asNext: true };
      await other.click('#gen-generate');
      await other.waitForSelector('#gen-status[data-state="error"]', { timeout: 10_000 });
      expect(await other.getAttribute('#error', 'data-code')).toBe('JOB_NOT_FOUND');
      expect(await other.textContent('#error-message')).toContain('generate again');
    } finally {
      release();
      await other.close();
    }
  });

  it('opened while the server loads its model (UNAVAILABLE): the page tries again, then shows the model and starts its session', async () => {
    // The first `models` and `createSession` are answered UNAVAILABLE, as by a server still loading its model.
    const loading = new Set(['query Models', 'mutation CreateSession']);
    const { page: other, sent } = await routedPage((m, reply) => {
      const op = [...loading].find((q) => m.type === 'subscribe' && String(m.payload?.query).startsWith(q));
      if (!op) return false;
      loading.delete(op);
      reply({ id: m.id, type: 'next', payload: { data: null, errors: [{ message: 'The model is still loading; retry shortly', extensions: { code: 'UNAVAILABLE' } }] } });
      reply({ id: m.id, type: 'complete' });
      return true;
    });
    // what the model pill and the error banner said, in order (both change within a second)
    await other.addInitScript(() => {
      const w = window as unknown as { __said: string[] };
      w.__said = [];
      new MutationObserver(() => {
        const model = document.getElementById('model')?.textContent ?? '';
        const error = document.getElementById('error');
        const banner = error && !error.hidden ? `error: ${error.textContent?.replace(/\s+/g, ' ').trim()}` : '';
        for (const what of [`model: ${model}`, banner]) if (what && !w.__said.includes(what)) w.__said.push(what);
      }).observe(document, { subtree: true, childList: true, characterData: true, attributes: true });
    });
    try {
      await other.goto(page.url());
      await other.waitForFunction((name) => document.getElementById('model')?.textContent?.includes(name), engine.engine.info.name, { timeout: 10_000 });
      const said = await other.evaluate(() => (window as unknown as { __said: string[] }).__said);
      expect(said).toContain('model: model: loading (UNAVAILABLE) · retrying in 1 s');
      expect(said.find((t) => t.startsWith('error: UNAVAILABLE'))).toMatch(/could not create a session: .* — The model is still loading \(or the server is restarting\)/);
      await other.waitForFunction(() => /\w{8}/.test(document.getElementById('session-id')?.textContent ?? ''), undefined, { timeout: 10_000 });
      expect(await other.isVisible('#error')).toBe(false);
      expect(await other.isVisible('#gen-think')).toBe(true);
      expect(await other.getAttribute('#gen-guidance', 'placeholder')).toMatch(/^default /);
      expect(sent.filter((m) => m.type === 'subscribe' && String(m.payload?.query).startsWith('query Models')).length).toBe(2);
    } finally {
      await other.close();
    }
  });

  it('gives up on a job after 5 failed reconnects and says the cancel was attempted (the server could not be reached), not sent', async () => {
    const other = await context.newPage();
    await other.clock.install(); // the reconnect delays (250 ms doubling) are fast-forwarded
    let refuse = false;
    const routes: { close: (o?: { code?: number; reason?: string }) => Promise<void> }[] = [];
    await other.routeWebSocket(/\/graphql$/, (route) => {
      // the server is unreachable: the socket closes before the connection is acknowledged
      if (refuse) { void route.close({ code: 1013, reason: 'test: unreachable' }); return; }
      route.connectToServer();
      routes.push(route);
    });
    const release = engine.hold('generate', (ev) => 'stage' in ev && ev.stage === 'final');
    try {
      await other.goto(page.url());
      await sessionShown(other);
      await other.fill('#gen-prompt', 'a small yellow triangle at the top on a black background');
      const before = engine.calls.length;
      await other.click('#gen-generate');
      await other.waitForSelector('.frame[data-stage="PREVIEW"]', { timeout: 30_000 }); // imageJob follows the job (the mutation's reply is in)
      await expect.poll(() => engine.calls[before]?.held, { timeout: 30_000 }).toBe(true);
      refuse = true;
      await routes.at(-1)!.close({ code: 1012, reason: 'test: connection dropped' });
      await other.waitForSelector('#gen-status[data-state="reconnecting"]', { timeout: 10_000 });
      for (let i = 0; i < 20 && (await other.getAttribute('#gen-status', 'data-state')) === 'reconnecting'; i++) {
        await other.clock.fastForward(2_000);
        await new Promise((r) => setTimeout(r, 50));
      }
      await expect.poll(() => other.textContent('#gen-status'), { timeout: 5_000 })
        .toMatch(/^connection lost: gave up on job \S+ after 5 reconnect attempts \(cancel attempted\) · the cancel did not reach the server \(CONNECTION_FAILED\)$/);
      expect(await other.getAttribute('#gen-status', 'data-state')).toBe('error');
    } finally {
      release();
      await other.close();
    }
  });

  it('guidance: the box takes the selected mode\'s range from models.guidance, sends cfgTextScale, and shows a refusal', async () => {
    const g = server.runtime.engine.info.guidance;
    await page.selectOption('#gen-mode', 'SIX_STEP');
    expect(await page.getAttribute('#gen-guidance', 'min')).toBe(String(g.sixStep.text.min));
    expect(await page.getAttribute('#gen-guidance', 'max')).toBe(String(g.sixStep.text.max));
    expect(await page.getAttribute('#gen-guidance', 'placeholder')).toBe(`default ${g.sixStep.text.default}`);
    await page.selectOption('#gen-mode', 'PROGRESSIVE');
    expect(await page.getAttribute('#gen-guidance', 'placeholder')).toBe(`default ${g.oneStep.text.default} / ${g.sixStep.text.default}`);
    await page.fill('#gen-prompt', 'a small red circle at the center on a white background');
    await page.fill('#gen-guidance', '2.5');
    await page.click('#gen-generate');
    await page.waitForSelector('#gen-status[data-state="done"]', { timeout: 30_000 });
    const sent = operation(ws, 'generateImage(').subscribe.payload.variables.input;
    expect(sent.cfgTextScale).toBe(2.5);
    expect(engine.calls.at(-1)).toMatchObject({ kind: 'generate' });
    // a scale outside the range: the browser refuses the form (the box is :invalid) and nothing is sent
    const jobs = ws.sent.filter((m) => m.type === 'subscribe' && String(m.payload?.query).includes('generateImage(')).length;
    try {
      await page.fill('#gen-guidance', String(g.sixStep.text.max + 5));
      await page.click('#gen-generate');
      expect(await page.evaluate(() => (document.getElementById('gen-guidance') as HTMLInputElement).validity.rangeOverflow)).toBe(true);
      await page.waitForTimeout(200);
      expect(ws.sent.filter((m) => m.type === 'subscribe' && String(m.payload?.query).includes('generateImage(')).length).toBe(jobs);
    } finally {
      await page.fill('#gen-guidance', '');
    }
  });

  it('intermediate previews are labelled with their sampler\'s step: the 1-NFE preview and the 6-step sampler\'s first step differ', async () => {
    await dismissError();
    await page.selectOption('#gen-mode', 'PROGRESSIVE');
    await page.check('#gen-intermediate');
    try {
      await page.fill('#gen-prompt', 'a small green square at the top on a white background');
      await page.click('#gen-generate');
      await page.waitForSelector('#gen-status[data-state="done"]', { timeout: 30_000 });
    } finally {
      await page.uncheck('#gen-intermediate');
    }
    const op = await settled(ws, 'imageJob(');
    const frames = op.messages.filter((m) => m.type === 'next').map((m) => m.payload.data.imageJob.frame).filter(Boolean);
    // (the server tells them apart only by `sampler`: they share nfe and step)
    expect(frames[0]).toMatchObject({ stage: 'PREVIEW', step: 1 });
    expect(frames[1]).toMatchObject({ stage: 'PREVIEW', step: 1 });
    expect(frames[0].sampler).not.toBe(frames[1].sampler);
    const captions = await page.$$eval('#frames .cap', (n) => n.map((c) => c.textContent ?? ''));
    expect(captions.length).toBe(frames.length);
    expect(captions[0]).toMatch(/^preview · \d+ NFE · \d+ ms$/);
    expect(captions[1]).toMatch(/^preview · (6-NFE|euler-6) step 1\/6 · \d+ NFE · \d+ ms$/);
    expect(captions[frames.length - 2]).toMatch(/^preview · (6-NFE|euler-6) step 5\/6 · /);
    expect(captions.at(-1)).toMatch(/^final · \d+ NFE · \d+ ms$/);
  });

  it('while this page\'s image job uses the session, Ask waits and says why (it met SESSION_BUSY)', async () => {
    await page.fill('#gen-prompt', 'a large blue circle at the center on a white background');
    const before = engine.calls.length;
    const release = engine.hold('generate', (ev) => 'stage' in ev && ev.stage === 'final');
    try {
      await page.click('#gen-generate');
      await expect.poll(() => engine.calls[before]?.held, { timeout: 30_000 }).toBe(true);
      expect(await page.isDisabled('#chat-send')).toBe(true);
      expect(await page.textContent('#chat-hint')).toBe('Ask waits for this session’s image job (a session runs one request at a time): Stop it, or start a New session.');
      await shot('16a-ask-waits');
    } finally {
      release();
    }
    await page.waitForSelector('#gen-status[data-state="done"]', { timeout: 30_000 });
    expect(await page.isDisabled('#chat-send')).toBe(false);
    expect(await page.isVisible('#chat-hint')).toBe(false);
  });

  it('stats say – (not …) after an answer that failed, or was stopped, before its first chunk', async () => {
    await dismissError();
    const stats = () => page.$$eval('#stats .v', (n) => n.map((v) => v.textContent));
    await page.fill('#chat-max', '5000');
    await page.click('#chat-send');
    await page.waitForSelector('.msg.assistant:last-child[data-state="error"]', { timeout: 30_000 });
    expect(await stats()).toEqual(Array(6).fill('–'));
    await dismissError();
    await page.fill('#chat-max', '8');
    const before = engine.calls.length;
    const release = engine.hold('understand', () => true);
    try {
      await page.click('#chat-send');
      await expect.poll(() => engine.calls[before]?.held, { timeout: 30_000 }).toBe(true);
      expect(await stats()).toEqual(Array(6).fill('…'));
      await page.click('#chat-stop');
    } finally {
      release();
    }
    expect(await page.getAttribute('.msg.assistant:last-child', 'data-state')).toBe('cancelled');
    expect(await stats()).toEqual(Array(6).fill('–'));
    expect(await page.locator('#steps-chart .bar').count()).toBe(0);
  });

  it('Random scene: the gateway\'s 429 (GraphQL-shaped) and a network failure are shown with their codes and hints', async () => {
    await dismissError();
    const limited = rateLimitedError(1500);
    const pattern = '**/demo/api/render?*';
    await page.route(pattern, (route) => route.fulfill({
      status: 429,
      headers: { 'retry-after': String(limited.extensions.retryAfterSeconds) },
      contentType: 'application/json',
      body: JSON.stringify({ errors: [{ message: limited.message, extensions: { ...limited.extensions, code: limited.code } }] }),
    }));
    try {
      await page.click('#random-scene');
      await page.waitForSelector('#error:not([hidden])', { timeout: 10_000 });
      expect(await page.getAttribute('#error', 'data-code')).toBe('RATE_LIMITED');
      expect(await page.textContent('#error-message')).toBe(`${limited.message} — Too many requests from here; wait a moment, then try again.`);
      await dismissError();
      await page.unroute(pattern);
      await page.route(pattern, (route) => route.abort('connectionrefused'));
      await page.click('#random-scene');
      await page.waitForSelector('#error:not([hidden])', { timeout: 10_000 });
      expect(await page.getAttribute('#error', 'data-code')).toBe('NETWORK');
      expect(await page.textContent('#error-message')).toMatch(/^could not render the scene: .+ — The server could not be reached; check that it is running, then try again\.$/);
    } finally {
      await page.unroute(pattern);
    }
    await dismissError();
  });

  it('a click on the image area chooses a file (it is a button); Ctrl+Enter in the prompt generates', async () => {
    let chooser: import('playwright-core').FileChooser | undefined;
    for (let attempt = 0; attempt < 3 && !chooser; attempt++) {
      [chooser] = await Promise.all([page.waitForEvent('filechooser', { timeout: 10_000 }).catch(() => undefined), page.click('#dropzone')]);
    }
    if (!chooser) throw new Error('a click on #dropzone opened no file chooser in three tries');
    const png = await sharp({ create: { width: 64, height: 64, channels: 3, background: { r: 250, g: 200, b: 0 } } }).png().toBuffer();
    await chooser.setFiles({ name: 'clicked.png', mimeType: 'image/png', buffer: png });
    await page.waitForFunction(() => document.getElementById('image-label')?.textContent?.startsWith('uploaded: clicked.png'));

    const jobs = () => ws.sent.filter((m) => m.type === 'subscribe' && String(m.payload?.query).includes('generateImage(')).length;
    const before = jobs();
    const prompt = 'a small red circle at the center on a white background';
    await page.fill('#gen-prompt', prompt);
    await page.focus('#gen-prompt');
    await page.keyboard.press('Control+Enter');
    await expect.poll(jobs, { timeout: 10_000 }).toBe(before + 1);
    expect(await page.inputValue('#gen-prompt')).toBe(prompt); // no new line
    await page.waitForSelector('#gen-status[data-state="done"], #gen-status[data-state="error"]', { timeout: 30_000 });
    expect(operation(ws, 'generateImage(').subscribe.payload.variables.input.prompt).toBe(prompt);
  });

  it('refuses an undecodable file over the server\'s image limit before sending it', async () => {
    await dismissError();
    const labelBefore = await page.textContent('#image-label');
    const dataTransfer = await page.evaluateHandle(() => {
      const dt = new DataTransfer();
      dt.items.add(new File([new Uint8Array(21 * 1024 * 1024)], 'huge.png', { type: 'image/png' }));
      return dt;
    });
    await page.dispatchEvent('#dropzone', 'drop', { dataTransfer });
    await page.waitForSelector('#error:not([hidden])', { timeout: 10_000 });
    expect(await page.getAttribute('#error', 'data-code')).toBe('IMAGE_TOO_LARGE');
    expect(await page.textContent('#error-message')).toMatch(/"huge\.png" was not attached: it is 21 MiB.*at most 20 MiB/);
    expect(await page.textContent('#image-label')).toBe(labelBefore);
    expect(await page.textContent('#conn')).toBe('connected');
    await dismissError();
  });

  it('fits a phone: no sideways scrolling at 320 and 375 px once answers and the comparison table are shown', async () => {
    expect(await page.isVisible('#spec-compare')).toBe(true);
    try {
      for (const width of [320, 375]) {
        await page.setViewportSize({ width, height: 800 });
        expect(await page.evaluate(() => document.documentElement.scrollWidth)).toBeLessThanOrEqual(width);
      }
      await shot('15-phone');
    } finally {
      await page.setViewportSize({ width: 1280, height: 900 });
    }
  });

  it('keyboard: focus stays usable when Ask, Generate and Stop are disabled; Upload is reachable', async () => {
    const active = () => page.evaluate(() => document.activeElement?.id ?? '');
    await page.fill('#chat-max', '4');
    await page.focus('#chat-send');
    await page.keyboard.press('Enter');
    expect(await active()).toBe('chat-input');
    await page.waitForSelector('.msg.assistant:last-child:not([data-state="streaming"])', { timeout: 30_000 });

    await page.fill('#gen-prompt', 'a small red star at the bottom right on a gray background');
    const before = engine.calls.length;
    const release = engine.hold('generate', (ev) => 'stage' in ev && ev.stage === 'final');
    try {
      await page.focus('#gen-generate');
      await page.keyboard.press('Space');
      expect(await active()).toBe('gen-prompt');
      await page.waitForSelector('.frame[data-stage="PREVIEW"]', { timeout: 30_000 });
      await expect.poll(() => engine.calls[before]?.held, { timeout: 30_000 }).toBe(true);
      await page.focus('#gen-stop');
      await page.keyboard.press('Enter');
      expect(await active()).toBe('gen-generate');
      await expect.poll(() => engine.calls[before]!.aborted, { timeout: 10_000 }).toBe(true);
    } finally {
      release();
    }

    await page.focus('#dropzone');
    await page.keyboard.press('Tab');
    expect(await active()).toBe('file-input');
    // Space on the focused input opens the file chooser. Chromium under a loaded CI machine has once let a
    // press go by without one (the 30 s wait ran out): press again, from the same focus, up to three times.
    let chooser: import('playwright-core').FileChooser | undefined;
    for (let attempt = 0; attempt < 3 && !chooser; attempt++) {
      await page.focus('#file-input');
      expect(await active()).toBe('file-input');
      [chooser] = await Promise.all([page.waitForEvent('filechooser', { timeout: 10_000 }).catch(() => undefined), page.keyboard.press('Space')]);
    }
    if (!chooser) throw new Error('Space on the focused file input opened no file chooser in three tries');
    const png = await sharp({ create: { width: 64, height: 64, channels: 3, background: { r: 10, g: 10, b: 200 } } }).png().toBuffer();
    await chooser.setFiles({ name: 'keyboard.png', mimeType: 'image/png', buffer: png });
    await page.waitForFunction(() => document.getElementById('image-label')?.textContent?.startsWith('uploaded: keyboard.png'));
    expect(pageErrors).toEqual([]);
  });

  it('asking or generating while the server is down says it is unreachable and that nothing was sent; the pill says connected once it is back', async () => {
    const down = await startServer({ port: 0, engine: engine.engine, closeEngine: false, log: () => {} });
    let back: RunningServer | undefined;
    const other = await context.newPage();
    await other.clock.install(); // the background reconnect's delays are fast-forwarded
    try {
      await other.goto(down.url.replace(/\/graphql$/, '/'));
      await sessionShown(other);
      await down.close();
      await other.waitForSelector('#conn[data-state="closed"]', { timeout: 10_000 });
      await other.click('#chat-send');
      await other.waitForSelector('#error:not([hidden])', { timeout: 10_000 });
      expect(await other.getAttribute('#error', 'data-code')).toBe('CONNECTION_FAILED');
      expect(await other.textContent('#error-message')).toContain('server unreachable, the question was not sent');
      expect(await other.getAttribute('.msg.assistant:last-child', 'data-state')).toBe('error');
      expect(await other.textContent('.msg.assistant:last-child .meta')).toBe('not sent: server unreachable');
      await other.screenshot({ path: join(ARTIFACTS, '16-server-down.png'), fullPage: true });
      // Generate: the socket never opened, so no job was started (not "the job may still run")
      await other.click('#gen-generate');
      await other.waitForSelector('#gen-status[data-state="error"]', { timeout: 10_000 });
      expect(await other.textContent('#gen-status')).toBe('failed: CONNECTION_FAILED · the server could not be reached; no job was started');
      // The server comes back while the page is idle: the pill stops saying "disconnected".
      back = await startServer({ port: Number(new URL(down.url).port), engine: engine.engine, closeEngine: false, log: () => {} });
      for (let i = 0; i < 10 && (await other.getAttribute('#conn', 'data-state')) !== 'connected'; i++) {
        await other.clock.fastForward(16_000);
        await new Promise((r) => setTimeout(r, 100));
      }
      expect(await other.textContent('#conn')).toBe('connected');
    } finally {
      await other.close();
      await down.close();
      await back?.close();
    }
  });
});
