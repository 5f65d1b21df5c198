// Reading an image file for the command line: only a regular file, and only up to the size the gateway
// accepts in a request, so a device (/dev/zero) or a multi-gigabyte file is refused before it is read.
import fs from 'node:fs';
import { EngineError } from '../types.ts';

/** The gateway's default `maxImageBytes` (src/gateway/limits.ts): one limit for every way an image comes in. */
export const MAX_IMAGE_FILE_BYTES = 20 * 1024 * 1024;

export function readImageFileBytes(file: string, maxBytes = MAX_IMAGE_FILE_BYTES): Buffer {
  const fail = (why: string) => new EngineError('BAD_IMAGE', `cannot read image file "${file}": ${why}`);
  let st: fs.Stats;
  try {
    // stat, not open: opening a FIFO would wait for a writer
    st = fs.statSync(file);
  } catch (e) {
    throw fail((e as NodeJS.ErrnoException).code ?? (e as Error).message);
  }
  if (st.isDirectory()) throw fail('it is a directory');
  if (!st.isFile()) throw fail('not a regular file (a device, pipe or socket)');
  if (st.size > maxBytes) throw fail(`${st.size} bytes; the limit is ${maxBytes} bytes (${maxBytes / 1024 / 1024} MiB)`);
  try {
    return fs.readFileSync(file);
  } catch (e) {
    throw fail((e as NodeJS.ErrnoException).code ?? (e as Error).message);
  }
}
