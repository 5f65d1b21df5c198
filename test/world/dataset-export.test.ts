// `hyperbagel dataset` replaces an export in its --out directory only when it is the same export
// (deterministic, so nothing is lost) or --force says so: what is there is recognised, or named.
import { mkdtempSync, writeFileSync } from 'node:fs';
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
