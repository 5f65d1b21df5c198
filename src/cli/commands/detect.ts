// `hyperbagel detect`: image → recovered scene and its canonical caption, by the analytic detector.
import { parseArgs, UsageError } from '../args.ts';
import { readRgbFile } from '../image-file.ts';
import { WorldError } from '../../world/errors.ts';
import { sceneToCaption } from '../../world/caption.ts';
import { detectScene } from '../../eval/detector.ts';

export const HELP = `Usage: hyperbagel detect IMAGE.png

Recovers the Shapes-world scene in a 64×64 image (PNG, JPEG, WebP or another format sharp reads)
with the evaluator's analytic detector (colour model + template fit, no learned weights) and prints one JSON object:
  {"scene": {"background": …, "objects": [{"shape", "color", "size", "cell"}, …]}, "caption": "…"}
32×32 images (a generator's native size) are accepted too and upscaled to 64×64.
An unreadable, corrupt or other-size image is an error (exit 1); an image with no object found is
an error too (exit 1), since no caption describes it.`;

export const ACCEPTED_SIZES = [64, 32];

export async function run(argv: string[]): Promise<number> {
  const args = parseArgs(argv, { values: [] });
  if (args.flags.has('help')) { console.log(HELP); return 0; }
  if (args.positionals.length !== 1) throw new UsageError(args.positionals.length ? 'give exactly one image file' : 'an image file is required');
  const path = args.positionals[0]!;
  const img = await readRgbFile(path);
  if (img.width !== img.height || !ACCEPTED_SIZES.includes(img.width)) {
    throw new WorldError('BAD_IMAGE', `"${path}" is ${img.width}×${img.height}, expected 64×64 (or 32×32)`);
  }
  const scene = detectScene(img);
  if (scene.objects.length === 0) throw new WorldError('BAD_IMAGE', `no object found in "${path}" (a ${scene.background} background only)`);
  console.log(JSON.stringify({ scene, caption: sceneToCaption(scene) }));
  return 0;
}
