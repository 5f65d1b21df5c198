// createEngine(packDir, options): loads and validates a model pack, starts its model worker, measures
// the verification (and draft) cost curves for speculative sizing, and exposes the Engine interface.
//
//   const engine = await createEngine('models/shapes-mot', { intraOpThreads: 2 });
//   for await (const ev of engine.understand({ prompt, image, speculation: { mode: 'auto' } }, signal))
//     ev.kind === 'chunk' ? send(ev.text) : finish(ev);            // one chunk per verification step
//   for await (const frame of engine.generate({ prompt, sourceImage, mode: 'progressive' }, signal))
//     send(frame.stage, frame.nfe, frame.image);                  // preview(s) … final (PNG)
//   await engine.close();
//
// Chunks never carry empty text: textless steps (special tokens, the EOS step) fold into the next chunk
// (`steps` > 1) or, at the end, into `summary.trailing`.
//
// Images of any size (≥ 8 px a side, ≤ MAX_IMAGE_PIXELS) are centre-cropped to a square and resized to
// the pack's vision size with sharp; `summary.inputImage` / `frame.sourceImage` say whether they were.
//
// Sessions (types.ts SessionHandle): understand turns share one KV-cached conversation; the session
// also remembers its latest image (last understood input, or last generate/edit final):
//   const s = engine.createSession();
//   engine.understand({ prompt: 'describe this image', image, session: s });
//   engine.generate({ prompt: 'now make the circle green', edit: true, session: s }); // edits `image`
//   engine.understand({ prompt: 'what colour is the circle', session: s });          // sees the edit
//   engine.sessionInfo(s);  // { tokens, bytes, hasImage }: bound session memory with it
//   engine.closeSession(s);
//
// Errors are EngineError with a `code` (types.ts); they surface while iterating, never synchronously.
// checkUnderstand / checkGenerate throw the same input errors up front, without model work.
// Aborting `signal` stops model work before the next model call: an understanding stream that has been
// admitted then ends with a summary whose finishReason is 'cancelled'; one still waiting for a slot (or
// given an aborted signal), and a generation stream, reject with CANCELLED.
import os from 'node:os';
import { WorkerClient } from '../runtime/client.ts';
import { loadPack } from '../runtime/manifest.ts';
import type { WorkerStats } from '../runtime/protocol.ts';
import { admit, heldAdmission } from './admission.ts';
import type { EngineCtx, EngineOptions } from './context.ts';
import { planSamplers, runGenerate, samplerGuidance, validateGenerate } from './generation/pipeline.ts';
import { canThink, thinkFirst, validateThink } from './generation/think.ts';
import { Limiter } from './limiter.ts';
import { AcceptanceStats } from './speculative/metrics.ts';
import { CostCurve } from './speculative/sizing.ts';
import { PackTokenizer } from './tokenizer.ts';
import {
  EngineError,
  type Engine,
  type GenerateRequest,
  type ImageFrame,
  type ModelInfo,
  type SessionHandle,
  type SessionInfo,
  type UnderstandEvent,
  type UnderstandRequest,
} from './types.ts';
import { causalMask } from './understand/target.ts';
import { checkContextRoom, newConversation, runUnderstand, validateUnderstand, type ConversationState } from './understand/pipeline.ts';
import { WorkerDraftModel } from './speculative/worker-draft.ts';
import type { DraftCost } from './speculative/sizing.ts';
import { WorkerSequence } from './understand/worker-target.ts';

export type { EngineOptions } from './context.ts';
export { EngineError } from './types.ts';

/** The Engine plus introspection the CLI, benchmarks and tests use. */
export interface LocalEngine extends Engine {
  sessionInfo(session: SessionHandle): SessionInfo;
  /** measured verification cost curve (ms per forward of T tokens), null if not calibrated */
  readonly costCurve: Array<[number, number]> | null;
  workerStats(): Promise<WorkerStats & { restarts: number }>;
  /** test hook: make the model worker exit (as a native crash would); resolves once noticed */
  crashWorkerForTest(): Promise<void>;
  /** re-measure the cost curve now */
  calibrate(): Promise<Array<[number, number]>>;
  /** the model worker (benchmarks and tests drive decode loops directly) */
  readonly workerClient: WorkerClient;
  /** running acceptance statistics used by auto sizing */
  readonly acceptance: AcceptanceStats;
  /** running acceptance of the draft model: chain steps and tree steps (auto's chain/tree choice) */
  readonly draftAcceptance: { chain: AcceptanceStats; tree: AcceptanceStats };
  /** measured draft-model costs (null without a draft graph or calibration) */
  readonly draftCost: DraftCost | null;
}

function intOpt(o: Record<string, unknown>, k: string, d: number, min = 0): number {
  const v = o[k];
  if (v === undefined) return d;
  if (typeof v !== 'number' || !Number.isInteger(v) || v < min)
    throw new EngineError('OUT_OF_RANGE', `engine option ${k} must be ${min ? `an integer >= ${min}` : 'a non-negative integer'}, got ${JSON.stringify(v)}`);
  return v;
}

export async function createEngine(packDir: string, options: EngineOptions | Record<string, unknown> = {}): Promise<LocalEngine> {
  const o = options as Record<string, unknown>;
  const pack = loadPack(packDir);
  const m = pack.manifest;
  const sp = m.special_tokens;
  const tokenizer = new PackTokenizer(pack.tokenizerJson, sp.unk, Object.values(sp), m.untrained_words);
  const cores = Math.max(1, os.availableParallelism?.() ?? os.cpus().length);
  const opts: EngineCtx['opts'] = {
    intraOpThreads: intOpt(o, 'intraOpThreads', Math.min(2, cores)),
    decodeIntraOpThreads: intOpt(o, 'decodeIntraOpThreads', 1),
    interOpThreads: intOpt(o, 'interOpThreads', 1),
    allowSpinning: o['allowSpinning'] === true,
    replySpinUs: intOpt(o, 'replySpinUs', 0),
    // 0 would admit nothing, ever: every request would wait forever
    maxConcurrent: intOpt(o, 'maxConcurrent', 4, 1),
    maxQueue: intOpt(o, 'maxQueue', 32),
    calibrate: o['calibrate'] !== false,
    defaultMaxTokens: intOpt(o, 'defaultMaxTokens', Math.min(64, m.decoder.max_positions), 1),
    maxChainLength: intOpt(o, 'maxChainLength', 8),
    batchCfg: o['batchCfg'] !== false,
    maxPromptWords: intOpt(o, 'maxPromptWords', Math.floor(m.decoder.max_positions / 2), 1),
  };
  const client = new WorkerClient(
    { op: 'init', files: pack.files, manifest: m, tuning: { intraOpThreads: opts.intraOpThreads, decodeIntraOpThreads: opts.decodeIntraOpThreads, interOpThreads: opts.interOpThreads, allowSpinning: opts.allowSpinning, replySpinUs: opts.replySpinUs } },
    { maxPending: opts.maxQueue * 8 + 64 },
  );
  try {
    await client.start();
  } catch (e) {
    await client.close();
    throw e instanceof EngineError ? e : new EngineError('MODEL_LOAD_FAILED', `${packDir}: ${(e as Error).message}`);
  }
  const ctx: EngineCtx = {
    pack,
    manifest: m,
    client,
    tokenizer,
    stats: new AcceptanceStats(0.5),
    draftStats: new AcceptanceStats(0.6),
    draftTreeStats: new AcceptanceStats(0.6),
    curve: null,
    embedTable: null,
    draftCost: null,
    limiter: new Limiter(opts.maxConcurrent, opts.maxQueue),
    opts,
  };

  async function calibrate(): Promise<Array<[number, number]>> {
    // Verification cost vs token count at a typical past length (EAGLE's total_token = -1 idea).
    const seq = await WorkerSequence.open(client, m.decoder.vocab, 128);
    try {
      const P = Math.min(48, Math.floor(m.decoder.max_positions / 3));
      const ids = Int32Array.from({ length: P }, (_, i) => 10 + (i % Math.max(1, m.decoder.vocab - 10)));
      await seq.forward(ids, Int32Array.from({ length: P }, (_, i) => i), causalMask(P), 'last');
      const points: Array<[number, number]> = [];
      for (let w = 0; w < 8; w++) {
        await seq.forward(ids.subarray(0, 4), Int32Array.from({ length: 4 }, (_, i) => P + i), causalMask(4), 'all');
        seq.compact({ keepFrom: P, keep: new Int32Array(0) });
      }
      for (const T of [1, 2, 3, 4, 6, 8, 12, 16, 24, 32]) {
        const times: number[] = [];
        for (let rep = 0; rep < 7; rep++) {
          const t0 = performance.now();
          await seq.forward(ids.subarray(0, T), Int32Array.from({ length: T }, (_, i) => P + i), causalMask(T), T === 1 ? 'last' : 'all');
          times.push(performance.now() - t0);
          seq.compact({ keepFrom: P, keep: new Int32Array(0) });
        }
        times.sort((a, b) => a - b);
        points.push([T, times[Math.floor(times.length / 2)]!]);
      }
      // monotone envelope: verifying more tokens never costs less
      for (let i = 1; i < points.length; i++) points[i]![1] = Math.max(points[i]![1], points[i - 1]![1]);
      ctx.curve = new CostCurve(points);
      if (m.graphs.draft) ctx.draftCost = await measureDraft(P);
      return points;
    } finally {
      await seq.close();
    }
  }

  /** Draft costs: one draft step (T = 1, own features) and a catch-up of 2 committed rows. */
  async function measureDraft(P: number): Promise<DraftCost> {
    const D = m.decoder.hidden;
    const L = m.decoder.layers;
    const draft = await WorkerDraftModel.open(client, m.decoder.vocab, D);
    try {
      const row = (T: number, hidden: boolean, pos: number) => ({
        embeds: new Float32Array(T * D),
        ...(hidden ? { hidden: new Float32Array(T * L * D) } : { prev: new Float32Array(T * D) }),
        positions: Int32Array.from({ length: T }, (_, i) => pos + i),
        mask: causalMask(T),
      });
      await draft.forward(row(P, true, 0));
      const time = async (T: number, hidden: boolean) => {
        const ts: number[] = [];
        for (let rep = 0; rep < 9; rep++) {
          const t0 = performance.now();
          await draft.forward(row(T, hidden, P));
          ts.push(performance.now() - t0);
          draft.truncate(P);
        }
        return ts.sort((a, b) => a - b)[4]!;
      };
      await time(1, false); // warm-up
      // chains run fused in the worker (one request for catch-up + all draft steps): measure those
      const chain = async (K: number) => {
        const ts: number[] = [];
        for (let rep = 0; rep < 9; rep++) {
          const t0 = performance.now();
          await draft.chain(row(2, true, P), P + 2, K);
          ts.push(performance.now() - t0);
          draft.truncate(P);
        }
        return ts.sort((a, b) => a - b)[4]!;
      };
      await chain(3); // warm-up
      const fixed = await chain(1);
      const long = await chain(5);
      return { perToken: Math.max(0.01, (long - fixed) / 4), fixed };
    } finally {
      await draft.close();
    }
  }

  if (m.graphs.draft) ctx.embedTable = await client.call<Float32Array>({ op: 'embed_table' });
  if (o['draftCost'] && typeof o['draftCost'] === 'object') ctx.draftCost = o['draftCost'] as DraftCost;
  if (Array.isArray(o['costCurve'])) ctx.curve = new CostCurve(o['costCurve'] as Array<[number, number]>);
  else if (opts.calibrate) await calibrate();

  const conversations = new Map<string, ConversationState>();
  let nextSession = 1;
  let closed = false;
  const g = m.graphs;
  const info: ModelInfo = {
    name: m.name,
    description: m.description ?? '',
    capabilities: {
      understand: true,
      generate: !!(g.denoiser && g.vae_decoder),
      edit: !!(g.denoiser && g.vae_decoder && g.vae_encoder && g.vision),
      draft: !!g.draft,
      sixStep: !!g.denoise_6nfe,
      oneStep: !!g.denoise_1nfe,
      think: canThink(ctx),
    },
    imageSize: { width: m.vision?.image_size ?? 64, height: m.vision?.image_size ?? 64 },
    understandOffset: m.vision?.understand_offset ? [...m.vision.understand_offset] : [0, 0],
    vocabularySize: m.decoder.vocab,
    words: tokenizer.words(),
    contextLength: m.decoder.max_positions,
    sessionContext: m.prompts?.session_context ?? 'conversation',
    guidance: { baseline: samplerGuidance(m, 'denoiser'), sixStep: samplerGuidance(m, 'denoise_6nfe'), oneStep: samplerGuidance(m, 'denoise_1nfe') },
  };

  const session = (handle: SessionHandle | undefined): ConversationState | null => {
    if (!handle) return null;
    const conv = conversations.get(handle?.id);
    if (!conv) throw new EngineError('INVALID_INPUT', `unknown or closed session ${handle?.id}`);
    return conv;
  };
  // KV memory per cached row (K and V of every layer, float32) and the worker's allocation rule:
  // two ping-pong buffers per tensor whose capacity starts at 64 rows and doubles (kv-cache.ts)
  const kvRowBytes = 2 * m.decoder.layers * m.decoder.heads * m.decoder.head_dim * 4;
  const kvBytes = (peakRows: number) => {
    let cap = 64;
    while (cap < peakRows) cap *= 2;
    return 2 * cap * kvRowBytes;
  };

  const engine: LocalEngine = {
    info,
    get costCurve() {
      return ctx.curve ? ctx.curve.points.map(([t, c]) => [t, c] as [number, number]) : null;
    },
    // Errors (bad input, busy, crashes) surface when the stream is iterated, never synchronously.
    understand(req: UnderstandRequest, signal?: AbortSignal): AsyncIterable<UnderstandEvent> {
      return (async function* () {
        if (closed) throw new EngineError('INTERNAL', 'engine is closed');
        yield* runUnderstand(ctx, req, signal, session(req?.session));
      })();
    },
    generate(req: GenerateRequest, signal?: AbortSignal): AsyncIterable<ImageFrame> {
      return (async function* () {
        if (closed) throw new EngineError('INTERNAL', 'engine is closed');
        const conv = session(req?.session);
        if (req?.think === undefined || req.think === false) return yield* runGenerate(ctx, req, signal, conv);
        const t0 = performance.now();
        validateThink(ctx, req, conv); // refused before it waits for a slot
        // one admission for the thought and the drawing: the session stays busy and the slot stays taken
        // in between (a second request on the session is BUSY, and none is drawn before this one)
        const adm = await admit(ctx, conv, signal);
        try {
          const { request, thought } = await thinkFirst(ctx, req, signal, conv, heldAdmission());
          const drawFrom = performance.now() - t0;
          // elapsedMs counts from the request: the queue and the thought included (timings.thinkMs: the thought)
          for await (const frame of runGenerate(ctx, request, signal, conv, heldAdmission(adm.freeSession)))
            yield { ...frame, thought: thought.text, elapsedMs: frame.elapsedMs + drawFrom, ...(frame.timings ? { timings: { ...frame.timings, thinkMs: thought.ms } } : {}) };
        } finally {
          adm.freeSession();
          adm.release();
        }
      })();
    },
    checkUnderstand(req: UnderstandRequest): void {
      const conv = session(req?.session);
      checkContextRoom(ctx, validateUnderstand(ctx, req), conv, req.image !== undefined && req.image !== null);
    },
    checkGenerate(req: GenerateRequest): void {
      const conv = session(req?.session);
      const v = req?.think === undefined || req.think === false ? validateGenerate(ctx, req, conv) : validateThink(ctx, req, conv).v;
      planSamplers(ctx, v); // a scale outside a distilled graph's training range fails here, not in the job
    },
    createSession(): SessionHandle {
      const id = `s${nextSession++}`;
      conversations.set(id, newConversation());
      return { id };
    },
    sessionInfo(handle: SessionHandle): SessionInfo {
      const c = session(handle)!;
      const seq = c.seq && c.seq.alive ? c.seq : null;
      const tokens = seq ? seq.length : 0;
      const bytes = (seq ? kvBytes(seq.peakLength) : 0) + (c.image?.data.byteLength ?? 0);
      return { tokens, bytes, hasImage: !!c.image };
    },
    closeSession(session: SessionHandle): void {
      const c = conversations.get(session?.id);
      if (!c) return;
      conversations.delete(session.id);
      void c.seq?.close();
    },
    async close(): Promise<void> {
      if (closed) return;
      closed = true;
      conversations.clear();
      // requests still waiting for a slot would otherwise wait for one that never frees
      ctx.limiter.rejectWaiting(new EngineError('CANCELLED', 'engine closed'));
      await client.close();
    },
    async workerStats() {
      const s = await client.stats();
      return { ...s, restarts: client.crashes };
    },
    async crashWorkerForTest() {
      await client.whenReady();
      const gen = client.generation;
      void client.call({ op: '__crash' }).catch(() => {});
      // return once the crash has been noticed (in-flight calls failed) and a new worker is starting,
      // or the client has stopped restarting it (then the next request says so)
      while (client.generation === gen && !client.givenUp) await new Promise((r) => setTimeout(r, 2));
    },
    calibrate,
    workerClient: client,
    acceptance: ctx.stats,
    draftAcceptance: { chain: ctx.draftStats, tree: ctx.draftTreeStats },
    get draftCost() {
      return ctx.draftCost;
    },
  };
  return engine;
}
