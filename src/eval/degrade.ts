// Image degradations the detector is measured under: what generated images typically look like.
import sharp from 'sharp';
import type { RgbImage } from '../engine/types.ts';
import { Rng } from '../world/rng.ts';
import { resampleRgb } from './detector.ts';

// moving an image is also what the engine does to read it at a pack's vision.understand_offset
export { shiftImage } from '../engine/image/pixels.ts';

const clamp = (v: number) => Math.min(255, Math.max(0, Math.round(v)));

/** Adds i.i.d. Gaussian noise of standard deviation `sigma` (0–255 scale), seeded. */
export function addGaussianNoise(img: RgbImage, sigma: number, seed: number | string): RgbImage {
  const rng = new Rng(seed);
  const out = new Uint8Array(img.data.length);
  for (let i = 0; i < out.length; i += 2) {
    // Box–Muller: two normals per draw pair
    const u1 = Math.max(rng.next(), 1e-12), u2 = rng.next();
    const r = Math.sqrt(-2 * Math.log(u1));
    out[i] = clamp(img.data[i]! + sigma * r * Math.cos(2 * Math.PI * u2));
    if (i + 1 < out.length) out[i + 1] = clamp(img.data[i + 1]! + sigma * r * Math.sin(2 * Math.PI * u2));
  }
  return { width: img.width, height: img.height, data: out };
}

/** 3×3 convolution with a separable kernel [a, b, a] (edge pixels replicated). */
function blur3(img: RgbImage, kernel: readonly [number, number, number]): RgbImage {
  const { width: w, height: h, data } = img;
  const tmp = new Float32Array(data.length);
  const out = new Uint8Array(data.length);
  const at = (x: number, lim: number) => Math.min(lim - 1, Math.max(0, x));
  for (let y = 0; y < h; y++) for (let x = 0; x < w; x++) for (let k = 0; k < 3; k++) {
    let s = 0;
    for (let d = -1; d <= 1; d++) s += kernel[d + 1]! * data[(y * w + at(x + d, w)) * 3 + k]!;
    tmp[(y * w + x) * 3 + k] = s;
  }
  for (let y = 0; y < h; y++) for (let x = 0; x < w; x++) for (let k = 0; k < 3; k++) {
    let s = 0;
    for (let d = -1; d <= 1; d++) s += kernel[d + 1]! * tmp[(at(y + d, h) * w + x) * 3 + k]!;
    out[(y * w + x) * 3 + k] = clamp(s);
  }
  return { width: w, height: h, data: out };
}

export const boxBlur3 = (img: RgbImage) => blur3(img, [1 / 3, 1 / 3, 1 / 3]);
/** 3×3 binomial kernel [1 2 1]/4 per axis, the usual 3×3 Gaussian. */
export const gaussianBlur3 = (img: RgbImage) => blur3(img, [0.25, 0.5, 0.25]);

/** 64 → 32 (area average) → 64 (bilinear): what a generator working at 32×32 and upscaled produces. */
export function downUp(img: RgbImage, low = 32): RgbImage {
  return resampleRgb(resampleRgb(img, low), img.width);
}

/** Encodes as JPEG at `quality` and decodes again: the artefacts of a lossy image transport. */
export async function jpegRoundTrip(img: RgbImage, quality: number): Promise<RgbImage> {
  const jpg = await sharp(Buffer.from(img.data.buffer, img.data.byteOffset, img.data.length), { raw: { width: img.width, height: img.height, channels: 3 } }).jpeg({ quality }).toBuffer();
  const { data, info } = await sharp(jpg).removeAlpha().raw().toBuffer({ resolveWithObject: true });
  return { width: info.width, height: info.height, data: new Uint8Array(data.buffer, data.byteOffset, data.length) };
}

/** Applies `f(value, channel)` to every byte, rounding and clipping: colour casts, contrast, gamma. */
export function mapValues(img: RgbImage, f: (v: number, channel: number) => number): RgbImage {
  const out = new Uint8Array(img.data.length);
  for (let i = 0; i < out.length; i++) out[i] = clamp(f(img.data[i]!, i % 3));
  return { width: img.width, height: img.height, data: out };
}
