// A chat's follow-up question in a session, against the same question sent with its image: what the
// session's cached context saves (with prompts.session_context "image": the vision encoder and the image
// prefill; the answers are then the same, token for token). Part of `bench understand`.
import type { Engine, RgbImage, UnderstandRequest, UnderstandSummary } from '../src/engine/types.ts';
import { median, round3 } from './stats.ts';

export interface FollowupConversation {
  image: RgbImage;
  /** the first turn, sent with the image */
  opening: string;
  /** the follow-up questions, each asked in the session without the image, then alone with it */
  questions: string[];
}

export interface SessionFollowupResult {
  session_context: 'conversation' | 'image';
  followups: number;
  /** medians, ms: a follow-up in the session / the same question with its image, no session */
  ttft_ms: { followup: number; with_image: number };
  total_ms: { followup: number; with_image: number };
  prompt_tokens: { followup: number; with_image: number };
  /** every follow-up answered exactly as the question with its image (expected with session_context "image") */
  same_answers: boolean;
}

async function answer(engine: Engine, req: UnderstandRequest): Promise<{ summary: UnderstandSummary; ms: number }> {
  const t0 = performance.now();
  let summary: UnderstandSummary | undefined;
  for await (const ev of engine.understand(req)) if (ev.kind === 'done') summary = ev;
  return { summary: summary!, ms: performance.now() - t0 };
}

export async function benchSessionFollowups(engine: Engine, conversations: FollowupConversation[], base: Partial<UnderstandRequest>, rounds: number): Promise<SessionFollowupResult> {
  const f = { ttft: [] as number[], total: [] as number[], prompt: [] as number[] };
  const w = { ttft: [] as number[], total: [] as number[], prompt: [] as number[] };
  let same = true;
  for (let round = 0; round < rounds; round++) {
    for (const c of conversations) {
      const session = engine.createSession();
      try {
        await answer(engine, { ...base, prompt: c.opening, image: c.image, session });
        for (const [k, q] of c.questions.entries()) {
          const followup = () => answer(engine, { ...base, prompt: q, session });
          const alone = () => answer(engine, { ...base, prompt: q, image: c.image });
          // alternate which runs first, so neither always meets the warmer caches
          let a: Awaited<ReturnType<typeof answer>>, b: Awaited<ReturnType<typeof answer>>;
          if (k % 2) {
            a = await followup();
            b = await alone();
          } else {
            b = await alone();
            a = await followup();
          }
          if (a.summary.text !== b.summary.text) same = false;
          if (round === 0 && rounds > 1) continue; // the first round warms up
          for (const [into, r] of [[f, a], [w, b]] as const) {
            into.ttft.push(r.summary.timings.timeToFirstTokenMs);
            into.total.push(r.ms);
            into.prompt.push(r.summary.usage.promptTokens);
          }
        }
      } finally {
        engine.closeSession(session);
      }
    }
  }
  return {
    session_context: engine.info.sessionContext,
    followups: f.ttft.length,
    ttft_ms: { followup: round3(median(f.ttft)), with_image: round3(median(w.ttft)) },
    total_ms: { followup: round3(median(f.total)), with_image: round3(median(w.total)) },
    prompt_tokens: { followup: median(f.prompt), with_image: median(w.prompt) },
    same_answers: same,
  };
}
