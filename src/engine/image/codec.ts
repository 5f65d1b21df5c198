// Encoding: JPEG/WebP for previews (sharp), PNG for finals (png.ts, node:zlib); decoding of user uploads with format,
// corruption and pixel-limit checks → EngineError('BAD_IMAGE').
import { createHash } from 'node:crypto';
import sharp, { type Metadata } from 'sharp';
import { EngineError, MAX_IMAGE_PIXELS, MIN_IMAGE_SIDE, type EncodedImage, type InputImageInfo, type RgbImage } from '../types.ts';
import { validateRgb } from './pixels.ts';
import { encodePng } from './png.ts';

export type ImageFormat = 'png' | 'jpeg' | 'webp';

/** `quality`: JPEG / WebP quality (80: the previews'). */
export async function encodeImage(img: RgbImage, format: ImageFormat, quality = 80): Promise<EncodedImage> {
  let bytes: Uint8Array;
  if (format === 'png') bytes = encodePng(img);
  else {
    const s = sharp(Buffer.from(img.data.buffer, img.data.byteOffset, img.data.length), {
      raw: { width: img.width, height: img.height, channels: 3 },
    });
    const buf = format === 'jpeg' ? await s.jpeg({ quality }).toBuffer() : await s.webp({ quality, effort: 0 }).toBuffer();
    bytes = new Uint8Array(buf.buffer, buf.byteOffset, buf.length);
  }
  return {
    mimeType: format === 'png' ? 'image/png' : format === 'jpeg' ? 'image/jpeg' : 'image/webp',
    width: img.width,
    height: img.height,
    bytes,
    sha256: createHash('sha256').update(bytes).digest('hex'),
  };
}

export interface DecodeLimits {
  /** exact width = height required (the world's image size); omit to accept any size */
  size?: number;
  /** refuse inputs with more pixels than this before decoding them fully */
  maxPixels: number;
  formats: ImageFormat[];
}

export const DEFAULT_DECODE_LIMITS: DecodeLimits = { maxPixels: 4096 * 4096, formats: ['png', 'jpeg', 'webp'] };

/** Decode uploaded image bytes to RGB, with typed errors for every way it can be wrong. */
export async function decodeImageBytes(bytes: Uint8Array, limits: Partial<DecodeLimits> = {}): Promise<RgbImage> {
  const lim = { ...DEFAULT_DECODE_LIMITS, ...limits };
  if (!(bytes instanceof Uint8Array) || bytes.length === 0) throw new EngineError('BAD_IMAGE', 'image is empty');
  let meta: Metadata;
  try {
    // the header only: the pixel limit is checked below, with a message that states it
    meta = await sharp(bytes, { limitInputPixels: false }).metadata();
  } catch (e) {
    throw new EngineError('BAD_IMAGE', `image cannot be read: ${(e as Error).message}`);
  }
  const fmt = meta.format as string | undefined;
  if (!fmt || !lim.formats.includes(fmt as ImageFormat))
    throw new EngineError('BAD_IMAGE', `unsupported image format ${fmt ?? 'unknown'} (accepted: ${lim.formats.join(', ')})`, { format: fmt });
  const w = meta.width ?? 0;
  const h = meta.height ?? 0;
  if (w * h > lim.maxPixels) throw new EngineError('BAD_IMAGE', `image is ${w}×${h}, ${w * h} pixels; the limit is ${lim.maxPixels} pixels (${Math.floor(Math.sqrt(lim.maxPixels))}×${Math.floor(Math.sqrt(lim.maxPixels))})`, { width: w, height: h, limit: lim.maxPixels });
  if (lim.size !== undefined && (w !== lim.size || h !== lim.size))
    throw new EngineError('BAD_IMAGE', `image must be ${lim.size}×${lim.size} pixels, got ${w}×${h}`, { expected: [lim.size, lim.size], got: [w, h] });
  try {
    const { data, info } = await sharp(bytes, { limitInputPixels: lim.maxPixels, failOn: 'error' })
      .removeAlpha()
      .toColourspace('srgb')
      .raw()
      .toBuffer({ resolveWithObject: true });
    if (info.channels !== 3) throw new Error(`decoded ${info.channels} channels`);
    return { width: info.width, height: info.height, data: new Uint8Array(data.buffer, data.byteOffset, data.length) };
  } catch (e) {
    throw new EngineError('BAD_IMAGE', `image is corrupt: ${(e as Error).message}`);
  }
}

/**
 * Synchronous checks of an input RgbImage (shape, data length, size limits) → BAD_IMAGE. Any size in
 * [MIN_IMAGE_SIDE, …] a side with at most MAX_IMAGE_PIXELS pixels passes; fitImage() then brings it
 * to the model's size.
 */
export function checkInputImage(img: RgbImage, what = 'image'): void {
  const { width: w, height: h } = img ?? {};
  // the pixel limit first: an oversized image is refused before its data is looked at
  if (Number.isInteger(w) && Number.isInteger(h) && w * h > MAX_IMAGE_PIXELS)
    throw new EngineError('BAD_IMAGE', `${what}: ${w}×${h} is ${w * h} pixels, limit ${MAX_IMAGE_PIXELS}`, { got: [w, h], maxPixels: MAX_IMAGE_PIXELS });
  validateRgb(img, what);
  if (w < MIN_IMAGE_SIDE || h < MIN_IMAGE_SIDE)
    throw new EngineError('BAD_IMAGE', `${what}: ${w}×${h} is too small (at least ${MIN_IMAGE_SIDE} pixels a side)`, { got: [w, h], minSide: MIN_IMAGE_SIDE });
}

/**
 * An input image at size×size: returned as is when it already is; otherwise centre-cropped to a
 * square and resized with sharp (lanczos3; `fit: cover`). Call checkInputImage first.
 */
export async function fitImage(img: RgbImage, size: number, source: InputImageInfo['source'] = 'request'): Promise<{ image: RgbImage; info: InputImageInfo }> {
  const info: InputImageInfo = {
    originalWidth: img.width,
    originalHeight: img.height,
    width: size,
    height: size,
    resized: false,
    cropped: img.width !== img.height,
    source,
  };
  if (img.width === size && img.height === size) return { image: img, info };
  try {
    const { data, info: out } = await sharp(Buffer.from(img.data.buffer, img.data.byteOffset, img.data.length), {
      raw: { width: img.width, height: img.height, channels: 3 },
      limitInputPixels: MAX_IMAGE_PIXELS,
    })
      .resize(size, size, { fit: 'cover', position: 'centre', kernel: 'lanczos3' })
      .removeAlpha()
      .raw()
      .toBuffer({ resolveWithObject: true });
    if (out.channels !== 3 || out.width !== size || out.height !== size) throw new Error(`resized to ${out.width}×${out.height}×${out.channels}`);
    return { image: { width: size, height: size, data: new Uint8Array(data) }, info: { ...info, resized: true } };
  } catch (e) {
    throw new EngineError('BAD_IMAGE', `image cannot be resized to ${size}×${size}: ${(e as Error).message}`);
  }
}
