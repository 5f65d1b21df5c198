// Resolvers: map schema.graphql <-> the Engine. No model logic here: validation of client input
// against server limits, enum/shape mapping, and wiring to the gateway's scheduler, sessions and
// job log. Typed by src/gateway/schema-types.ts (generated from the schema).
import { getDirectiveValues, GraphQLIncludeDirective, GraphQLScalarType, GraphQLSkipDirective, Kind, type GraphQLResolveInfo, type SelectionNode, type SelectionSetNode } from 'graphql/index.js'; // the CJS entry yoga uses: one graphql instance under tsx and vitest
import type {
  FinishReason as EngineFinishReason,
  GenerateRequest,
  GenerationMode as EngineGenerationMode,
  InputImageInfo as EngineInputImageInfo,
  ModelInfo,
  RgbImage,
  SpeculationMode as EngineSpeculationMode,
  UnderstandRequest,
  UnderstandSummary,
} from '../src/engine/types.ts';
import { SAMPLER_LIMITS as SAMPLER } from '../src/engine/generation/pipeline.ts';
import { MAX_STOP_CHARS, MAX_STOP_SEQUENCES, SPECULATION_FIELDS_READ, SPECULATION_LIMITS as SPEC } from '../src/engine/understand/pipeline.ts';
import { GatewayError, toGatewayError } from '../src/gateway/errors.ts';
import { IMAGE_EXT, imageFromInput, readImageInput, sentSizeOf } from '../src/gateway/images.ts';
import { afterPastEnd, CANCEL_SETTLE_MS, iterateJob, settleWithin, type FrameRecord, type ImageJobRecord, type JobEvent } from '../src/gateway/jobs.ts';
import { timePerOutputToken } from '../src/gateway/metrics.ts';
import type { GatewayContext, GatewayRuntime } from '../src/gateway/runtime.ts';
import type { Slot } from '../src/gateway/scheduler.ts';
import type {
  FinishReason,
  GenerateImageInput,
  GenerationMode,
  ImageEvent,
  ImageFrame,
  ImageInput,
  ImageJob,
  InputImageInfo,
  JobStatus,
  Model,
  Resolvers,
  SpeculationInput,
  SpeculationMode,
  UnderstandEvent,
  UnderstandInput,
} from '../src/gateway/schema-types.ts';
import { afterSlot, coalescingStream, type MergedChunk } from '../src/gateway/understand-stream.ts';

const FINISH: Record<EngineFinishReason, FinishReason> = { eos: 'EOS', stop: 'STOP', length: 'LENGTH', cancelled: 'CANCELLED' };
const SPEC_OUT: Record<EngineSpeculationMode, SpeculationMode> = { auto: 'AUTO', off: 'OFF', chain: 'CHAIN', tree: 'TREE', ngram: 'NGRAM' };
const SPEC_IN: Record<SpeculationMode, EngineSpeculationMode> = { AUTO: 'auto', OFF: 'off', CHAIN: 'chain', TREE: 'tree', NGRAM: 'ngram' };
const MODE_IN: Record<GenerationMode, EngineGenerationMode> = { PROGRESSIVE: 'progressive', ONE_STEP: '1nfe', SIX_STEP: '6nfe', BASELINE: 'baseline' };


const MAX_SEED = 2 ** 31 - 1;
// SPEC and SAMPLER are the engine's own limits, checked here too so a bad value fails the request
// itself (named, with the real range) rather than an image job after its id was returned.

function range(v: number | null | undefined, name: string, min: number, max: number, opts: { exclusiveMin?: boolean; integer?: boolean } = {}): number | undefined {
  if (v === null || v === undefined) return undefined;
  const low = opts.exclusiveMin ? v <= min : v < min;
  if (!Number.isFinite(v) || low || v > max)
    throw new GatewayError('OUT_OF_RANGE', `${name} must be in ${opts.exclusiveMin ? '(' : '['}${min}, ${max}], got ${v}`, { argument: name, min, max });
  return v;
}

/**
 * A guidance scale checked against the range of each sampler the mode runs (models.guidance), in the order
 * the engine runs them: PROGRESSIVE's 1-NFE preview, then its 6-NFE final, with the same scale. The range
 * reported is the sampler's own, so a retry inside it is accepted (not the baseline's wider one).
 */
function scaleIn(v: number | null | undefined, name: string, g: ModelInfo['guidance'], mode: GenerationMode, which: 'text' | 'image'): number | undefined {
  if (v === null || v === undefined) return undefined;
  const samplers: Array<[string, ModelInfo['guidance']['baseline']]> =
    mode === 'BASELINE' ? [['', g.baseline]] : mode === 'SIX_STEP' ? [['6-NFE', g.sixStep]] : mode === 'ONE_STEP' ? [['1-NFE', g.oneStep]] : [['1-NFE', g.oneStep], ['6-NFE', g.sixStep]];
  for (const [label, s] of samplers) {
    const { min, max } = s[which];
    if (!Number.isFinite(v) || v < min || v > max)
      throw new GatewayError('OUT_OF_RANGE', `${name} must be in [${min}, ${max}]${label ? ` for the ${label} sampler (its training range)` : ''}, got ${v}`, { argument: name, min, max });
  }
  return v;
}

/**
 * The engine's report of how an input image was fitted to the model. For the request's own image the
 * original size is the one the client sent (the gateway's decode may have scaled it down first).
 */
function inputImageOut(i: EngineInputImageInfo | undefined, sent: { width: number; height: number } | undefined): InputImageInfo | null {
  if (!i) return null;
  const own = i.source === 'request' && sent;
  const originalWidth = own ? sent.width : i.originalWidth;
  const originalHeight = own ? sent.height : i.originalHeight;
  return {
    originalWidth,
    originalHeight,
    width: i.width,
    height: i.height,
    resized: i.resized || originalWidth !== i.width || originalHeight !== i.height,
    // a large non-square image is already centre-cropped by the gateway's decode (images.ts)
    cropped: i.cropped || (!!own && sent.width !== sent.height),
    source: i.source === 'session' ? 'SESSION' : 'REQUEST',
  };
}

/**
 * The engine's own input check (model limits, vocabulary, image size, session room), run before a
 * request is queued or an image job's id is handed out, so bad input fails the request itself. Its
 * errors are renamed to the schema's fields (`rename`: engine parameter -> input field) and name
 * the field in `extensions.argument`, as the gateway's own checks do.
 */
function engineCheck(check: (() => void) | undefined, rename: Record<string, string> = {}): void {
  if (!check) return;
  try {
    check();
  } catch (e) {
    const g = toGatewayError(e);
    const { code: _code, param, ...details } = g.extensions as Record<string, unknown>;
    let message = g.message;
    for (const [from, to] of Object.entries(rename)) if (message.startsWith(from) && /^[ :]/.test(message.slice(from.length))) message = to + message.slice(from.length);
    if (typeof param === 'string') details['argument'] = rename[param] ?? param;
    throw new GatewayError(g.code, message, details);
  }
}

function text(v: string, name: string, maxChars: number): string {
  if (v.length > maxChars) throw new GatewayError('PROMPT_TOO_LONG', `${name} has ${v.length} characters; the limit is ${maxChars}`, { length: v.length, limit: maxChars });
  return v;
}

/** Does the field's selection (fragments included) ask for any of `names`? */
function selects(info: GraphQLResolveInfo, names: string[]): boolean {
  const seen = new Set<string>();
  // a selection under @skip(if: true) or @include(if: false) is not executed: it does not attach the job
  const included = (sel: SelectionNode) =>
    getDirectiveValues(GraphQLSkipDirective, sel, info.variableValues)?.['if'] !== true &&
    getDirectiveValues(GraphQLIncludeDirective, sel, info.variableValues)?.['if'] !== false;
  const visit = (set: SelectionSetNode | undefined): boolean => {
    if (!set) return false;
    for (const sel of set.selections) {
      if (!included(sel)) continue;
      if (sel.kind === Kind.FIELD && names.includes(sel.name.value)) return true;
      if (sel.kind === Kind.INLINE_FRAGMENT && visit(sel.selectionSet)) return true;
      if (sel.kind === Kind.FRAGMENT_SPREAD && !seen.has(sel.name.value)) {
        seen.add(sel.name.value);
        if (visit(info.fragments[sel.name.value]?.selectionSet)) return true;
      }
    }
    return false;
  };
  return info.fieldNodes.some((n) => visit(n.selectionSet));
}

const UploadScalar = new GraphQLScalarType({
  name: 'Upload',
  description: 'A multipart file upload',
  parseValue: (v) => v,
  parseLiteral: () => {
    throw new GatewayError('INVALID_INPUT', 'Upload values must be sent as multipart files, not inline');
  },
  serialize: () => {
    throw new GatewayError('INTERNAL', 'Upload cannot be returned');
  },
});

export function createResolvers(rt: GatewayRuntime): Resolvers<GatewayContext> {
  const L = rt.limits;
  // the engine's own stop limits are fixed: a gateway configured above them still refuses before
  // the stream starts, naming the limit that really applies
  const maxStopSequences = Math.min(L.maxStopSequences, MAX_STOP_SEQUENCES);
  const maxStopChars = Math.min(L.maxStopChars, MAX_STOP_CHARS);

  function speculation(s: SpeculationInput | null | undefined): UnderstandRequest['speculation'] {
    if (!s) return undefined;
    // a sizing field the mode never reads is refused, not silently ignored (as steps outside BASELINE)
    const mode = s.mode ?? 'AUTO';
    for (const k of ['chainLength', 'treeBudget', 'treeTopK', 'treeDepth'] as const) {
      if (s[k] === null || s[k] === undefined || SPECULATION_FIELDS_READ[SPEC_IN[mode]].includes(k)) continue;
      throw new GatewayError('INVALID_INPUT', `speculation.${k} does not apply to mode ${mode}`, { argument: `speculation.${k}` });
    }
    return {
      mode: SPEC_IN[s.mode ?? 'AUTO'],
      chainLength: range(s.chainLength, 'speculation.chainLength', SPEC.chainLength.min, SPEC.chainLength.max),
      treeBudget: range(s.treeBudget, 'speculation.treeBudget', SPEC.treeBudget.min, SPEC.treeBudget.max),
      treeTopK: range(s.treeTopK, 'speculation.treeTopK', SPEC.treeTopK.min, SPEC.treeTopK.max),
      treeDepth: range(s.treeDepth, 'speculation.treeDepth', SPEC.treeDepth.min, SPEC.treeDepth.max),
    };
  }

  function understandRequest(input: UnderstandInput): UnderstandRequest {
    const stop = input.stop ?? undefined;
    if (stop && stop.length > maxStopSequences)
      throw new GatewayError('OUT_OF_RANGE', `At most ${maxStopSequences} stop sequences`, { argument: 'stop', limit: maxStopSequences });
    for (const s of stop ?? [])
      if (s.length === 0 || s.length > maxStopChars)
        throw new GatewayError('OUT_OF_RANGE', `Stop sequences must have 1 to ${maxStopChars} characters`, { argument: 'stop', limit: maxStopChars });
    return {
      prompt: text(input.prompt, 'prompt', L.maxPromptChars),
      // the model's own bounds where they are tighter than the server's, so one range is ever reported
      maxTokens: range(input.maxTokens, 'maxTokens', 1, Math.min(L.maxNewTokens, rt.engine.info.contextLength)),
      temperature: range(input.temperature, 'temperature', 0, 10),
      topP: range(input.topP, 'topP', 0, 1, { exclusiveMin: true }),
      topK: range(input.topK, 'topK', 0, rt.engine.info.vocabularySize),
      seed: range(input.seed, 'seed', 0, MAX_SEED),
      stop: stop ? [...stop] : undefined,
      speculation: speculation(input.speculation),
    };
  }

  function imageOut(rec: FrameRecord): ImageFrame['image'] {
    const img = rec.frame.image;
    return {
      mimeType: img.mimeType,
      width: img.width,
      height: img.height,
      byteLength: img.bytes.byteLength,
      sha256: img.sha256,
      base64: () => (rec.base64 ??= Buffer.from(img.bytes.buffer, img.bytes.byteOffset, img.bytes.byteLength).toString('base64')),
      url: (_args: unknown, ctx: GatewayContext) => {
        if (!rec.token || !rt.images.get(rec.token)) rec.token = rt.images.put(img.bytes, img.mimeType, img.sha256);
        return `${ctx.baseUrl}/images/${rec.token}.${IMAGE_EXT[img.mimeType] ?? 'bin'}`;
      },
    };
  }

  function frameOut(rec: FrameRecord, job: ImageJobRecord): ImageFrame {
    const f = rec.frame;
    return {
      stage: f.stage === 'preview' ? 'PREVIEW' : 'FINAL',
      nfe: f.nfe,
      step: f.step,
      elapsedMs: f.elapsedMs,
      seed: f.seed,
      sampler: f.sampler ?? null,
      image: imageOut(rec),
      sourceImage: () => inputImageOut(f.sourceImage, job.sentSize),
      thought: f.thought ?? null,
    };
  }

  function eventOut(job: ImageJobRecord, ev: JobEvent): ImageEvent {
    return { jobId: job.id, seq: ev.seq, status: ev.status, done: ev.done, frame: ev.frame ? frameOut(ev.frame, job) : null, error: ev.error ?? null };
  }

  const onDropped = (n: number) => rt.metrics.droppedPreviews.inc(undefined, n);

  /**
   * An ImageJob. `events` is the record whose log serves previews and result: the job itself, or for
   * a job another replica owns, a mirror of its log opened only if the client asks for them.
   */
  function jobOut(head: { id: string; mode: GenerationMode; seed: number; status: () => JobStatus; lastSeq: () => number }, events: () => ImageJobRecord): ImageJob {
    return {
      id: head.id,
      status: head.status,
      mode: head.mode,
      seed: head.seed,
      lastSeq: head.lastSeq,
      previews: (_args: unknown, ctx: GatewayContext) => {
        const job = events();
        return iterateJob(job, 0, {
          filter: (ev) => ev.frame?.frame.stage === 'preview',
          isEnd: (j) => j.terminal || !!j.finalFrame,
          map: (ev) => frameOut(ev.frame!, job),
          signal: ctx.signal,
          onDropped,
          onClose: job.watch(),
        });
      },
      // a client waiting for the result watches the job: a detached job is not cancelled as unwatched meanwhile
      result: async (_args: unknown, ctx: GatewayContext) => {
        const job = events();
        const release = job.watch();
        try {
          return frameOut(await job.result(ctx.signal), job);
        } finally {
          release();
        }
      },
    };
  }

  /** What generateImage and editImage share (the schema's own field types): editImage has no think fields, so
   * its input fits this too. */
  type ImageJobInput = Omit<GenerateImageInput, 'prompt'>;

  async function startImageJob(
    field: 'generateImage' | 'editImage',
    prompt: string,
    input: ImageJobInput,
    /** decodes the request's image; called only when this replica runs the job (a forwarded one sends the bytes on) */
    decodeSourceImage: () => Promise<RgbImage | undefined>,
    ctx: GatewayContext,
    info: GraphQLResolveInfo,
  ): Promise<ImageJob> {
    rt.metrics.operations.inc({ field });
    const sessionOwner = input.sessionId != null ? rt.relay?.remoteOwner(input.sessionId, 'session', ctx.forwardedBy) : undefined;
    if (sessionOwner) return forwardImageJob(field, sessionOwner, input, ctx, info);
    // the image decodes while the input is checked; a check that throws first must not leave its
    // rejection unhandled (that would take the process down)
    const sourceImage = decodeSourceImage();
    sourceImage.catch(() => undefined);
    const { guidance } = rt.engine.info; // (rt.engine throws UNAVAILABLE before any work when the model is not loaded)
    const mode = input.mode ?? 'PROGRESSIVE';
    if (mode !== 'BASELINE') {
      for (const k of ['steps', 'cfgInterval'] as const)
        if (input[k] !== null && input[k] !== undefined) throw new GatewayError('INVALID_INPUT', `${k} applies to mode BASELINE only`, { argument: k });
    }
    if (field === 'generateImage' && input.cfgImageScale != null)
      throw new GatewayError('INVALID_INPUT', 'cfgImageScale applies to editImage only (text-to-image has no image guidance)', { argument: 'cfgImageScale' });
    const interval = input.cfgInterval ?? undefined;
    if (interval && (interval.length !== 2 || interval.some((x) => !(x >= 0 && x <= 1)) || interval[0]! >= interval[1]!))
      throw new GatewayError('OUT_OF_RANGE', 'cfgInterval must be [start, end] with 0 <= start < end <= 1', { argument: 'cfgInterval' });
    const seed = range(input.seed, 'seed', 0, MAX_SEED) ?? Math.floor(Math.random() * MAX_SEED);
    const req: GenerateRequest = {
      prompt: text(prompt, field === 'editImage' ? 'instruction' : 'prompt', L.maxPromptChars),
      mode: MODE_IN[mode],
      seed,
      steps: range(input.steps, 'steps', SAMPLER.steps.min, SAMPLER.steps.max),
      cfgTextScale: scaleIn(input.cfgTextScale, 'cfgTextScale', guidance, mode, 'text'),
      cfgImageScale: scaleIn(input.cfgImageScale, 'cfgImageScale', guidance, mode, 'image'),
      cfgInterval: interval ? [interval[0]!, interval[1]!] : undefined,
      timestepShift: range(input.timestepShift, 'timestepShift', SAMPLER.timestepShift.min, SAMPLER.timestepShift.max, { exclusiveMin: true }),
      intermediatePreviews: input.intermediatePreviews ?? undefined,
    };
    if (input.think) {
      if (!rt.engine.info.capabilities.think) throw new GatewayError('INVALID_INPUT', 'this model cannot think (capabilities.think is false); leave think out', { argument: 'think' });
      req.think = true;
    }
    if (input.thinkTemperature !== null && input.thinkTemperature !== undefined) {
      if (!input.think) throw new GatewayError('INVALID_INPUT', 'thinkTemperature applies with think: true only', { argument: 'thinkTemperature' });
      req.thinkTemperature = range(input.thinkTemperature, 'thinkTemperature', 0, 2);
    }
    const image = await sourceImage;
    if (field === 'editImage') {
      if (image) req.sourceImage = image;
      else if (input.sessionId == null) throw new GatewayError('INVALID_INPUT', 'editImage needs image, or a sessionId whose session already holds an image');
    }
    let lock: ReturnType<GatewayRuntime['sessions']['lock']> | undefined;
    if (input.sessionId != null) {
      await rt.sessions.settled(input.sessionId, ctx.client);
      lock = rt.sessions.lock(input.sessionId, ctx.client);
      // the session's latest image (last understood, or last final generated/edited) is the engine's:
      // an edit without an image edits it, and every final frame here becomes it
      req.session = lock.entry.handle;
      if (field === 'editImage' && !image) {
        if (lock.info && !lock.info.hasImage) {
          lock.unlock();
          throw new GatewayError('INVALID_INPUT', 'editImage needs image, or a sessionId whose session already holds an image');
        }
        req.edit = true;
      }
    }
    try {
      engineCheck(rt.engine.checkGenerate?.bind(rt.engine, req), field === 'editImage' ? { prompt: 'instruction', sourceImage: 'image' } : {});
    } catch (e) {
      lock?.unlock();
      throw e;
    }
    const attached = selects(info, ['previews', 'result']);
    let job: ImageJobRecord;
    try {
      job = rt.jobs.start(
        req,
        mode,
        seed,
        attached,
        {
          onEnd: () => lock?.unlock(),
          // a client that sees the final may use the session at once (edit that image): the engine still
          // holds it while it closes the job, so the next request waits for that instead of SESSION_BUSY
          onFinal: (j) => void (lock?.entry.busy && (lock.entry.stopping = settleWithin(j.finished, CANCEL_SETTLE_MS))),
        },
        ctx.client,
      );
    } catch (e) {
      lock?.unlock();
      if (e instanceof GatewayError && e.code === 'BUSY') rt.metrics.busy.inc();
      throw e;
    }
    if (attached) watchWhileConnected(job, ctx);
    if (lock) {
      // a cancelled job holds its session until its model step in progress is over: say so to the store,
      // so a close or a next request waits for that instead of meeting SESSION_BUSY
      const entry = lock.entry;
      job.controller.signal.addEventListener('abort', () => void (entry.busy && (entry.stopping = settleWithin(job.finished, CANCEL_SETTLE_MS))), { once: true });
    }
    job.sentSize = sentSizeOf(image);
    return localJobOut(job);
  }

  /** An attached job's mutation watches it until the client goes (then it is cancelled) or it ends. */
  function watchWhileConnected(job: ImageJobRecord, ctx: GatewayContext): void {
    const release = job.watch();
    const closeStream = rt.openStream('image_mutation');
    const onAbort = () => release();
    ctx.signal.addEventListener('abort', onAbort, { once: true });
    if (ctx.signal.aborted) release();
    void job.finished.then(() => {
      ctx.signal.removeEventListener('abort', onAbort);
      closeStream();
    });
  }

  const localJobOut = (job: ImageJobRecord) => jobOut({ id: job.id, mode: job.mode, seed: job.seed, status: () => job.status, lastSeq: () => job.lastSeq }, () => job);

  /** An input whose image another replica must read: the image's bytes, as base64 (an upload cannot be forwarded as is). */
  async function portableInput<T extends { image?: ImageInput | null }>(input: T): Promise<T> {
    if (!input.image) return input;
    return { ...input, image: { base64: (await readImageInput(input.image, L)).toString('base64') } };
  }

  /**
   * generateImage / editImage on a session another replica owns: the job runs there, and this
   * replica serves it from a mirror of its log. A job whose mutation here selects previews or
   * result is cancelled there when nobody here watches it, as a local attached job is.
   */
  async function forwardImageJob(field: 'generateImage' | 'editImage', owner: string, input: ImageJobInput, ctx: GatewayContext, info: GraphQLResolveInfo): Promise<ImageJob> {
    const attached = selects(info, ['previews', 'result']);
    const forwarded = await portableInput(input as ImageJobInput & { image?: ImageInput | null });
    const { job, summary } = await rt.relay!.startImageJob(field, owner, forwarded as unknown as Record<string, unknown>, attached, ctx, ctx.signal);
    if (attached) watchWhileConnected(job, ctx);
    // the mirror learns the status from the owner's log once someone watches it; until then, the owner's answer
    return jobOut({ id: job.id, mode: job.mode, seed: job.seed, status: () => (job.events.length ? job.status : summary.status), lastSeq: () => Math.max(summary.lastSeq, job.lastSeq) }, () => job);
  }

  function modelOut(): Model {
    const info = rt.engine.info;
    return {
      name: info.name,
      description: info.description,
      capabilities: { ...info.capabilities },
      imageSize: { ...info.imageSize },
      vocabularySize: info.vocabularySize,
      words: info.words,
      contextLength: info.contextLength,
      guidance: info.guidance,
      sessionContext: info.sessionContext === 'image' ? 'IMAGE' : 'CONVERSATION',
    };
  }

  function summaryOut(s: UnderstandSummary, receivedAt: number, firstChunkAt: number | undefined, waitedMs: number, sent: RgbImage | undefined): UnderstandEvent {
    const now = performance.now();
    // the textless steps after the last chunk (the EOS step, trailing special tokens) ride on the
    // last event, so all events' tokenIds are the whole answer and the per-step stats add up
    const t = s.trailing;
    return {
      text: '',
      tokenIds: t ? t.tokenIds : [],
      acceptedTokens: t?.acceptedTokens ?? 0,
      draftedTokens: t?.draftedTokens ?? 0,
      steps: t?.steps ?? 0,
      done: true,
      finishReason: FINISH[s.finishReason],
      fullText: s.text,
      usage: { ...s.usage },
      timings: {
        queueMs: waitedMs + s.timings.queueMs,
        timeToFirstTokenMs: firstChunkAt !== undefined ? firstChunkAt - receivedAt : now - receivedAt,
        totalMs: now - receivedAt,
        tokensPerSecond: s.timings.tokensPerSecond,
      },
      speculation: {
        mode: SPEC_OUT[s.speculation.mode],
        proposer: s.speculation.proposer ?? 'none',
        drafts: s.speculation.drafts,
        draftedTokens: s.speculation.draftedTokens,
        acceptedTokens: s.speculation.acceptedTokens,
        meanAcceptedLength: s.speculation.meanAcceptedLength,
        acceptanceRate: s.speculation.acceptanceRate,
        acceptancePerPosition: [...s.speculation.acceptancePerPosition],
      },
      inputImage: inputImageOut(s.inputImage, sentSizeOf(sent)),
      seed: s.seed ?? null,
    };
  }

  /**
   * understand on a session another replica owns: that replica runs it (its scheduler, limits and
   * stream coalescing) and its events pass through. Stopping here closes the connection there,
   * which cancels the model work as any client leaving does.
   */
  async function forwardUnderstand(owner: string, input: UnderstandInput, ctx: GatewayContext): Promise<AsyncIterableIterator<{ understand: UnderstandEvent }>> {
    const forwarded = await portableInput(input);
    const controller = new AbortController();
    const closeStream = rt.openStream('understand');
    // the client leaving ends it all, even before the first event (yoga may never call next or return then)
    const onAbort = () => close();
    ctx.signal.addEventListener('abort', onAbort, { once: true });
    const events = rt.relay!.understand(owner, forwarded as unknown as Record<string, unknown>, ctx, controller.signal);
    function close() {
      ctx.signal.removeEventListener('abort', onAbort);
      controller.abort();
      closeStream();
    }
    // fail the subscribe itself (not its first event) when the owner refuses it outright
    let pending: IteratorResult<Record<string, unknown>> | undefined;
    try {
      pending = await events.next();
    } catch (e) {
      close();
      throw e;
    }
    const it: AsyncIterableIterator<{ understand: UnderstandEvent }> = {
      async next() {
        try {
          const r = pending ?? (await events.next());
          pending = undefined;
          if (r.done) close();
          return r.done ? { value: undefined, done: true } : { value: { understand: r.value as unknown as UnderstandEvent }, done: false };
        } catch (e) {
          close();
          throw e;
        }
      },
      async return() {
        close();
        await events.return(undefined);
        return { value: undefined, done: true };
      },
      [Symbol.asyncIterator]() {
        return it;
      },
    };
    return it;
  }

  const chunkOut = (c: MergedChunk): UnderstandEvent => ({
    text: c.text,
    tokenIds: c.tokenIds,
    acceptedTokens: c.acceptedTokens,
    draftedTokens: c.draftedTokens,
    steps: c.steps,
    done: false,
  });

  return {
    Upload: UploadScalar,
    Query: {
      models: () => {
        rt.metrics.operations.inc({ field: 'models' });
        return [modelOut()];
      },
      health: () => {
        rt.metrics.operations.inc({ field: 'health' });
        return {
          status: rt.state,
          ready: rt.ready,
          uptimeSeconds: (Date.now() - rt.startedAt) / 1000,
          activeStreams: rt.activeStreamCount,
          runningJobs: rt.scheduler.runningCount,
          queuedJobs: rt.scheduler.queuedCount,
          sessions: rt.sessions.size,
          replica: rt.relay?.selfId ?? null,
        };
      },
      job: async (_p, { id }, ctx) => {
        rt.metrics.operations.inc({ field: 'job' });
        const owner = rt.relay?.remoteOwner(id, 'job', ctx.forwardedBy);
        if (owner) {
          const remote = await rt.relay!.job(owner, id, ctx, ctx.signal);
          if (!remote) return null;
          const { summary } = remote;
          return jobOut({ id: summary.id, mode: summary.mode, seed: summary.seed, status: () => summary.status, lastSeq: () => summary.lastSeq }, remote.mirror);
        }
        const job = rt.jobs.find(id, ctx.client);
        job?.touch(); // a client polling a detached job's status keeps it from being cancelled as unwatched
        return job ? localJobOut(job) : null;
      },
    },
    Mutation: {
      generateImage: (_p, { input }, ctx, info) => startImageJob('generateImage', input.prompt, input, async () => undefined, ctx, info),
      editImage: (_p, { input }, ctx, info) =>
        startImageJob('editImage', input.instruction, input, async () => (input.image ? imageFromInput(input.image, L) : undefined), ctx, info),
      cancelJob: (_p, { id }, ctx) => {
        rt.metrics.operations.inc({ field: 'cancelJob' });
        const owner = rt.relay?.remoteOwner(id, 'job', ctx.forwardedBy);
        return owner ? rt.relay!.cancelJob(owner, id, ctx) : rt.jobs.cancel(id, ctx.client);
      },
      createSession: (_p, _a, ctx) => {
        rt.metrics.operations.inc({ field: 'createSession' });
        rt.engine;
        try {
          return rt.sessions.create(ctx.client).id;
        } catch (e) {
          if (e instanceof GatewayError && e.code === 'BUSY') rt.metrics.busy.inc();
          throw e;
        }
      },
      closeSession: (_p, { id }, ctx) => {
        rt.metrics.operations.inc({ field: 'closeSession' });
        const owner = rt.relay?.remoteOwner(id, 'session', ctx.forwardedBy);
        if (owner) return rt.relay!.closeSession(owner, id, ctx);
        // (after a stopped request: once its model step is over, as its client would expect)
        return rt.sessions.settled(id, ctx.client).then(() => rt.sessions.closeIdle(id, ctx.client));
      },
    },
    Subscription: {
      understand: {
        subscribe: async (_p, { input }, ctx) => {
          rt.metrics.operations.inc({ field: 'understand' });
          const sessionOwner = input.sessionId != null ? rt.relay?.remoteOwner(input.sessionId, 'session', ctx.forwardedBy) : undefined;
          if (sessionOwner) return forwardUnderstand(sessionOwner, input, ctx);
          const receivedAt = performance.now();
          const engine = rt.engine;
          const req = understandRequest(input);
          const image = input.image ? await imageFromInput(input.image, L) : undefined;
          if (image) req.image = image;
          if (input.sessionId != null) await rt.sessions.settled(input.sessionId, ctx.client);
          const lock = input.sessionId != null ? rt.sessions.lock(input.sessionId, ctx.client) : undefined;
          if (lock) req.session = lock.entry.handle;
          /** The answer's stream, once the request holds an engine slot. */
          function startStream(slot: Slot) {
            rt.metrics.queueWait.observe(slot.waitedMs / 1000, { kind: 'understand' });
            const controller = new AbortController();
            const closeStream = rt.openStream('understand');
            const end = (info: { cancelled: boolean; error?: unknown; summary?: UnderstandSummary; engineStopped?: Promise<void> }) => {
              closeStream();
              // (a fallback count for engines without sessionInfo; the store prefers the engine's)
              if (lock) lock.entry.tokens += info.summary?.usage.totalTokens ?? 0;
              const free = () => {
                slot.release();
                lock?.unlock();
              };
              // a stream ended before the engine (a client that left, a stall): the slot and the session are
              // the engine's until its step in progress is over (or CANCEL_SETTLE_MS, for an engine that
              // ignores its signal), so the session's next request is not refused as BUSY by the engine
              if (info.engineStopped) {
                const stopped = settleWithin(info.engineStopped, CANCEL_SETTLE_MS);
                if (lock) lock.entry.stopping = stopped;
                void stopped.then(free);
              } else free();
              if (info.cancelled) rt.metrics.cancellations.inc({ reason: 'client_gone', operation: 'understand' });
              if (info.error !== undefined) rt.metrics.errors.inc({ code: toGatewayError(info.error).code });
            };
            let source;
            try {
              source = engine.understand(req, controller.signal);
            } catch (e) {
              end({ cancelled: false, error: e });
              throw toGatewayError(e);
            }
            return coalescingStream(
              source,
              controller,
              {
                chunk: (c) => ({ understand: chunkOut(c) }),
                summary: (s, firstChunkAt) => {
                  if (s.trailing?.tokenIds.length) rt.metrics.tokens.inc(undefined, s.trailing.tokenIds.length); // steps after the last chunk
                  if (firstChunkAt !== undefined) rt.metrics.ttft.observe((firstChunkAt - receivedAt) / 1000);
                  rt.metrics.tokensPerSecond.observe(s.timings.tokensPerSecond);
                  const tpot = timePerOutputToken(s);
                  if (tpot !== undefined) rt.metrics.timePerOutputToken.observe(tpot);
                  return { understand: summaryOut(s, receivedAt, firstChunkAt, slot.waitedMs, image) };
                },
                onEngineChunk: (c) => {
                  // a verification step of drafted tokens yields its accepted drafts and one token of its own
                  if (c.draftedTokens > 0) rt.metrics.acceptanceLength.observe(c.acceptedTokens + 1);
                  rt.metrics.tokens.inc(undefined, c.tokenIds.length);
                },
                onCoalesced: () => rt.metrics.coalescedChunks.inc(),
                onEnd: end,
              },
              ctx.signal,
              L.engineStallTimeoutMs,
              L.maxStreamBacklogChars > 0 ? L.maxStreamBacklogChars : Infinity, // 0 = no bound
            );
          }
          const refused = (e: unknown): never => {
            lock?.unlock();
            if (e instanceof GatewayError && e.code === 'BUSY') rt.metrics.busy.inc();
            throw e;
          };
          let waiting: Promise<Slot> | undefined;
          try {
            engineCheck(engine.checkUnderstand?.bind(engine, req));
            rt.scheduler.checkCapacity(ctx.client); // BUSY at once, as the request's own error
            if (!rt.scheduler.full) return startStream(await rt.scheduler.acquire(ctx.signal, ctx.client));
            waiting = rt.scheduler.acquire(ctx.signal, ctx.client);
          } catch (e) {
            return refused(e);
          }
          // a queued request: the stream (its HTTP response and SSE keep-alives, or graphql-ws's subscription)
          // starts now and its first event waits for the slot; a client can tell "queued" from "hung", and a
          // proxy's idle timeout does not cut it while it waits
          return afterSlot(waiting.then(startStream, refused));
        },
      },
      imageJob: {
        subscribe: async (_p, { id, after }, ctx) => {
          rt.metrics.operations.inc({ field: 'imageJob' });
          // a reconnecting EventSource names the last event it got (Last-Event-ID): resume after it
          const start = range(after ?? ctx.lastEventId, 'after', 0, MAX_SEED) ?? 0;
          const owner = rt.relay?.remoteOwner(id, 'job', ctx.forwardedBy);
          const job = owner ? await rt.relay!.imageJob(owner, id, start, ctx, ctx.signal) : rt.jobs.get(id, ctx.client);
          // a cursor past the job's last event was never handed out (lastSeq only grows): say so, rather
          // than wait for the job to end and complete with nothing
          if (!owner && start > job.lastSeq) throw afterPastEnd(start, job.lastSeq, after == null);
          const release = job.watch();
          const closeStream = rt.openStream('image_job');
          return iterateJob(job, start, {
            filter: () => true,
            isEnd: (j, cursor) => j.terminal && cursor >= j.events.length,
            map: (ev) => ({ imageJob: eventOut(job, ev) }),
            signal: ctx.signal,
            onDropped,
            onClose: () => {
              release();
              closeStream();
            },
          });
        },
      },
    },
  };
}
