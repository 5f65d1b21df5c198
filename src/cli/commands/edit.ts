// `hyperbagel edit`: source image + instruction → edited image.
import { precheckGenerateCommand, runGenerateCommand } from '../generate-command.ts';

export const HELP = `Usage: hyperbagel edit --image FILE "instruction" --out FILE.png [options]

Edits an image (PNG/JPEG/WebP, at least 8×8 and at most 25,000,000 pixels, e.g. 5000×5000:
centre-cropped to a square and resized to the model's 64×64, reported as sourceImage on stderr)
following the instruction; writes the final frame as PNG (JPEG / WebP for an --out ending in .jpg
or .webp).
Options as for \`hyperbagel generate\` (--mode progressive|6nfe|1nfe|baseline, --seed, --steps,
--cfg-text, --cfg-image, --shift, --previews DIR, --pack DIR, --threads N, --quiet).
  --cfg-image S      image guidance scale, every mode: baseline [1, 20] (1 = off), default 1.5; the distilled
                     samplers within their training range (default pack [1, 2.5], default 1.5)`;

export function run(argv: string[]): Promise<number> {
  return runGenerateCommand(argv, true, HELP);
}

/** The checks run() makes before loading anything (main runs them first for an over-long command line). */
export function precheck(argv: string[]): void {
  precheckGenerateCommand(argv, true);
}
