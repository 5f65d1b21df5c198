// `hyperbagel render`: caption (or a seeded random scene) → 64×64 PNG.
import { parseArgs, flag, intFlag, UsageError } from '../args.ts';
import { writePng } from '../image-file.ts';
import { checkOutputFile } from '../output-path.ts';
import { parseCaption, renderScene, sceneFor, sceneToCaption, SPLITS, type Split } from '../../world/index.ts';

export const HELP = `Usage: hyperbagel render (--caption "TEXT" | --seed N [--split SPLIT]) --out FILE.png

Renders a Shapes-world scene to a 64×64 PNG.
  --caption TEXT   canonical caption, e.g. "a large red circle at the top left on a white background"
  --seed N         render random scene number N of --split instead (default split: test);
                   not together with --caption
  --split SPLIT    ${SPLITS.join('|')} (with --seed)
  --out FILE       output PNG path (required; nothing is written on error)
Prints the canonical caption of what was rendered.`;

export async function run(argv: string[]): Promise<number> {
  const args = parseArgs(argv, { values: ['caption', 'seed', 'split', 'out'] });
  if (args.flags.has('help')) { console.log(HELP); return 0; }
  const out = flag(args, 'out');
  if (!out) throw new UsageError('--out FILE is required');
  // it writes PNG bytes: a file named otherwise would lie about its format (generate re-encodes, render does not)
  if (!/\.png$/i.test(out)) throw new UsageError(`--out ${out}: render writes PNG; name the file .png`);
  if (flag(args, 'caption') !== undefined && args.positionals.length) throw new UsageError(`unexpected argument "${args.positionals[0]}" (the caption is given with --caption)`);
  const caption = flag(args, 'caption') ?? (args.positionals.length ? args.positionals.join(' ') : undefined);
  if (caption !== undefined && flag(args, 'seed') !== undefined) throw new UsageError('give --caption "TEXT" or --seed N, not both');
  if (caption !== undefined && flag(args, 'split') !== undefined) throw new UsageError('--split applies with --seed only');
  let scene;
  if (caption !== undefined) {
    scene = parseCaption(caption);
  } else if (flag(args, 'seed') !== undefined) {
    const split = (flag(args, 'split') ?? 'test') as Split;
    if (!SPLITS.includes(split)) throw new UsageError(`--split must be one of ${SPLITS.join(', ')}`);
    scene = sceneFor(split, intFlag(args, 'seed', 0, 0));
  } else {
    throw new UsageError('give --caption "TEXT" or --seed N');
  }
  checkOutputFile(out, 'out');
  await writePng(out, renderScene(scene));
  console.log(sceneToCaption(scene));
  return 0;
}
