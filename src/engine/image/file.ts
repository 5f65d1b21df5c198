// Reading an image file for the command line, never more than the size the gateway accepts in a request:
// a regular file is checked by its size first; a pipe (`--image <(curl …)`) or a device is read up to that
// size and refused beyond it, so /dev/zero or an endless stream cannot hang the command or fill memory.
import fs from 'node:fs';
import { EngineError, MIN_IMAGE_SIDE, type RgbImage } from '../types.ts';
import { checkInputImage, decodeInputImage, sentSizeOf } from './codec.ts';

/** The gateway's default `maxImageBytes` (src/gateway/limits.ts): one limit for every way an image comes in. */
export const MAX_IMAGE_FILE_BYTES = 20 * 1024 * 1024;

export function readImageFileBytes(file: string, maxBytes = MAX_IMAGE_FILE_BYTES): Buffer {
  const fail = (why: string) => new EngineError('BAD_IMAGE', `cannot read image file "${file}": ${why}`);
  const tooLarge = (size: string) => fail(`${size} bytes; the limit is ${maxBytes} bytes (${maxBytes / 1024 / 1024} MiB)`);
  const code = (e: unknown) => (e as NodeJS.ErrnoException).code ?? (e as Error).message;
  let st: fs.Stats;
  try {
    st = fs.statSync(file);
  } catch (e) {
    throw fail(code(e));
  }
  if (st.isDirectory()) throw fail('it is a directory');
  if (st.isFile() && st.size > maxBytes) throw tooLarge(String(st.size));
  let fd: number;
  try {
    fd = fs.openSync(file, 'r');
  } catch (e) {
    throw fail(code(e));
  }
  try {
    // in chunks, stopping one byte past the limit whatever the file says its size is (a pipe or device says 0)
    const chunks: Buffer[] = [];
    let total = 0;
    for (let r: number; total <= maxBytes; total += r) {
      const chunk = Buffer.allocUnsafe(Math.min(1 << 20, maxBytes + 1 - total));
      if ((r = fs.readSync(fd, chunk, 0, chunk.length, null)) === 0) break;
      chunks.push(chunk.subarray(0, r));
    }
    if (total > maxBytes) throw tooLarge('more than ' + maxBytes);
    return Buffer.concat(chunks, total);
  } catch (e) {
    if (e instanceof EngineError) throw e;
    throw fail(code(e));
  } finally {
    fs.closeSync(fd);
  }
}

/**
 * Reads an image file of any reasonable size (the engine centre-crops and resizes it to the model's)
 * with the gateway's decode (decodeInputImage, shared with src/gateway/images.ts): its default pixel
 * limit, upright by the EXIF orientation, alpha flattened on white, and larger than MAX_DECODED_SIDE
 * a side centre-cropped and scaled down first; so the same file gives the same edit or answer here
 * as through the API.
 */
export async function readImageFile(file: string): Promise<RgbImage> {
  const bytes = readImageFileBytes(file);
  let img: RgbImage;
  try {
    img = await decodeInputImage(new Uint8Array(bytes.buffer, bytes.byteOffset, bytes.length));
  } catch (e) {
    if (e instanceof EngineError) throw new EngineError(e.code, `${file}: ${e.message}`, e.details);
    throw e;
  }
  // the smallest side as the file has it (a long thin image is decoded to its short side, squared)
  const sent = sentSizeOf(img) ?? img;
  if (sent.width < MIN_IMAGE_SIDE || sent.height < MIN_IMAGE_SIDE)
    throw new EngineError('BAD_IMAGE', `${file}: ${sent.width}×${sent.height} is too small (at least ${MIN_IMAGE_SIDE} pixels a side)`, {
      got: [sent.width, sent.height],
      minSide: MIN_IMAGE_SIDE,
    });
  // the engine checks this too, but names the request field; here the file is known
  checkInputImage(img, file);
  return img;
}
