// Shared by the default-pack tests: which pack they run on, and small stream helpers.
import fs from 'node:fs';
import path from 'node:path';
import { DEFAULT_PACK } from '../../src/engine/pack-location.ts';
import type { UnderstandEvent } from '../../src/engine/types.ts';

// HYPERBAGEL_TEST_PACK lets a candidate release run these tests before it replaces the default.
export const PACK = process.env['HYPERBAGEL_TEST_PACK'] ?? DEFAULT_PACK;
export const present = fs.existsSync(path.join(PACK, 'manifest.json'));

export async function collect<T>(it: AsyncIterable<T>): Promise<T[]> {
  const out: T[] = [];
  for await (const x of it) out.push(x);
  return out;
}

/** every committed token id of an understand stream, in order */
export const ids = (evs: UnderstandEvent[]) => evs.flatMap((e) => (e.kind === 'chunk' ? e.tokenIds : (e.trailing?.tokenIds ?? [])));
