// The page's plain ES modules: type-checked against the DOM, and the incremental-delivery merger
// (both @stream/@defer wire formats) exercised directly.
import { execFileSync } from 'node:child_process';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { describe, expect, it } from 'vitest';

const root = fileURLToPath(new URL('../../', import.meta.url));

interface IncrementalResultLike {
  data: any;
  errors: { message: string }[];
  hasNext: boolean;
  apply(payload: unknown): string[];
}
const { IncrementalResult } = (await import(pathToFileURL(`${root}web/incremental.js`).href)) as {
  IncrementalResult: new () => IncrementalResultLike;
};

describe('web/*.js', () => {
  it('type-checks with tsc (checkJs, strict, DOM)', () => {
    // Throws (and prints the diagnostics) on any type error.
    execFileSync(process.execPath, [`${root}node_modules/typescript/bin/tsc`, '-p', `${root}web/tsconfig.json`], { stdio: 'pipe' });
  });
});

const frame = (stage: string, nfe: number) => ({ stage, nfe, image: { base64: `${stage}${nfe}` } });

describe('IncrementalResult', () => {
  it('assembles the graphql-tools / Yoga 5 format', () => {
    const r = new IncrementalResult();
    expect(r.apply({ data: { generateImage: { id: 'j1', previews: [] } }, hasNext: true })).toEqual(['']);
    expect(r.apply({ incremental: [{ items: [frame('PREVIEW', 1)], path: ['generateImage', 'previews', 0] }], hasNext: true })).toEqual(['generateImage.previews']);
    expect(r.apply({ incremental: [{ items: [frame('PREVIEW', 3)], path: ['generateImage', 'previews', 1] }], hasNext: true })).toEqual(['generateImage.previews']);
    expect(r.apply({ incremental: [{ data: { result: frame('FINAL', 6) }, path: ['generateImage'], label: 'final' }], hasNext: true })).toEqual(['generateImage.result']);
    r.apply({ hasNext: false });
    expect(r.hasNext).toBe(false);
    expect(r.data.generateImage.previews.map((f: { nfe: number }) => f.nfe)).toEqual([1, 3]);
    expect(r.data.generateImage.result.nfe).toBe(6);
    expect(r.data.generateImage.id).toBe('j1');
  });

  it('assembles the graphql-js 17 format (pending ids, subPath, completed)', () => {
    const r = new IncrementalResult();
    r.apply({ data: { editImage: { id: 'j2', previews: [] } }, pending: [{ id: '0', path: ['editImage', 'previews'] }, { id: '1', path: [], label: 'final' }], hasNext: true });
    r.apply({ incremental: [{ id: '0', items: [frame('PREVIEW', 1)] }], hasNext: true });
    r.apply({ incremental: [{ id: '1', data: { result: frame('FINAL', 6) }, subPath: ['editImage'] }], completed: [{ id: '1' }, { id: '0' }], hasNext: false });
    expect(r.data.editImage.previews).toEqual([frame('PREVIEW', 1)]);
    expect(r.data.editImage.result).toEqual(frame('FINAL', 6));
    expect(r.hasNext).toBe(false);
  });

  it('keeps errors from every level', () => {
    const r = new IncrementalResult();
    r.apply({ data: null, errors: [{ message: 'busy', extensions: { code: 'BUSY' } }] });
    expect(r.errors.map((e) => e.message)).toEqual(['busy']);
    expect(r.hasNext).toBe(false);
    const s = new IncrementalResult();
    s.apply({ data: { generateImage: { id: 'j', previews: [] } }, hasNext: true });
    s.apply({ incremental: [{ items: [null], path: ['generateImage', 'previews', 0], errors: [{ message: 'cancelled' }] }], hasNext: false });
    expect(s.errors.map((e) => e.message)).toEqual(['cancelled']);
  });
});
