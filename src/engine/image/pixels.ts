// Pixel conversions between RGB images (HWC uint8) and model tensors (CHW float in [-1, 1]),
// integer-factor box down-sampling / nearest up-sampling, and input validation.
import { EngineError, type RgbImage } from '../types.ts';

export function validateRgb(img: RgbImage, what = 'image'): void {
  if (!img || typeof img !== 'object') throw new EngineError('BAD_IMAGE', `${what}: not an image`);
  const { width, height, data } = img;
  if (!Number.isInteger(width) || !Number.isInteger(height) || width <= 0 || height <= 0)
    throw new EngineError('BAD_IMAGE', `${what}: invalid dimensions ${width}×${height}`);
  if (!(data instanceof Uint8Array) || data.length !== width * height * 3)
    throw new EngineError('BAD_IMAGE', `${what}: expected ${width * height * 3} bytes of RGB data, got ${data?.length ?? 'none'}`);
}

/** Require the world's image size exactly (the pack's vision.image_size); inputs go through fitImage instead. */
export function requireSize(img: RgbImage, size: number, what = 'image'): void {
  validateRgb(img, what);
  if (img.width !== size || img.height !== size)
    throw new EngineError('BAD_IMAGE', `${what}: must be ${size}×${size} pixels, got ${img.width}×${img.height}`, {
      expected: [size, size],
      got: [img.width, img.height],
    });
}

/** Moves the whole image by (dx, dy) pixels (right and down when positive), replicating edge pixels. */
export function shiftImage(img: RgbImage, dx: number, dy: number): RgbImage {
  const { width: w, height: h, data } = img;
  const out = new Uint8Array(data.length);
  const m = Math.min(Math.abs(dx), w); // columns taken from the edge pixel
  for (let y = 0; y < h; y++) {
    const src = Math.min(h - 1, Math.max(0, y - dy)) * w * 3, dst = y * w * 3;
    // the row's kept pixels in one copy, then its uncovered end filled with the edge pixel beside it
    if (dx >= 0) out.set(data.subarray(src, src + (w - m) * 3), dst + m * 3);
    else out.set(data.subarray(src + m * 3, src + w * 3), dst);
    const edge = dx >= 0 ? src : src + (w - 1) * 3, from = dx >= 0 ? dst : dst + (w - m) * 3;
    for (let x = 0; x < m; x++) out.set(data.subarray(edge, edge + 3), from + x * 3);
  }
  return { width: w, height: h, data: out };
}

/** RGB (HWC uint8) → CHW float in [-1, 1] at `size`, box-averaging by an integer factor if smaller. */
export function rgbToChw(img: RgbImage, size: number): Float32Array {
  if (img.width % size !== 0 || img.height !== img.width)
    throw new EngineError('BAD_IMAGE', `cannot resample ${img.width}×${img.height} to ${size}×${size}`);
  const f = img.width / size;
  const out = new Float32Array(3 * size * size);
  const inv = 1 / (f * f * 127.5);
  for (let y = 0; y < size; y++)
    for (let x = 0; x < size; x++)
      for (let c = 0; c < 3; c++) {
        let s = 0;
        for (let dy = 0; dy < f; dy++) for (let dx = 0; dx < f; dx++) s += img.data[((y * f + dy) * img.width + x * f + dx) * 3 + c]!;
        out[c * size * size + y * size + x] = s * inv - 1;
      }
  return out;
}

/** CHW float in [-1, 1] (size G) → RGB uint8, nearest-upsampled by an integer factor to `display`. */
export function chwToRgb(chw: Float32Array, G: number, display = G): RgbImage {
  const f = Math.max(1, Math.round(display / G));
  const W = G * f;
  const data = new Uint8Array(W * W * 3);
  for (let y = 0; y < W; y++) {
    const sy = Math.floor(y / f);
    for (let x = 0; x < W; x++) {
      const sx = Math.floor(x / f);
      for (let c = 0; c < 3; c++) {
        const v = (chw[c * G * G + sy * G + sx]! + 1) * 127.5;
        data[(y * W + x) * 3 + c] = v <= 0 ? 0 : v >= 255 ? 255 : Math.round(v);
      }
    }
  }
  return { width: W, height: W, data };
}
