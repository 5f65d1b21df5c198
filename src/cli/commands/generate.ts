// `hyperbagel generate`: prompt → image.
import { MAX_PROMPT_CHARS } from '../input-limits.ts';
import { precheckGenerateCommand, runGenerateCommand } from '../generate-command.ts';

export const HELP = `Usage: hyperbagel generate "prompt" --out FILE.png [options]   (the prompt: at most ${MAX_PROMPT_CHARS} characters; the default model reads at most 128 words)

Generates a 64×64 image; writes the final frame as PNG (or JPEG / WebP when --out ends in .jpg or
.webp) and prints its path. One JSON line per
frame (stage, NFE count, elapsed ms, seed, sampler) goes to stderr. To edit an image instead:
\`hyperbagel edit --image FILE "instruction" --out FILE.png\`.
  --mode MODE        progressive|6nfe|1nfe|baseline (default progressive: 1-NFE preview, then 6 steps)
  --seed N           makes the image reproducible
  --steps N          baseline steps (default from the pack: 50; --mode baseline only)
  --cfg-text S       text guidance scale, every mode: baseline [1, 20] (1 = off), default 4; the distilled samplers
                     within their training range (default pack [1, 5]; 6-NFE default 4, 1-NFE 5);
                     --cfg-image, the image guidance scale, is for \`hyperbagel edit\`
  --shift S          timestep shift (default: the pack's, 3.0, for the baseline; the distilled
                     samplers' own grid, uniform for the default pack's 6-NFE; given, it applies to all)
  --think            the model first expands the prompt into a full scene description (printed as
                     {"thought": …} on stderr) and generates from it; --think-temperature T (default 0.5)
  --previews DIR     also write preview frames (JPEG) there, with the sampler's intermediate x0
                     previews (each 6-NFE step; each step with --mode baseline)
  --pack DIR         model pack (default models/shapes-mot, or $HYPERBAGEL_PACK)
  --threads N        onnxruntime intra-op threads (a positive integer, 1 to 256; default 2)
  --quiet            no per-frame lines on stderr`;

export function run(argv: string[]): Promise<number> {
  return runGenerateCommand(argv, false, HELP);
}

/** The checks run() makes before loading anything (main runs them first for an over-long command line). */
export function precheck(argv: string[]): void {
  precheckGenerateCommand(argv, false);
}
