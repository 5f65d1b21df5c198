// `hyperbagel understand` and `hyperbagel generate` as a user runs them (node bin/hyperbagel.js), on
// the tiny fixture pack: stdout carries only the result, stderr the stats, and bad input fails with
// a non-zero exit and one clear line on stderr (no stack trace).
import { existsSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import sharp from 'sharp';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { readImageFile } from '../../src/engine/image/file.ts';
import { createEngine, type LocalEngine } from '../../src/engine/index.ts';
import type { UnderstandSummary } from '../../src/engine/types.ts';
import { cli, oneLineError, ROOT, TINY } from './helpers.ts';

const dir = mkdtempSync(join(tmpdir(), 'hb-cli-engine-'));
const photo = join(dir, 'photo.png');
let engine: LocalEngine;

beforeAll(async () => {
  const data = Buffer.alloc(80 * 80 * 3).map((_, i) => (i * 7) % 256);
  await sharp(data, { raw: { width: 80, height: 80, channels: 3 } }).png().toFile(photo);
  engine = await createEngine(join(ROOT, TINY), { calibrate: false, intraOpThreads: 1 });
});
afterAll(async () => {
  await engine?.close();
  rmSync(dir, { recursive: true, force: true });
});

async function answer(prompt: string, image?: string): Promise<string> {
  let summary: UnderstandSummary | undefined;
  const req = { prompt, maxTokens: 12, temperature: 0, speculation: { mode: 'off' as const }, ...(image ? { image: await readImageFile(image) } : {}) };
  for await (const ev of engine.understand(req)) if (ev.kind === 'done') summary = ev;
  return summary!.text;
}

describe('understand', () => {
  it('prints only the answer on stdout and its stats as one JSON line on stderr', async () => {
    for (const image of [undefined, photo]) {
      const r = await cli(['understand', '--pack', TINY, '--speculation', 'off', '--max-tokens', '12', ...(image ? ['--image', image] : []), 'what color is the circle']);
      expect(r.code, r.stderr).toBe(0);
      // the answer the engine gives for the same greedy request, then one newline: nothing else
      expect(r.stdout).toBe((await answer('what color is the circle', image)) + '\n');
      const lines = r.stderr.trim().split('\n');
      expect(lines, r.stderr).toHaveLength(1);
      const stats = JSON.parse(lines[0]!) as Record<string, any>;
      expect(stats.finishReason).toBeTypeOf('string');
      expect(stats.usage.completionTokens).toBeGreaterThan(0);
      expect(stats.timings.totalMs).toBeGreaterThanOrEqual(0);
      expect(stats.speculation.mode).toBe('off');
      expect(stats.seed).toBeTypeOf('number');
      if (image) expect(stats.inputImage).toMatchObject({ originalWidth: 80, originalHeight: 80, width: 64, resized: true });
      else expect(stats.inputImage).toBeUndefined();
    }
  }, 60_000);

  it('--quiet leaves stderr empty', async () => {
    const r = await cli(['understand', '--pack', TINY, '--quiet', '--max-tokens', '4', 'describe the image']);
    expect(r.code, r.stderr).toBe(0);
    expect(r.stderr).toBe('');
    expect(r.stdout.endsWith('\n')).toBe(true);
  }, 60_000);

  it('an empty prompt is refused', async () => {
    for (const prompt of ['', '   ']) {
      const r = await cli(['understand', '--pack', TINY, prompt]);
      expect(oneLineError(r)).toMatch(/prompt is required/);
      expect(r.code).toBe(2);
    }
  }, 60_000);

  it('a missing --image file is refused, naming the file', async () => {
    const missing = join(dir, 'no-such.png');
    const r = await cli(['understand', '--pack', TINY, '--image', missing, 'what is this']);
    const line = oneLineError(r);
    expect(line).toContain(missing);
    expect(line).toMatch(/BAD_IMAGE.*cannot read image file.*ENOENT/);
  }, 60_000);

  it('corrupt image bytes are refused, naming the file', async () => {
    const bad = join(dir, 'corrupt.png');
    // a PNG signature followed by garbage
    writeFileSync(bad, Buffer.concat([Buffer.from([0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a]), Buffer.alloc(200, 0x5a)]));
    const r = await cli(['understand', '--pack', TINY, '--image', bad, 'what is this']);
    const line = oneLineError(r);
    expect(line).toContain(bad);
    expect(line).toMatch(/BAD_IMAGE/);
    const text = join(dir, 'notes.png');
    writeFileSync(text, 'not an image at all\n');
    expect(oneLineError(await cli(['understand', '--pack', TINY, '--image', text, 'what is this']))).toMatch(/BAD_IMAGE.*notes\.png/);
  }, 60_000);

  it('an out-of-range or non-numeric --temperature is refused, naming it', async () => {
    for (const t of ['99', '-1']) {
      const line = oneLineError(await cli(['understand', '--pack', TINY, '--temperature', t, 'describe the image']));
      expect(line).toMatch(/OUT_OF_RANGE/);
      expect(line).toContain('temperature');
      expect(line).toContain(t);
    }
    expect(oneLineError(await cli(['understand', '--pack', TINY, '--temperature', 'warm', 'describe the image']))).toMatch(/--temperature must be a number, got "warm"/);
  }, 60_000);

  it("the engine's range errors name the flag that was given, not the request field", async () => {
    const cases: Array<[string[], string]> = [
      [['understand', '--temperature', '1', '--top-p', '2', 'describe the image'], 'understand: error OUT_OF_RANGE: --top-p must be in (0, 1], got 2'],
      [['understand', '--max-tokens', '300', 'describe the image'], 'understand: error OUT_OF_RANGE: --max-tokens must be in [1, 256], got 300'],
      [['understand', '--speculation', 'chain', '--chain-length', '99', 'describe the image'], 'understand: error OUT_OF_RANGE: --chain-length must be in [1, 16], got 99'],
      [['generate', '--mode', 'baseline', '--cfg-text', '50', '--out', join(dir, 'r.png'), 'a red circle'], 'generate: error OUT_OF_RANGE: --cfg-text must be in [1, 20], got 50'],
      [['generate', '--mode', 'baseline', '--cfg-text', '0.5', '--out', join(dir, 'r.png'), 'a red circle'], 'generate: error OUT_OF_RANGE: --cfg-text must be in [1, 20], got 0.5'],
      [['generate', '--shift', '0', '--out', join(dir, 'r.png'), 'a red circle'], 'generate: error OUT_OF_RANGE: --shift must be in (0, 20], got 0'],
    ];
    for (const [[cmd, ...rest], line] of cases) expect(oneLineError(await cli([cmd!, '--pack', TINY, ...rest]))).toBe(`hyperbagel ${line}`);
  }, 60_000);

  it('image files: the pixel limit and the smallest side are stated, naming the file', async () => {
    const tiny = join(dir, 'one.png');
    writeFileSync(tiny, await sharp({ create: { width: 1, height: 1, channels: 3, background: '#ff0000' } }).png().toBuffer());
    expect(oneLineError(await cli(['understand', '--pack', TINY, '--image', tiny, 'describe the image']))).toBe(`hyperbagel understand: error BAD_IMAGE: ${tiny}: 1×1 is too small (at least 8 pixels a side)`);
    expect(oneLineError(await cli(['edit', '--pack', TINY, '--image', tiny, '--out', join(dir, 'e.png'), 'make it blue']))).toBe(`hyperbagel edit: error BAD_IMAGE: ${tiny}: 1×1 is too small (at least 8 pixels a side)`);
    const huge = join(dir, 'huge.png');
    writeFileSync(huge, await sharp({ create: { width: 5001, height: 5000, channels: 3, background: '#ffffff' } }).png({ compressionLevel: 9 }).toBuffer());
    expect(oneLineError(await cli(['understand', '--pack', TINY, '--image', huge, 'describe the image']))).toBe(
      `hyperbagel understand: error BAD_IMAGE: ${huge}: image is 5001×5000, 25005000 pixels; the limit is 25000000 pixels (5000×5000)`,
    );
  }, 60_000);

  it('generate --out: .jpg and .webp are written in their format; another extension is refused before any work', async () => {
    for (const [name, format] of [['g.jpg', 'jpeg'], ['g.webp', 'webp'], ['g.png', 'png']] as const) {
      const out = join(dir, name);
      const r = await cli(['generate', '--pack', TINY, '--mode', '1nfe', '--quiet', '--out', out, 'a red circle']);
      expect(r.code, r.stderr).toBe(0);
      expect((await sharp(out).metadata()).format, name).toBe(format);
    }
    const r = await cli(['generate', '--pack', 'no/such/pack', '--out', join(dir, 'g.gif'), 'a red circle']);
    expect(r.code).toBe(2);
    expect(oneLineError(r)).toMatch(/--out .*g\.gif: \.gif is not a format this writes; name the file \.png, \.jpg or \.webp/);
  }, 60_000);

  it('understand refuses flags its other options would silently ignore (exit 2, before loading the model)', async () => {
    const cases: Array<[string[], RegExp]> = [
      [['--top-k', '5'], /--top-k applies to sampling, with --temperature above 0/],
      [['--temperature', '0', '--top-p', '0.9'], /--top-p applies to sampling/],
      [['--speculation', 'tree', '--chain-length', '3'], /--chain-length applies to --speculation auto, chain or ngram, not tree/],
      [['--speculation', 'off', '--chain-length', '3'], /--chain-length applies to .* not off/],
      [['--speculation', 'chain', '--tree-budget', '8'], /--tree-budget applies to --speculation auto or tree, not chain/],
    ];
    // a bad --temperature is named as such, not taken as 0
    expect(oneLineError(await cli(['understand', '--pack', 'no/such/pack', '--temperature', 'warm', '--top-p', '0.9', 'describe the image']))).toMatch(/--temperature must be a number, got "warm"/);
    for (const [flags, message] of cases) {
      const r = await cli(['understand', '--pack', 'no/such/pack', ...flags, 'describe the image']);
      expect(r.code, flags.join(' ')).toBe(2);
      expect(oneLineError(r)).toMatch(message);
    }
  }, 60_000);

  it('--threads must be a positive integer (1 to 256), as for serve; --help says so', async () => {
    for (const t of ['0', '2.5', '-1', 'many', '300']) {
      const r = await cli(['understand', '--pack', TINY, '--threads', t, 'describe the image']);
      expect(oneLineError(r)).toContain(`--threads must be a positive integer (1 to 256), got "${t}"`);
      expect(r.code).toBe(2);
    }
    const ok = await cli(['understand', '--pack', TINY, '--threads', '1', '--quiet', '--max-tokens', '2', 'describe the image']);
    expect(ok.code, ok.stderr).toBe(0);
    const help = await cli(['understand', '--help']);
    expect(help.stdout).toMatch(/--threads N\s+onnxruntime intra-op threads \(a positive integer, 1 to 256; default 2\)/);
  }, 60_000);

  it('a bad --speculation mode and an unknown option are usage errors', async () => {
    const a = await cli(['understand', '--pack', TINY, '--speculation', 'fast', 'describe the image']);
    expect(oneLineError(a)).toMatch(/--speculation must be/);
    expect(a.code).toBe(2);
    expect(oneLineError(await cli(['understand', '--pack', TINY, '--tempreature', '1', 'describe the image']))).toMatch(/unknown option --tempreature/);
  }, 60_000);
});

describe('generate', () => {
  it('--out writes a valid PNG of the model image size and prints its path', async () => {
    const out = join(dir, 'x.png');
    const r = await cli(['generate', '--pack', TINY, '--mode', '1nfe', '--seed', '3', '--out', out, 'a red circle']);
    expect(r.code, r.stderr).toBe(0);
    expect(r.stdout).toBe(out + '\n');
    const meta = await sharp(out).metadata();
    expect([meta.format, meta.width, meta.height, meta.channels]).toEqual(['png', 64, 64, 3]);
    // one JSON line per frame on stderr: here just the final
    const frames = r.stderr.trim().split('\n').map((l) => JSON.parse(l) as { stage: string; seed: number });
    expect(frames.map((f) => [f.stage, f.seed])).toEqual([['final', 3]]);
  }, 60_000);

  it('generate and edit refuse a bad --threads the same way, and nothing is written', async () => {
    const out = join(dir, 'bad-threads.png');
    for (const t of ['0', '2.5']) {
      const g = await cli(['generate', '--pack', TINY, '--threads', t, '--out', out, 'a red circle']);
      expect(oneLineError(g)).toContain(`--threads must be a positive integer (1 to 256), got "${t}"`);
      expect(g.code).toBe(2);
      const e = await cli(['edit', '--pack', TINY, '--threads', t, '--image', photo, '--out', out, 'make it blue']);
      expect(oneLineError(e)).toContain(`--threads must be a positive integer (1 to 256), got "${t}"`);
      expect(e.code).toBe(2);
    }
    expect(existsSync(out)).toBe(false);
    expect((await cli(['generate', '--help'])).stdout).toMatch(/--threads N\s+onnxruntime intra-op threads \(a positive integer, 1 to 256; default 2\)/);
  }, 60_000);

  it('a bad --mode is refused and nothing is written', async () => {
    const out = join(dir, 'bad-mode.png');
    const r = await cli(['generate', '--pack', TINY, '--mode', 'turbo', '--out', out, 'a red circle']);
    expect(oneLineError(r)).toMatch(/--mode must be progressive, 6nfe, 1nfe or baseline/);
    expect(r.code).toBe(2);
    expect(existsSync(out)).toBe(false);
  }, 60_000);

  it('a missing prompt or --out is refused', async () => {
    expect(oneLineError(await cli(['generate', '--pack', TINY, '--out', join(dir, 'y.png')]))).toMatch(/prompt is required/);
    expect(oneLineError(await cli(['generate', '--pack', TINY, 'a red circle']))).toMatch(/--out FILE\.png is required/);
  }, 60_000);
});
