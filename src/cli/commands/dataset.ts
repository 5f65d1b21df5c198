// `hyperbagel dataset`: export shards for the Python training recipes.
import { parseArgs, flag, intFlag, UsageError } from '../args.ts';
import { checkOutputDir } from '../output-path.ts';
import { differentExportIn, SPLITS, writeDataset, type Split } from '../../world/index.ts';

export const HELP = `Usage: hyperbagel dataset --split ${SPLITS.join('|')} --count N --out DIR [--offset K] [--min-objects A] [--max-objects B]

Writes DIR/images.npy and DIR/edited.npy (uint8 [N,64,64,3]), DIR/records.jsonl (index, scene,
caption, prompts, qa: questions with answers, edit per sample) and DIR/meta.json (split, count, offset, min/max objects, vocabulary).
  --offset K        start at sample K of the split (the next shard of an export, into another DIR)
  --force           replace a different export already in DIR (the same one is simply written again)
  --min-objects A   fewest objects per scene (default 1)
  --max-objects B   most objects per scene (default 4), e.g. 1 for a curriculum's first stage
Train, val and test never contain the held-out combinations (docs/world.md); heldout always does.`;

export async function run(argv: string[]): Promise<number> {
  const args = parseArgs(argv, { values: ['split', 'count', 'out', 'offset', 'min-objects', 'max-objects'], booleans: ['force'] });
  if (args.flags.has('help')) { console.log(HELP); return 0; }
  if (args.positionals.length) throw new UsageError(`unexpected argument "${args.positionals[0]}"`);
  const split = flag(args, 'split') as Split | undefined;
  if (!split || !SPLITS.includes(split)) throw new UsageError(`--split must be one of ${SPLITS.join(', ')}`);
  const out = flag(args, 'out');
  if (!out) throw new UsageError('--out DIR is required');
  const count = intFlag(args, 'count', -1, 1, 10_000_000);
  if (count < 0) throw new UsageError('--count N is required');
  const minObjects = intFlag(args, 'min-objects', 1, 1, 4);
  const maxObjects = intFlag(args, 'max-objects', 4, 1, 4);
  if (minObjects > maxObjects) throw new UsageError('--min-objects must not exceed --max-objects');
  const offset = intFlag(args, 'offset', 0, 0);
  if (offset + count > Number.MAX_SAFE_INTEGER) throw new UsageError(`--offset + --count must be at most ${Number.MAX_SAFE_INTEGER}`);
  checkOutputDir(out, 'out');
  const held = differentExportIn(out, { split, count, offset, minObjects, maxObjects });
  if (held && !args.flags.has('force')) throw new UsageError(`--out ${out} already holds another export (${held}); give another DIR (each export is one shard), or --force to replace it`);
  const t0 = Date.now();
  // a progress line redrawn in place on a terminal; in a log, only the result
  const tty = process.stderr.isTTY;
  writeDataset(out, { split, count, offset, minObjects, maxObjects }, tty ? (n) => process.stderr.write(`\r${n}/${count}`) : undefined);
  process.stderr.write(`${tty ? '\r' : ''}wrote ${count} ${split} samples to ${out} in ${((Date.now() - t0) / 1000).toFixed(1)} s\n`);
  return 0;
}
