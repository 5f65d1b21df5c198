// .npy: what the dataset export writes reads back, and anything else is refused with BAD_NPY (never a
// TypeError, a RangeError, or data whose length does not match its shape).
import { mkdtempSync, readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { expect, it } from 'vitest';
import { encodeNpyHeader, readNpyUint8, writeDataset, WorldError } from '../../src/world/index.ts';

const npy = (header: string, data: Uint8Array | number[] = [], version: 1 | 2 = 1): Buffer => {
  const pre = version === 1 ? 10 : 12;
  const text = header + ' '.repeat((64 - ((pre + header.length + 1) % 64)) % 64) + '\n';
  const head = Buffer.alloc(pre);
  head.write('\x93NUMPY', 0, 'latin1');
  head[6] = version;
  if (version === 1) head.writeUInt16LE(text.length, 8);
  else head.writeUInt32LE(text.length, 8);
  return Buffer.concat([head, Buffer.from(text, 'latin1'), Buffer.from(data)]);
};
const dict = (descr: string, fortran: string, shape: string) => `{'descr': ${descr}, 'fortran_order': ${fortran}, 'shape': ${shape}, }`;

const failure = (buf: Buffer): { code: string; message: string } => {
  try {
    readNpyUint8(buf);
  } catch (e) {
    return { code: e instanceof WorldError ? e.code : `not a WorldError: ${(e as Error).name}`, message: (e as Error).message };
  }
  return { code: 'accepted', message: '' };
};

it('round-trips the header it writes, any rank, and reads the exported images', () => {
  for (const shape of [[0], [3], [2, 2], [1, 2, 2, 3], []]) {
    const n = shape.reduce((a, b) => a * b, 1);
    const data = Uint8Array.from({ length: n }, (_, i) => i % 251);
    const { shape: s, data: d } = readNpyUint8(Buffer.concat([encodeNpyHeader(shape), data]));
    expect(s).toEqual(shape);
    expect([...d]).toEqual([...data]);
  }
  const dir = mkdtempSync(join(tmpdir(), 'hb-npy-'));
  writeDataset(dir, { split: 'train', count: 2 });
  const img = readNpyUint8(readFileSync(join(dir, 'images.npy')));
  expect(img.shape).toEqual([2, 64, 64, 3]);
  expect(img.data.length).toBe(2 * 64 * 64 * 3);
});

it("reads numpy's version 2.0 header (4-byte length) and '<u1'", () => {
  const r = readNpyUint8(npy(dict("'|u1'", 'False', '(2, 3)'), [1, 2, 3, 4, 5, 6], 2));
  expect(r.shape).toEqual([2, 3]);
  expect([...r.data]).toEqual([1, 2, 3, 4, 5, 6]);
  expect(readNpyUint8(npy(dict("'<u1'", 'False', '(2,)'), [7, 8])).shape).toEqual([2]);
  // another writer's dict may leave out the last comma
  expect(readNpyUint8(npy("{'shape': (1,), 'fortran_order': False, 'descr': '|u1'}", [7])).shape).toEqual([1]);
});

it('refuses malformed files with BAD_NPY naming the problem', () => {
  const good = npy(dict("'|u1'", 'False', '(2, 3)'), [1, 2, 3, 4, 5, 6]);
  const v1 = Buffer.from(good);
  v1[6] = 3;
  v1[7] = 1;
  const cases: Array<[string, Buffer, RegExp]> = [
    ['empty', Buffer.alloc(0), /too short/],
    ['magic only', Buffer.from('\x93NUMPY\x01\x00', 'latin1'), /too short/],
    ['bad magic', Buffer.concat([Buffer.from('PK\x03\x04'), good.subarray(4)]), /not a \.npy file/],
    ['unknown version', v1, /version 3\.1/],
    ['header cut off', good.subarray(0, 40), /header.*cut off/],
    ['truncated data', good.subarray(0, good.length - 1), /5 bytes of data.*shape \(2, 3\).*6/],
    ['trailing bytes', Buffer.concat([good, Buffer.from([9])]), /7 bytes of data.*6/],
    ['fortran order', npy(dict("'|u1'", 'True', '(2, 3)'), [1, 2, 3, 4, 5, 6]), /fortran_order/],
    ['float data', npy(dict("'<f4'", 'False', '(1,)'), [0, 0, 0, 0]), /'<f4'.*uint8/],
    ['structured dtype', npy(dict("[('a', '|u1')]", 'False', '(1,)'), [0]), /descr/],
    ['no shape', npy("{'descr': '|u1', 'fortran_order': False, }", [0]), /shape/],
    ['negative dimension', npy(dict("'|u1'", 'False', '(-1,)')), /shape/],
    ['int, not a tuple', npy(dict("'|u1'", 'False', '(1)'), [0]), /shape/],
    ['fractional dimension', npy(dict("'|u1'", 'False', '(1.5,)'), [0]), /shape/],
    ['unknown key', npy("{'descr': '|u1', 'fortran_order': False, 'shape': (1,), 'extra': 1, }", [0]), /header/],
    ['repeated key', npy("{'descr': '|u1', 'descr': '|u1', 'fortran_order': False, 'shape': (1,), }", [0]), /header/],
  ];
  for (const [name, buf, message] of cases) {
    const f = failure(buf);
    expect(f.code, name).toBe('BAD_NPY');
    expect(f.message, name).toMatch(message);
  }
});
