// What the benchmarks' synthetic engines share: sessions are not part of what they measure.
import type { Engine, GenerateRequest, ImageFrame, SessionHandle, UnderstandEvent, UnderstandRequest } from '../src/engine/types.ts';

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
