// Renderer: determinism (committed hashes), anti-aliasing, and scene → image → detect round trips.
import { createHash } from 'node:crypto';
import { describe, expect, it } from 'vitest';
import { BACKGROUND_COLORS, datasetRecord, OBJECT_COLORS, parseCaption, renderScene, sceneFor, scenesEqual, SPLITS } from '../../src/world/index.ts';
import { detectScene } from '../../src/eval/detector.ts';

describe('determinism across runs and machines', () => {
  // If one of these changes, every committed suite, dataset and score changes meaning: that must be deliberate.
  it('scenes of fixed seeds hash to the committed constant', () => {
    const h = createHash('sha256');
    for (const split of SPLITS) for (let i = 0; i < 50; i++) h.update(JSON.stringify(sceneFor(split, i)));
    expect(h.digest('hex')).toBe('3b2d8770aa047dc8ce5d599289ed27d8951fcd30c363780fe4219beda7b7d346');
  });

  it('renders (64×64 and 32×32) of fixed seeds hash to the committed constant', () => {
    const h = createHash('sha256');
    for (const split of SPLITS) for (let i = 0; i < 50; i++) { const s = sceneFor(split, i); h.update(renderScene(s).data); h.update(renderScene(s, 32).data); }
    expect(h.digest('hex')).toBe('5b7f4344cffb76c5d84f5419e4bcca91ca1c0e85075f0418b92ab6d84ddab578');
  });

  it('dataset records of fixed seeds hash to the committed constant', () => {
    const h = createHash('sha256');
    for (const split of SPLITS) for (let i = 0; i < 50; i++) h.update(JSON.stringify(datasetRecord(split, i)));
    expect(h.digest('hex')).toBe('0aaf5ffb42cbde7a8440a6c6e61db4268b511b6eb20d17e26afeb64e21948701');
  });
});

describe('render', () => {
  const scene = parseCaption('a large red circle at the top left and a small blue square at the center on a white background');
  const img = renderScene(scene);
  const px = (x: number, y: number) => [...img.data.subarray((y * 64 + x) * 3, (y * 64 + x) * 3 + 3)];

  it('is 64×64 RGB with exact palette colours inside objects and background', () => {
    expect(img.width).toBe(64);
    expect(img.data.length).toBe(64 * 64 * 3);
    expect(px(10, 10)).toEqual([...OBJECT_COLORS.red]); // centre of the top-left cell
    expect(px(32, 32)).toEqual([...OBJECT_COLORS.blue]);
    expect(px(63, 0)).toEqual([...BACKGROUND_COLORS.white]);
  });

  it('anti-aliases edges: some pixels are blends strictly between background and object', () => {
    let blends = 0;
    for (let i = 0; i < 64 * 64; i++) {
      const r = img.data[i * 3]!, g = img.data[i * 3 + 1]!;
      if (r > 220 && r < 245 && g > 40 && g < 245) blends++;
    }
    expect(blends).toBeGreaterThan(10);
  });
});

describe('scene → image → detect', () => {
  it('recovers the exact scene of 600 renders across all splits', () => {
    const wrong: string[] = [];
    for (const split of SPLITS) for (let i = 0; i < 150; i++) {
      const s = sceneFor(split, 1000 + i);
      if (!scenesEqual(detectScene(renderScene(s)), s)) wrong.push(`${split}:${i}`);
    }
    expect(wrong).toEqual([]);
  });
});
