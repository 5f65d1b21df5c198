// A pack whose manifest declares vision.understand_offset [dx, dy]: understanding reads each image moved by
// that many pixels before the vision encoder (edge pixels replicated), on every decoding path; the session
// keeps the image as given, so edits and later turns see the user's pixels. Fixture packs, real worker.
import { cpSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { afterAll, beforeAll, describe, expect, test } from 'vitest';
import { createEngine, type LocalEngine } from '../../src/engine/index.ts';
import { rgbToChw, shiftImage } from '../../src/engine/image/pixels.ts';
import type { RgbImage } from '../../src/engine/types.ts';
import { renderScene } from '../../src/world/render.ts';
import { sampleScene } from '../../src/world/sampler.ts';
import { Rng } from '../../src/world/rng.ts';
import { answerIds, collect, FIXTURE } from './fixture-helpers.ts';

const ACCEL = join(dirname(FIXTURE), 'tiny-pack-accel');
const dirs: string[] = [];
const withOffset = (offset: unknown, pack = FIXTURE, context?: string) => {
  const d = mkdtempSync(join(tmpdir(), 'hb-offset-'));
  dirs.push(d);
  cpSync(pack, d, { recursive: true });
  const m = JSON.parse(readFileSync(join(d, 'manifest.json'), 'utf8'));
  m.vision = { ...m.vision, understand_offset: offset };
  if (context) m.prompts = { ...m.prompts, session_context: context };
  writeFileSync(join(d, 'manifest.json'), JSON.stringify(m));
  return d;
};

let plain: LocalEngine, moved: LocalEngine, plainAccel: LocalEngine, movedAccel: LocalEngine;
beforeAll(async () => {
  const opts = { calibrate: false, intraOpThreads: 1 };
  [plain, moved, plainAccel, movedAccel] = await Promise.all([
    createEngine(FIXTURE, opts),
    createEngine(withOffset([2, -3]), opts),
    createEngine(ACCEL, opts),
    createEngine(withOffset([2, -3], ACCEL), opts),
  ]);
});
afterAll(async () => {
  await Promise.all([plain, moved, plainAccel, movedAccel].map((e) => e?.close()));
  for (const d of dirs) rmSync(d, { recursive: true, force: true });
});

const scenes = (n: number, seed: number): RgbImage[] => {
  const rng = new Rng(seed);
  return Array.from({ length: n }, () => renderScene(sampleScene(rng)));
};
const greedy = (mode: 'off' | 'chain' | 'tree') => ({ maxTokens: 8, speculation: { mode } });
/** Every image the engine hands its vision encoder, as sent (the worker's 'vision' call or a 'pixels' segment). */
function readPixels(e: LocalEngine): Float32Array[] {
  const seen: Float32Array[] = [];
  const client = e.workerClient;
  const call = client.call.bind(client);
  client.call = ((msg: { op: string; pixels?: Float32Array; segments?: Array<{ kind: string; pixels?: Float32Array }> }, ...rest: unknown[]) => {
    if (msg.op === 'vision' && msg.pixels) seen.push(msg.pixels.slice());
    for (const s of msg.segments ?? []) if (s.kind === 'pixels' && s.pixels) seen.push(s.pixels.slice());
    return (call as (...a: unknown[]) => unknown)(msg, ...rest);
  }) as typeof client.call;
  return seen;
}

describe('vision.understand_offset', () => {
  test('answers are those of the image moved by the offset, read by a pack without one, on every decoding path', async () => {
    let differs = 0;
    for (const [i, img] of scenes(6, 24).entries()) {
      const prompt = i % 2 ? 'what color is the circle' : 'describe the image';
      for (const [a, b] of [[moved, plain], [movedAccel, plainAccel]] as const) {
        for (const mode of ['off', 'chain', 'tree'] as const) {
          const got = answerIds(await collect(a.understand({ prompt, image: img, ...greedy(mode) })));
          const want = answerIds(await collect(b.understand({ prompt, image: shiftImage(img, 2, -3), ...greedy(mode) })));
          expect(got, `${prompt} (${mode})`).toEqual(want);
        }
      }
      const unmoved = answerIds(await collect(plain.understand({ prompt, image: img, ...greedy('off') })));
      if (unmoved.join() !== answerIds(await collect(moved.understand({ prompt, image: img, ...greedy('off') }))).join()) differs++;
    }
    // the offset is applied at all: some answers of these random-weight packs change with it
    expect(differs).toBeGreaterThan(0);
  });

  test('the session keeps the image as given: a later turn reads it at the offset again, an edit reads it unmoved', async () => {
    const [img] = scenes(1, 7);
    const s = moved.createSession();
    await collect(moved.understand({ prompt: 'describe the image', image: img!, session: s, maxTokens: 4 }));
    // the session's image feeds the edit exactly as the same image sent with the edit (no offset there)
    const viaSession = await collect(moved.generate({ prompt: 'make the circle red', edit: true, session: s, mode: 'baseline', steps: 2, seed: 3 }));
    const given = await collect(plain.generate({ prompt: 'make the circle red', sourceImage: img!, mode: 'baseline', steps: 2, seed: 3 }));
    expect(viaSession.at(-1)!.image.sha256).toBe(given.at(-1)!.image.sha256);
    moved.closeSession(s);
    // image-only sessions: a follow-up is the same question asked first, offset included; and what the
    // encoder reads is checked directly (this tiny pack's answers barely depend on the image)
    const io = await createEngine(withOffset([2, -3], FIXTURE, 'image'), { calibrate: false, intraOpThreads: 1 });
    const seen = readPixels(io);
    try {
      const t = io.createSession();
      await collect(io.understand({ prompt: 'describe the image', image: img!, session: t, ...greedy('off') }));
      // a new image-only turn re-reads the session's image (after a generated final, say): at the offset
      const frames = await collect(io.generate({ prompt: 'a red circle', mode: 'baseline', steps: 2, seed: 1, session: t }));
      const final = frames.find((f) => f.stage === 'final')!;
      const turn = answerIds(await collect(io.understand({ prompt: 'where is the circle', session: t, ...greedy('off') })));
      const alone = answerIds(await collect(plain.understand({ prompt: 'where is the circle', image: shiftImage(final.rgb, 2, -3), ...greedy('off') })));
      expect(turn).toEqual(alone);
      const moved = (x: RgbImage) => [...rgbToChw(shiftImage(x, 2, -3), 64)];
      expect(seen.map((p) => [...p])).toEqual([moved(img!), moved(final.rgb)]);
    } finally {
      await io.close();
    }
  });

  test.each([
    [[9, 0], 'two integers in \\[-8, 8\\]'],
    [[1.5, 0], 'two integers'],
    [[2], 'two integers'],
    ['2,2', 'two integers'],
    [null, 'two integers'],
  ])('a malformed offset %j fails at load, naming the field', async (offset, msg) => {
    await expect(createEngine(withOffset(offset), { calibrate: false, intraOpThreads: 1 })).rejects.toThrow(
      new RegExp(`vision\\.understand_offset.*${msg}`),
    );
  });
});
