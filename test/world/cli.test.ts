// CLI: render → detect round trip, and bad input → clear error, non-zero exit, nothing written.
import { execFile } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import sharp from 'sharp';
import { renderScene, parseCaption } from '../../src/world/index.ts';

const BIN = join(import.meta.dirname, '../../bin/hyperbagel.js');
const dir = mkdtempSync(join(tmpdir(), 'hb-cli-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

function cli(...args: string[]): Promise<{ code: number; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    execFile(process.execPath, [BIN, ...args], { cwd: join(import.meta.dirname, '../..'), timeout: 60_000 }, (err, stdout, stderr) => {
      resolve({ code: err ? (typeof err.code === 'number' ? err.code : -1) : 0, stdout, stderr });
    });
  });
}

const CAPTION = 'a large red circle at the top left and a small blue star at the center on a gray background';

describe('render → detect', () => {
  it('round-trips through PNG files', async () => {
    const out = join(dir, 'x.png');
    const r = await cli('render', '--caption', CAPTION, '--out', out);
    expect(r.code).toBe(0);
    expect(r.stdout.trim()).toBe(CAPTION);
    const d = await cli('detect', out);
    expect(d.code, d.stderr).toBe(0);
    const lines = d.stdout.trim().split('\n');
    expect(lines).toHaveLength(1);
    const obj = JSON.parse(lines[0]!);
    expect(obj.caption).toBe(CAPTION);
    expect(obj.scene).toEqual(parseCaption(CAPTION));
  });

  it('detect accepts a 32×32 image (a generator\'s native size)', async () => {
    const img = renderScene(parseCaption(CAPTION), 32);
    const p = join(dir, 'small.png');
    await sharp(Buffer.from(img.data), { raw: { width: 32, height: 32, channels: 3 } }).png().toFile(p);
    const d = await cli('detect', p);
    expect(d.code, d.stderr).toBe(0);
    expect(JSON.parse(d.stdout).caption).toBe(CAPTION);
  });
});

describe('bad input: clear error, non-zero exit, nothing written', () => {
  it('render with an unparseable caption', async () => {
    const out = join(dir, 'bad1.png');
    const r = await cli('render', '--caption', 'a large red circle at the on a white background', '--out', out);
    expect(r.code).not.toBe(0);
    expect(r.stderr).toMatch(/PARSE_ERROR.*expected a position/);
    expect(existsSync(out)).toBe(false);
  });

  it('render with unknown words lists them', async () => {
    const out = join(dir, 'bad2.png');
    const r = await cli('render', '--caption', 'a large crimson hexagon at the top on a white background', '--out', out);
    expect(r.code).not.toBe(0);
    expect(r.stderr).toMatch(/UNKNOWN_WORDS.*"crimson".*"hexagon"/);
    expect(existsSync(out)).toBe(false);
  });

  it('render with missing arguments', async () => {
    const r1 = await cli('render', '--caption', CAPTION);
    expect(r1.code).not.toBe(0);
    expect(r1.stderr).toMatch(/--out FILE is required/);
    const out = join(dir, 'bad3.png');
    const r2 = await cli('render', '--out', out);
    expect(r2.code).not.toBe(0);
    expect(r2.stderr).toMatch(/--caption/);
    expect(existsSync(out)).toBe(false);
  });

  it('detect with a missing, corrupt or wrong-size file, or no file', async () => {
    const missing = await cli('detect', join(dir, 'nope.png'));
    expect(missing.code).not.toBe(0);
    expect(missing.stderr).toMatch(/BAD_IMAGE.*cannot read image file/);

    const corrupt = join(dir, 'corrupt.png');
    writeFileSync(corrupt, Buffer.concat([Buffer.from([0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a]), Buffer.from('not really a png')]));
    const c = await cli('detect', corrupt);
    expect(c.code).not.toBe(0);
    expect(c.stderr).toMatch(/BAD_IMAGE.*not a readable image/);
    expect(c.stdout).toBe('');

    const wrong = join(dir, 'wrong.png');
    await sharp({ create: { width: 50, height: 40, channels: 3, background: '#808080' } }).png().toFile(wrong);
    const w = await cli('detect', wrong);
    expect(w.code).not.toBe(0);
    expect(w.stderr).toMatch(/BAD_IMAGE.*50×40, expected 64×64/);
    expect(w.stdout).toBe('');

    const none = await cli('detect');
    expect(none.code).not.toBe(0);
    expect(none.stderr).toMatch(/image file is required/);
  });

  it('unknown subcommand and unknown options', async () => {
    expect((await cli('frobnicate')).code).not.toBe(0);
    const r = await cli('detect', '--frob', 'x.png');
    expect(r.code).not.toBe(0);
    expect(r.stderr).toMatch(/unknown option --frob/);
  });
});

describe('repeated flags and file system errors', () => {
  it('a value flag given twice is refused, naming it (it used to take the last)', async () => {
    const out = join(dir, 'twice');
    const cases: Array<[string, string[]]> = [
      ['split', ['dataset', '--split', 'train', '--split', 'val', '--count', '1', '--out', out]],
      ['count', ['dataset', '--split', 'train', '--count', '1', '--count=2', '--out', out]],
      ['caption', ['render', '--caption', CAPTION, '--caption', CAPTION, '--out', join(dir, 'twice.png')]],
    ];
    for (const [name, args] of cases) {
      const r = await cli(...args);
      expect(r.code, args.join(' ')).toBe(2);
      expect(r.stderr).toMatch(`option --${name} is given more than once`);
    }
    expect(existsSync(out)).toBe(false);
    expect(existsSync(join(dir, 'twice.png'))).toBe(false);
  });

  it('flags documented as repeatable still are', async () => {
    const { parseServeArgs } = await import('../../src/cli/commands/serve.ts');
    const a = parseServeArgs(['--api-key', 'k1', '--api-key', 'k2', '--allow-origin', 'https://a.example', '--allow-origin', 'https://b.example',
      '--allow-host', 'a.example', '--allow-host', 'b.example', '--trust-proxy', '10.0.0.1', '--trust-proxy', '10.0.0.2', '--peer', 'b=http://b/graphql', '--peer', 'c=http://c/graphql']);
    for (const f of ['api-key', 'allow-origin', 'allow-host', 'trust-proxy', 'peer']) expect(a.flags.get(f), f).toHaveLength(2);
    expect(() => parseServeArgs(['--port', '1', '--port', '2'])).toThrow(/--port is given more than once/);
    // understand --stop and eval --variant: past argument parsing (the pack or variant is what fails)
    const u = await cli('understand', '--stop', 'x', '--stop', 'y', '--pack', join(dir, 'no-pack'), 'describe the image');
    expect(u.stderr).not.toMatch(/more than once/);
    const e = await cli('eval', 'draft', '--variant', 'a=x', '--variant', 'b=y', '--pack', join(dir, 'no-pack'));
    expect(e.stderr).not.toMatch(/more than once/);
  });

  it('dataset --force over a meta.json that is a folder: one FILESYSTEM line, no stack trace, no partial files', async () => {
    const out = join(dir, 'meta-dir');
    mkdirSync(join(out, 'meta.json'), { recursive: true });
    const r = await cli('dataset', '--split', 'train', '--count', '2', '--out', out, '--force');
    expect(r.code).toBe(1);
    expect(r.stderr.trim()).toMatch(/^hyperbagel dataset: error FILESYSTEM: cannot rm ".*meta\.json": is a directory \(EISDIR\)$/);
    expect(readdirSync(out)).toEqual(['meta.json']);
  });
});
