// Understanding requests: validation, prefill (vision + text), decoding (plain or speculative),
// streaming chunks with text deltas and stop conditions, final summary.
import { randomSeed } from '../rng.ts';
import { admit, type Admission } from '../admission.ts';
import { layout, type EngineCtx, type Part } from '../context.ts';
import { rgbToChw, shiftImage } from '../image/pixels.ts';
import { checkInputImage, fitImage } from '../image/codec.ts';
import { SpecMetrics } from '../speculative/metrics.ts';
import { DraftModelProposer, ngramProposer, type Proposer, type ProposerConfig } from '../speculative/proposer.ts';
import { EagleDrafter } from '../speculative/eagle.ts';
import { chooseShape } from '../speculative/sizing.ts';
import { RetrievalProposer, retrievalIndex, retrievalRate, retrievalState } from '../speculative/retrieval.ts';
import { WorkerDraftModel } from '../speculative/worker-draft.ts';
import type { Segment } from '../../runtime/protocol.ts';
import {
  EngineError,
  type FinishReason,
  type InputImageInfo,
  type RgbImage,
  type SpeculationMode,
  type TrailingSteps,
  type UnderstandEvent,
  type UnderstandRequest,
  type UnderstandSummary,
} from '../types.ts';
import * as V from '../validate.ts';
import { decodeSteps, type DecodeStep } from './decode.ts';
import { verifyTree } from '../speculative/rejection.ts';
import { treeMask } from '../speculative/tree.ts';
import { isGreedy, processLogits, tokenSampler } from './logits.ts';
import { IncrementalDetokenizer } from './detok.ts';
import { cutTokens, StopStringFilter } from './stop.ts';
import type { SamplingParams } from './logits.ts';
import { truncateSequence, WorkerSequence } from './worker-target.ts';

const MODES: SpeculationMode[] = ['auto', 'off', 'chain', 'tree', 'ngram'];

/** `stop`: at most this many strings, each of 1 to MAX_STOP_CHARS characters. */
export const MAX_STOP_SEQUENCES = 8;
export const MAX_STOP_CHARS = 64;

/** Speculation shape limits (integers, inclusive); the gateway checks the same ones before any work. */
export const SPECULATION_LIMITS = {
  chainLength: { min: 1, max: 16 },
  treeBudget: { min: 1, max: 64 },
  treeTopK: { min: 1, max: 10 },
  treeDepth: { min: 1, max: 10 },
} as const;

/**
 * The speculation sizing fields each mode reads (auto may draft a chain or a tree): the gateway and
 * the CLI refuse a field its mode never reads rather than ignore it.
 */
export const SPECULATION_FIELDS_READ: Readonly<Record<SpeculationMode, readonly (keyof typeof SPECULATION_LIMITS)[]>> = {
  auto: ['chainLength', 'treeBudget', 'treeTopK', 'treeDepth'],
  off: [],
  chain: ['chainLength'],
  ngram: ['chainLength'],
  tree: ['treeBudget', 'treeTopK', 'treeDepth'],
};

export interface ConversationState {
  seq: WorkerSequence | null;
  nextPos: number;
  history: number[];
  /** chosen tokens not yet in the KV cache (the last answer's final token) */
  pending: number[];
  busy: boolean;
  /** the session's latest image (last understood input, or last generated/edited final), vision size */
  image: RgbImage | null;
  /** whether `image` is already in this conversation's KV cache */
  imageInContext: boolean;
  /** how `image` was brought to the vision size when it came in */
  imageInfo: InputImageInfo | null;
  /**
   * With `prompts.session_context` "image": the conversation's state right after its image block
   * (`<bos> <vision_start> image <vision_end>`), where every turn without a new image starts; null before
   * an image came in.
   */
  anchor: { kvLength: number; nextPos: number; history: number[] } | null;
}

/**
 * A conversation whose KV cache died with its worker: reset it (its latest image stays, and is fed again
 * by the next turn that needs it), and the error that tells the client (details.sessionReset).
 */
export function sessionLost(conversation: ConversationState): EngineError {
  Object.assign(conversation, { seq: null, nextPos: 0, history: [], pending: [], imageInContext: false, anchor: null });
  return new EngineError('WORKER_CRASHED', 'the session lost its context in a model worker crash; the next request starts a new conversation', { sessionReset: true });
}

export function newConversation(): ConversationState {
  return { seq: null, nextPos: 0, history: [], pending: [], busy: false, image: null, imageInContext: false, imageInfo: null, anchor: null };
}

/** Does this pack's session turn read only the session's image (manifest prompts.session_context "image")? */
export const imageOnlySessions = (ctx: EngineCtx): boolean => ctx.manifest.prompts?.session_context === 'image';

/**
 * For image-only sessions: takes the conversation back to its image (`anchor`), or to nothing when there is
 * no image to keep (`fresh`: this turn brings a new one), dropping earlier questions and answers.
 */
async function backToImage(conversation: ConversationState, fresh: boolean): Promise<void> {
  const a = fresh ? null : conversation.anchor;
  if (conversation.seq?.alive) await truncateSequence(conversation.seq, a?.kvLength ?? 0);
  Object.assign(conversation, { nextPos: a?.nextPos ?? 0, history: a ? [...a.history] : [], pending: [], anchor: a });
  if (!a) conversation.imageInContext = false;
}

export interface ValidatedUnderstand {
  words: number[];
  maxTokens: number;
  sampling: SamplingParams;
  seed: number;
  stop: string[];
  mode: SpeculationMode;
  chainLength?: number;
  treeBudget?: number;
  treeTopK?: number;
  treeDepth?: number;
}

/**
 * Position ids this turn's prompt needs after what the conversation already holds: its carried-over
 * tokens (or BOS), the image block when an image comes in (the request's, or the session's latest not
 * yet in context), the words and the assistant marker, as layout() places them.
 */
export function promptPositions(ctx: EngineCtx, v: ValidatedUnderstand, conversation: ConversationState | null, requestImage: boolean): { startPos: number; need: number } {
  const image = turnBringsImage(ctx, conversation, requestImage);
  let startPos: number, lead: number;
  if (conversation && imageOnlySessions(ctx)) {
    // from the image's anchor, or afresh (BOS) with a new image or none kept
    const anchor = image ? null : conversation.anchor;
    startPos = anchor?.nextPos ?? 0;
    lead = anchor ? 0 : 1;
  } else {
    const continuing = !!conversation?.seq && conversation.seq.alive && conversation.seq.length > 0;
    startPos = continuing ? conversation!.nextPos : 0;
    lead = continuing ? conversation!.pending.length : 1;
  }
  // an image block takes one position id for all its tokens, between its start and end markers
  return { startPos, need: lead + (image ? 3 : 0) + v.words.length + 1 };
}

/** Does this turn feed an image: the request's own, or the session's latest that its context does not hold yet? */
function turnBringsImage(ctx: EngineCtx, conversation: ConversationState | null, requestImage: boolean): boolean {
  return requestImage || (!!conversation?.image && !conversation.imageInContext && !!ctx.manifest.graphs.vision);
}

/**
 * A prompt placed from `startPos` that ends at `nextPos` must leave the model's context room for one
 * answer token. A session turn that does not is SESSION_FULL, so the client starts a new session
 * instead of reading it as a prompt that is too long; unless a new session would hold as much
 * (`sessionGrows` false: an image-only session holds only its image, which the turn needs), when it is
 * PROMPT_TOO_LONG.
 */
function checkRoom(startPos: number, nextPos: number, maxPos: number, sessionGrows = true): void {
  if (nextPos < maxPos) return;
  if (startPos > 0 && sessionGrows)
    throw new EngineError('SESSION_FULL', `the session's conversation holds ${startPos} of the model's ${maxPos} positions and this turn needs ${nextPos - startPos} more; start a new session`, {
      positions: startPos,
      needed: nextPos - startPos,
      limit: maxPos,
    });
  throw new EngineError('PROMPT_TOO_LONG', `prompt needs ${nextPos} positions, the model has ${maxPos}`, { positions: nextPos, limit: maxPos });
}

/** checkRoom before any model work (engine.checkUnderstand), from the positions layout() will place. */
export function checkContextRoom(ctx: EngineCtx, v: ValidatedUnderstand, conversation: ConversationState | null, requestImage: boolean): void {
  const { startPos, need } = promptPositions(ctx, v, conversation, requestImage);
  checkRoom(startPos, startPos + need, ctx.manifest.decoder.max_positions, !(conversation && imageOnlySessions(ctx)));
}

export function validateUnderstand(ctx: EngineCtx, req: UnderstandRequest): ValidatedUnderstand {
  if (!req || typeof req !== 'object') throw new EngineError('INVALID_INPUT', 'request must be an object');
  const text = V.prompt(req.prompt);
  const words = ctx.tokenizer.encodeWords(text);
  if (!words.length) throw new EngineError('INVALID_INPUT', 'prompt has no words');
  if (words.length > ctx.opts.maxPromptWords)
    throw new EngineError('PROMPT_TOO_LONG', `prompt has ${words.length} words, limit ${ctx.opts.maxPromptWords}`, {
      words: words.length,
      limit: ctx.opts.maxPromptWords,
    });
  const maxPos = ctx.manifest.decoder.max_positions;
  const maxTokens = V.opt(req.maxTokens, (v) => V.num('maxTokens', v, 1, maxPos, { integer: true }), ctx.opts.defaultMaxTokens);
  const temperature = V.opt(req.temperature, (v) => V.num('temperature', v, 0, 10), 0);
  const topP = V.opt(req.topP, (v) => V.num('topP', v, 0, 1, { loExclusive: true }), 1);
  const topK = V.opt(req.topK, (v) => V.num('topK', v, 0, ctx.manifest.decoder.vocab, { integer: true }), 0);
  const seed = V.opt(req.seed, (v) => V.num('seed', v, 0, Number.MAX_SAFE_INTEGER, { integer: true }), randomSeed());
  const stop = req.stop ?? [];
  if (!Array.isArray(stop) || stop.length > MAX_STOP_SEQUENCES || !stop.every((s) => typeof s === 'string' && s.length > 0 && s.length <= MAX_STOP_CHARS))
    throw new EngineError('OUT_OF_RANGE', `stop must be at most ${MAX_STOP_SEQUENCES} non-empty strings of at most ${MAX_STOP_CHARS} characters`, { param: 'stop' });
  const spec = req.speculation ?? { mode: 'auto' as const };
  if (!MODES.includes(spec.mode)) throw new EngineError('OUT_OF_RANGE', `speculation.mode must be one of ${MODES.join(', ')}`, { param: 'speculation.mode' });
  const v: ValidatedUnderstand = { words, maxTokens, sampling: { temperature, topK, topP }, seed, stop, mode: spec.mode };
  if (spec.chainLength != null) v.chainLength = V.num('speculation.chainLength', spec.chainLength, SPECULATION_LIMITS.chainLength.min, SPECULATION_LIMITS.chainLength.max, { integer: true });
  if (spec.treeBudget != null) v.treeBudget = V.num('speculation.treeBudget', spec.treeBudget, SPECULATION_LIMITS.treeBudget.min, SPECULATION_LIMITS.treeBudget.max, { integer: true });
  if (spec.treeTopK != null) v.treeTopK = V.num('speculation.treeTopK', spec.treeTopK, SPECULATION_LIMITS.treeTopK.min, SPECULATION_LIMITS.treeTopK.max, { integer: true });
  if (spec.treeDepth != null) v.treeDepth = V.num('speculation.treeDepth', spec.treeDepth, SPECULATION_LIMITS.treeDepth.min, SPECULATION_LIMITS.treeDepth.max, { integer: true });
  if (req.image !== undefined && req.image !== null) {
    if (!ctx.manifest.graphs.vision) throw new EngineError('INVALID_INPUT', 'this model pack cannot read images (no vision graph)');
    checkInputImage(req.image, 'image', 'image');
  }
  return v;
}

/**
 * The proposer for a request; null = plain decoding. With a draft graph in the pack, chain/tree/auto
 * use EAGLE model drafting (auto = plain, chain or EAGLE-2 tree per step, sized from the cost curves
 * with the draft cost included); otherwise, and for
 * `ngram` or continuation turns of a session (whose earlier target features are not kept), the
 * n-gram (prompt lookup) drafter builds the chains/trees.
 */
export async function makeProposer(ctx: EngineCtx, v: ValidatedUnderstand, allowDraft: boolean): Promise<{ proposer: Proposer | null; draft: WorkerDraftModel | null }> {
  if (v.mode === 'off') return { proposer: null, draft: null };
  const cfg: ProposerConfig = {
    mode: v.mode,
    chainLength: v.chainLength,
    treeBudget: v.treeBudget,
    treeTopK: v.treeTopK,
    treeDepth: v.treeDepth,
    maxChainLength: ctx.opts.maxChainLength,
    curve: ctx.curve ?? undefined,
    stats: ctx.stats,
  };
  const draftOk = allowDraft && v.mode !== 'ngram' && !!ctx.manifest.graphs.draft && !!ctx.embedTable;
  // a retrieval datastore in the pack: retrieval drafting for chain/tree/auto unless a draft model
  // serves them (explicit chain/tree: the draft model; auto: whichever has the better measured rate)
  if (ctx.pack.retrieval && v.mode !== 'ngram' && (!draftOk || (v.mode === 'auto' && !draftBeatsRetrieval(ctx, v)))) {
    return { proposer: new RetrievalProposer(retrievalIndex(ctx.pack.retrieval), cfg, retrievalState(ctx)), draft: null };
  }
  if (draftOk && (v.mode !== 'auto' || ctx.pack.retrieval || draftPays(ctx, v))) {
    const D = ctx.manifest.decoder.hidden;
    const table = ctx.embedTable!;
    const embed = (ids: number[]) => {
      const out = new Float32Array(ids.length * D);
      ids.forEach((id, i) => out.set(table.subarray(id * D, id * D + D), i * D));
      return out;
    };
    const draft = await WorkerDraftModel.open(ctx.client, ctx.manifest.decoder.vocab, D);
    // auto: per step, plain / chain / tree, whichever the cost curves (draft cost included) and the
    // draft's running chain and tree acceptance say is fastest (sizing.ts chooseShape)
    return {
      proposer: new DraftModelProposer(new EagleDrafter(draft, embed), { ...cfg, stats: ctx.draftStats, treeStats: ctx.draftTreeStats, draftCost: ctx.draftCost ?? undefined }),
      draft,
    };
  }
  return { proposer: ngramProposer(cfg), draft: null };
}

/**
 * auto mode: use the draft model only when its expected tokens/ms (best of chain and tree; running
 * acceptance, measured draft and verification costs) beats plain decoding; every 16th request drafts
 * anyway so the acceptance statistics stay current (a draft that got better is noticed).
 */
function draftPays(ctx: EngineCtx, v: ValidatedUnderstand): boolean {
  ctx.autoRequests = (ctx.autoRequests ?? 0) + 1;
  if (ctx.autoRequests % 16 === 0) return true;
  if (!ctx.curve) return true;
  const tree = { topK: v.treeTopK ?? 4, depth: v.treeDepth ?? 5, budget: v.treeBudget ?? 24 };
  return chooseShape(ctx.curve, ctx.draftStats, ctx.draftTreeStats, ctx.opts.maxChainLength, ctx.draftCost ?? undefined, tree).kind !== 'plain';
}

/**
 * auto with both a draft model and a retrieval datastore: the draft model when its expected tokens/ms
 * (chooseShape, draft cost included) beats retrieval's measured tokens/ms, else retrieval; retrieval
 * until it has been measured, and the draft model on every 16th auto request (exploration) — but only
 * when it would draft at all: where chooseShape says plain, the draft-model proposer decodes every
 * step plain (plus a draft catch-up per step), which measures nothing and is slower than retrieval.
 */
export function draftBeatsRetrieval(ctx: EngineCtx, v: ValidatedUnderstand): boolean {
  const r = retrievalRate(retrievalState(ctx));
  if (r <= 0) return false;
  const tree = { topK: v.treeTopK ?? 4, depth: v.treeDepth ?? 5, budget: v.treeBudget ?? 24 };
  const shape = ctx.curve ? chooseShape(ctx.curve, ctx.draftStats, ctx.draftTreeStats, ctx.opts.maxChainLength, ctx.draftCost ?? undefined, tree) : null;
  if (shape?.kind === 'plain') return false;
  ctx.autoRequests = (ctx.autoRequests ?? 0) + 1;
  if (ctx.autoRequests % 16 === 0) return true;
  return !!shape && shape.expectedTokensPerMs > r;
}

/** Input embeddings of a prefill's rows (text from the shared table, image blocks as given). */
function promptEmbeds(ctx: EngineCtx, segments: Segment[], T: number): Float32Array {
  const D = ctx.manifest.decoder.hidden;
  const out = new Float32Array(T * D);
  let off = 0;
  for (const s of segments) {
    if (s.kind === 'ids') {
      for (const id of s.ids) out.set(ctx.embedTable!.subarray(id * D, id * D + D), off++ * D);
    } else {
      if (s.kind !== 'embeds') throw new Error('prompt embeddings need the image as embeddings, not pixels');
      out.set(s.data.subarray(0, s.count * D), off * D);
      off += s.count;
    }
  }
  return out;
}

export async function* runUnderstand(
  ctx: EngineCtx,
  req: UnderstandRequest,
  signal: AbortSignal | undefined,
  conversation: ConversationState | null,
  /** the request's admission when the caller already holds it (think mode's thought), else this admits */
  admitted?: Admission,
): AsyncGenerator<UnderstandEvent, void, void> {
  const t0 = performance.now();
  const v = validateUnderstand(ctx, req);
  // the session is ours until freeSession(): called once its state is final (before the last event, so
  // the caller may send the next turn at once), never later, when a next request may hold it
  const { release, freeSession } = admitted ?? (await admit(ctx, conversation, signal));
  const queueMs = performance.now() - t0;
  const sp = ctx.manifest.special_tokens;
  let seq: WorkerSequence | null = null;
  let proposer: Proposer | null = null;
  let draft: WorkerDraftModel | null = null;
  // a conversation's cache length and image before this turn: a turn that fails part way is undone to them
  let turnStart: number | null = null;
  let imageBefore: Pick<ConversationState, 'image' | 'imageInfo' | 'imageInContext'> | null = null;
  try {
    // ---- prefill
    let startPos = 0;
    let history: number[] = [];
    if (conversation?.seq && !conversation.seq.alive) {
      // the worker crashed since the last turn: the conversation's KV cache is gone. Say so once,
      // and start the conversation afresh on the next request.
      // (the latest image survives on this side and is fed again by the next turn that needs it)
      throw sessionLost(conversation);
    }
    const imageOnly = !!conversation && imageOnlySessions(ctx);
    const bringsImage = turnBringsImage(ctx, conversation, !!req.image);
    // (also undoes what a turn that failed half-way left in the cache)
    if (imageOnly && conversation.seq) await backToImage(conversation, bringsImage);
    if (conversation?.seq && (conversation.seq.length > 0 || imageOnly)) {
      seq = conversation.seq;
      startPos = conversation.nextPos;
      history = conversation.history;
    } else {
      // (an empty cache a failed first turn left behind is closed, not leaked in the worker)
      if (conversation?.seq?.alive) void conversation.seq.close();
      seq = await WorkerSequence.open(ctx.client, ctx.manifest.decoder.vocab, 64, ctx.manifest.decoder.hidden * ctx.manifest.decoder.layers);
      if (conversation) conversation.seq = seq;
    }
    await seq.flush();
    const kvStart = seq.length;
    if (conversation && !imageOnly) {
      turnStart = kvStart;
      imageBefore = { image: conversation.image, imageInfo: conversation.imageInfo, imageInContext: conversation.imageInContext };
    }
    const parts: Part[] = [];
    const lead = conversation?.seq && startPos > 0 ? [...conversation.pending] : [sp.bos];
    // the previous answer's tail that its turn did not leave in the KV cache (how much depends on how
    // it was decoded) is fed again here, but it was that turn's output: usage counts it there only.
    // The EOS that ended it, when it is in that tail, is counted in no turn: as when its turn cached it
    const carried = conversation?.seq && startPos > 0 ? lead.length : 0;
    // the image of this turn: the request's own (cropped/resized to the vision size), else the
    // session's latest image when the conversation has not seen it yet
    let image: RgbImage | null = null;
    let inputImage: InputImageInfo | undefined;
    if (req.image) {
      const fit = await fitImage(req.image, ctx.manifest.vision.image_size, 'request');
      image = fit.image;
      inputImage = fit.info;
    } else if (bringsImage && conversation?.image) {
      image = conversation.image;
      inputImage = { ...(conversation.imageInfo ?? { originalWidth: image.width, originalHeight: image.height, width: image.width, height: image.height, resized: false, cropped: false }), source: 'session' };
    }
    if (signal?.aborted) throw new EngineError('CANCELLED', 'request cancelled');
    const made = await makeProposer(ctx, v, startPos === 0);
    proposer = made.proposer;
    // draft chains carry their verification on this sequence (one worker request per step)
    made.draft?.verifyOn(seq);
    draft = made.draft;
    if (image) {
      if (signal?.aborted) throw new EngineError('CANCELLED', 'request cancelled');
      const S = ctx.manifest.vision.image_size;
      // the pack's reading offset applies to the encoder's input only: the session keeps the image as given
      const [dx, dy] = ctx.manifest.vision.understand_offset ?? [0, 0];
      const pixels = rgbToChw(dx || dy ? shiftImage(image, dx, dy) : image, S);
      const count = ctx.manifest.vision.tokens;
      // the worker runs vision.onnx inside the prefill forward (one request); only an EAGLE draft,
      // which needs the prompt's input embeddings here, asks for the image embeddings first
      let img: Part;
      if (proposer?.needsFeatures) img = { kind: 'image', embeds: await ctx.client.call<Float32Array>({ op: 'vision', pixels, batch: 1 }, [pixels.buffer as ArrayBuffer]), count };
      else img = { kind: 'pixels', pixels, count };
      parts.push({ kind: 'ids', ids: [...lead, sp.vision_start] }, img, { kind: 'ids', ids: [sp.vision_end, ...v.words, sp.im_start] });
    } else parts.push({ kind: 'ids', ids: [...lead, ...v.words, sp.im_start] });
    const lay = layout(parts, startPos);
    // image-only sessions: where the next turns start, after <bos> <vision_start> image <vision_end> (the image
    // block is one position); read before the prefill, which hands the layout's arrays to the worker
    const imageRows = image ? lead.length + 1 + ctx.manifest.vision.tokens + 1 : 0;
    const imageAnchor = imageOnly && image ? { kvLength: kvStart + imageRows, nextPos: lay.positions[imageRows - 1]! + 1, history: [...history, ...lay.ids.slice(0, lead.length + 2)] } : null;
    const promptTokens = lay.positions.length;
    const maxPos = ctx.manifest.decoder.max_positions;
    checkRoom(startPos, lay.nextPos, maxPos, !imageOnly);
    const maxTokens = Math.min(v.maxTokens, maxPos - lay.nextPos);
    if (signal?.aborted) throw new EngineError('CANCELLED', 'request cancelled');
    const pEmbeds = proposer?.needsFeatures ? promptEmbeds(ctx, lay.segments, promptTokens) : null;
    const pPositions = Int32Array.from(lay.positions);
    const pMask = Uint8Array.from(lay.mask);
    // retrieval drafting: the answer's first tokens are drafted from the datastore and verified in the
    // prefill forward itself (a tree rooted at the prompt's last token, appended to the prompt rows)
    const pick = tokenSampler(v.seed, isGreedy(v.sampling));
    let first: DecodeStep | undefined;
    let lastLogits: Float32Array;
    const preTree =
      proposer instanceof RetrievalProposer ? await proposer.proposeAtPrefill([...history, ...lay.ids], Math.min(maxTokens - 1, maxPos - lay.nextPos)) : null;
    if (preTree && preTree.tokens.length > 1) {
      const T = promptTokens;
      const N = preTree.tokens.length;
      const R = T + N - 1;
      const positions = new Int32Array(R);
      positions.set(lay.positions);
      for (let i = 1; i < N; i++) positions[T + i - 1] = lay.nextPos - 1 + preTree.depths[i]!;
      const mask = new Uint8Array(R * R);
      for (let i = 0; i < T; i++) mask.set(lay.mask.subarray(i * T, i * T + T), i * R);
      const tm = treeMask(preTree);
      for (let i = 1; i < N; i++) {
        mask.fill(1, (T + i - 1) * R, (T + i - 1) * R + T); // every drafted node sees the whole prompt
        for (let j = 1; j < N; j++) if (tm[i * N + j]) mask[(T + i - 1) * R + T + j - 1] = 1;
      }
      const V = ctx.manifest.decoder.vocab;
      const logits = await seq.extend([...lay.segments, { kind: 'ids', ids: Int32Array.from(preTree.tokens.subarray(1)) }], positions, mask, 'all');
      const res = verifyTree(preTree, (node) => processLogits(logits, (T - 1 + node) * V, V, v.sampling), pick, lay.nextPos - 1);
      seq.compact({ keepFrom: kvStart + T, keep: Int32Array.from(res.acceptedNodes.map((n) => n - 1)) });
      let depth = 0;
      for (let i = 1; i < N; i++) depth = Math.max(depth, preTree.depths[i]!);
      proposer!.observe(depth, res.acceptedNodes.length);
      first = { tokens: [...res.acceptedTokens, res.nextToken], drafted: N - 1, accepted: res.acceptedNodes.length, depth };
      lastLogits = logits.subarray((T - 1) * V, T * V);
    } else lastLogits = await seq.extend(lay.segments, lay.positions, lay.mask, 'last', !!proposer?.needsFeatures);
    if (imageOnly && image) conversation.anchor = imageAnchor;
    if (conversation && image && inputImage) {
      // the image is in the conversation's KV cache now: it is the session's latest image
      if (inputImage.source === 'request') {
        conversation.image = image;
        conversation.imageInfo = inputImage;
      }
      conversation.imageInContext = true;
    }
    const pFeatures = seq.lastFeatures;
    const context = [...history, ...lay.ids];
    // ---- decode
    const metrics = new SpecMetrics();
    const detok = new IncrementalDetokenizer((ids) => ctx.tokenizer.decode(ids));
    const stopper = new StopStringFilter(v.stop);
    let text = '';
    let generated: number[] = [];
    let finish: FinishReason = 'length';
    let tFirst = 0;
    let chosenTotal = 0; // tokens chosen by the loop (incl. any past a cut); all but the last are cached
    let cancelled = false;
    // textless steps waiting to be folded into the next chunk (see UnderstandChunk)
    let carry: TrailingSteps | null = null;
    const steps = decodeSteps(seq, lastLogits, lay.nextPos, context, {
      sampling: v.sampling,
      pick,
      proposer,
      signal,
      prompt: pEmbeds && pFeatures ? { embeds: pEmbeds, features: pFeatures, positions: pPositions, mask: pMask } : undefined,
      // no drafting past the answer budget or the model's last position
      first,
      maxDraftDepth: () => Math.min(maxTokens - generated.length - 1, maxPos - 1 - (lay.nextPos + generated.length)),
    });
    /**
     * What the turn leaves in a session: the prompt and the answer as far as it went, in the cache and the
     * history alike (an image-only session goes back to its image). Every way a turn ends runs it once.
     */
    const keepTurn = async (end: FinishReason) => {
      if (imageOnly) {
        // the model reads one question per image: the next turn starts from the image again
        await backToImage(conversation, false);
      } else if (conversation && seq) {
        // keep prompt + answer (+ EOS) in the conversation's KV; drop drafted tokens past the cut
        const desired = end === 'eos' ? [...generated, sp.eos] : generated;
        const cached = Math.min(Math.max(0, chosenTotal - 1), desired.length);
        await truncateSequence(seq, kvStart + promptTokens + cached);
        conversation.history = [...context, ...desired.slice(0, cached)];
        conversation.nextPos = lay.nextPos + cached;
        conversation.pending = desired.slice(cached);
      }
    };
    // set until the loop ends by itself (or throws): reaching the finally with it set means the consumer
    // stopped reading at a chunk (return(): a `break`, or a client that unsubscribed)
    let consumerLeft = true;
    try {
      for await (const step of steps) {
        chosenTotal += step.tokens.length;
        const cut = cutTokens(step.tokens, sp.eos, generated.length, maxTokens);
        // token by token, so a stop string ends the answer at the token that completes it however many
        // tokens the step accepted: text, usage and a session's history are the same in every mode
        let keep = cut.keep;
        let out = '';
        let stopped = false;
        for (let i = 0; i < cut.keep && !stopped; i++) {
          const st = stopper.push(detok.push([step.tokens[i]!]));
          out += st.text;
          if (st.stopped) {
            stopped = true;
            keep = i + 1;
          }
        }
        if (!stopped && cut.finish) {
          const st = stopper.push(detok.flush());
          out += st.text;
          stopped = st.stopped;
          if (!stopped) out += stopper.flush();
        }
        const kept = step.tokens.slice(0, keep);
        generated = generated.concat(kept);
        text += out;
        // drafts accepted past the answer's end (after its EOS, stop string or last allowed token) are
        // not part of it: count only the accepted tokens the answer kept (its EOS included)
        const ended = keep < cut.keep || cut.finish !== null;
        const accepted = ended ? Math.min(step.accepted, keep + (cut.finish === 'eos' && keep === cut.keep ? 1 : 0)) : step.accepted;
        metrics.record(step.drafted, step.depth, accepted);
        if (!tFirst) tFirst = performance.now();
        const c: TrailingSteps = carry ?? { tokenIds: [], acceptedTokens: 0, draftedTokens: 0, steps: 0 };
        c.tokenIds.push(...kept);
        c.acceptedTokens += accepted;
        c.draftedTokens += step.drafted;
        c.steps += 1;
        if (out.length > 0) {
          carry = null;
          yield { kind: 'chunk', text: out, tokenIds: c.tokenIds, acceptedTokens: c.acceptedTokens, draftedTokens: c.draftedTokens, steps: c.steps };
        } else carry = c;
        if (stopped) {
          finish = 'stop';
          break;
        }
        if (cut.finish) {
          finish = cut.finish;
          break;
        }
      }
      consumerLeft = false;
    } catch (e) {
      consumerLeft = false;
      if (e instanceof EngineError && e.code === 'CANCELLED') cancelled = true;
      else throw e;
    } finally {
      await steps.return();
      // the session keeps what was streamed, as after a cancel (without this its cache kept the turn's rows
      // while its history did not, and the next turn read a half turn at positions it reused)
      if (consumerLeft && conversation && seq === conversation.seq && seq.alive)
        await keepTurn('cancelled').catch(() => {
          // the session starts afresh; the cache it held is closed (not leaked in the worker)
          void seq!.close().catch(() => undefined);
          Object.assign(conversation, { seq: null, nextPos: 0, history: [], pending: [], imageInContext: false, anchor: null });
        });
    }
    let held = '';
    if (cancelled) {
      finish = 'cancelled';
      // text held back as the possible start of a stop string was not one: the answer ends here, so it is
      // part of the answer (its tokens are counted), sent as a last chunk with the steps that made it
      held = stopper.push(detok.flush()).text + stopper.flush();
      text += held;
    }
    const tEnd = performance.now();
    // (before the held chunk's yield: a consumer that stops reading there leaves the session as it is now)
    await keepTurn(finish);
    if (held) {
      const c: TrailingSteps = carry ?? { tokenIds: [], acceptedTokens: 0, draftedTokens: 0, steps: 0 };
      carry = null;
      yield { kind: 'chunk', text: held, tokenIds: c.tokenIds, acceptedTokens: c.acceptedTokens, draftedTokens: c.draftedTokens, steps: c.steps };
    }
    const n = generated.length;
    const decodeMs = tFirst ? tEnd - tFirst : 0;
    const summary: UnderstandSummary = {
      kind: 'done',
      finishReason: finish,
      text,
      usage: { promptTokens: promptTokens - carried, completionTokens: n, totalTokens: promptTokens - carried + n },
      timings: {
        queueMs,
        timeToFirstTokenMs: tFirst ? tFirst - t0 : 0,
        totalMs: tEnd - t0,
        tokensPerSecond: n > 1 && decodeMs > 0 ? ((n - 1) * 1000) / decodeMs : n > 0 ? (n * 1000) / (tEnd - t0) : 0,
      },
      speculation: {
        mode: v.mode,
        proposer: proposer ? proposer.source : 'none',
        drafts: metrics.drafts,
        draftedTokens: metrics.draftedTokens,
        acceptedTokens: metrics.acceptedTokens,
        meanAcceptedLength: metrics.meanAcceptedLength,
        acceptanceRate: metrics.acceptanceRate,
        acceptancePerPosition: metrics.acceptancePerPosition,
      },
      seed: v.seed,
    };
    if (carry) summary.trailing = carry;
    if (inputImage) summary.inputImage = inputImage;
    // the session is free as soon as its state is updated: a caller that sees the summary may send
    // the next turn at once
    freeSession();
    yield summary;
  } catch (e) {
    // the conversation's state was not updated: its cache must not keep this turn's rows either (the next
    // turn would read them as context it never had). Image-only sessions go back to their image anyway.
    if (conversation && turnStart !== null && seq && conversation.seq === seq && seq.alive) {
      Object.assign(conversation, imageBefore);
      await truncateSequence(seq, turnStart).catch(() => Object.assign(conversation, { seq: null, nextPos: 0, history: [], pending: [], imageInContext: false, anchor: null }));
    }
    // a worker crash during this turn took the conversation's cache with it: this turn says so, and the
    // next one starts afresh (it failed the same way before)
    if (conversation?.seq && !conversation.seq.alive && e instanceof EngineError && e.code === 'WORKER_CRASHED') {
      if (imageBefore) Object.assign(conversation, imageBefore);
      throw sessionLost(conversation);
    }
    // cancelled during prefill (after admission): end the stream like a cancelled decode would
    if (!(e instanceof EngineError && e.code === 'CANCELLED')) throw e;
    const total = performance.now() - t0;
    freeSession();
    yield {
      kind: 'done',
      finishReason: 'cancelled',
      text: '',
      usage: { promptTokens: 0, completionTokens: 0, totalTokens: 0 },
      timings: { queueMs, timeToFirstTokenMs: 0, totalMs: total, tokensPerSecond: 0 },
      speculation: { mode: v.mode, proposer: 'none', drafts: 0, draftedTokens: 0, acceptedTokens: 0, meanAcceptedLength: 1, acceptanceRate: 0, acceptancePerPosition: [] },
      seed: v.seed,
    };
  } finally {
    freeSession();
    // closes are not waited for: the worker handles them before any later request
    if (seq && !conversation) void seq.close();
    void draft?.close();
    release!();
  }
}

