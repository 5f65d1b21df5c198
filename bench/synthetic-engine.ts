// What the benchmarks' synthetic engines share: sessions are not part of what they measure.
import type { Engine, GenerateRequest, ImageFrame, ModelInfo, SessionHandle, UnderstandEvent, UnderstandRequest, UnderstandSummary } from '../src/engine/types.ts';

/** Every sampler's guidance as a pack without distilled graphs reports it: the default model's sampler defaults (text 4, image 1.5) over [1, 20]. */
const FLAT = { text: { default: 4, min: 1, max: 20 }, image: { default: 1.5, min: 1, max: 20 } };
export const SYNTHETIC_GUIDANCE: ModelInfo['guidance'] = { baseline: FLAT, sixStep: FLAT, oneStep: FLAT };

/**
 * A synthetic engine's model info: understanding only unless `capabilities` says more, a 64×64 image,
 * and no vocabulary or context limit of its own (the gateway's limits are the ones measured).
 */
export function syntheticInfo(name: string, description: string, o: { capabilities?: Partial<ModelInfo['capabilities']>; imageSize?: ModelInfo['imageSize'] } = {}): ModelInfo {
  return {
    name,
    description,
    capabilities: { understand: true, generate: false, edit: false, draft: false, sixStep: false, oneStep: false, think: false, ...o.capabilities },
    imageSize: o.imageSize ?? { width: 64, height: 64 },
    vocabularySize: 1,
    words: [],
    contextLength: 1 << 20,
    sessionContext: 'conversation' as const,
    understandOffset: [0, 0] as [number, number],
    guidance: SYNTHETIC_GUIDANCE,
  };
}

/** The last event of a synthetic answer of `n` tokens, one per `stepMs` step, undrafted. */
export function syntheticSummary(n: number, stepMs: number): UnderstandSummary {
  return {
    kind: 'done',
    finishReason: 'length',
    text: '',
    usage: { promptTokens: 1, completionTokens: n, totalTokens: n + 1 },
    timings: { queueMs: 0, timeToFirstTokenMs: stepMs, totalMs: n * stepMs, tokensPerSecond: 1000 / stepMs },
    speculation: { mode: 'off', drafts: 0, draftedTokens: 0, acceptedTokens: 0, meanAcceptedLength: 1, acceptanceRate: 0, acceptancePerPosition: [] },
  };
}

export abstract class SyntheticEngine implements Engine {
  abstract readonly info: Engine['info'];
  abstract understand(req: UnderstandRequest, signal?: AbortSignal): AsyncGenerator<UnderstandEvent>;
  abstract generate(req: GenerateRequest, signal?: AbortSignal): AsyncGenerator<ImageFrame>;
  createSession(): SessionHandle {
    return { id: 'x' };
  }
  closeSession(): void {}
  async close(): Promise<void> {}
}
