// Encoding: JPEG/WebP for previews (sharp), PNG for finals (png.ts, node:zlib); decoding of user uploads with format,
// corruption and pixel-limit checks → EngineError('BAD_IMAGE'). decodeInputImage is the one bounded decode of an
// input image that the gateway (src/gateway/images.ts) and the command line (image/file.ts readImageFile) share.
import { createHash } from 'node:crypto';
import sharp, { type Metadata, type ResizeOptions } from 'sharp';
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

export const DEFAULT_DECODE_LIMITS: DecodeLimits = { maxPixels: MAX_IMAGE_PIXELS, formats: ['png', 'jpeg', 'webp'] };

/** What is wrong with refused image bytes: `details.problem` of decodeImageBytes' and decodeInputImage's BAD_IMAGE. */
export type DecodeProblem = 'empty' | 'unreadable' | 'format' | 'pixels' | 'size' | 'corrupt';

function badImage(problem: DecodeProblem, message: string, details: Record<string, unknown> = {}): EngineError {
  return new EngineError('BAD_IMAGE', message, { ...details, problem });
}

/** The header checks both decodes make before decoding any pixels: not empty, readable, an accepted format, within the pixel limit. */
async function checkedHeader(bytes: Uint8Array, lim: DecodeLimits): Promise<Metadata> {
  if (!(bytes instanceof Uint8Array) || bytes.length === 0) throw badImage('empty', 'image is empty');
  let meta: Metadata;
  try {
    // the header only: the pixel limit is checked below, with a message that states it
    meta = await sharp(bytes, { limitInputPixels: false }).metadata();
  } catch (e) {
    throw badImage('unreadable', `image cannot be read: ${(e as Error).message}`);
  }
  const fmt = meta.format as string | undefined;
  if (!fmt || !lim.formats.includes(fmt as ImageFormat))
    throw badImage('format', `unsupported image format ${fmt ?? 'unknown'} (accepted: ${lim.formats.join(', ')})`, { format: fmt });
  const w = meta.width ?? 0;
  const h = meta.height ?? 0;
  if (!w || !h) throw badImage('unreadable', 'image cannot be read: its header has no size');
  if (w * h > lim.maxPixels)
    throw badImage('pixels', `image is ${w}×${h}, ${w * h} pixels; the limit is ${lim.maxPixels} pixels (${Math.floor(Math.sqrt(lim.maxPixels))}×${Math.floor(Math.sqrt(lim.maxPixels))})`, {
      width: w,
      height: h,
      limit: lim.maxPixels,
    });
  return meta;
}

/** Decode uploaded image bytes to RGB as stored (no EXIF turn, alpha dropped), with typed errors for every way it can be wrong. Input images go through decodeInputImage. */
export async function decodeImageBytes(bytes: Uint8Array, limits: Partial<DecodeLimits> = {}): Promise<RgbImage> {
  const lim = { ...DEFAULT_DECODE_LIMITS, ...limits };
  const meta = await checkedHeader(bytes, lim);
  const w = meta.width!;
  const h = meta.height!;
  if (lim.size !== undefined && (w !== lim.size || h !== lim.size))
    throw badImage('size', `image must be ${lim.size}×${lim.size} pixels, got ${w}×${h}`, { expected: [lim.size, lim.size], got: [w, h] });
  try {
    const { data, info } = await sharp(bytes, { limitInputPixels: lim.maxPixels, failOn: 'error' })
      .removeAlpha()
      .toColourspace('srgb')
      .raw()
      .toBuffer({ resolveWithObject: true });
    if (info.channels !== 3) throw new Error(`decoded ${info.channels} channels`);
    return { width: info.width, height: info.height, data: new Uint8Array(data.buffer, data.byteOffset, data.length) };
  } catch (e) {
    throw badImage('corrupt', `image is corrupt: ${(e as Error).message}`);
  }
}

/** Decoded input images larger than this a side are centre-cropped to a square and scaled down to this side, so a huge-but-allowed image cannot balloon memory. */
export const MAX_DECODED_SIDE = 1024;

/**
 * How decodeInputImage fits an image: unchanged when both sides are within MAX_DECODED_SIDE (fitImage
 * centre-crops and resizes any size itself); a larger one is centre-cropped to a square first, as
 * fitImage would, then scaled to at most MAX_DECODED_SIDE, so memory stays bounded and a long thin
 * image keeps its short side rather than being scaled below the engine's minimum side.
 */
export function decodedFit(width: number, height: number): ResizeOptions | undefined {
  if (width <= MAX_DECODED_SIDE && height <= MAX_DECODED_SIDE) return undefined;
  const side = Math.min(MAX_DECODED_SIDE, width, height);
  return { width: side, height: side, fit: 'cover', position: 'centre' };
}

/** The size of an image decodeInputImage returned, as it was sent (upright), before the decode fit it within MAX_DECODED_SIDE. */
const sentSizes = new WeakMap<RgbImage, { width: number; height: number }>();
export function sentSizeOf(image: RgbImage | undefined): { width: number; height: number } | undefined {
  return image ? sentSizes.get(image) : undefined;
}

/**
 * The decode of an input image, the same for the gateway and the command line: checks the header
 * (format, pixel limit: BAD_IMAGE with `details.problem`) before the full decode; turns it upright
 * by its EXIF orientation, flattens alpha on white, converts to sRGB; and bounds it (decodedFit).
 * The size it was sent at is kept for sentSizeOf (and fitImage's report).
 */
export async function decodeInputImage(bytes: Uint8Array, limits: Partial<Pick<DecodeLimits, 'maxPixels' | 'formats'>> = {}): Promise<RgbImage> {
  const lim: DecodeLimits = { ...DEFAULT_DECODE_LIMITS, ...limits };
  const meta = await checkedHeader(bytes, lim);
  const w = meta.width!;
  const h = meta.height!;
  try {
    // upright as a viewer shows it (EXIF orientation), alpha flattened on white
    let pipeline = sharp(bytes, { limitInputPixels: lim.maxPixels, failOn: 'error' }).rotate().flatten({ background: '#ffffff' }).toColourspace('srgb');
    const fit = decodedFit(w, h);
    if (fit) pipeline = pipeline.resize(fit);
    const { data, info } = await pipeline.removeAlpha().raw().toBuffer({ resolveWithObject: true });
    if (info.channels !== 3) throw new Error(`decoded ${info.channels} channels`);
    // a fresh, exactly-sized buffer (not a view into a pooled one): the engine may transfer it to a worker
    const rgb: RgbImage = { width: info.width, height: info.height, data: new Uint8Array(data) };
    // orientations 5-8 turn the image a quarter: its sent size is the upright one
    const quarterTurn = (meta.orientation ?? 1) >= 5;
    sentSizes.set(rgb, quarterTurn ? { width: h, height: w } : { width: w, height: h });
    return rgb;
  } catch (e) {
    throw badImage('corrupt', `image is corrupt: ${(e as Error).message}`);
  }
}

/**
 * Synchronous checks of an input RgbImage (shape, data length, size limits) → BAD_IMAGE. Any size in
 * [MIN_IMAGE_SIDE, …] a side with at most MAX_IMAGE_PIXELS pixels passes; fitImage() then brings it
 * to the model's size.
 */
/** @param param the request field the image came in (named in the error's details), if it came in one */
export function checkInputImage(img: RgbImage, what = 'image', param?: string): void {
  const { width: w, height: h } = img ?? {};
  const named = param ? { param } : {};
  // the pixel limit first: an oversized image is refused before its data is looked at
  if (Number.isInteger(w) && Number.isInteger(h) && w * h > MAX_IMAGE_PIXELS)
    throw new EngineError('BAD_IMAGE', `${what}: ${w}×${h} is ${w * h} pixels, limit ${MAX_IMAGE_PIXELS}`, { got: [w, h], maxPixels: MAX_IMAGE_PIXELS, ...named });
  validateRgb(img, what);
  if (w < MIN_IMAGE_SIDE || h < MIN_IMAGE_SIDE)
    throw new EngineError('BAD_IMAGE', `${what}: ${w}×${h} is too small (at least ${MIN_IMAGE_SIDE} pixels a side)`, { got: [w, h], minSide: MIN_IMAGE_SIDE, ...named });
}

/**
 * An input image at size×size: returned as is when it already is; otherwise centre-cropped to a
 * square and resized with sharp (lanczos3; `fit: cover`). Call checkInputImage first. The info
 * reports an image from decodeInputImage at the size it was sent (before that decode bounded it).
 */
export async function fitImage(img: RgbImage, size: number, source: InputImageInfo['source'] = 'request'): Promise<{ image: RgbImage; info: InputImageInfo }> {
  const sent = sentSizeOf(img) ?? { width: img.width, height: img.height };
  const info: InputImageInfo = {
    originalWidth: sent.width,
    originalHeight: sent.height,
    width: size,
    height: size,
    resized: sent.width !== size || sent.height !== size,
    cropped: sent.width !== sent.height,
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
