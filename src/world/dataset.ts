// Dataset export for the Python recipes: images.npy / edited.npy (uint8 [N,64,64,3]), records.jsonl, meta.json.
import { closeSync, existsSync, mkdirSync, openSync, readFileSync, renameSync, rmSync, statSync, writeFileSync, writeSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { Rng } from './rng.ts';
import { sampleScene } from './sampler.ts';
import { sceneToCaption } from './caption.ts';
import { paraphrases } from './prompts.ts';
import { questionsForScene, type QA } from './questions.ts';
import { applyEdit, EDIT_KINDS, editInstruction, randomEdit, type EditKind } from './edits.ts';
import { hasHeldoutCombination, type Split } from './splits.ts';
import { renderScene, IMAGE_SIZE } from './render.ts';
import { encodeNpyHeader } from './npy.ts';
import type { Scene } from './scene.ts';
import { VOCABULARY } from './vocabulary.ts';

export interface DatasetRecord {
  index: number;
  scene: Scene;
  caption: string;
  prompts: string[];
  qa: QA[];
  edit: { kind: EditKind; instruction: string; scene: Scene; caption: string };
}

export interface DatasetOptions {
  split: Split;
  count: number;
  minObjects?: number;
  maxObjects?: number;
  /** first index; lets a second export continue a split without repeating scenes */
  offset?: number;
}

/** Sample number `index` of a split: scene, language and one edit, all from its own seed. */
export function datasetRecord(split: Split, index: number, opts: Pick<DatasetOptions, 'minObjects' | 'maxObjects'> = {}): DatasetRecord {
  const rng = new Rng(`dataset:${split}:${index}`);
  for (;;) {
    const scene = sampleScene(rng, { split, minObjects: opts.minObjects, maxObjects: opts.maxObjects });
    for (const kind of rng.shuffle(EDIT_KINDS)) {
      const edit = randomEdit(scene, kind, rng);
      if (!edit) continue;
      const edited = applyEdit(scene, edit);
      // Training data must never show a held-out combination, not even as an edit's result.
      if (split !== 'heldout' && hasHeldoutCombination(edited)) continue;
      return {
        index,
        scene,
        caption: sceneToCaption(scene),
        prompts: paraphrases(scene, rng),
        qa: questionsForScene(scene, rng),
        edit: { kind, instruction: editInstruction(edit), scene: edited, caption: sceneToCaption(edited) },
      };
    }
  }
}

/**
 * mkdir -p, one level at a time: Node's mkdirSync(…, { recursive: true }) never returns for some
 * paths on virtual file systems (e.g. /proc/x), where this fails with the error of the first mkdir.
 */
function makeDirs(dir: string): void {
  const missing: string[] = [];
  for (let p = resolve(dir); ; ) {
    let isDir: boolean | undefined;
    try {
      isDir = statSync(p).isDirectory();
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code !== 'ENOENT') throw e;
    }
    if (isDir === false) throw Object.assign(new Error(`ENOTDIR: not a directory, mkdir '${p}'`), { code: 'ENOTDIR', errno: -20, syscall: 'mkdir', path: p });
    if (isDir) break;
    missing.push(p);
    if (dirname(p) === p) break;
    p = dirname(p);
  }
  for (const d of missing.reverse()) mkdirSync(d);
}

/** Writes all of `data`: writeSync may write less than it was given (then returns how much). */
function writeAll(fd: number, data: Uint8Array, path: string): void {
  for (let off = 0; off < data.length; ) {
    const n = writeSync(fd, data, off);
    if (n <= 0) throw Object.assign(new Error(`EIO: nothing written, write '${path}'`), { code: 'EIO', syscall: 'write', path });
    off += n;
  }
}

/**
 * rmSync and friends throw a SystemError (code ERR_FS_EISDIR, the errno one in `info`) that the CLI would
 * not know for a file system error: it becomes the plain errno error (EISDIR, syscall, path) Node's others are.
 */
function errnoError(e: unknown): unknown {
  const sys = e as { code?: unknown; info?: { code?: unknown; message?: string; syscall?: string; path?: string; errno?: number } };
  if (!(e instanceof Error) || typeof sys.code !== 'string' || !sys.code.startsWith('ERR_FS_') || typeof sys.info?.code !== 'string') return e;
  const { code, message = e.message, syscall, path, errno } = sys.info;
  return Object.assign(new Error(`${code}: ${message}${syscall ? `, ${syscall}` : ''}${path ? ` '${path}'` : ''}`), { code, syscall, path, errno: errno && -Math.abs(errno) });
}

/**
 * Writes synchronously: a shard export is a batch job with nothing else on the event loop. The files are
 * written beside the old ones (`*.partial`, so a run needs room for both) and renamed into place at the end,
 * meta.json last: a run that is stopped leaves the previous export as it was, and never a meta.json
 * describing files it did not finish. A run that fails, writing or renaming, removes its partial files (a
 * killed one cannot).
 */
export function writeDataset(dir: string, opts: DatasetOptions, onProgress?: (done: number) => void): void {
  makeDirs(dir);
  const shape = [opts.count, IMAGE_SIZE, IMAGE_SIZE, 3];
  const names = ['images.npy', 'edited.npy', 'records.jsonl'] as const;
  const partial = (f: string) => join(dir, `${f}.partial`);
  let done = false;
  try {
    const fds: number[] = [];
    try {
      for (const f of names) fds.push(openSync(partial(f), 'w'));
      const [images, edited, records] = fds as [number, number, number];
      writeAll(images, encodeNpyHeader(shape), partial('images.npy'));
      writeAll(edited, encodeNpyHeader(shape), partial('edited.npy'));
      const offset = opts.offset ?? 0;
      for (let i = 0; i < opts.count; i++) {
        const rec = datasetRecord(opts.split, offset + i, opts);
        writeAll(images, renderScene(rec.scene).data, partial('images.npy'));
        writeAll(edited, renderScene(rec.edit.scene).data, partial('edited.npy'));
        writeAll(records, Buffer.from(JSON.stringify(rec) + '\n'), partial('records.jsonl'));
        if (onProgress && (i + 1) % 1000 === 0) onProgress(i + 1);
      }
    } finally {
      for (const fd of fds) closeSync(fd);
    }
    // between these steps the folder has no meta.json: a stop there reads as a cut-off export, never a whole one
    rmSync(join(dir, 'meta.json'), { force: true });
    for (const f of names) renameSync(partial(f), join(dir, f));
    const meta = { split: opts.split, count: opts.count, offset: opts.offset ?? 0, min_objects: opts.minObjects ?? 1, max_objects: opts.maxObjects ?? 4, image_shape: [IMAGE_SIZE, IMAGE_SIZE, 3], vocabulary: VOCABULARY };
    writeFileSync(partial('meta.json'), JSON.stringify(meta, null, 2) + '\n');
    renameSync(partial('meta.json'), join(dir, 'meta.json'));
    done = true;
  } catch (e) {
    throw errnoError(e);
  } finally {
    // a failed run leaves no partial files (a full disk stays no fuller than before it); removing them must not
    // hide the error that stopped it
    if (!done)
      for (const f of [...names, 'meta.json'])
        try {
          rmSync(partial(f), { force: true });
        } catch {
          /* a partial that is not a file (a folder of that name) is not this run's */
        }
  }
}

/**
 * The export DIR already holds, if it holds one that `opts` would not write again byte for byte
 * (another split, range or object count), or files that look like an export it cannot read (a cut-off
 * run, a meta.json of unknown shape): a description of it. Exports are deterministic, so writing the
 * same one again is harmless; replacing anything else may lose it.
 */
export function differentExportIn(dir: string, opts: DatasetOptions): string | undefined {
  let text: string;
  try {
    text = readFileSync(join(dir, 'meta.json'), 'utf8');
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code;
    if (code !== 'ENOENT') return `a meta.json that cannot be read (${code ?? (e as Error).message})`;
    const files = ['images.npy', 'edited.npy', 'records.jsonl'].filter((f) => existsSync(join(dir, f)));
    return files.length ? `${files.join(', ')} without a meta.json (an export cut off?)` : undefined;
  }
  let meta: unknown;
  try {
    meta = JSON.parse(text);
  } catch {
    return 'an export whose meta.json is not valid JSON (cut off?)';
  }
  const m = meta as { split?: unknown; count?: unknown; offset?: unknown; min_objects?: unknown; max_objects?: unknown } | null;
  if (!m || typeof m !== 'object' || Array.isArray(m) || typeof m.split !== 'string' || typeof m.count !== 'number')
    return 'a meta.json that is not an export\'s (no split and count)';
  const from = typeof m.offset === 'number' ? m.offset : 0;
  // exports before the object counts were recorded: their counts are unknown, so not the same
  const objects = typeof m.min_objects === 'number' && typeof m.max_objects === 'number' ? `${m.min_objects}–${m.max_objects} objects per scene` : 'object counts not recorded';
  const same =
    m.split === opts.split &&
    m.count === opts.count &&
    from === (opts.offset ?? 0) &&
    m.min_objects === (opts.minObjects ?? 1) &&
    m.max_objects === (opts.maxObjects ?? 4);
  return same ? undefined : `${m.split} samples ${from}–${from + m.count - 1}, ${objects}`;
}
