// Minimal .npy (format 1.0) writer/reader for uint8 arrays, so Python reads shards with numpy alone.

export function encodeNpyHeader(shape: number[], dtype = '|u1'): Buffer {
  const dict = `{'descr': '${dtype}', 'fortran_order': False, 'shape': (${shape.join(', ')}${shape.length === 1 ? ',' : ''}), }`;
  // magic(6) + version(2) + header_len(2) + dict + padding + '\n' must be a multiple of 64.
  const unpadded = 10 + dict.length + 1;
  const pad = (64 - (unpadded % 64)) % 64;
  const header = dict + ' '.repeat(pad) + '\n';
  const buf = Buffer.alloc(10 + header.length);
  buf.write('\x93NUMPY', 0, 'latin1');
  buf[6] = 1;
  buf[7] = 0;
  buf.writeUInt16LE(header.length, 8);
  buf.write(header, 10, 'latin1');
  return buf;
}

export function readNpyUint8(buf: Buffer): { shape: number[]; data: Uint8Array } {
  if (buf.toString('latin1', 0, 6) !== '\x93NUMPY') throw new Error('not a .npy file');
  const len = buf.readUInt16LE(8);
  const header = buf.toString('latin1', 10, 10 + len);
  if (!header.includes("'|u1'")) throw new Error('only uint8 .npy files are supported');
  const m = /'shape': \(([^)]*)\)/.exec(header);
  const shape = m![1]!.split(',').map((s) => s.trim()).filter(Boolean).map(Number);
  return { shape, data: new Uint8Array(buf.buffer, buf.byteOffset + 10 + len, buf.length - 10 - len) };
}
