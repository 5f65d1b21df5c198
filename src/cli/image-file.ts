// PNG/JPEG files ↔ RgbImage, with errors that name what is wrong with the file.
import { writeFileSync } from 'node:fs';
import sharp, { type OutputInfo } from 'sharp';
import type { RgbImage } from '../engine/types.ts';
import { readImageFileBytes } from '../engine/image/file.ts';
import { WorldError } from '../world/errors.ts';

const MAX_FILE_PIXELS = 4096 * 4096;

/**
 * Reads an image file as RGB; `expectSize` rejects other dimensions. Decoded as the gateway does
 * (src/gateway/images.ts): alpha flattened on white; and turned upright by its EXIF orientation.
 */
export async function readRgbFile(path: string, expectSize?: number): Promise<RgbImage> {
  let bytes: Buffer;
  try {
    bytes = readImageFileBytes(path);
  } catch (err) {
    throw new WorldError('BAD_IMAGE', (err as Error).message);
  }
  // the pixel limit from the header, with a message that states it (sharp's says only "exceeds pixel limit")
  const meta = await sharp(bytes, { limitInputPixels: false })
    .metadata()
    .catch(() => undefined);
  const pixels = (meta?.width ?? 0) * (meta?.height ?? 0);
  if (pixels > MAX_FILE_PIXELS) throw new WorldError('BAD_IMAGE', `"${path}" is ${meta!.width}×${meta!.height}, ${pixels} pixels; the limit is ${MAX_FILE_PIXELS} pixels (4096×4096)`);
  let raw: { data: Buffer; info: OutputInfo };
  try {
    raw = await sharp(bytes, { limitInputPixels: MAX_FILE_PIXELS })
      .rotate()
      .flatten({ background: '#ffffff' })
      .toColourspace('srgb')
      .removeAlpha()
      .raw()
      .toBuffer({ resolveWithObject: true });
  } catch (err) {
    throw new WorldError('BAD_IMAGE', `"${path}" is not a readable image (${(err as Error).message})`);
  }
  const { width, height, channels } = raw.info;
  if (channels !== 3) throw new WorldError('BAD_IMAGE', `"${path}" has ${channels} channels after conversion, expected RGB`);
  if (expectSize !== undefined && (width !== expectSize || height !== expectSize)) {
    throw new WorldError('BAD_IMAGE', `"${path}" is ${width}×${height}, expected ${expectSize}×${expectSize}`);
  }
  return { width, height, data: new Uint8Array(raw.data.buffer, raw.data.byteOffset, raw.data.length) };
}

export async function writePng(path: string, img: RgbImage): Promise<void> {
  const png = await sharp(Buffer.from(img.data.buffer, img.data.byteOffset, img.data.length), { raw: { width: img.width, height: img.height, channels: 3 } }).png().toBuffer();
  writeFileSync(path, png);
}
