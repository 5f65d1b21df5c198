// Measures the detector: exact-scene recovery on random renders, clean and degraded.
import type { RgbImage } from '../engine/types.ts';
import { Rng } from '../world/rng.ts';
import { sampleScene } from '../world/sampler.ts';
import { renderScene } from '../world/render.ts';
import { scenesEqual } from '../world/scene.ts';
import { SPLITS } from '../world/splits.ts';
import { detectScene, resampleRgb } from './detector.ts';
import { addGaussianNoise, boxBlur3, downUp, gaussianBlur3, jpegRoundTrip, mapValues, shiftImage } from './degrade.ts';

export interface DetectorCondition {
  name: string;
  description: string;
  apply(scene: Parameters<typeof renderScene>[0], index: number): RgbImage | Promise<RgbImage>;
}

export const DETECTOR_CONDITIONS: DetectorCondition[] = [
  { name: 'clean', description: 'the 64×64 render itself', apply: (s) => renderScene(s) },
  { name: 'noise_sigma10', description: 'Gaussian noise σ=10 (0–255 scale), clipped', apply: (s, i) => addGaussianNoise(renderScene(s), 10, `noise10:${i}`) },
  { name: 'noise_sigma20', description: 'Gaussian noise σ=20', apply: (s, i) => addGaussianNoise(renderScene(s), 20, `noise20:${i}`) },
  { name: 'noise_sigma40', description: 'Gaussian noise σ=40', apply: (s, i) => addGaussianNoise(renderScene(s), 40, `noise40:${i}`) },
  { name: 'box_blur_3x3', description: '3×3 box blur', apply: (s) => boxBlur3(renderScene(s)) },
  { name: 'gaussian_blur_3x3', description: '3×3 binomial (Gaussian) blur', apply: (s) => gaussianBlur3(renderScene(s)) },
  { name: 'down_up_32', description: '64→32 (area) →64 (bilinear)', apply: (s) => downUp(renderScene(s), 32) },
  { name: 'down_up_16', description: '64→16 (area) →64 (bilinear)', apply: (s) => downUp(renderScene(s), 16) },
  { name: 'render_32_upscaled', description: 'rendered at 32×32, given to the detector at 32×32 (it upscales)', apply: (s) => renderScene(s, 32) },
  { name: 'shift_1px_diagonal', description: 'whole image moved 1 px right and 1 px down (objects off the grid)', apply: (s) => shiftImage(renderScene(s), 1, 1) },
  { name: 'shift_2px_diagonal', description: 'whole image moved 2 px left and 2 px up', apply: (s) => shiftImage(renderScene(s), -2, -2) },
  { name: 'jpeg_q75', description: 'JPEG round trip at quality 75 (sharp/libjpeg, 4:2:0 chroma)', apply: (s) => jpegRoundTrip(renderScene(s), 75) },
  { name: 'jpeg_q50', description: 'JPEG round trip at quality 50', apply: (s) => jpegRoundTrip(renderScene(s), 50) },
  { name: 'contrast_85', description: 'contrast reduced to 85% around mid-gray (washed-out colours)', apply: (s) => mapValues(renderScene(s), (v) => 128 + (v - 128) * 0.85) },
  { name: 'gamma_1.3', description: 'gamma 1.3 (darker mid-tones)', apply: (s) => mapValues(renderScene(s), (v) => 255 * Math.pow(v / 255, 1.3)) },
  { name: 'red_cast_15', description: 'colour cast: +15 on the red channel', apply: (s) => mapValues(renderScene(s), (v, k) => (k === 0 ? v + 15 : v)) },
  { name: 'blur_noise_down_up', description: '3×3 Gaussian blur, then σ=20 noise, then 64→32→64', apply: (s, i) => downUp(addGaussianNoise(gaussianBlur3(renderScene(s)), 20, `bnd:${i}`), 32) },
];

export interface DetectorReport {
  count: number;
  /** per condition: fraction of images whose exact scene (background + every object's shape, colour, size, cell) is recovered */
  accuracy: Record<string, number>;
  /** per condition: fraction of objects recovered exactly (a detected object matching a true one in every attribute) */
  object_recall: Record<string, number>;
  seconds: number;
}

/** Scene `i` of the benchmark: splits in rotation so every split (held-out included) is covered. */
export function benchmarkScene(i: number) {
  return sampleScene(new Rng(`detector-benchmark:${i}`), { split: SPLITS[i % SPLITS.length]! });
}

export async function evaluateDetector(count = 2000, conditions = DETECTOR_CONDITIONS): Promise<DetectorReport> {
  const t0 = Date.now();
  const accuracy: Record<string, number> = {};
  const recall: Record<string, number> = {};
  for (const cond of conditions) {
    let exact = 0, found = 0, total = 0;
    for (let i = 0; i < count; i++) {
      const scene = benchmarkScene(i);
      const detected = detectScene(resampleRgb(await cond.apply(scene, i)));
      if (scenesEqual(detected, scene)) exact++;
      for (const o of scene.objects) {
        total++;
        if (detected.objects.some((d) => d.shape === o.shape && d.color === o.color && d.size === o.size && d.cell === o.cell)) found++;
      }
    }
    accuracy[cond.name] = exact / count;
    recall[cond.name] = found / total;
  }
  return { count, accuracy, object_recall: recall, seconds: (Date.now() - t0) / 1000 };
}
