// Spawning the real CLI (`node bin/hyperbagel.js …`) from the repository root.
import { execFile, spawn, type ChildProcess } from 'node:child_process';
import { join } from 'node:path';

export const ROOT = join(import.meta.dirname, '../..');
export const BIN = join(ROOT, 'bin/hyperbagel.js');
/** the tiny real ONNX pack: loads and answers in well under a second */
export const TINY = 'test/fixtures/tiny-pack';

export interface CliResult {
  code: number;
  stdout: string;
  stderr: string;
}

/** Runs the CLI to completion (env: added to this process's, with HYPERBAGEL_PACK cleared). */
export function cli(args: string[], env: Record<string, string | undefined> = {}): Promise<CliResult> {
  return new Promise((resolve) => {
    execFile(
      process.execPath,
      [BIN, ...args],
      { cwd: ROOT, timeout: 60_000, env: { ...process.env, HYPERBAGEL_PACK: undefined, ...env } },
      (err, stdout, stderr) => {
        resolve({ code: err ? (typeof err.code === 'number' ? err.code : -1) : 0, stdout, stderr });
      },
    );
  });
}

/** A bad-input failure: non-zero exit, nothing on stdout, one line on stderr, no stack trace. */
export function oneLineError(r: CliResult): string {
  const lines = r.stderr.trim().split('\n');
  if (r.code === 0) throw new Error(`expected a non-zero exit, got 0; stderr: ${r.stderr}`);
  if (lines.length !== 1) throw new Error(`expected one line on stderr, got ${lines.length}:\n${r.stderr}`);
  if (/\n\s+at |Error: |node:internal/.test(r.stderr)) throw new Error(`stack trace on stderr:\n${r.stderr}`);
  if (r.stdout !== '') throw new Error(`expected nothing on stdout, got ${JSON.stringify(r.stdout)}`);
  return lines[0]!;
}

const children = new Set<ChildProcess>();

/**
 * Starts a long-running CLI command (serve) and resolves once it prints its listening URL on stderr
 * (or rejects with its output if it exits or times out first).
 */
export function startCli(args: string[], env: Record<string, string | undefined> = {}, timeoutMs = 60_000): Promise<{ child: ChildProcess; url: string; stderr: () => string }> {
  const child = spawn(process.execPath, [BIN, ...args], { cwd: ROOT, env: { ...process.env, HYPERBAGEL_PACK: undefined, ...env }, stdio: ['ignore', 'pipe', 'pipe'] });
  children.add(child);
  child.once('exit', () => children.delete(child));
  let err = '';
  let out = '';
  child.stdout!.on('data', (b: Buffer) => (out += b.toString()));
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`no listening URL within ${timeoutMs} ms; stderr: ${err}`)), timeoutMs);
    child.stderr!.on('data', (b: Buffer) => {
      err += b.toString();
      const m = /listening on (http:\/\/\S+)\/graphql/.exec(err);
      if (m) {
        clearTimeout(timer);
        resolve({ child, url: m[1]!, stderr: () => err });
      }
    });
    child.once('exit', (code) => {
      clearTimeout(timer);
      reject(new Error(`exited (${code}) before listening; stdout: ${out} stderr: ${err}`));
    });
  });
}

/** SIGTERM, then wait for the exit (SIGKILL after 10 s). Resolves to the exit code. */
export function stop(child: ChildProcess): Promise<number | null> {
  if (child.exitCode !== null || child.signalCode !== null) return Promise.resolve(child.exitCode);
  return new Promise((resolve) => {
    const kill = setTimeout(() => child.kill('SIGKILL'), 10_000);
    child.once('exit', (code) => {
      clearTimeout(kill);
      resolve(code);
    });
    child.kill('SIGTERM');
  });
}

/** Stops every child startCli started that is still running (for afterAll). */
export async function stopAll(): Promise<void> {
  await Promise.all([...children].map(stop));
}
