// A pack whose manifest says prompts.session_context "image" (a model trained on one question per
// image): each session turn reads the session's image and its own question only, exactly as a first
// question would, from the image's cached context. The fixture pack, copied with that field; real worker.
import { cpSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, test } from 'vitest';
import { createEngine, type LocalEngine } from '../../src/engine/index.ts';
import type { RgbImage, UnderstandEvent, UnderstandSummary } from '../../src/engine/types.ts';
import { benchSessionFollowups } from '../../bench/session-followup.ts';
import { answerIds, collect, FIXTURE } from './fixture-helpers.ts';

let dir: string;
let engine: LocalEngine;
const withContext = (value: unknown, pack = FIXTURE) => {
  const d = mkdtempSync(join(tmpdir(), 'hb-image-only-'));
  cpSync(pack, d, { recursive: true });
  const m = JSON.parse(readFileSync(join(d, 'manifest.json'), 'utf8'));
  m.prompts = { ...m.prompts, session_context: value };
  writeFileSync(join(d, 'manifest.json'), JSON.stringify(m));
  return d;
};
beforeAll(async () => {
  dir = withContext('image');
  engine = await createEngine(dir, { calibrate: false, intraOpThreads: 1 });
});
afterAll(async () => {
  await engine?.close();
  rmSync(dir, { recursive: true, force: true });
});

const summary = (evs: UnderstandEvent[]) => evs.at(-1) as UnderstandSummary;
const image = (v: number): RgbImage => ({ width: 64, height: 64, data: new Uint8Array(64 * 64 * 3).map((_, i) => (i * v) % 251) });
const greedy = { maxTokens: 6, speculation: { mode: 'off' as const } };
// the image block: <bos> <vision_start> 16 image rows <vision_end>
const IMAGE_ROWS = 1 + 1 + 16 + 1;

describe('image-only sessions', () => {
  test('every later turn answers as the same question asked first about the image, from its cached context', async () => {
    const a = image(7);
    const s = engine.createSession();
    const first = await collect(engine.understand({ prompt: 'describe the image', image: a, session: s, ...greedy }));
    expect(engine.sessionInfo(s).tokens).toBe(IMAGE_ROWS); // only the image stays
    for (const q of ['what color is the circle', 'where is the square', 'describe the image']) {
      const turn = await collect(engine.understand({ prompt: q, session: s, ...greedy }));
      const alone = await collect(engine.understand({ prompt: q, image: a, ...greedy }));
      expect(answerIds(turn), q).toEqual(answerIds(alone));
      // the image is not fed again: the turn's prompt is its words and <|im_start|>
      expect(summary(turn).usage.promptTokens).toBe(summary(alone).usage.promptTokens - IMAGE_ROWS);
      expect(summary(turn).inputImage).toBeUndefined();
      expect(engine.sessionInfo(s).tokens).toBe(IMAGE_ROWS);
    }
    expect(answerIds(first)).toEqual(answerIds(await collect(engine.understand({ prompt: 'describe the image', image: a, ...greedy }))));
    engine.closeSession(s);
  });

  test('a new image starts the context afresh; so does a generated final becoming the session\'s image', async () => {
    const s = engine.createSession();
    await collect(engine.understand({ prompt: 'describe the image', image: image(7), session: s, ...greedy }));
    const b = image(13);
    const turn = await collect(engine.understand({ prompt: 'what color is the circle', image: b, session: s, ...greedy }));
    expect(answerIds(turn)).toEqual(answerIds(await collect(engine.understand({ prompt: 'what color is the circle', image: b, ...greedy }))));
    expect(summary(turn).inputImage).toMatchObject({ source: 'request' });
    expect(engine.sessionInfo(s).tokens).toBe(IMAGE_ROWS);
    // a text-only session keeps nothing between turns
    const t = engine.createSession();
    const q1 = await collect(engine.understand({ prompt: 'what color is the circle', session: t, ...greedy }));
    expect(engine.sessionInfo(t).tokens).toBe(0);
    const q2 = await collect(engine.understand({ prompt: 'what color is the circle', session: t, ...greedy }));
    expect(answerIds(q2)).toEqual(answerIds(q1));
    // a generated final becomes the session's image: the next question reads it, afresh
    const frames = await collect(engine.generate({ prompt: 'a red circle', mode: 'baseline', steps: 2, seed: 1, session: s }));
    const final = frames.find((f) => f.stage === 'final')!;
    const after = await collect(engine.understand({ prompt: 'what color is the circle', session: s, ...greedy }));
    expect(summary(after).inputImage).toMatchObject({ source: 'session' });
    expect(engine.sessionInfo(s).tokens).toBe(IMAGE_ROWS);
    expect(final.image.width).toBe(64);
    engine.closeSession(s);
    engine.closeSession(t);
  });

  test('the room check agrees with the turn: a new image starts from position 0; a follow-up too long for the model is PROMPT_TOO_LONG', async () => {
    const wide = await createEngine(dir, { calibrate: false, intraOpThreads: 1, maxPromptWords: 400 });
    const words = (n: number) => Array(n).fill('circle').join(' ');
    try {
      const s = wide.createSession();
      await collect(wide.understand({ prompt: 'describe the image', image: image(7), session: s, ...greedy }));
      // <bos> <vision_start> image <vision_end> + 249 words + <|im_start|> = 253 positions: fits afresh, as it runs
      expect(() => wide.checkUnderstand!({ prompt: words(249), image: image(9), session: s })).not.toThrow();
      expect(summary(await collect(wide.understand({ prompt: words(249), image: image(9), session: s, maxTokens: 1, speculation: { mode: 'off' } }))).finishReason).toBe('length');
      // a follow-up that cannot fit after the image: a new session would hold the same image, so not SESSION_FULL
      for (const check of [() => wide.checkUnderstand!({ prompt: words(251), session: s }), () => wide.checkUnderstand!({ prompt: words(251), image: image(9) })])
        expect(check).toThrow(expect.objectContaining({ code: 'PROMPT_TOO_LONG' }));
      wide.closeSession(s);
    } finally {
      await wide.close();
    }
  });

  test('with a draft model, every speculation mode answers a follow-up as the same first question unspeculated', async () => {
    const accelDir = withContext('image', join(FIXTURE, '..', 'tiny-pack-accel'));
    const accel = await createEngine(accelDir, { calibrate: false, intraOpThreads: 1 });
    try {
      const a = image(7);
      for (const mode of ['auto', 'chain', 'tree', 'ngram'] as const) {
        const s = accel.createSession();
        await collect(accel.understand({ prompt: 'describe the image', image: a, session: s, maxTokens: 12, speculation: { mode } }));
        for (const q of ['what color is the circle', 'describe the image']) {
          const turn = await collect(accel.understand({ prompt: q, session: s, maxTokens: 12, speculation: { mode } }));
          const alone = await collect(accel.understand({ prompt: q, image: a, maxTokens: 12, speculation: { mode: 'off' } }));
          expect(answerIds(turn), `${mode}: ${q}`).toEqual(answerIds(alone));
        }
        accel.closeSession(s);
      }
    } finally {
      await accel.close();
      rmSync(accelDir, { recursive: true, force: true });
    }
  });

  test('bench understand\'s follow-up row: the same answers, the image\'s rows fewer prompt tokens', async () => {
    const r = await benchSessionFollowups(engine, [{ image: image(7), opening: 'describe the image', questions: ['what color is the circle', 'where is the square'] }], greedy, 1);
    expect(r).toMatchObject({ session_context: 'image', followups: 2, same_answers: true });
    expect(r.prompt_tokens.with_image - r.prompt_tokens.followup).toBe(IMAGE_ROWS);
    expect(r.ttft_ms.followup).toBeGreaterThan(0);
  });

  test('engine.info says how sessions read; a manifest with another value is refused at load, naming the field', async () => {
    expect(engine.info.sessionContext).toBe('image');
    const bad = withContext('transcript');
    try {
      await expect(createEngine(bad, { calibrate: false, intraOpThreads: 1 })).rejects.toThrow(/prompts\.session_context.*expected "conversation" or "image", got "transcript"/);
    } finally {
      rmSync(bad, { recursive: true, force: true });
    }
  });
});
