// The engine's public contract. The gateway (resolvers/) and the CLI consume only these types;
// the engine knows nothing of GraphQL.

/** Raw RGB image, HWC, uint8. */
export interface RgbImage {
  width: number;
  height: number;
  /** length = width * height * 3 */
  data: Uint8Array;
}

export type SpeculationMode = 'auto' | 'off' | 'chain' | 'tree' | 'ngram';

export interface SpeculationOptions {
  mode: SpeculationMode;
  /** chain length K (chain mode) */
  chainLength?: number;
  /** total drafted tokens per step (tree mode) */
  treeBudget?: number;
  /** branching factor per expanded node (tree mode) */
  treeTopK?: number;
  /** tree depth (tree mode) */
  treeDepth?: number;
}

/**
 * How an input image was brought to the model's vision size (`ModelInfo.imageSize`, 64×64 for the
 * shapes world). Any RGB image of at least 8 pixels a side and at most `MAX_IMAGE_PIXELS` pixels is
 * accepted: a non-square one is centre-cropped to a square, then resized (sharp, lanczos3) to the
 * vision size. Images outside those limits, or with malformed pixel data, are BAD_IMAGE.
 */
export interface InputImageInfo {
  /** size of the image as given (for `source: 'session'`, the remembered image) */
  originalWidth: number;
  originalHeight: number;
  /** size the model saw */
  width: number;
  height: number;
  /** true when the pixels were changed to fit (crop and/or resize); false for an exact-size image */
  resized: boolean;
  /** true when a non-square image was centre-cropped */
  cropped: boolean;
  /** 'request': the request's own image; 'session': the session's latest image (see SessionHandle) */
  source: 'request' | 'session';
}

/** Largest accepted input image, in pixels (width × height): the gateway's default `maxImagePixels` too. */
export const MAX_IMAGE_PIXELS = 25_000_000;
/** Smallest accepted side of an input image, in pixels. */
export const MIN_IMAGE_SIDE = 8;

export interface UnderstandRequest {
  prompt: string;
  /**
   * Optional image of any reasonable size (see InputImageInfo). Without one, a request carrying a
   * session uses the session's latest image when the conversation has not seen it yet (e.g. an image
   * just generated or edited in the session); see SessionHandle.
   */
  image?: RgbImage;
  maxTokens?: number;
  /** 0 = greedy */
  temperature?: number;
  topP?: number;
  topK?: number;
  seed?: number;
  stop?: string[];
  speculation?: SpeculationOptions;
  /** Opaque server-side conversation context (see Session). */
  session?: SessionHandle;
}

export type FinishReason = 'eos' | 'stop' | 'length' | 'cancelled';

/**
 * One event per verification step that produced text. A chunk's `text` is never empty: a step whose
 * tokens render to nothing (special tokens such as `<|im_start|>`, bytes held back until a character
 * completes, text held back while it may start a stop string, the EOS step) is folded into the next
 * chunk: its token ids come first in `tokenIds`, its accepted/drafted counts are added, and `steps`
 * counts the verification steps the chunk covers. Steps still folded when the stream ends are
 * reported in `UnderstandSummary.trailing`, so chunks' `tokenIds` followed by `trailing.tokenIds`
 * are exactly the answer's tokens, and the chunks' plus trailing `steps` are every verification step.
 */
export interface UnderstandChunk {
  kind: 'chunk';
  /** text delta, never splitting a character; never empty */
  text: string;
  tokenIds: number[];
  acceptedTokens: number;
  draftedTokens: number;
  /** verification steps this chunk covers (1, or more when textless steps were folded into it) */
  steps?: number;
}

/** Verification steps after the last chunk that produced no text (see UnderstandChunk). */
export interface TrailingSteps {
  tokenIds: number[];
  acceptedTokens: number;
  draftedTokens: number;
  steps: number;
}

export interface UnderstandSummary {
  kind: 'done';
  finishReason: FinishReason;
  text: string;
  usage: { promptTokens: number; completionTokens: number; totalTokens: number };
  timings: { queueMs: number; timeToFirstTokenMs: number; totalMs: number; tokensPerSecond: number };
  speculation: {
    mode: SpeculationMode;
    drafts: number;
    draftedTokens: number;
    acceptedTokens: number;
    /**
     * Mean tokens committed per verification step that carried drafts: 1 + acceptedTokens / drafts
     * (the bonus token included; vLLM / llama.cpp / EAGLE "tau" convention). 1.0 when nothing was
     * drafted (plain decoding commits one token per step).
     */
    meanAcceptedLength: number;
    acceptanceRate: number;
    /** acceptance rate at draft position i (0-based) */
    acceptancePerPosition: number[];
    /**
     * what produced the drafts: 'ngram' (prompt lookup), 'draft-model' (the pack's draft graph),
     * 'retrieval' (the pack's retrieval datastore), or 'none' (plain decoding)
     */
    proposer?: string;
  };
  /** the seed used (given or drawn), so a sampled answer can be reproduced */
  seed?: number;
  /** textless verification steps after the last chunk (the EOS step, trailing special tokens) */
  trailing?: TrailingSteps;
  /** the image fed to the model in this turn, if any, and whether it was cropped/resized */
  inputImage?: InputImageInfo;
}

export type UnderstandEvent = UnderstandChunk | UnderstandSummary;

export type GenerationMode = 'progressive' | '1nfe' | '6nfe' | 'baseline';

export interface GenerateRequest {
  prompt: string;
  /** present for edits; any reasonable size (see InputImageInfo) */
  sourceImage?: RgbImage;
  /**
   * An edit of the session's latest image: with `session` and no `sourceImage`, edit the session's
   * latest image (INVALID_INPUT if it has none). Ignored when `sourceImage` is given (that is an edit
   * anyway). Without `edit` and `sourceImage` the request is text-to-image.
   */
  edit?: boolean;
  mode?: GenerationMode;
  seed?: number;
  /** baseline only */
  steps?: number;
  cfgTextScale?: number;
  cfgImageScale?: number;
  cfgInterval?: [number, number];
  timestepShift?: number;
  /** also stream the main sampler's intermediate x0 predictions (6-NFE, or baseline steps), VAE-decoded JPEG previews */
  intermediatePreviews?: boolean;
  /**
   * Text-to-image only, packs with `capabilities.think`: the model first expands the prompt into a full
   * scene description (a sampled text-only turn, seeded by `seed`), then generates from that description
   * (BAGEL's thinking / prompt-rewriting mode). Every frame reports it as `thought`.
   */
  think?: boolean;
  /** sampling temperature of the expansion (default THINK_TEMPERATURE); 0 = greedy */
  thinkTemperature?: number;
  /** the final frame becomes the session's latest image (see SessionHandle) */
  session?: SessionHandle;
}

export type FrameStage = 'preview' | 'final';

export interface EncodedImage {
  mimeType: 'image/png' | 'image/jpeg' | 'image/webp';
  width: number;
  height: number;
  bytes: Uint8Array;
  sha256: string;
}

export interface ImageFrame {
  stage: FrameStage;
  /** number of denoiser evaluations spent to produce this frame */
  nfe: number;
  /** sampler step index this frame comes from */
  step: number;
  elapsedMs: number;
  seed: number;
  image: EncodedImage;
  /** the decoded pixels, for callers that want them (CLI, evaluator) */
  rgb: RgbImage;
  /** which sampler produced it, e.g. 'euler-6 (base denoiser)' or 'distilled-6nfe' */
  sampler?: string;
  /** where the time went up to this frame (ms), for benchmarks */
  timings?: FrameTimings;
  /** edits: the source image as the model saw it (cropped/resized to the vision size or not) */
  sourceImage?: InputImageInfo;
  /** think mode: the scene description the model wrote for the prompt, which the image was generated from */
  thought?: string;
}

export interface FrameTimings {
  /** context prefill (decoder over text/ViT tokens, denoiser over the source VAE block) */
  prefillMs: number;
  /** editing: both encodes of the source image, vitEncodeMs + vaeEncodeMs (0 for text-to-image) */
  encodeSourceMs: number;
  /**
   * editing: the ViT (vision) encoder over the source image (0 for text-to-image). Always set by the
   * local engine; optional for other Engine implementations.
   */
  vitEncodeMs?: number;
  /** editing: the VAE encoder over the source image (0 for text-to-image); as vitEncodeMs */
  vaeEncodeMs?: number;
  /** denoiser loops */
  samplingMs: number;
  /** VAE decoder / latent preview decode */
  decodeMs: number;
  /** sharp encoding */
  imageEncodeMs: number;
  /** think mode: writing the scene description before generation */
  thinkMs?: number;
}

/**
 * Opaque handle to a server-side conversation context. A session holds:
 *  - the conversation's KV cache (understanding turns): each understand call carrying the session
 *    appends its prompt (and image, if one is fed) after the previous turns and answers with the whole
 *    conversation in context. One request at a time per session (BUSY otherwise).
 *  - the session's latest image: the last image fed to an understand turn, or the last final frame of
 *    a generate/edit call carrying the session (at the vision size).
 * Using the latest image:
 *  - understand without `image`: if the latest image is not yet in the conversation (it came from a
 *    generate/edit, or the context was lost in a worker crash), it is fed to the model in this turn
 *    (reported as `inputImage.source = 'session'`); if the conversation has already seen it, nothing
 *    is re-fed (the KV cache still holds it).
 *  - generate with `edit: true` and no `sourceImage`: edits the latest image.
 * Generation and editing condition on their own prompt (and source image) only; they do not read or
 * extend the conversation's text, they only hand their final image to the session.
 */
export interface SessionHandle {
  readonly id: string;
}

/** What a session holds, for bounding session memory (Engine.sessionInfo). */
export interface SessionInfo {
  /** rows in the conversation's KV cache (prompt, image and answer tokens of all turns) */
  tokens: number;
  /** memory held: the KV cache buffers as allocated in the worker, plus the remembered image */
  bytes: number;
  /** whether the session has a latest image */
  hasImage: boolean;
}

export interface ModelInfo {
  name: string;
  description: string;
  capabilities: { understand: boolean; generate: boolean; edit: boolean; draft: boolean; sixStep: boolean; oneStep: boolean; think: boolean };
  imageSize: { width: number; height: number };
  vocabularySize: number;
  /** the words prompts may use: the tokenizer's vocabulary less special tokens and the pack's untrained words, sorted */
  words: string[];
  /** positions the model's context holds: a prompt (image tokens included) and its answer, or a session's whole conversation */
  contextLength: number;
  /** what a session's later understanding turn reads: the whole conversation, or only the session's image (manifest prompts.session_context) */
  sessionContext: 'conversation' | 'image';
  /** how far understanding moves each image before reading it, [dx, dy] pixels (manifest vision.understand_offset; [0, 0] when none) */
  understandOffset: [number, number];
  /** each sampler's guidance scales: the defaults and the ranges a request's must lie in */
  guidance: { baseline: SamplerGuidance; sixStep: SamplerGuidance; oneStep: SamplerGuidance };
}

/** A guidance scale's default and the range a request's value must lie in. */
export interface ScaleRange {
  default: number;
  min: number;
  max: number;
}

/** A sampler's text guidance scale and (editing only) its image guidance scale. */
export interface SamplerGuidance {
  text: ScaleRange;
  image: ScaleRange;
}

/** Errors the engine raises for bad input; the gateway maps `code` to a typed GraphQL error. */
export type EngineErrorCode =
  | 'INVALID_INPUT'
  | 'UNKNOWN_WORDS'
  | 'PROMPT_TOO_LONG'
  /** a session's conversation has no room left in the model's context for this turn */
  | 'SESSION_FULL'
  | 'BAD_IMAGE'
  | 'OUT_OF_RANGE'
  | 'BUSY'
  | 'CANCELLED'
  | 'MODEL_LOAD_FAILED'
  | 'WORKER_CRASHED'
  | 'INTERNAL';

export class EngineError extends Error {
  constructor(
    readonly code: EngineErrorCode,
    message: string,
    readonly details?: Record<string, unknown>,
  ) {
    super(message);
    this.name = 'EngineError';
  }
}

export interface Engine {
  readonly info: ModelInfo;
  understand(req: UnderstandRequest, signal?: AbortSignal): AsyncIterable<UnderstandEvent>;
  generate(req: GenerateRequest, signal?: AbortSignal): AsyncIterable<ImageFrame>;
  /**
   * Check a request as understand() / generate() would before any model work, throwing the same
   * EngineError, so a caller can refuse bad input before queueing it or handing out a job id.
   * Optional for other Engine implementations (test doubles); the local engine has them.
   */
  checkUnderstand?(req: UnderstandRequest): void;
  checkGenerate?(req: GenerateRequest): void;
  createSession(): SessionHandle;
  closeSession(session: SessionHandle): void;
  /**
   * What the session holds (tokens, bytes, image) so callers can bound session memory; throws
   * EngineError INVALID_INPUT for an unknown or closed session. Optional for other Engine
   * implementations (test doubles); the local engine has it.
   */
  sessionInfo?(session: SessionHandle): SessionInfo;
  close(): Promise<void>;
}
