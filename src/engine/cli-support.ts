// Helpers shared by the engine's CLI subcommands and benchmarks (pack resolution, image files).
import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { decodeImageBytes } from './image/codec.ts';
import { EngineError, type RgbImage } from './types.ts';

export const REPO_ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../..');
export const DEFAULT_PACK = path.join(REPO_ROOT, 'models', 'shapes-mot');
export const FIXTURE_PACK = path.join(REPO_ROOT, 'test', 'fixtures', 'tiny-pack');

/** --pack, else $HYPERBAGEL_PACK, else the embedded default pack. */
export function resolvePack(flagValue: string | undefined): string {
  const p = flagValue ?? process.env['HYPERBAGEL_PACK'] ?? DEFAULT_PACK;
  if (!fs.existsSync(path.join(p, 'manifest.json')))
    throw new EngineError(
      'MODEL_LOAD_FAILED',
      `${path.join(p, 'manifest.json')}: no model pack here${p === DEFAULT_PACK ? ' (the default pack is not built yet; try --pack test/fixtures/tiny-pack)' : ''}`,
      { file: path.join(p, 'manifest.json') },
    );
  return p;
}

/** Reads an image file of any reasonable size (the engine centre-crops and resizes it to the model's). */
export async function readImageFile(file: string): Promise<RgbImage> {
  let bytes: Buffer;
  try {
    bytes = fs.readFileSync(file);
  } catch (e) {
    throw new EngineError('BAD_IMAGE', `cannot read image file "${file}": ${(e as NodeJS.ErrnoException).code ?? (e as Error).message}`);
  }
  try {
    return await decodeImageBytes(new Uint8Array(bytes.buffer, bytes.byteOffset, bytes.length));
  } catch (e) {
    if (e instanceof EngineError) throw new EngineError(e.code, `${file}: ${e.message}`, e.details);
    throw e;
  }
}

export function numberFlag(raw: string | undefined, name: string): number | undefined {
  if (raw === undefined) return undefined;
  const n = Number(raw);
  if (!Number.isFinite(n)) throw new EngineError('OUT_OF_RANGE', `--${name} must be a number, got "${raw}"`, { param: name });
  return n;
}
