// Where the model pack comes from: --pack, else $HYPERBAGEL_PACK, else the embedded default (found from the
// repository, not the current directory). Shared by every command, the benchmarks and the evaluator.
import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { EngineError } from './types.ts';

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
