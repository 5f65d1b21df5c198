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

export interface UnderstandRequest {
  prompt: string;
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

export type FinishReason = 'eos' | 'stop' | 'length' | 'cancelled' | 'error';

/** One event per verification step. */
export interface UnderstandChunk {
  kind: 'chunk';
  /** text delta, never splitting a character */
  text: string;
  tokenIds: number[];
  acceptedTokens: number;
  draftedTokens: number;
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
    meanAcceptedLength: number;
    acceptanceRate: number;
    /** acceptance rate at draft position i (0-based) */
    acceptancePerPosition: number[];
    /** what produced the drafts: 'ngram' (prompt lookup), 'draft-model', or 'none' (plain decoding) */
    proposer?: string;
  };
  /** the seed used (given or drawn), so a sampled answer can be reproduced */
  seed?: number;
}

export type UnderstandEvent = UnderstandChunk | UnderstandSummary;

export type GenerationMode = 'progressive' | '1nfe' | '6nfe' | 'baseline';

export interface GenerateRequest {
  prompt: string;
  /** present for edits */
  sourceImage?: RgbImage;
  mode?: GenerationMode;
  seed?: number;
  /** baseline only */
  steps?: number;
  cfgTextScale?: number;
  cfgImageScale?: number;
  cfgInterval?: [number, number];
  timestepShift?: number;
  /** progressive: also stream the 6-NFE intermediate x0 predictions */
  intermediatePreviews?: boolean;
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
}

export interface FrameTimings {
  /** context prefill (decoder over text/ViT tokens, denoiser over the source VAE block) */
  prefillMs: number;
  /** ViT encoder + VAE encoder of the source image (editing) */
  encodeSourceMs: number;
  /** denoiser loops */
  samplingMs: number;
  /** VAE decoder / latent preview decode */
  decodeMs: number;
  /** sharp encoding */
  imageEncodeMs: number;
}

/** Opaque handle to a server-side conversation context (KV cache). */
export interface SessionHandle {
  readonly id: string;
}

export interface ModelInfo {
  name: string;
  description: string;
  capabilities: { understand: boolean; generate: boolean; edit: boolean; draft: boolean; sixStep: boolean; oneStep: boolean };
  imageSize: { width: number; height: number };
  vocabularySize: number;
}

/** Errors the engine raises for bad input; the gateway maps `code` to a typed GraphQL error. */
export type EngineErrorCode =
  | 'INVALID_INPUT'
  | 'UNKNOWN_WORDS'
  | 'PROMPT_TOO_LONG'
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
  createSession(): SessionHandle;
  closeSession(session: SessionHandle): void;
  close(): Promise<void>;
}
