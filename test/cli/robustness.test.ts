// The command line under hostile or careless input: over-long arguments (onnxruntime-node segfaults
// on a large argv), output paths that cannot be written, a reader that closes the pipe early, the
// default pack from another directory, strict flag parsing, flags that do not apply, image files
// with EXIF orientation or alpha, a pack that fails to load under serve. Everything refused here is
// refused before a model loads, so these run in well under a second each (serve and the pipe tests
// load the tiny pack).
import { execFile, execFileSync, spawn } from 'node:child_process';
import { closeSync, cpSync, existsSync, mkdtempSync, openSync, readdirSync, readFileSync, rmSync, truncateSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import sharp from 'sharp';
import { afterAll, afterEach, describe, expect, it, vi } from 'vitest';
import { flag, intFlag, parseArgs, UsageError } from '../../src/cli/args.ts';
import { readRgbFile } from '../../src/cli/image-file.ts';
import { argvProblem, MAX_ARG_CHARS, runCli, shownMessage, version } from '../../src/cli/main.ts';
import { describeFsError, isFsError } from '../../src/cli/output-path.ts';
import { parseServeArgs, serveOptions } from '../../src/cli/commands/serve.ts';
import { numberFlag } from '../../src/cli/flag-values.ts';
import { readImageFile } from '../../src/engine/image/file.ts';
import { DEFAULT_PACK, FIXTURE_PACK, packChoice, resolvePack } from '../../src/engine/pack-location.ts';
import { DEFAULT_PACK as EVAL_DEFAULT_PACK } from '../../src/eval/engine-model.ts';
import { DEFAULT_LIMITS } from '../../src/gateway/limits.ts';
import { decodeImage } from '../../src/gateway/images.ts';
import { fitImage } from '../../src/engine/image/codec.ts';
import { MAX_IMAGE_PIXELS } from '../../src/engine/types.ts';
import { MAX_STOP_CHARS } from '../../src/engine/understand/pipeline.ts';
import { writeDataset } from '../../src/world/dataset.ts';
import { BIN, cli, oneLineError, ROOT, TINY } from './helpers.ts';

const dir = mkdtempSync(join(tmpdir(), 'hb-cli-robust-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));
/** a pack directory that does not exist: a command that got as far as loading it would say MODEL_LOAD_FAILED */
const NO_PACK = join(dir, 'no-such-pack');

interface Run {
  code: number | null;
  signal: NodeJS.Signals | null;
  stdout: string;
  stderr: string;
}

/** Runs the CLI in `cwd` (the repository root by default); code null means it died of a signal. */
function runIn(args: string[], opts: { cwd?: string; env?: Record<string, string | undefined> } = {}): Promise<Run> {
  return new Promise((resolve) => {
    execFile(
      process.execPath,
      [BIN, ...args],
      { cwd: opts.cwd ?? ROOT, timeout: 60_000, maxBuffer: 1 << 24, env: { ...process.env, HYPERBAGEL_PACK: undefined, ...opts.env } },
      (err, stdout, stderr) => {
        const e = err as (Error & { code?: number | string; signal?: NodeJS.Signals }) | null;
        resolve({ code: e ? (typeof e.code === 'number' ? e.code : null) : 0, signal: e?.signal ?? null, stdout, stderr });
      },
    );
  });
}

/** Runs the command line in this process, capturing console output (stdout / stderr as lines). */
async function inProc(args: string[]): Promise<Run> {
  const out: string[] = [];
  const err: string[] = [];
  vi.spyOn(console, 'log').mockImplementation((...a: unknown[]) => void out.push(a.join(' ')));
  vi.spyOn(console, 'error').mockImplementation((...a: unknown[]) => void err.push(a.join(' ')));
  // progress lines (dataset) are not part of what is checked
  vi.spyOn(process.stderr, 'write').mockImplementation(() => true);
  try {
    const code = await runCli(args);
    return { code, signal: null, stdout: out.map((l) => l + '\n').join(''), stderr: err.map((l) => l + '\n').join('') };
  } finally {
    vi.restoreAllMocks();
  }
}
afterEach(() => vi.restoreAllMocks());

/** A bad-input failure from runIn: exit `code`, no signal, one line on stderr, nothing on stdout, no trace. */
function failsWith(r: Run, code: number): string {
  expect(r.signal, r.stderr).toBeNull();
  expect(r.code, r.stderr).toBe(code);
  return oneLineError({ code: r.code!, stdout: r.stdout, stderr: r.stderr });
}

const x = (n: number) => 'x'.repeat(n);

describe('over-long arguments are refused before any model loads (no segfault)', () => {
  it('a prompt over the gateway limit is PROMPT_TOO_LONG naming the limit: understand, generate, edit', async () => {
    const limit = DEFAULT_LIMITS.maxPromptChars;
    const u = failsWith(await runIn(['understand', '--pack', TINY, x(30_000)]), 1);
    expect(u).toBe(`hyperbagel understand: error PROMPT_TOO_LONG: prompt has 30000 characters; the limit is ${limit}`);
    // just over the limit, and as 6000 separate words (each argument short, the command line long)
    expect(failsWith(await inProc(['understand', '--pack', TINY, x(limit + 1)]), 1)).toMatch(new RegExp(`PROMPT_TOO_LONG: prompt has ${limit + 1} characters; the limit is ${limit}$`));
    expect(failsWith(await runIn(['understand', '--pack', TINY, ...Array(6000).fill('word')]), 1)).toMatch(/PROMPT_TOO_LONG/);
    const out = join(dir, 'never.png');
    expect(failsWith(await inProc(['generate', '--pack', TINY, '--out', out, x(30_000)]), 1)).toMatch(/generate: error PROMPT_TOO_LONG: prompt has 30000 characters/);
    expect(failsWith(await inProc(['edit', '--pack', TINY, '--image', join(dir, 'none.png'), '--out', out, x(30_000)]), 1)).toMatch(/edit: error PROMPT_TOO_LONG: instruction has 30000/);
    expect(existsSync(out)).toBe(false);
  }, 60_000);

  it('a --stop string over the engine limit is OUT_OF_RANGE naming the limit', async () => {
    for (const n of [MAX_STOP_CHARS + 1, 30_000]) {
      const line = failsWith(await inProc(['understand', '--pack', TINY, '--stop', x(n), 'describe the image']), 1);
      expect(line).toBe(`hyperbagel understand: error OUT_OF_RANGE: --stop has ${n} characters; the limit is ${MAX_STOP_CHARS}`);
    }
  }, 60_000);

  it('any other argument over the general limit is ARGUMENT_TOO_LONG, for every command', async () => {
    const r = failsWith(await runIn(['serve', '--pack', TINY, '--port', '0', '--api-key', x(30_000)]), 1);
    expect(r).toMatch(new RegExp(`serve: error ARGUMENT_TOO_LONG: the argument after --api-key \\("x+…"\\) is 30000 characters long; the limit is ${MAX_ARG_CHARS}`));
    expect(r.length).toBeLessThan(300);
    expect(failsWith(await inProc(['eval', 'understand', '--pack', x(20_000)]), 1)).toMatch(/ARGUMENT_TOO_LONG/);
    expect(argvProblem(['understand', x(MAX_ARG_CHARS)])).toBeUndefined();
    expect(argvProblem(['understand', x(MAX_ARG_CHARS + 1)])).toMatch(/^an argument .* is 8193 characters long/);
    expect(argvProblem(['understand', `--stop=${x(MAX_ARG_CHARS)}`])).toMatch(/^the value of --stop /);
    // many short arguments that are long together
    expect(argvProblem(Array(3000).fill('abcde'))).toMatch(/bytes long together/);
  }, 60_000);

  it('long words in error messages are shortened, not repeated in full', async () => {
    const line = failsWith(await inProc(['render', '--out', join(dir, 'w.png'), '--caption', `a ${x(3000)} circle`]), 1);
    expect(line).toMatch(/UNKNOWN_WORDS/);
    expect(line).toContain('(3002 characters)'); // the quoted word
    expect(line.length).toBeLessThan(400);
    expect(shownMessage(`unknown word: ${x(10_000)}`)).toMatch(/^unknown word: x+…\(10000 characters\)$/);
    expect(shownMessage('a path /tmp/x.png stays')).toBe('a path /tmp/x.png stays');
  }, 60_000);
});

describe('output paths are checked before the work; file system errors are one clean line', () => {
  it('generate --out in a missing directory, a directory, or /proc; --previews an existing file: refused at once', async () => {
    const cases: [string[], RegExp][] = [
      [['--out', join(dir, 'nope_dir', 'x.png')], /OUTPUT_PATH: --out .*nope_dir\/x\.png: the directory ".*nope_dir" does not exist/],
      [['--out', dir], /OUTPUT_PATH: --out .*: is a directory; give a file name/],
      [['--out', join(dir, 'missing-dir') + '/'], /OUTPUT_PATH: --out .*missing-dir\/: ends with a slash, so it names a directory \(which does not exist\); give a file name/],
      [['--out', join(dir, 'ok.png'), '--previews', join(ROOT, 'package.json')], /OUTPUT_PATH: --previews .*package\.json: exists and is not a directory/],
    ];
    if (existsSync('/proc/self')) cases.push([['--out', '/proc/x.png'], /OUTPUT_PATH: --out \/proc\/x\.png: cannot create files in the directory "\/proc"/]);
    for (const [flags, msg] of cases) {
      // a missing pack: the path must be refused before the model would load
      const line = failsWith(await inProc(['generate', '--pack', NO_PACK, '--mode', '6nfe', ...flags, 'a red circle']), 1);
      expect(line).toMatch(msg);
    }
    expect(existsSync(join(dir, 'ok.png'))).toBe(false);
    expect(readdirSync(dir).filter((f) => f.startsWith('.hyperbagel'))).toEqual([]); // no probe file left behind
  }, 60_000);

  it('render, dataset and eval --details refuse unusable paths with one line (and dataset does not hang on /proc)', async () => {
    expect(failsWith(await inProc(['render', '--seed', '3', '--out', join(dir, 'nope_dir', 'c.png')]), 1)).toMatch(/render: error OUTPUT_PATH: .*does not exist/);
    const file = join(dir, 'a-file');
    writeFileSync(file, 'x');
    expect(failsWith(await inProc(['dataset', '--split', 'train', '--count', '5', '--out', file]), 1)).toMatch(/dataset: error OUTPUT_PATH: --out .*a-file: exists and is not a directory/);
    if (existsSync('/proc/self')) {
      expect(failsWith(await inProc(['dataset', '--split', 'train', '--count', '5', '--out', '/proc/hb-ds']), 1)).toMatch(/OUTPUT_PATH/);
      // the library itself fails instead of looping in mkdirSync(…, { recursive: true })
      expect(() => writeDataset('/proc/hb-ds/a', { split: 'train', count: 1 })).toThrow(/ENOENT|EACCES|EROFS/);
    }
    const e = await inProc(['eval', 'understand', '--model', 'oracle', '--limit', '1', '--json', '--details', join(dir, 'nope_dir', 'd.jsonl')]);
    expect(failsWith(e, 1)).toMatch(/eval: error OUTPUT_PATH: --details .*d\.jsonl: the directory .* does not exist/);
    // a new directory tree is still created
    const deep = join(dir, 'ds', 'a', 'b');
    const ok = await inProc(['dataset', '--split', 'train', '--count', '2', '--out', deep]);
    expect(ok.code, ok.stderr).toBe(0);
    expect(readdirSync(deep).sort()).toEqual(['edited.npy', 'images.npy', 'meta.json', 'records.jsonl']);
    // the same export again is fine; another one (the next shard) into the same DIR would lose this one
    expect((await inProc(['dataset', '--split', 'train', '--count', '2', '--out', deep])).code).toBe(0);
    const before = readFileSync(join(deep, 'records.jsonl'), 'utf8');
    expect(failsWith(await inProc(['dataset', '--split', 'train', '--count', '2', '--offset', '2', '--out', deep]), 2)).toMatch(
      /--out .*already holds another export \(train samples 0–1, 1–4 objects per scene\); give another DIR \(each export is one shard\), or --force to replace it/,
    );
    expect(readFileSync(join(deep, 'records.jsonl'), 'utf8')).toBe(before);
    expect((await inProc(['dataset', '--split', 'train', '--count', '2', '--offset', '2', '--out', deep, '--force'])).code).toBe(0);
    expect(JSON.parse(readFileSync(join(deep, 'meta.json'), 'utf8'))).toMatchObject({ split: 'train', count: 2, offset: 2, min_objects: 1, max_objects: 4 });
    // into a log (stderr not a terminal): the result line only, no carriage-return progress
    const logged = await cli(['dataset', '--split', 'val', '--count', '1000', '--out', join(dir, 'ds-log')]);
    expect(logged.code).toBe(0);
    expect(logged.stderr.replace(/^npm warn.*\n/gm, '')).toMatch(/^wrote 1000 val samples to .*ds-log in [\d.]+ s\n$/);
    // render writes PNG bytes, so it names its file so
    expect(failsWith(await inProc(['render', '--seed', '3', '--out', join(dir, 'c.gif')]), 2)).toMatch(/--out .*c\.gif: render writes PNG; name the file \.png/);
    expect(existsSync(join(dir, 'c.gif'))).toBe(false);
  }, 60_000);

  it('a file system error that still happens is named in one line, not a stack', () => {
    const err = Object.assign(new Error("EISDIR: illegal operation on a directory, open '/tmp'"), { code: 'EISDIR', syscall: 'open', path: '/tmp' });
    expect(isFsError(err)).toBe(true);
    expect(describeFsError(err)).toBe('cannot open "/tmp": is a directory (EISDIR)');
    expect(isFsError(new Error('plain'))).toBe(false);
  });
});

describe('a reader that closes the pipe early', () => {
  /** Runs the CLI with stdout's read end closed as soon as anything arrives (or at once). */
  function closedPipe(args: string[], atOnce = false): Promise<{ code: number | null; signal: NodeJS.Signals | null; stderr: string }> {
    return new Promise((resolve) => {
      const child = spawn(process.execPath, [BIN, ...args], { cwd: ROOT, env: { ...process.env, HYPERBAGEL_PACK: undefined }, stdio: ['ignore', 'pipe', 'pipe'] });
      let stderr = '';
      child.stderr.on('data', (b: Buffer) => (stderr += b.toString()));
      if (atOnce) child.stdout.destroy();
      else child.stdout.once('data', () => child.stdout.destroy());
      child.once('close', (code, signal) => resolve({ code, signal, stderr }));
    });
  }

  it('exits quietly (0, or 141 as for SIGPIPE) with no EPIPE trace: understand streaming, render, eval --json', async () => {
    const runs = await Promise.all([
      closedPipe(['understand', '--pack', TINY, '--speculation', 'off', '--max-tokens', '48', '--quiet', 'describe the image']),
      closedPipe(['render', '--seed', '3', '--out', join(dir, 'pipe.png')], true),
      closedPipe(['eval', 'understand', '--model', 'oracle', '--limit', '1', '--json'], true),
      closedPipe(['--help'], true),
    ]);
    for (const r of runs) {
      expect(r.stderr).not.toMatch(/EPIPE|Unhandled|\n\s+at /);
      expect(r.signal).toBeNull();
      expect([0, 141]).toContain(r.code);
    }
  }, 60_000);

  it.runIf(existsSync('/dev/full'))('stdout that cannot be written (a full disk): one line naming it on stderr, exit 1, no trace', async () => {
    for (const args of [['render', '--seed', '2', '--out', join(dir, 'full.png')], ['--help']]) {
      const r = await new Promise<{ code: number | null; stderr: string }>((resolve) => {
        const out = openSync('/dev/full', 'w');
        const child = spawn(process.execPath, [BIN, ...args], { cwd: ROOT, env: { ...process.env, HYPERBAGEL_PACK: undefined }, stdio: ['ignore', out, 'pipe'] });
        let stderr = '';
        child.stderr!.on('data', (b: Buffer) => (stderr += b.toString()));
        child.once('close', (code) => {
          closeSync(out);
          resolve({ code, stderr });
        });
      });
      expect(r.code, args.join(' ')).toBe(1);
      expect(r.stderr.trim(), args.join(' ')).toBe('hyperbagel: cannot write the output to stdout: ENOSPC: no space left on device, write');
    }
  }, 60_000);
});

describe('the default pack is found the same way by every command', () => {
  it('eval and serve use $HYPERBAGEL_PACK and the repository default, not the current directory', async () => {
    const elsewhere = mkdtempSync(join(tmpdir(), 'hb-cwd-'));
    try {
      const missing = join(elsewhere, 'env-pack');
      const r = await runIn(['eval', 'understand', '--limit', '1'], { cwd: elsewhere, env: { HYPERBAGEL_PACK: missing } });
      expect(failsWith(r, 1)).toBe(`hyperbagel eval: error MODEL_LOAD_FAILED: ${join(missing, 'manifest.json')}: no model pack here ($HYPERBAGEL_PACK)`);
      // serve names where the pack came from, not a --pack the user never passed
      const s = await runIn(['serve', '--port', '0'], { cwd: elsewhere, env: { HYPERBAGEL_PACK: missing } });
      expect(failsWith(s, 2)).toMatch(/^hyperbagel serve: \$HYPERBAGEL_PACK .*env-pack: no such directory/);
    } finally {
      rmSync(elsewhere, { recursive: true, force: true });
    }
    expect(EVAL_DEFAULT_PACK).toBe(DEFAULT_PACK);
    expect(DEFAULT_PACK).toBe(join(ROOT, 'models', 'shapes-mot'));
    expect(packChoice(undefined, {})).toEqual({ dir: DEFAULT_PACK, source: 'default' });
    expect(packChoice(undefined, { HYPERBAGEL_PACK: '/p' })).toEqual({ dir: '/p', source: 'env' });
    expect(packChoice('/f', { HYPERBAGEL_PACK: '/p' })).toEqual({ dir: '/f', source: 'flag' });
    expect(resolvePack(undefined, { HYPERBAGEL_PACK: FIXTURE_PACK })).toBe(FIXTURE_PACK);
    expect(serveOptions(parseServeArgs([]), { HYPERBAGEL_PACK: FIXTURE_PACK }).packDir).toBe(FIXTURE_PACK);
    expect(serveOptions(parseServeArgs(['--pack', TINY]), { HYPERBAGEL_PACK: '/elsewhere' }).packDir).toBe(TINY);
  }, 60_000);
});

describe('serve exits when the pack fails to load', () => {
  it('a corrupt manifest.json: it listens (for /health), then exits 1 with MODEL_LOAD_FAILED naming the file', async () => {
    const pack = join(dir, 'corrupt-pack');
    cpSync(join(ROOT, TINY), pack, { recursive: true });
    writeFileSync(join(pack, 'manifest.json'), '{not json');
    // a serve that stays up fails the test at its timeout, before runIn's 60 s kill could end it some other way
    const r = await runIn(['serve', '--pack', pack, '--port', '0']);
    expect(r.code, r.stderr).toBe(1);
    expect(r.stderr).toMatch(/listening on http/);
    const last = r.stderr.trim().split('\n').at(-1)!;
    expect(last).toMatch(/^hyperbagel serve: error MODEL_LOAD_FAILED: .*manifest\.json/);
    expect(r.stderr).not.toMatch(/\n\s+at /);
  }, 45_000);
});

describe('bench arguments go through the shared parser', () => {
  it('unknown options, stray arguments and bad values are usage errors; --transport=sse is honoured', async () => {
    for (const args of [['gateway', '--bogus'], ['gateway', 'extra'], ['generate', 'extra'], ['understand', 'extra'], ['gateway', '--transport', 'bogus'], ['gateway', '--streams', '0']]) {
      const line = failsWith(await inProc(['bench', ...args]), 2);
      expect(line, args.join(' ')).toMatch(/unknown option --bogus|unexpected argument "extra"|--transport must be ws or sse, got "bogus"|--streams must be an integer in \[1, /);
    }
    const r = await inProc(['bench', 'gateway', '--transport=sse', '--streams', '2', '--tokens', '2', '--step-ms', '1', '--rounds', '2', '--json']);
    expect(r.code, r.stderr).toBe(0);
    // every token's frame was seen leaving the gateway as well as arriving at the client, in both
    // rounds, and the same through the bare transport's rounds
    const sse = JSON.parse(r.stdout);
    expect(sse).toMatchObject({ transport: 'sse', streams: 2, rounds: 2, tokens_expected: 8, tokens_measured: 8, frame_written_tokens: 8, errors: 0 });
    expect(sse.transport_floor).toMatchObject({ tokens_expected: 8, tokens_measured: 8, errors: 0 });
    expect(sse.round_added_latency_p99_ms).toHaveLength(2);
    expect(sse.transport_floor.round_added_latency_p99_ms).toHaveLength(2);
    expect(typeof sse.added_over_floor_p99_ms).toBe('number');
    const ws = await inProc(['bench', 'gateway', '--streams', '3', '--tokens', '2', '--step-ms', '1', '--json']);
    expect(ws.code, ws.stderr).toBe(0);
    const wsOut = JSON.parse(ws.stdout);
    expect(wsOut).toMatchObject({ transport: 'ws', rounds: 3, tokens_measured: 18, frame_written_tokens: 18 });
    expect(wsOut.transport_floor).toMatchObject({ tokens_expected: 18, tokens_measured: 18, errors: 0 });
    // the gateway thread's GC pauses in the steady state, counted for both kinds of round
    for (const r of [wsOut, wsOut.transport_floor]) {
      expect(Number.isInteger(r.gc_scavenges)).toBe(true);
      expect(r.gc_pause_ms).toBeGreaterThanOrEqual(0);
    }
    const one = await inProc(['bench', 'gateway', '--streams', '2', '--tokens', '2', '--step-ms', '1', '--rounds', '1', '--no-floor', '--json']);
    expect(one.code, one.stderr).toBe(0);
    expect(JSON.parse(one.stdout)).toMatchObject({ rounds: 1, tokens_measured: 4, transport_floor: null, added_over_floor_p99_ms: null });
  }, 60_000);

  it('the plain gateway bench: --rounds and --no-floor, and where they do not apply', async () => {
    const cases: Array<[string[], RegExp]> = [
      [['--rounds', '0'], /--rounds must be an integer in \[1, /],
      [['--no-floor', '--slow-consumers', '1'], /--no-floor does not apply to --slow-consumers/],
      [['--no-floor', '--churn', '5'], /--no-floor does not apply to --churn/],
      [['--no-floor=1'], /option --no-floor takes no value/],
    ];
    for (const [args, message] of cases) expect(failsWith(await inProc(['bench', 'gateway', ...args]), 2), args.join(' ')).toMatch(message);
    // through a forwarding replica: its floor rounds have no gateway (and so no replica) at all
    const hop = await inProc(['bench', 'gateway', '--via-replica', '--streams', '2', '--tokens', '2', '--step-ms', '1', '--rounds', '1', '--json']);
    expect(hop.code, hop.stderr).toBe(0);
    const out = JSON.parse(hop.stdout);
    expect(out).toMatchObject({ via_replica: true, tokens_measured: 4, errors: 0 });
    expect(out.transport_floor).toMatchObject({ tokens_measured: 4, errors: 0 });
  }, 60_000);

  it('--slow-consumers: its options, and a small run in which the slow consumer backs the gateway up without costing tokens', async () => {
    const cases: Array<[string[], RegExp]> = [
      [['--slow-consumers', '0'], /--slow-consumers must be an integer in \[1, /],
      [['--slow-consumers', '1', '--via-replica'], /--via-replica does not apply to --slow-consumers/],
      [['--slow-consumers', '1', '--transport', 'sse'], /graphql-ws streams/],
      [['--slow-rate', '5'], /--slow-rate applies to --slow-consumers only/],
    ];
    for (const [args, message] of cases) expect(failsWith(await inProc(['bench', 'gateway', ...args]), 2), args.join(' ')).toMatch(message);
    const r = await inProc(['bench', 'gateway', '--slow-consumers', '1', '--rounds', '1', '--streams', '4', '--tokens', '5', '--step-ms', '5', '--json']);
    expect(r.code, r.stderr).toBe(0);
    const out = JSON.parse(r.stdout);
    expect(out).toMatchObject({ streams: 4, slow_consumers: 1, rounds: 1, errors: 0, tokens_missing: 0, slow_socket_closes: 0 });
    // the slow consumer's sockets filled up: the gateway held unsent bytes and merged its chunks
    expect(out.max_send_queue_bytes_per_slow_consumer).toBeGreaterThan(0);
    expect(out.coalesced_chunks[0]).toBeGreaterThan(0);
    expect(out.added_latency_p99_ms.base).toHaveLength(1);
  }, 60_000);

  it('--churn takes its own options only; a small churn run prints its JSON and exits 0', async () => {
    const cases: Array<[string[], RegExp]> = [
      [['--churn', '0'], /--churn must be an integer in \[1, /],
      [['--churn', '5', '--streams', '3'], /--streams does not apply to --churn/],
      [['--churn', '5', '--via-replica'], /--via-replica does not apply to --churn/],
      [['--churn', '5', '--slow-consumers', '1'], /--slow-consumers does not apply to --churn/],
      [['--concurrency', '3'], /--concurrency applies to --churn only/],
      [['--churn', '5', '--concurrency', '0'], /--concurrency must be an integer in \[1, /],
    ];
    for (const [args, message] of cases) expect(failsWith(await inProc(['bench', 'gateway', ...args]), 2), args.join(' ')).toMatch(message);
    const r = await inProc(['bench', 'gateway', '--churn', '10', '--concurrency', '2', '--step-ms', '2', '--json']);
    expect(r.code, r.stderr).toBe(0);
    expect(JSON.parse(r.stdout)).toMatchObject({ cycles: 10, concurrency: 2, errors: 0, work_never_stopped: 0 });
  }, 60_000);
});

describe('strict flag parsing', () => {
  const known = { values: ['seed', 'out'], booleans: ['quiet'] };
  it('-- ends the options; -x is an unknown option unless it is a negative number; booleans take no value', () => {
    expect(parseArgs(['--quiet', '--', '--seed', '-x'], known)).toEqual({ flags: new Map([['quiet', ['true']]]), positionals: ['--seed', '-x'] });
    expect(() => parseArgs(['-x', 'hi'], known)).toThrow(new UsageError('unknown option -x'));
    expect(parseArgs(['-3', 'degrees', '-'], known).positionals).toEqual(['-3', 'degrees', '-']);
    expect(flag(parseArgs(['--seed', '-3'], known), 'seed')).toBe('-3');
    expect(() => parseArgs(['--quiet=false'], known)).toThrow(/--quiet takes no value/);
    expect(() => parseArgs(['--quiet=true'], known)).toThrow(/--quiet takes no value/);
  });

  it('integers: decimal digits and safe integers only', () => {
    const v = (raw: string) => intFlag(parseArgs(['--seed', raw], known), 'seed', 7, 0);
    expect(v('42')).toBe(42);
    for (const bad of [' ', '0x10', '1e3', '1e20', '4.0', '9007199254740992', '-1', 'Infinity'])
      expect(() => v(bad), JSON.stringify(bad)).toThrow(/--seed must be an integer in \[0, 9007199254740991\]/);
    // an empty value (an unset shell variable) is refused by the parser, for every flag
    expect(() => v('')).toThrow(/option --seed needs a value, got an empty one/);
    expect(v('9007199254740991')).toBe(Number.MAX_SAFE_INTEGER);
  });

  it('numbers: decimal only; integers where the engine wants one', () => {
    expect(numberFlag('0.5', 't')).toBe(0.5);
    expect(numberFlag('-.5', 't')).toBe(-0.5);
    expect(numberFlag('2e-3', 't')).toBe(0.002);
    for (const bad of ['', '0x10', 'Infinity', ' 1', '1,5', 'NaN']) expect(() => numberFlag(bad, 't'), JSON.stringify(bad)).toThrow(/--t must be a number/);
    expect(() => numberFlag('1.5', 'seed', { integer: true })).toThrow(/--seed must be an integer in decimal digits, got "1.5"/);
    // as intFlag reads integers: "1.0" and "1e3" are refused, not read as 1 and 1000
    for (const bad of ['1.0', '1e3', '-2.0']) expect(() => numberFlag(bad, 'seed', { integer: true }), bad).toThrow(/must be an integer in decimal digits/);
    expect(numberFlag('42', 'seed', { integer: true })).toBe(42);
    expect(() => numberFlag('100000000000000000000', 'seed', { integer: true })).toThrow(/--seed must be an integer of at most 9007199254740991/);
    expect(() => numberFlag('-1', 'seed', { integer: true, min: 0 })).toThrow(/--seed must be at least 0/);
  });

  it('the CLI checks flags before loading the model (a missing pack is never reached)', async () => {
    const bad: [string[], number, RegExp][] = [
      [['understand', '--seed', '0x10', 'hi'], 1, /--seed must be a number, got "0x10"/],
      [['understand', '--seed', '', 'hi'], 2, /option --seed needs a value, got an empty one/],
      [['understand', '--image', '', 'hi'], 2, /option --image needs a value, got an empty one/],
      [['eval', 'understand', '--model', 'oracle', '--details', ''], 2, /option --details needs a value, got an empty one/],
      [['understand', '--quiet=false', 'hi'], 2, /--quiet takes no value/],
      [['understand', '-x', 'hi'], 2, /unknown option -x/],
      [['generate', '--seed', '100000000000000000000', '--out', join(dir, 'n.png'), 'hi'], 1, /--seed must be an integer of at most/],
      [['generate', '--seed', '1e3', '--out', join(dir, 'n.png'), 'hi'], 1, /--seed must be an integer in decimal digits, got "1e3"/],
      [['generate', '--steps', 'many', '--mode', 'baseline', '--out', join(dir, 'n.png'), 'hi'], 1, /--steps must be a number/],
      [['render', '--seed', '1e20', '--out', join(dir, 'n.png')], 2, /--seed must be an integer in \[0, 9007199254740991\], got "1e20"/],
      [['dataset', '--split', 'train', '--count', '1', '--offset', '1e300', '--out', join(dir, 'n')], 2, /--offset must be an integer/],
    ];
    for (const [args, code, msg] of bad) {
      const withPack = args[0] === 'understand' || args[0] === 'generate' ? [args[0], '--pack', NO_PACK, ...args.slice(1)] : args;
      expect(failsWith(await inProc(withPack), code), args.join(' ')).toMatch(msg);
    }
    // `--` lets a prompt start with a dash: the words reach the model (which does not know them)
    const r = await inProc(['understand', '--pack', TINY, '--quiet', '--max-tokens', '2', '--', '-x', '--y']);
    expect(failsWith(r, 1)).toMatch(/UNKNOWN_WORDS: unknown words: x, y/);
  }, 60_000);
});

describe('flags that do not apply are refused, not ignored', () => {
  it('generate: --image (use edit), --steps outside baseline, --cfg-image for text-to-image; eval and render', async () => {
    const out = join(dir, 'flags.png');
    const bad: [string[], RegExp][] = [
      [['generate', '--pack', NO_PACK, '--image', join(ROOT, 'package.json'), '--out', out, 'hi'], /--image applies to editing; to edit an image, run hyperbagel edit --image FILE/],
      [['generate', '--pack', NO_PACK, '--steps', '5', '--mode', '6nfe', '--out', out, 'hi'], /--steps applies to --mode baseline only/],
      [['generate', '--pack', NO_PACK, '--steps', '5', '--out', out, 'hi'], /--steps applies to --mode baseline only/],
      [['generate', '--pack', NO_PACK, '--cfg-image', '3', '--out', out, 'hi'], /--cfg-image applies to editing only/],
      [['eval', 'detector', '--mode', 'bogus'], /--mode applies to eval geneval, gedit only/],
      [['eval', 'draft', '--mode', 'bogus'], /--mode applies to eval geneval, gedit only/],
      [['eval', 'geneval', '--model', 'oracle', '--mode', 'bogus'], /--mode must be one of/],
      [['eval', 'understand', '--count', '5'], /--count applies to eval detector only/],
      [['eval', 'detector', '--limit', '5'], /--limit applies to eval understand, geneval, gedit, draft only/],
      [['render', '--caption', 'a red circle', '--seed', '3', '--out', out], /give --caption "TEXT" or --seed N, not both/],
      // models without the engine: what they would have ignored, or crashed on with a stack trace
      [['eval', 'understand', '--model', 'constant', '--followup', '--limit', '1'], /--followup needs a model that holds a conversation: --model engine or oracle, not constant/],
      [['eval', 'understand', '--model', 'lowres-oracle', '--followup', '--limit', '1'], /not lowres-oracle/],
      [['eval', 'understand', '--model', 'oracle', '--pack', '/nonexistent', '--limit', '1'], /--pack applies to --model engine, vae-oracle and lowres-oracle \(oracle reads no pack\)/],
      [['eval', 'geneval', '--model', 'constant', '--mode', '1nfe', '--limit', '1'], /--mode applies to --model engine only \(constant draws no samples\)/],
      [['eval', 'detector', '--count', '1', '--think-temperature', '0.5'], /--think-temperature applies to eval geneval only/],
      [['eval', 'draft', '--pack', TINY, '--variant', 'x=/nonexistent'], /MODEL_LOAD_FAILED: \/nonexistent\/manifest\.json: no model pack here/],
      [['generate', '--pack', NO_PACK, '--mode', '1nfe', '--previews', join(dir, 'pv'), '--out', out, 'hi'], /--previews needs previews to write: --mode progressive or 6nfe/],
      [['bench'], /which benchmark\? one of understand, generate, gateway/],
      [['bench', 'toString'], /unknown benchmark "toString"/],
      [['bench', 'understand', '--rounds', '0'], /\(see hyperbagel bench understand --help\)/],
      [['bench', 'understand', '--max-tokens', 'NaN', '--pack', '/nonexistent'], /--max-tokens/],
    ];
    for (const [args, msg] of bad) {
      // a missing draft variant is a missing pack (exit 1), found before the main pack is scored
      const code = args[1] === 'draft' && args.includes('--variant') ? 1 : 2;
      expect(failsWith(await inProc(args), code), args.join(' ')).toMatch(msg);
    }
    expect(existsSync(out)).toBe(false);
    expect(existsSync(join(dir, 'pv'))).toBe(false);
    // Object.prototype's names are unknown commands too (they crashed with "cmd.load is not a function")
    for (const name of ['constructor', 'toString', '__proto__']) {
      const r = await inProc([name]);
      expect(r.code, name).toBe(2);
      expect(r.stderr).toContain(`unknown command "${name}"`);
    }
    // the help says where --image and --cfg-image belong
    const help = await cli(['generate', '--help']);
    expect(help.stdout).toMatch(/hyperbagel edit --image FILE/);
    expect(help.stdout).toMatch(/--steps N .*--mode baseline only/);
  }, 60_000);
});

describe('image files, usage and --version', () => {
  it('an image file is read up to the gateway\'s image size: a folder, 21 MiB or an endless device is refused at once; a pipe is read', async () => {
    const big = join(dir, 'big.png');
    closeSync(openSync(big, 'w'));
    truncateSync(big, DEFAULT_LIMITS.maxImageBytes + 1); // sparse: nothing is written
    const cases: Array<[string, RegExp]> = [
      ['/dev/zero', /more than 20971520 bytes; the limit is 20971520 bytes/], // read whole, it hung and took 8 GB
      [dir, /it is a directory/],
      [big, new RegExp(`${DEFAULT_LIMITS.maxImageBytes + 1} bytes; the limit is ${DEFAULT_LIMITS.maxImageBytes} bytes \\(20 MiB\\)`)],
      [join(dir, 'missing.png'), /ENOENT/],
    ];
    for (const [file, msg] of cases) {
      for (const read of [readImageFile, (f: string) => readRgbFile(f)])
        await expect(read(file), file).rejects.toMatchObject({ code: 'BAD_IMAGE', message: expect.stringMatching(msg) });
    }
    const r = await inProc(['understand', '--pack', TINY, '--image', '/dev/zero', 'describe the image']);
    expect(failsWith(r, 1)).toMatch(/BAD_IMAGE: cannot read image file "\/dev\/zero": more than 20971520 bytes/);
    // a pipe is read (process substitution, --image <(curl …)), up to the same limit
    const png = join(dir, 'red.png');
    await sharp({ create: { width: 64, height: 64, channels: 3, background: { r: 255, g: 0, b: 0 } } }).png().toFile(png);
    const fifo = join(dir, 'image.fifo');
    execFileSync('mkfifo', [fifo]);
    const writer = spawn('sh', ['-c', 'cat "$1" > "$2"', '_', png, fifo]);
    const written = new Promise((r) => writer.on('close', r));
    const img = await readImageFile(fifo);
    await written;
    expect([img.width, img.height, ...img.data.slice(0, 3)]).toEqual([64, 64, 255, 0, 0]);
  }, 30_000);

  /** 64×64: top half `top`, bottom half `bottom` (RGB). */
  function halves(top: number[], bottom: number[]): Buffer {
    const data = Buffer.alloc(64 * 64 * 3);
    for (let i = 0; i < 64 * 64; i++) data.set(i < 32 * 64 ? top : bottom, i * 3);
    return data;
  }

  it('EXIF orientation is applied and alpha is flattened on white (readImageFile, readRgbFile), as the gateway decodes', async () => {
    // stored upside down (red at the bottom) with orientation 3 (rotate 180°): shown with red on top
    const jpg = join(dir, 'o3.jpg');
    await sharp(halves([0, 0, 255], [255, 0, 0]), { raw: { width: 64, height: 64, channels: 3 } }).jpeg({ quality: 95 }).withMetadata({ orientation: 3 }).toFile(jpg);
    expect((await sharp(jpg).metadata()).orientation).toBe(3);
    const transparent = join(dir, 'alpha.png');
    await sharp({ create: { width: 64, height: 64, channels: 4, background: { r: 0, g: 0, b: 0, alpha: 0 } } }).png().toFile(transparent);
    for (const read of [readImageFile, (f: string) => readRgbFile(f)]) {
      const img = await read(jpg);
      const topLeft = Array.from(img.data.slice(0, 3));
      const bottomLeft = Array.from(img.data.slice(63 * 64 * 3, 63 * 64 * 3 + 3));
      expect(topLeft[0]).toBeGreaterThan(200); // red on top
      expect(topLeft[2]).toBeLessThan(50);
      expect(bottomLeft[2]).toBeGreaterThan(200); // blue at the bottom
      const a = await read(transparent);
      expect(Array.from(a.data.slice(0, 3))).toEqual([255, 255, 255]);
    }
    // an ordinary PNG reads exactly as before
    const plain = join(dir, 'plain.png');
    const raw = halves([10, 20, 30], [40, 50, 60]);
    await sharp(raw, { raw: { width: 64, height: 64, channels: 3 } }).png().toFile(plain);
    expect(Buffer.compare(Buffer.from((await readImageFile(plain)).data), raw)).toBe(0);
  });

  /** w×h, white with hard edges: a dark-red disc left of centre and a blue bar near the top (so a wrong turn or crop shows). */
  function hardEdged(w: number, h: number): Buffer {
    const d = Buffer.alloc(w * h * 3, 255);
    const r = Math.min(w, h) / 4;
    for (let y = 0; y < h; y++)
      for (let x = 0; x < w; x++) {
        const dx = x - w * 0.4;
        const dy = y - h / 2;
        if (dx * dx + dy * dy < r * r) d.set([200, 20, 30], (y * w + x) * 3);
        else if (y > h * 0.15 && y < h * 0.25 && x > w * 0.3) d.set([20, 40, 220], (y * w + x) * 3);
      }
    return d;
  }

  it('an image over 1024 px a side (and one EXIF-turned) is decoded as the gateway decodes it: the same 64×64 fit byte for byte', async () => {
    const png = join(dir, 'big2048.png');
    await sharp(hardEdged(2048, 2048), { raw: { width: 2048, height: 2048, channels: 3 } }).png({ compressionLevel: 1 }).toFile(png);
    // stored 1600×1200, shown 1200×1600 (orientation 8: turned a quarter)
    const jpg = join(dir, 'o8-1600x1200.jpg');
    await sharp(hardEdged(1600, 1200), { raw: { width: 1600, height: 1200, channels: 3 } }).jpeg({ quality: 90 }).withMetadata({ orientation: 8 }).toFile(jpg);
    expect((await sharp(jpg).metadata()).orientation).toBe(8);
    const differing: Record<string, number> = {};
    const infos: Array<[unknown, unknown]> = [];
    for (const f of [png, jpg]) {
      const viaCli = await fitImage(await readImageFile(f), 64);
      const viaGateway = await fitImage(await decodeImage(readFileSync(f), DEFAULT_LIMITS), 64);
      differing[f] = viaCli.image.data.filter((v, i) => v !== viaGateway.image.data[i]).length;
      infos.push([viaCli.info, viaGateway.info]);
    }
    expect(differing).toEqual({ [png]: 0, [jpg]: 0 }); // bytes that differ, of 64×64×3
    for (const [a, b] of infos) expect(a).toEqual(b);
    // both report the size the file has (upright), not the bounded decode's
    expect((await fitImage(await readImageFile(jpg), 64)).info).toMatchObject({ originalWidth: 1200, originalHeight: 1600, resized: true, cropped: true });
  }, 60_000);

  it("the command line takes an image up to the gateway's pixel limit: edit of a 4200×4200 PNG exits 0", async () => {
    const big = join(dir, 'big4200.png');
    await sharp({ create: { width: 4200, height: 4200, channels: 3, background: '#3366cc' } }).png({ compressionLevel: 9 }).toFile(big);
    const out = join(dir, 'big4200-edit.png');
    const r = await cli(['edit', '--pack', TINY, '--mode', '1nfe', '--seed', '1', '--image', big, '--out', out, 'make it red']);
    expect(r.code, r.stderr).toBe(0);
    expect(existsSync(out)).toBe(true);
    expect(r.stderr).toContain('"sourceImage":{"originalWidth":4200,"originalHeight":4200');
    expect(MAX_IMAGE_PIXELS).toBe(DEFAULT_LIMITS.maxImagePixels);
    // over the limit: refused naming it
    const over = join(dir, 'over.png');
    await sharp({ create: { width: 5001, height: 5000, channels: 3, background: '#ffffff' } }).png({ compressionLevel: 9 }).toFile(over);
    await expect(readImageFile(over)).rejects.toMatchObject({ code: 'BAD_IMAGE', message: expect.stringMatching(/5001×5000, 25005000 pixels; the limit is 25000000 pixels/) });
  }, 60_000);

  it('no arguments: usage on stderr, exit 1; --help on stdout, exit 0; --version prints package.json\'s version', async () => {
    const none = await inProc([]);
    expect(none.code).toBe(1);
    expect(none.stdout).toBe('');
    expect(none.stderr).toMatch(/^Usage: hyperbagel <command>/);
    const help = await inProc(['--help']);
    expect(help.code).toBe(0);
    expect(help.stderr).toBe('');
    expect(help.stdout).toMatch(/^Usage: hyperbagel <command>/);
    const pkg = JSON.parse(readFileSync(join(ROOT, 'package.json'), 'utf8')) as { version: string };
    expect(version()).toBe(pkg.version);
    expect(await inProc(['-V'])).toMatchObject({ code: 0, stdout: `${pkg.version}\n` });
    // and as a user runs it
    const r = await cli(['--version']);
    expect(r.code).toBe(0);
    expect(r.stdout).toBe(`${pkg.version}\n`);
  }, 60_000);
});
