// The image-path ceilings (`eval --model lowres-oracle|vae-oracle`): resolution alone must keep every
// scene readable, the shipped VAE must keep most of them, and a random VAE must keep none.
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { ceilingModel, openImagePath, throughPath } from '../../src/eval/ceiling.ts';
import { evaluateGEdit, evaluateGenEval } from '../../src/eval/run.ts';
import { loadT2iSuite } from '../../src/eval/suites.ts';
import { renderScene } from '../../src/world/render.ts';

const ROOT = join(import.meta.dirname, '../..');
const SHIPPED = join(ROOT, 'models/shapes-mot');
const TINY = join(ROOT, 'test/fixtures/tiny-pack');

describe('image-path ceilings', () => {
  it('lowres-oracle: the latent grid resolution alone loses nothing the evaluator reads', async () => {
    const path = await openImagePath(SHIPPED, false);
    expect(path).toMatchObject({ size: 32, display: 64 });
    expect(path.roundTrip).toBeUndefined();
    const r = await evaluateGenEval(ceilingModel(path), { limit: 12 });
    expect(r.overall).toBe(1);
    expect((await evaluateGEdit(ceilingModel(path), { limit: 6 })).overall).toBe(1);
  });

  it('vae-oracle: the shipped VAE changes the pixels but keeps most scenes; a random VAE keeps none', async () => {
    const scene = loadT2iSuite('test').items[0]!.reference;
    const img = renderScene(scene);
    const low = await throughPath(img, await openImagePath(SHIPPED, false));
    const shipped = await openImagePath(SHIPPED, true);
    const viaVae = await throughPath(img, shipped);
    expect([viaVae.width, viaVae.height]).toEqual([64, 64]);
    expect(Buffer.from(viaVae.data).equals(Buffer.from(low.data))).toBe(false);
    let diff = 0;
    for (let i = 0; i < low.data.length; i++) diff += Math.abs(viaVae.data[i]! - low.data[i]!);
    expect(diff / low.data.length).toBeLessThan(20); // a reconstruction, not noise
    try {
      const good = await evaluateGenEval(ceilingModel(shipped), { limit: 12 });
      expect(good.overall).toBeGreaterThanOrEqual(0.8);
    } finally {
      await shipped.close();
    }
    const tiny = await openImagePath(TINY, true);
    try {
      const random = await evaluateGenEval(ceilingModel(tiny), { limit: 4 });
      expect(random.overall).toBe(0);
    } finally {
      await tiny.close();
    }
  });

  it('a missing pack is a clear MODEL_LOAD_FAILED error', async () => {
    await expect(openImagePath(join(ROOT, 'test/fixtures/no-such-pack'), true)).rejects.toMatchObject({
      code: 'MODEL_LOAD_FAILED',
      message: expect.stringMatching(/no model pack at/),
    });
  });
});
