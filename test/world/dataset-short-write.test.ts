// writeSync may write fewer bytes than it was given (it returns how many): the export writes the rest, so a
// short write never leaves an images.npy shorter than its header says.
import { mkdtempSync, readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { expect, it, vi } from 'vitest';

const short = vi.hoisted(() => ({ on: false }));
vi.mock('node:fs', async (importOriginal) => {
  const fs = await importOriginal<typeof import('node:fs')>();
  // at most 1000 bytes of a buffer per call, as a write(2) interrupted by a signal or on a full pipe may
  const writeSync = ((fd: number, data: NodeJS.ArrayBufferView, offset?: number, length?: number) => {
    if (!short.on || !ArrayBuffer.isView(data)) return (fs.writeSync as (...a: unknown[]) => number)(fd, data, offset, length);
    const off = offset ?? 0;
    return fs.writeSync(fd, data, off, Math.min(length ?? data.byteLength - off, 1000));
  }) as typeof fs.writeSync;
  return { ...fs, default: { ...fs, writeSync }, writeSync };
});

const { writeDataset } = await import('../../src/world/dataset.ts');
const { readNpyUint8 } = await import('../../src/world/npy.ts');

it('short writes are completed: the export is byte for byte the one written without them', () => {
  const opts = { split: 'train' as const, count: 3 };
  const whole = mkdtempSync(join(tmpdir(), 'hb-ds-whole-'));
  writeDataset(whole, opts);
  short.on = true;
  const dir = mkdtempSync(join(tmpdir(), 'hb-ds-short-'));
  try {
    writeDataset(dir, opts);
  } finally {
    short.on = false;
  }
  for (const f of ['images.npy', 'edited.npy', 'records.jsonl', 'meta.json']) expect(readFileSync(join(dir, f)).equals(readFileSync(join(whole, f))), f).toBe(true);
  expect(readNpyUint8(readFileSync(join(dir, 'images.npy'))).shape).toEqual([3, 64, 64, 3]);
});
