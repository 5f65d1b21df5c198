// The README's client example (docs/examples/understand.mjs) run as a user runs it, against a
// gateway on the tiny pack: it must keep working as the API changes.
import { execFile } from 'node:child_process';
import { writeFileSync, mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import sharp from 'sharp';
import { afterAll, beforeAll, expect, it } from 'vitest';
import type { RunningServer } from '../../src/gateway/server.ts';
import { start } from './helpers.ts';

const EXAMPLE = join(import.meta.dirname, '../../docs/examples/understand.mjs');
let server: RunningServer;
let image: string;
beforeAll(async () => {
  server = await start({ packDir: 'test/fixtures/tiny-pack' });
  image = join(mkdtempSync(join(tmpdir(), 'hb-example-')), 'x.png');
  writeFileSync(image, await sharp({ create: { width: 64, height: 64, channels: 3, background: '#ffffff' } }).png().toBuffer());
}, 60_000);
afterAll(async () => {
  await server?.close();
});

const run = (args: string[]) =>
  new Promise<{ code: number; stdout: string; stderr: string }>((resolve) =>
    execFile(process.execPath, [EXAMPLE, ...args], { env: { ...process.env, HYPERBAGEL_URL: server.url.replace(/^http/, 'ws') }, timeout: 30_000 }, (err, stdout, stderr) =>
      resolve({ code: err ? (typeof err.code === 'number' ? err.code : -1) : 0, stdout, stderr }),
    ),
  );

it('streams an answer and reports how it ended', async () => {
  const r = await run([image, 'describe the image']);
  expect(r.code, r.stderr).toBe(0);
  expect(r.stderr).toMatch(/^\n?\[(EOS|LENGTH|STOP), first token after \d+\.\d ms\]\n$/);
});

it('a refused request: the typed error on stderr, exit 1', async () => {
  const r = await run([image, 'what is a xyzzy']);
  expect(r.code).toBe(1);
  expect(r.stderr).toMatch(/^UNKNOWN_WORDS: /);
});
