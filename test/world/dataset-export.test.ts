// `hyperbagel dataset` replaces an export in its --out directory only when it is the same export
// (deterministic, so nothing is lost) or --force says so: what is there is recognised, or named.
import { existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { expect, it } from 'vitest';
import { differentExportIn, writeDataset } from '../../src/world/dataset.ts';

const opts = { split: 'train' as const, count: 2, offset: 0, minObjects: 1, maxObjects: 4 };
const fresh = () => mkdtempSync(join(tmpdir(), 'hb-ds-'));

it('an empty directory, or the same export: nothing to lose', () => {
  const dir = fresh();
  expect(differentExportIn(dir, opts)).toBeUndefined();
  writeDataset(dir, opts);
  expect(differentExportIn(dir, opts)).toBeUndefined();
});

it('another range, split or object count is named, object counts included', () => {
  const dir = fresh();
  writeDataset(dir, opts);
  expect(differentExportIn(dir, { ...opts, offset: 2 })).toBe('train samples 0–1, 1–4 objects per scene');
  expect(differentExportIn(dir, { ...opts, split: 'val' })).toBe('train samples 0–1, 1–4 objects per scene');
  expect(differentExportIn(dir, { ...opts, maxObjects: 1 })).toBe('train samples 0–1, 1–4 objects per scene');
});

it('what it cannot read counts as something to lose, never as empty', () => {
  const cases: Array<[string | null, RegExp]> = [
    ['null', /not an export's/],
    ['{}', /not an export's/],
    ['[]', /not an export's/],
    ['{"split":"train"', /not valid JSON/],
    [JSON.stringify({ split: 'train', count: 2, offset: 0 }), /train samples 0–1, object counts not recorded/],
    [null, /images\.npy without a meta\.json/],
  ];
  for (const [meta, message] of cases) {
    const dir = fresh();
    if (meta === null) writeFileSync(join(dir, 'images.npy'), 'x');
    else writeFileSync(join(dir, 'meta.json'), meta);
    expect(differentExportIn(dir, opts), String(meta)).toMatch(message);
  }
});

it('a run stopped part way leaves the previous export whole, and its meta.json describing it', () => {
  const dir = fresh();
  writeDataset(dir, opts);
  const before = ['images.npy', 'edited.npy', 'records.jsonl', 'meta.json'].map((f) => readFileSync(join(dir, f)));
  // stopped after 1,000 of 1,001 samples (Ctrl-C, a full disk): it used to truncate the old files in place
  expect(() => writeDataset(dir, { ...opts, count: 1001 }, () => { throw new Error('stopped'); })).toThrow('stopped');
  ['images.npy', 'edited.npy', 'records.jsonl', 'meta.json'].forEach((f, i) => expect(readFileSync(join(dir, f)).equals(before[i]!), f).toBe(true));
  expect(differentExportIn(dir, opts)).toBeUndefined();
  for (const f of ['images.npy', 'edited.npy', 'records.jsonl']) expect(existsSync(join(dir, `${f}.partial`)), f).toBe(false);
  // the next run finishes and replaces it, leaving no partial files
  writeDataset(dir, { ...opts, count: 3 });
  expect(JSON.parse(readFileSync(join(dir, 'meta.json'), 'utf8')).count).toBe(3);
  for (const f of ['images.npy', 'edited.npy', 'records.jsonl', 'meta.json']) expect(existsSync(join(dir, `${f}.partial`))).toBe(false);
});

it('a run that fails while renaming leaves no partial files, and a plain file system error (EISDIR, not ERR_FS_EISDIR)', () => {
  const partials = (dir: string) => readdirSync(dir).filter((f) => f.endsWith('.partial'));
  // meta.json is a folder: removing it before the renames fails
  const dir = fresh();
  mkdirSync(join(dir, 'meta.json'));
  const err = (() => { try { writeDataset(dir, opts); } catch (e) { return e as NodeJS.ErrnoException; } })();
  expect(err?.code).toBe('EISDIR');
  expect(err?.syscall).toBe('rm');
  expect(err?.path).toBe(join(dir, 'meta.json'));
  expect(partials(dir)).toEqual([]);
  expect(statSync(join(dir, 'meta.json')).isDirectory()).toBe(true);
  // records.jsonl is a folder: the third rename fails, after the first two
  const dir2 = fresh();
  mkdirSync(join(dir2, 'records.jsonl'));
  writeFileSync(join(dir2, 'records.jsonl', 'x'), 'x');
  expect(() => writeDataset(dir2, opts)).toThrow(/records\.jsonl/);
  expect(partials(dir2)).toEqual([]);
  expect(existsSync(join(dir2, 'meta.json'))).toBe(false);
  expect(differentExportIn(dir2, opts)).toMatch(/without a meta\.json/);
});
