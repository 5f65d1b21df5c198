// The gateway's V8 tuning (docs/gateway.md, "The V8 young generation") reaches Node both ways a user
// starts it: `npx hyperbagel …` (the bin's shebang, run by the kernel) and `npm start`.
import { execFile } from 'node:child_process';
import { mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { pathToFileURL } from 'node:url';
import { expect, it } from 'vitest';
import { BIN, ROOT } from './helpers.ts';

const FLAG = '--max-semi-space-size=64';

it('the bin, run through its shebang, starts Node with the young-generation flag', async () => {
  // a preload that reports the flags Node itself was started with
  const dir = mkdtempSync(join(tmpdir(), 'hb-v8-'));
  const probe = join(dir, 'probe.mjs');
  writeFileSync(probe, "process.stderr.write('execArgv=' + JSON.stringify(process.execArgv) + '\\n');\n");
  const r = await new Promise<{ code: number; stderr: string; stdout: string }>((resolve) =>
    execFile(BIN, ['--help'], { cwd: ROOT, timeout: 60_000, env: { ...process.env, NODE_OPTIONS: `--import ${pathToFileURL(probe).href}` } }, (err, stdout, stderr) =>
      resolve({ code: err ? (typeof err.code === 'number' ? err.code : -1) : 0, stdout, stderr }),
    ),
  );
  expect(r.code, r.stderr).toBe(0);
  expect(r.stdout).toMatch(/^Usage: hyperbagel <command>/);
  const argv = JSON.parse(/execArgv=(.*)/.exec(r.stderr)![1]!) as string[];
  expect(argv).toContain(FLAG);
}, 60_000);

it('npm start passes the same flag', () => {
  const pkg = JSON.parse(readFileSync(join(ROOT, 'package.json'), 'utf8')) as { scripts: Record<string, string> };
  expect(pkg.scripts.start).toBe(`node ${FLAG} bin/hyperbagel.js serve`);
});
