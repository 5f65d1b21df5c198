// Draft quality as Hyper-Bagel's Table 1 reports it: mean acceptance length τ and acceptance rate 10-α,
// with 10 extrapolation steps, chain decoding, greedy, measured through the engine on the test split.
import type { Engine, UnderstandSummary } from '../engine/types.ts';
import { renderScene } from '../world/index.ts';
import { limitPerGroup, loadUnderstandSuite } from './suites.ts';

export const DRAFT_CHAIN_STEPS = 10;

export interface DraftScores {
  /** committed tokens per target verification: 1 + accepted / drafts */
  tau_chain: number;
  /** accepted / drafted, over 10-token chains */
  acceptance_10: number;
  /** which proposer the engine used (a pack without a draft model falls back to n-gram) */
  proposer: string;
  /** greedy answers equal plain decoding's on every prompt */
  lossless: boolean;
  prompts: number;
  drafts: number;
}

async function answer(engine: Engine, prompt: string, image: ReturnType<typeof renderScene>, chain: boolean): Promise<UnderstandSummary> {
  let done: UnderstandSummary | undefined;
  const speculation = chain ? { mode: 'chain' as const, chainLength: DRAFT_CHAIN_STEPS } : { mode: 'off' as const };
  for await (const ev of engine.understand({ prompt, image, temperature: 0, maxTokens: 64, speculation })) if (ev.kind === 'done') done = ev;
  if (!done) throw new Error('understand() ended without a summary');
  return done;
}

/** Captions and every question of the test-split understanding suite (limit = images). */
export async function evaluateDraft(engine: Engine, opts: { captionPrompt: string; limit?: number }): Promise<DraftScores> {
  const items = limitPerGroup(loadUnderstandSuite('test').items, () => 'all', opts.limit);
  let drafts = 0, drafted = 0, accepted = 0, prompts = 0, lossless = true;
  const proposers = new Set<string>();
  for (const item of items) {
    const image = renderScene(item.scene);
    for (const prompt of [opts.captionPrompt, ...item.questions.map((q) => q.question)]) {
      const spec = await answer(engine, prompt, image, true);
      const plain = await answer(engine, prompt, image, false);
      if (spec.text !== plain.text) lossless = false;
      drafts += spec.speculation.drafts;
      drafted += spec.speculation.draftedTokens;
      accepted += spec.speculation.acceptedTokens;
      if (spec.speculation.proposer) proposers.add(spec.speculation.proposer);
      prompts++;
    }
  }
  return {
    tau_chain: drafts > 0 ? 1 + accepted / drafts : 1,
    acceptance_10: drafted > 0 ? accepted / drafted : 0,
    proposer: [...proposers].join(',') || 'none',
    lossless,
    prompts,
    drafts,
  };
}
