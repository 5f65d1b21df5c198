// Helpers shared by the engine's CLI subcommands and benchmarks (pack resolution, image files).
import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { checkInputImage, decodeInputImage, sentSizeOf } from './image/codec.ts';
import { readImageFileBytes } from './image/file.ts';
import { EngineError, MIN_IMAGE_SIDE, type RgbImage } from './types.ts';

export const REPO_ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../..');
export const DEFAULT_PACK = path.join(REPO_ROOT, 'models', 'shapes-mot');
export const FIXTURE_PACK = path.join(REPO_ROOT, 'test', 'fixtures', 'tiny-pack');

/** Where a pack directory came from: --pack, $HYPERBAGEL_PACK, or the embedded default. */
export type PackSource = 'flag' | 'env' | 'default';

/**
 * The pack every command uses (understand, generate, edit, eval, serve, bench): --pack, else
 * $HYPERBAGEL_PACK, else the embedded default pack (found from the repository, not the current
 * directory). Does not check that it exists.
 */
export function packChoice(flagValue: string | undefined, env: NodeJS.ProcessEnv = process.env): { dir: string; source: PackSource } {
  if (flagValue !== undefined) return { dir: flagValue, source: 'flag' };
  const fromEnv = env['HYPERBAGEL_PACK'];
  if (fromEnv) return { dir: fromEnv, source: 'env' };
  return { dir: DEFAULT_PACK, source: 'default' };
}

/** How to name a pack's origin in an error. */
export function packOrigin(source: PackSource): string {
  return source === 'flag' ? '--pack' : source === 'env' ? '$HYPERBAGEL_PACK' : 'the default pack';
}

/** --pack, else $HYPERBAGEL_PACK, else the embedded default pack; MODEL_LOAD_FAILED when it has no manifest.json. */
export function resolvePack(flagValue: string | undefined, env: NodeJS.ProcessEnv = process.env): string {
  const { dir: p, source } = packChoice(flagValue, env);
  if (!fs.existsSync(path.join(p, 'manifest.json')))
    throw new EngineError(
      'MODEL_LOAD_FAILED',
      `${path.join(p, 'manifest.json')}: no model pack here (${packOrigin(source)})${source === 'default' ? ' (the default pack is not built yet; try --pack test/fixtures/tiny-pack)' : ''}`,
      { file: path.join(p, 'manifest.json') },
    );
  return p;
}

/**
 * Reads an image file of any reasonable size (the engine centre-crops and resizes it to the model's)
 * with the gateway's decode (decodeInputImage, shared with src/gateway/images.ts): its default pixel
 * limit, upright by the EXIF orientation, alpha flattened on white, and larger than MAX_DECODED_SIDE
 * a side centre-cropped and scaled down first; so the same file gives the same edit or answer here
 * as through the API.
 */
export async function readImageFile(file: string): Promise<RgbImage> {
  const bytes = readImageFileBytes(file);
  let img: RgbImage;
  try {
    img = await decodeInputImage(new Uint8Array(bytes.buffer, bytes.byteOffset, bytes.length));
  } catch (e) {
    if (e instanceof EngineError) throw new EngineError(e.code, `${file}: ${e.message}`, e.details);
    throw e;
  }
  // the smallest side as the file has it (a long thin image is decoded to its short side, squared)
  const sent = sentSizeOf(img) ?? img;
  if (sent.width < MIN_IMAGE_SIDE || sent.height < MIN_IMAGE_SIDE)
    throw new EngineError('BAD_IMAGE', `${file}: ${sent.width}×${sent.height} is too small (at least ${MIN_IMAGE_SIDE} pixels a side)`, {
      got: [sent.width, sent.height],
      minSide: MIN_IMAGE_SIDE,
    });
  // the engine checks this too, but names the request field; here the file is known
  checkInputImage(img, file);
  return img;
}

/** A decimal number: "1", "-0.5", ".5", "2e-3"; not "", "0x10", "Infinity" or " 1". */
const DECIMAL = /^[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?$/;

/**
 * A numeric flag, checked before any model loads: a finite decimal number; with `integer`, a safe
 * integer (|n| < 2^53) written without a fraction. Ranges that depend on the pack are the engine's.
 */
export function numberFlag(raw: string | undefined, name: string, opts: { integer?: boolean; min?: number } = {}): number | undefined {
  if (raw === undefined) return undefined;
  const shown = raw.length > 40 ? `${raw.slice(0, 40)}…` : raw;
  const n = DECIMAL.test(raw) ? Number(raw) : NaN;
  if (!Number.isFinite(n)) throw new EngineError('OUT_OF_RANGE', `--${name} must be a number, got "${shown}"`, { param: name });
  // integers in decimal digits, as every other integer flag reads them ("1.0" and "1e3" are refused there too)
  if (opts.integer && !/^[+-]?\d+$/.test(raw)) throw new EngineError('OUT_OF_RANGE', `--${name} must be an integer in decimal digits, got "${shown}"`, { param: name });
  if (opts.integer && !Number.isSafeInteger(n))
    throw new EngineError('OUT_OF_RANGE', `--${name} must be an integer of at most ${Number.MAX_SAFE_INTEGER}, got "${shown}"`, { param: name });
  if (opts.min !== undefined && n < opts.min) throw new EngineError('OUT_OF_RANGE', `--${name} must be at least ${opts.min}, got "${shown}"`, { param: name, min: opts.min });
  return n;
}

/**
 * The engine names a request's fields (topP, speculation.chainLength); a command line user gave
 * flags. An engine range error on a field a flag sets is reworded to name the flag.
 */
export function withFlagNames(e: unknown, flags: Readonly<Record<string, string>>): unknown {
  if (!(e instanceof EngineError) || e.code !== 'OUT_OF_RANGE') return e;
  const param = e.details?.['param'];
  const f = typeof param === 'string' ? flags[param] : undefined;
  if (!f || !e.message.startsWith(param as string)) return e;
  return new EngineError(e.code, `--${f}${e.message.slice((param as string).length)}`, { ...e.details, param: f });
}

