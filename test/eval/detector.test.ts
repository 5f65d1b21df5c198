// The detector: exact on clean renders, robust to noise/blur/resampling, honest on non-scenes.
import { describe, expect, it } from 'vitest';
import { parseCaption, renderScene, scenesEqual } from '../../src/world/index.ts';
import { detectScene, resampleRgb } from '../../src/eval/detector.ts';
import { benchmarkScene, DETECTOR_CONDITIONS, evaluateDetector } from '../../src/eval/detector-eval.ts';
import { addGaussianNoise, gaussianBlur3 } from '../../src/eval/degrade.ts';

describe('detector', () => {
  it('recovers every clean render exactly (400 benchmark scenes, all splits)', async () => {
    const r = await evaluateDetector(400, DETECTOR_CONDITIONS.filter((c) => c.name === 'clean'));
    expect(r.accuracy.clean).toBe(1);
  });

  it('stays ≥ 98% exact under noise σ=20, 3×3 blur and 64→32→64 resampling a 1 px displacement and JPEG q75 (100 scenes each)', async () => {
    const names = ['noise_sigma20', 'gaussian_blur_3x3', 'box_blur_3x3', 'down_up_32', 'render_32_upscaled', 'shift_1px_diagonal', 'jpeg_q75'];
    const r = await evaluateDetector(100, DETECTOR_CONDITIONS.filter((c) => names.includes(c.name)));
    for (const n of names) expect(r.accuracy[n], n).toBeGreaterThanOrEqual(0.98);
  });

  it('finds nothing in a plain background, and in pure noise', () => {
    const bg = renderScene(parseCaption('a small red circle at the center on a beige background'));
    // paint the object over with background
    for (let i = 0; i < 64 * 64; i++) bg.data.set([225, 205, 160], i * 3);
    expect(detectScene(bg)).toEqual({ background: 'beige', objects: [] });
    expect(detectScene(addGaussianNoise(bg, 15, 7)).objects).toEqual([]);
  });

  it('distinguishes small from large and each shape in the same cell', () => {
    for (const shape of ['circle', 'square', 'triangle', 'star']) for (const size of ['small', 'large']) {
      const s = parseCaption(`a ${size} green ${shape} at the bottom left on a black background`);
      expect(scenesEqual(detectScene(gaussianBlur3(renderScene(s))), s), `${size} ${shape}`).toBe(true);
    }
  });

  it('a wrong colour in a render is detected as that colour, not snapped to the truth', () => {
    const s = benchmarkScene(3);
    const recoloured = { ...s, objects: s.objects.map((o, i) => (i === 0 ? { ...o, color: o.color === 'red' ? 'blue' as const : 'red' as const } : o)) };
    expect(scenesEqual(detectScene(renderScene(recoloured)), s)).toBe(false);
  });

  it('resamples: area-average down, bilinear up, identity at 64', () => {
    const img = renderScene(benchmarkScene(1));
    expect(resampleRgb(img)).toBe(img);
    const down = resampleRgb(img, 32);
    expect(down.width).toBe(32);
    // area average of a uniform 2×2 block is that colour
    expect([...down.data.subarray(0, 3)]).toEqual([...img.data.subarray(0, 3)]);
    expect(resampleRgb(down, 64).data.length).toBe(64 * 64 * 3);
  });
});
