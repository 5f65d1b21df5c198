// A small in-test engine implementing the Engine interface, for gateway-only concerns (transport,
// cancellation, backpressure, limits). Model behaviour is exercised against the real engine on
// test/fixtures/tiny-pack in real-engine.test.ts.
import { createHash } from 'node:crypto';
import sharp from 'sharp';
import { SYNTHETIC_GUIDANCE } from '../../bench/synthetic-engine.ts';
import {
  EngineError,
  type Engine,
  type GenerateRequest,
  type ImageFrame,
  type InputImageInfo,
  type RgbImage,
  type SessionHandle,
  type SessionInfo,
  type UnderstandEvent,
  type UnderstandRequest,
} from '../../src/engine/types.ts';

export interface FakeEngineOptions {
  stepMs?: number;
  tokens?: number;
  /** ms per denoiser evaluation */
  nfeMs?: number;
}

const sleep = (ms: number, signal?: AbortSignal) =>
  new Promise<void>((resolve) => {
    if (signal?.aborted) return resolve();
    const t = setTimeout(done, ms);
    function done() {
      clearTimeout(t);
      signal?.removeEventListener('abort', done);
      resolve();
    }
    signal?.addEventListener('abort', done, { once: true });
  });

async function png(width: number, height: number, value: number) {
  const data = Buffer.alloc(width * height * 3, value);
  const bytes = new Uint8Array(await sharp(data, { raw: { width, height, channels: 3 } }).png().toBuffer());
  return { bytes, rgb: { width, height, data: new Uint8Array(data) }, sha256: createHash('sha256').update(bytes).digest('hex') };
}

export class FakeEngine implements Engine {
  readonly info = {
    name: 'fake',
    description: 'in-test engine',
    capabilities: { understand: true, generate: true, edit: true, draft: true, sixStep: true, oneStep: true, think: true },
    imageSize: { width: 8, height: 8 },
    vocabularySize: 100,
    words: ['a', 'blue', 'circle', 'describe', 'image', 'red', 'the'],
    contextLength: 1 << 20,
    sessionContext: 'conversation' as const,
    understandOffset: [0, 0] as [number, number],
    guidance: SYNTHETIC_GUIDANCE,
  };
  readonly stats = {
    understandStarted: 0,
    understandFinished: 0,
    understandAborted: 0,
    generateStarted: 0,
    generateFinished: 0,
    generateAborted: 0,
    /** model steps run (understand verification steps + denoiser evaluations) */
    steps: 0,
    active: 0,
    sessionsCreated: 0,
    sessionsClosed: 0,
  };
  readonly requests: { understand: UnderstandRequest[]; generate: GenerateRequest[] } = { understand: [], generate: [] };
  stepMs: number;
  tokens: number;
  nfeMs: number;
  private nextSession = 0;
  readonly liveSessions = new Set<string>();
  /** per session: context tokens, the latest image, and whether the conversation has seen it (like the local engine) */
  readonly sessionState = new Map<string, { tokens: number; image?: RgbImage; seen: boolean }>();
  /** bytes a session's context holds per token (sessionInfo) */
  bytesPerToken = 1000;
  /** fold a textless step into the first chunk (steps: 2) and end with a textless trailing step */
  textlessSteps = false;
  /** leave sessionInfo out, like an Engine implementation without it */
  set withoutSessionInfo(v: boolean) {
    (this as { sessionInfo?: unknown }).sessionInfo = v ? undefined : FakeEngine.prototype.sessionInfo;
  }

  constructor(o: FakeEngineOptions = {}) {
    this.stepMs = o.stepMs ?? 5;
    this.tokens = o.tokens ?? 6;
    this.nfeMs = o.nfeMs ?? 10;
  }

  async *understand(req: UnderstandRequest, signal?: AbortSignal): AsyncGenerator<UnderstandEvent> {
    this.requests.understand.push(req);
    this.stats.understandStarted++;
    this.stats.active++;
    try {
      if (req.prompt.includes('unknownword')) throw new EngineError('UNKNOWN_WORDS', 'unknown word: unknownword', { word: 'unknownword' });
      const state = req.session ? this.state(req.session) : undefined;
      let inputImage: InputImageInfo | undefined;
      if (req.image) inputImage = this.fit(req.image, 'request');
      else if (state?.image && !state.seen) inputImage = this.fit(state.image, 'session');
      if (state) {
        if (req.image) state.image = req.image;
        if (state.image) state.seen = true;
      }
      const n = Math.min(req.maxTokens ?? this.tokens, 10_000);
      const folded = this.textlessSteps;
      let text = '';
      for (let i = 0; i < n; i++) {
        await sleep(this.stepMs, signal);
        if (signal?.aborted) {
          this.stats.understandAborted++;
          return;
        }
        this.stats.steps++;
        if (req.prompt.includes('explode') && i === 1) throw new Error('secret internal stack detail /opt/model');
        const t = `w${i} `;
        text += t;
        if (folded && i === 0) yield { kind: 'chunk', text: t, tokenIds: [90, i], acceptedTokens: 3, draftedTokens: 5, steps: 2 };
        else yield { kind: 'chunk', text: t, tokenIds: [i], acceptedTokens: 2, draftedTokens: 3 };
        if (signal?.aborted) {
          this.stats.understandAborted++;
          return;
        }
      }
      this.stats.understandFinished++;
      if (state) state.tokens += n + 3;
      yield {
        kind: 'done',
        finishReason: 'length',
        text,
        usage: { promptTokens: 3, completionTokens: n, totalTokens: n + 3 },
        timings: { queueMs: 0, timeToFirstTokenMs: this.stepMs, totalMs: n * this.stepMs, tokensPerSecond: 1000 / this.stepMs },
        speculation: {
          mode: req.speculation?.mode ?? 'auto',
          drafts: n,
          draftedTokens: 3 * n,
          acceptedTokens: 2 * n,
          meanAcceptedLength: 2,
          acceptanceRate: 2 / 3,
          acceptancePerPosition: [0.9, 0.6, 0.3],
        },
        trailing: folded ? { tokenIds: [91, 92], acceptedTokens: 1, draftedTokens: 1, steps: 1 } : undefined,
        inputImage,
      };
    } finally {
      this.stats.active--;
    }
  }

  async *generate(req: GenerateRequest, signal?: AbortSignal): AsyncGenerator<ImageFrame> {
    this.requests.generate.push(req);
    this.stats.generateStarted++;
    this.stats.active++;
    const t0 = performance.now();
    try {
      if (req.prompt.includes('explode')) throw new Error('secret internal stack detail /opt/model');
      const state = req.session ? this.state(req.session) : undefined;
      let sourceImage: InputImageInfo | undefined;
      if (req.sourceImage) sourceImage = this.fit(req.sourceImage, 'request');
      else if (req.edit) {
        if (!state?.image) throw new EngineError('INVALID_INPUT', 'edit: true needs a session with a latest image');
        sourceImage = this.fit(state.image, 'session');
      }
      this.editedImages.push(req.sourceImage ?? (req.edit ? state?.image : undefined));
      const plan: Array<{ stage: 'preview' | 'final'; nfe: number }> =
        req.mode === '1nfe'
          ? [{ stage: 'final', nfe: 1 }]
          : req.mode === '6nfe'
            ? [{ stage: 'final', nfe: 6 }]
            : req.mode === 'baseline'
              ? [{ stage: 'final', nfe: req.steps ?? 10 }]
              : req.intermediatePreviews
                ? [1, 2, 3, 4, 5].map((n) => ({ stage: 'preview' as const, nfe: n })).concat([{ stage: 'final', nfe: 6 } as never])
                : [{ stage: 'preview', nfe: 1 }, { stage: 'final', nfe: 6 }];
      let spent = 0;
      for (const [step, p] of plan.entries()) {
        for (; spent < p.nfe; spent++) {
          await sleep(this.nfeMs, signal);
          if (signal?.aborted) {
            this.stats.generateAborted++;
            return;
          }
          this.stats.steps++;
        }
        const img = await png(8, 8, p.stage === 'final' ? 200 : 50);
        yield {
          stage: p.stage,
          nfe: p.nfe,
          step,
          elapsedMs: performance.now() - t0,
          seed: req.seed ?? 0,
          image: { mimeType: 'image/png', width: 8, height: 8, bytes: img.bytes, sha256: img.sha256 },
          rgb: img.rgb,
          sourceImage,
          ...(req.think
            ? { thought: `a scene for ${req.prompt}`, timings: { prefillMs: 0, encodeSourceMs: 0, samplingMs: 0, decodeMs: 0, imageEncodeMs: 0, thinkMs: 3 } }
            : {}),
        };
        if (p.stage === 'final' && state) {
          state.image = img.rgb;
          state.seen = false;
        }
      }
      this.stats.generateFinished++;
    } finally {
      this.stats.active--;
    }
  }

  /** the image each generate call worked from (its sourceImage, or the session's for edit: true) */
  readonly editedImages: Array<RgbImage | undefined> = [];

  private state(s: SessionHandle) {
    const st = this.sessionState.get(s.id);
    if (!st) throw new EngineError('INVALID_INPUT', `unknown or closed session ${s.id}`);
    return st;
  }

  private fit(img: RgbImage, source: 'request' | 'session'): InputImageInfo {
    const { width: w, height: h } = this.info.imageSize;
    const side = Math.min(img.width, img.height);
    return { originalWidth: img.width, originalHeight: img.height, width: w, height: h, resized: side !== w || img.width !== img.height, cropped: img.width !== img.height, source };
  }

  createSession(): SessionHandle {
    const id = `s${this.nextSession++}`;
    this.stats.sessionsCreated++;
    this.liveSessions.add(id);
    this.sessionState.set(id, { tokens: 0, seen: false });
    return { id };
  }
  closeSession(s: SessionHandle): void {
    this.stats.sessionsClosed++;
    this.liveSessions.delete(s.id);
    this.sessionState.delete(s.id);
  }
  sessionInfo?(s: SessionHandle): SessionInfo {
    const st = this.state(s);
    return { tokens: st.tokens, bytes: st.tokens * this.bytesPerToken + (st.image?.data.byteLength ?? 0), hasImage: !!st.image };
  }
  async close(): Promise<void> {}
}

/** An engine whose streams never produce anything and ignore their signal (a wedged worker). */
export class HungEngine extends FakeEngine {
  override async *understand(): AsyncGenerator<never> {
    await new Promise(() => {});
  }
  override async *generate(): AsyncGenerator<never> {
    await new Promise(() => {});
  }
}
