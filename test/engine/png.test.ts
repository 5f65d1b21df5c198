import { inflateSync } from 'node:zlib';
import sharp from 'sharp';
import { describe, expect, test } from 'vitest';
import { decodeImageBytes, encodeImage } from '../../src/engine/image/codec.ts';
import { crc32, encodePng } from '../../src/engine/image/png.ts';
import { Rng } from '../../src/engine/rng.ts';
import type { RgbImage } from '../../src/engine/types.ts';
import { renderScene } from '../../src/world/render.ts';

function image(width: number, height: number, px: (x: number, y: number, c: number) => number): RgbImage {
  const data = new Uint8Array(width * height * 3);
  for (let y = 0; y < height; y++) for (let x = 0; x < width; x++) for (let c = 0; c < 3; c++) data[(y * width + x) * 3 + c] = px(x, y, c) & 0xff;
  return { width, height, data };
}

/** the chunks of a PNG file: type, body, and whether the stored CRC matches */
function chunks(png: Uint8Array): Array<{ type: string; body: Uint8Array; crcOk: boolean }> {
  const v = new DataView(png.buffer, png.byteOffset, png.length);
  const out = [];
  for (let o = 8; o < png.length; ) {
    const n = v.getUint32(o);
    const type = String.fromCharCode(...png.subarray(o + 4, o + 8));
    out.push({ type, body: png.subarray(o + 8, o + 8 + n), crcOk: v.getUint32(o + 8 + n) === crc32(png, o + 4, o + 8 + n) });
    o += 12 + n;
  }
  return out;
}

const rng = new Rng(5);
const CASES: Record<string, RgbImage> = {
  'a Shapes scene': renderScene({ background: 'white', objects: [{ shape: 'star', color: 'red', size: 'large', cell: 'center' }, { shape: 'circle', color: 'blue', size: 'small', cell: 'top left' }] }),
  noise: image(64, 64, () => Math.floor(rng.uniform() * 256)),
  gradients: image(64, 64, (x, y, c) => (c === 0 ? x * 4 : c === 1 ? y * 4 : (x * y) >> 4)),
  'one pixel': image(1, 1, (_x, _y, c) => [12, 200, 255][c]!),
  'odd sizes (5×3)': image(5, 3, (x, y, c) => x * 50 + y * 20 + c),
  'wider than tall (200×2)': image(200, 2, (x, y, c) => (x + y * 3 + c * 7) * 13),
};

describe('PNG encoder', () => {
  test('CRC-32 check value', () => {
    expect(crc32(new TextEncoder().encode('123456789'))).toBe(0xcbf43926);
    expect(crc32(new Uint8Array(0))).toBe(0);
  });

  test.each(Object.entries(CASES))('%s decodes (sharp / libpng) to the same pixels', async (_name, img) => {
    const png = encodePng(img);
    expect([...png.subarray(0, 8)]).toEqual([137, 80, 78, 71, 13, 10, 26, 10]);
    const cs = chunks(png);
    expect(cs.map((c) => c.type)).toEqual(['IHDR', 'IDAT', 'IEND']);
    expect(cs.every((c) => c.crcOk)).toBe(true);
    const { data, info } = await sharp(png, { failOn: 'error' }).raw().toBuffer({ resolveWithObject: true });
    expect([info.width, info.height, info.channels]).toEqual([img.width, img.height, 3]);
    expect(Buffer.compare(data, Buffer.from(img.data))).toBe(0);
  });

  test('rows choose their filter: flat scenes and gradients use more than one type, all five are decodable', () => {
    const used = new Set<number>();
    for (const img of Object.values(CASES)) {
      const raw = inflateSync(chunks(encodePng(img))[1]!.body);
      const stride = img.width * 3 + 1;
      expect(raw.length).toBe(stride * img.height);
      for (let y = 0; y < img.height; y++) used.add(raw[y * stride]!);
    }
    expect([...used].every((f) => f >= 0 && f <= 4)).toBe(true);
    expect(used.size).toBeGreaterThanOrEqual(3);
  });

  test('a flat-colour scene compresses far below its raw size, and no larger than sharp at the setting it replaced', async () => {
    const img = CASES['a Shapes scene']!;
    const ours = encodePng(img).length;
    const theirs = (await sharp(Buffer.from(img.data), { raw: { width: 64, height: 64, channels: 3 } }).png({ compressionLevel: 1 }).toBuffer()).length;
    expect(ours).toBeLessThan(img.data.length / 5);
    expect(ours).toBeLessThanOrEqual(theirs);
  });

  test('encodeImage(png) goes through it and round-trips through the upload decoder', async () => {
    const img = CASES.gradients!;
    const enc = await encodeImage(img, 'png');
    expect(enc.mimeType).toBe('image/png');
    expect(Buffer.compare(Buffer.from(enc.bytes), Buffer.from(encodePng(img)))).toBe(0);
    const back = await decodeImageBytes(enc.bytes);
    expect(Buffer.compare(Buffer.from(back.data), Buffer.from(img.data))).toBe(0);
  });

  test('malformed images are refused with a RangeError that names the sizes', () => {
    expect(() => encodePng({ width: 4, height: 4, data: new Uint8Array(47) })).toThrow(/4×4 RGB needs 48 bytes, got 47/);
    expect(() => encodePng({ width: 0, height: 4, data: new Uint8Array(0) })).toThrow(RangeError);
    expect(() => encodePng({ width: 2.5, height: 2, data: new Uint8Array(15) })).toThrow(RangeError);
  });
});
