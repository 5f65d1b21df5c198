// readImageInput's base64 paths: the byte limit applies to the decoded size exactly (padding encodes no
// bytes), and line-wrapped base64 (the `base64` tool wraps at 76 columns) is base64.
import { describe, expect, it } from 'vitest';
import { readImageInput } from '../../src/gateway/images.ts';
import { GatewayError } from '../../src/gateway/errors.ts';

const bytes = (n: number) => Buffer.from(Array.from({ length: n }, (_, i) => (i * 37) % 256));
const refused = async (p: Promise<unknown>): Promise<GatewayError> => {
  try {
    await p;
  } catch (e) {
    if (e instanceof GatewayError) return e;
    throw e;
  }
  throw new Error('expected a GatewayError');
};

describe('image.base64 and image.dataUrl', () => {
  it('an image of exactly the byte limit is accepted however its length pads; one byte more is refused with its size', async () => {
    for (const n of [558, 559, 560]) {
      const limits = { maxImageBytes: n, maxImagePixels: 1e6 };
      const b64 = bytes(n).toString('base64');
      expect(await readImageInput({ base64: b64 }, limits)).toEqual(bytes(n));
      expect(await readImageInput({ dataUrl: `data:image/png;base64,${b64}` }, limits)).toEqual(bytes(n));
      const e = await refused(readImageInput({ base64: bytes(n + 1).toString('base64') }, limits));
      expect(e.extensions).toMatchObject({ code: 'IMAGE_TOO_LARGE', bytes: n + 1, limit: n });
      expect(e.message).toBe(`The image is ${n + 1} bytes; the limit is ${n}`);
    }
  });

  it('line breaks and spaces inside base64 are ignored; other characters are still refused', async () => {
    const limits = { maxImageBytes: 4096, maxImagePixels: 1e6 };
    const raw = bytes(1000);
    const wrapped = raw.toString('base64').replace(/.{76}/g, '$&\n');
    expect(wrapped).toContain('\n');
    expect(await readImageInput({ base64: wrapped }, limits)).toEqual(raw);
    expect(await readImageInput({ base64: wrapped.replace(/\n/g, '\r\n') }, limits)).toEqual(raw);
    expect(await readImageInput({ dataUrl: `data:image/png;base64,${wrapped}` }, limits)).toEqual(raw);
    expect((await refused(readImageInput({ base64: `${wrapped}*` }, limits))).extensions).toMatchObject({ code: 'BAD_IMAGE', argument: 'image.base64' });
    expect((await refused(readImageInput({ base64: ' \n ' }, limits))).extensions).toMatchObject({ code: 'BAD_IMAGE' });
  });
});
