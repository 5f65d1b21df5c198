// Minimal .npy writer (format 1.0) and strict reader (1.0 and 2.0) for uint8 arrays, so Python reads shards with numpy alone.
import { WorldError } from './errors.ts';

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

const MAGIC = '\x93NUMPY';
/** One `'key': value,` of the header dict: a quoted string, a bool, or a tuple (of ints, checked below). */
const ENTRY = /\s*'([^']*)'\s*:\s*('[^']*'|True|False|\([^()]*\))\s*(?:,|$)/y;
const KEYS = ['descr', 'fortran_order', 'shape'];

function bad(message: string): never {
  throw new WorldError('BAD_NPY', `not a readable uint8 .npy file: ${message}`);
}

/**
 * Reads a C-order uint8 array (format 1.0, or 2.0 whose header length has 4 bytes). Everything else is
 * refused with BAD_NPY: a float or structured dtype, Fortran order, or data shorter or longer than the
 * shape would otherwise come back as pixels of the wrong size or order.
 */
export function readNpyUint8(buf: Buffer): { shape: number[]; data: Uint8Array } {
  if (buf.length < 10) bad(`${buf.length} bytes is too short for a .npy header`);
  if (buf.toString('latin1', 0, 6) !== MAGIC) bad('not a .npy file (no \\x93NUMPY magic)');
  const [major, minor] = [buf[6]!, buf[7]!];
  if (minor !== 0 || (major !== 1 && major !== 2)) bad(`format version ${major}.${minor} is not supported (only 1.0 and 2.0)`);
  const start = major === 1 ? 10 : 12;
  if (buf.length < start) bad(`${buf.length} bytes is too short for a version ${major}.0 header`);
  const len = major === 1 ? buf.readUInt16LE(8) : buf.readUInt32LE(8);
  if (start + len > buf.length) bad(`the header (${len} bytes) is cut off: the file has ${buf.length} bytes`);
  const header = buf.toString('latin1', start, start + len).trim();
  if (!header.startsWith('{') || !header.endsWith('}')) bad(`the header is not a dict: ${JSON.stringify(header.slice(0, 80))}`);
  const fields = new Map<string, string>();
  const body = header.slice(1, -1).trimEnd();
  ENTRY.lastIndex = 0;
  while (ENTRY.lastIndex < body.length) {
    const at = ENTRY.lastIndex;
    const m = ENTRY.exec(body);
    if (!m) bad(`cannot read the header dict at ${JSON.stringify(body.slice(at, at + 40))}`);
    const [, key = '', value = ''] = m;
    if (!KEYS.includes(key) || fields.has(key)) bad(`the header has ${fields.has(key) ? 'a repeated' : 'an unknown'} key '${key}'`);
    fields.set(key, value);
  }
  if (fields.size !== KEYS.length) bad(`the header lacks ${KEYS.filter((k) => !fields.has(k)).join(', ')}`);
  const descr = fields.get('descr')!;
  if (descr !== "'|u1'" && descr !== "'<u1'") bad(`descr ${descr} is not uint8 ('|u1')`);
  if (fields.get('fortran_order') !== 'False') bad(`fortran_order is ${fields.get('fortran_order')}; only C order (False) is read`);
  const tuple = fields.get('shape')!.slice(1, -1).trim();
  const parts = tuple === '' ? [] : tuple.split(',').map((s) => s.trim());
  // "(5,)" is a 1-tuple, "(5)" the int 5
  if (parts.length && parts.at(-1) === '') parts.pop();
  else if (parts.length === 1) bad(`shape ${fields.get('shape')} is not a tuple`);
  if (!parts.every((p) => /^\d+$/.test(p) && Number.isSafeInteger(Number(p)))) bad(`shape ${fields.get('shape')} is not a tuple of non-negative integers`);
  const shape = parts.map(Number);
  const size = shape.reduce((a, b) => a * b, 1);
  const dataLength = buf.length - start - len;
  if (dataLength !== size) bad(`${dataLength} bytes of data, but shape (${shape.join(', ')}${shape.length === 1 ? ',' : ''}) needs ${size}${dataLength < size ? ' (cut off?)' : ''}`);
  return { shape, data: new Uint8Array(buf.buffer, buf.byteOffset + start + len, dataLength) };
}
