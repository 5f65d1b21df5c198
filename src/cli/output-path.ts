// Output paths (--out, --previews, --details): checked before any work starts, so a typo in a
// directory fails at once with one clear line instead of a stack trace after the model has run.
import { closeSync, openSync, statSync, unlinkSync, type Stats } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { CliError } from './args.ts';

const FS_CODES: Record<string, string> = {
  ENOENT: 'no such file or directory',
  EACCES: 'permission denied',
  EPERM: 'operation not permitted',
  EISDIR: 'is a directory',
  ENOTDIR: 'not a directory',
  EEXIST: 'already exists',
  EROFS: 'read-only file system',
  ENOSPC: 'no space left on the device',
  EDQUOT: 'disk quota exceeded',
  EMFILE: 'too many open files',
  ENAMETOOLONG: 'file name too long',
  ELOOP: 'too many symbolic links',
  EINVAL: 'invalid argument',
  EIO: 'input/output error',
  EBUSY: 'resource busy',
  EFBIG: 'file too large',
  EXDEV: 'cross-device link',
};

/** A Node filesystem error (err.code ENOENT, EACCES, EISDIR, …). */
export function isFsError(err: unknown): err is NodeJS.ErrnoException {
  const code = (err as NodeJS.ErrnoException | null)?.code;
  return err instanceof Error && typeof code === 'string' && code in FS_CODES;
}

/** One line: `cannot open "PATH": is a directory (EISDIR)`. */
export function describeFsError(err: NodeJS.ErrnoException): string {
  const what = err.syscall ? `cannot ${err.syscall}` : 'file system error on';
  const path = err.path ?? (err as { dest?: string }).dest;
  return `${what}${path ? ` "${path}"` : ''}: ${FS_CODES[err.code!] ?? err.code} (${err.code})`;
}

function statOrUndefined(path: string): Stats | undefined {
  try {
    return statSync(path);
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
    throw new CliError('OUTPUT_PATH', `cannot use "${path}": ${FS_CODES[(e as NodeJS.ErrnoException).code!] ?? (e as Error).message}`);
  }
}

/** Creates (and removes) a file in `dir`: proves files can be created there (permissions, read-only or virtual file systems). */
function probeWritable(dir: string, what: string): void {
  const probe = join(dir, `.hyperbagel-write-test-${process.pid}-${Date.now()}`);
  try {
    closeSync(openSync(probe, 'wx'));
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code ?? '';
    throw new CliError('OUTPUT_PATH', `${what}: cannot create files in the directory "${dir}": ${FS_CODES[code] ?? (e as Error).message}${code ? ` (${code})` : ''}`);
  }
  try {
    unlinkSync(probe);
  } catch {
    /* created but not removable: writing works, which is what was asked */
  }
}

/**
 * `--NAME FILE`: FILE is not a directory, its directory exists and files can be written there.
 * Nothing is left behind.
 */
export function checkOutputFile(file: string, name: string): void {
  const what = `--${name} ${file}`;
  const st = statOrUndefined(file);
  if (st?.isDirectory()) throw new CliError('OUTPUT_PATH', `${what}: is a directory; give a file name`);
  // "dir/": a directory's name whether or not it exists (resolve() would drop the slash)
  if (/[\\/]$/.test(file)) throw new CliError('OUTPUT_PATH', `${what}: ends with a slash, so it names a directory${st ? '' : ' (which does not exist)'}; give a file name`);
  const dir = dirname(resolve(file));
  const ds = statOrUndefined(dir);
  if (!ds) throw new CliError('OUTPUT_PATH', `${what}: the directory "${dir}" does not exist`);
  if (!ds.isDirectory()) throw new CliError('OUTPUT_PATH', `${what}: "${dir}" is not a directory`);
  probeWritable(dir, what);
}

/**
 * `--NAME DIR`: DIR is a directory, or can be created (its nearest existing ancestor is a
 * writable directory). Does not create it.
 */
export function checkOutputDir(dir: string, name: string): void {
  const what = `--${name} ${dir}`;
  let p = resolve(dir);
  let st = statOrUndefined(p);
  if (st && !st.isDirectory()) throw new CliError('OUTPUT_PATH', `${what}: exists and is not a directory`);
  while (!st) {
    const up = dirname(p);
    if (up === p) break;
    p = up;
    st = statOrUndefined(p);
  }
  if (!st || !st.isDirectory()) throw new CliError('OUTPUT_PATH', `${what}: "${p}" is not a directory`);
  probeWritable(p, what);
}
