// auto with a draft model and a retrieval datastore: which drafter a request gets (pipeline.ts
// draftBeatsRetrieval), without a model.
import { describe, expect, test } from 'vitest';
import type { EngineCtx } from '../../src/engine/context.ts';
import { AcceptanceStats } from '../../src/engine/speculative/metrics.ts';
import { retrievalState } from '../../src/engine/speculative/retrieval.ts';
import { CostCurve } from '../../src/engine/speculative/sizing.ts';
import { draftBeatsRetrieval, type ValidatedUnderstand } from '../../src/engine/understand/pipeline.ts';

const v = { mode: 'auto' } as ValidatedUnderstand;

function ctx(draftCost: { perToken: number; fixed: number }, acceptance: number): EngineCtx {
  const draftStats = new AcceptanceStats(acceptance);
  const draftTreeStats = new AcceptanceStats(acceptance);
  const c = { curve: new CostCurve([[1, 0.7], [8, 0.9], [16, 1.1], [32, 1.6]]), draftStats, draftTreeStats, draftCost, opts: { maxChainLength: 8 } } as unknown as EngineCtx;
  // retrieval measured: 8 steps at 3 tokens/ms
  Object.assign(retrievalState(c), { steps: 8, tokensPerMs: 3 });
  return c;
}

describe('auto: draft model or retrieval', () => {
  test('a draft model that would decode plain at every step is never explored (it would measure nothing)', () => {
    const c = ctx({ perToken: 5, fixed: 5 }, 0.3); // drafting costs far more than it gains: chooseShape says plain
    expect([...Array(64)].map(() => draftBeatsRetrieval(c, v)).filter(Boolean)).toEqual([]);
  });

  test('a draft model that would draft is explored on every 16th request, and chosen when it beats retrieval', () => {
    const slow = ctx({ perToken: 0.1, fixed: 0.3 }, 0.8); // drafts (≈ 2.5 tokens/ms > plain's 1.4), but slower than retrieval
    expect([...Array(64)].map(() => draftBeatsRetrieval(slow, v)).filter(Boolean).length).toBe(4);
    const fast = ctx({ perToken: 0.01, fixed: 0.01 }, 0.95);
    expect([...Array(16)].every(() => draftBeatsRetrieval(fast, v))).toBe(true);
  });
});
