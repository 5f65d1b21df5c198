// Shared body of `hyperbagel generate` and `hyperbagel edit`.
import fs from 'node:fs';
import path from 'node:path';
import { encodeImage } from '../engine/image/codec.ts';
import { readImageFile } from '../engine/image/file.ts';
import { createEngine } from '../engine/index.ts';
import { resolvePack } from '../engine/pack-location.ts';
import type { GenerateRequest, GenerationMode } from '../engine/types.ts';
import { flag, parseArgs, threadsFlag, UsageError } from './args.ts';
import { numberFlag, withFlagNames } from './flag-values.ts';
import { checkPromptLength } from './input-limits.ts';
import { checkOutputDir, checkOutputFile } from './output-path.ts';

/** The request fields the engine names in its range errors, and the flags that set them. */
const FLAGS = { seed: 'seed', steps: 'steps', cfgTextScale: 'cfg-text', cfgImageScale: 'cfg-image', timestepShift: 'shift', thinkTemperature: 'think-temperature' };

const VALUES = ['out', 'mode', 'seed', 'steps', 'cfg-text', 'cfg-image', 'shift', 'previews', 'image', 'pack', 'threads', 'think-temperature'];

/** Everything generate / edit need from their arguments, checked without loading or writing anything. */
function parse(argv: string[], edit: boolean) {
  const args = parseArgs(argv, { values: VALUES, booleans: ['quiet', 'think'] });
  if (args.flags.has('help')) return { args, help: true as const };
  const prompt = args.positionals.join(' ');
  if (!prompt.trim()) throw new UsageError(edit ? 'an instruction is required' : 'a prompt is required');
  const out = flag(args, 'out');
  if (!out) throw new UsageError('--out FILE.png is required');
  const outFormat = outputFormat(out);
  const mode = (flag(args, 'mode') ?? 'progressive') as GenerationMode;
  if (!['progressive', '6nfe', '1nfe', 'baseline'].includes(mode)) throw new UsageError('--mode must be progressive, 6nfe, 1nfe or baseline');
  const image = flag(args, 'image');
  if (edit && !image) throw new UsageError('--image FILE is required');
  if (!edit && image !== undefined) throw new UsageError('--image applies to editing; to edit an image, run hyperbagel edit --image FILE "instruction" --out FILE.png');
  // flags that would be silently ignored are refused, as the GraphQL API refuses them
  if (mode !== 'baseline' && args.flags.has('steps')) throw new UsageError(`--steps applies to --mode baseline only (the ${mode} sampler has a fixed number of steps)`);
  if (!edit && args.flags.has('cfg-image')) throw new UsageError('--cfg-image applies to editing only (text-to-image has no image guidance)');
  const think = args.flags.has('think');
  if (think && edit) throw new UsageError('--think applies to text-to-image only');
  const thinkTemperature = numberFlag(flag(args, 'think-temperature'), 'think-temperature');
  if (thinkTemperature !== undefined && !think) throw new UsageError('--think-temperature needs --think');
  const previews = flag(args, 'previews');
  // one step has no intermediate frames, and no preview comes before it
  if (previews !== undefined && mode === '1nfe') throw new UsageError('--previews needs previews to write: --mode progressive or 6nfe (or baseline); --mode 1nfe draws only its final');
  const threads = threadsFlag(args);
  checkPromptLength(prompt, edit ? 'instruction' : 'prompt');
  // numbers are checked before the model loads; their ranges (some from the pack) by the engine
  const req: GenerateRequest = {
    prompt,
    mode,
    seed: numberFlag(flag(args, 'seed'), 'seed', { integer: true, min: 0 }),
    steps: numberFlag(flag(args, 'steps'), 'steps', { integer: true }),
    cfgTextScale: numberFlag(flag(args, 'cfg-text'), 'cfg-text'),
    cfgImageScale: numberFlag(flag(args, 'cfg-image'), 'cfg-image'),
    timestepShift: numberFlag(flag(args, 'shift'), 'shift'),
    intermediatePreviews: !!previews,
    ...(think ? { think, ...(thinkTemperature !== undefined ? { thinkTemperature } : {}) } : {}),
  };
  return { args, help: false as const, req, out, outFormat, image, previews, threads };
}

/** The final's format, from --out's extension: PNG as the engine encodes it, or JPEG / WebP re-encoded. */
function outputFormat(out: string): 'png' | 'jpeg' | 'webp' {
  const ext = path.extname(out).toLowerCase();
  if (ext === '' || ext === '.png') return 'png';
  if (ext === '.jpg' || ext === '.jpeg') return 'jpeg';
  if (ext === '.webp') return 'webp';
  throw new UsageError(`--out ${out}: ${ext} is not a format this writes; name the file .png, .jpg or .webp`);
}

/** The checks runGenerateCommand makes before loading anything (main runs them first for an over-long command line). */
export function precheckGenerateCommand(argv: string[], edit: boolean): void {
  parse(argv, edit);
}

export async function runGenerateCommand(argv: string[], edit: boolean, help: string): Promise<number> {
  const parsed = parse(argv, edit);
  const { args } = parsed;
  if (parsed.help) {
    console.log(help);
    return 0;
  }
  const { req, out, outFormat, image, previews, threads } = parsed;
  // output paths, then the image, before loading the model: a typo fails at once, not after the work
  checkOutputFile(out, 'out');
  if (previews) checkOutputDir(previews, 'previews');
  const sourceImage = image ? await readImageFile(image) : undefined;
  const engine = await createEngine(resolvePack(flag(args, 'pack')), { intraOpThreads: threads ?? 2, calibrate: false });
  try {
    if (sourceImage) req.sourceImage = sourceImage;
    if (previews) fs.mkdirSync(previews, { recursive: true });
    let n = 0;
    let thought: string | undefined;
    try {
      for await (const f of engine.generate(req)) {
        const ext = f.image.mimeType.split('/')[1]!.replace('jpeg', 'jpg');
        // the final as --out names it (the engine's PNG, or its pixels encoded again); the sha256
        // reported is of the bytes written
        const written = f.stage === 'final' && outFormat !== 'png' ? await encodeImage(f.rgb, outFormat, 95) : f.image;
        if (f.stage === 'final') fs.writeFileSync(out, written.bytes);
        else if (previews) fs.writeFileSync(path.join(previews, `preview-${String(n).padStart(2, '0')}-nfe${f.nfe}.${ext}`), f.image.bytes);
        n++;
        if (f.thought !== undefined && thought === undefined && !args.flags.has('quiet')) process.stderr.write(JSON.stringify({ thought: (thought = f.thought) }) + '\n');
        if (!args.flags.has('quiet'))
          process.stderr.write(
              JSON.stringify({ stage: f.stage, nfe: f.nfe, step: f.step, elapsedMs: +f.elapsedMs.toFixed(2), seed: f.seed, sampler: f.sampler, sha256: written.sha256, ...(f.sourceImage ? { sourceImage: f.sourceImage } : {}) }) + '\n',
            );
      }
    } catch (e) {
      throw withFlagNames(e, FLAGS);
    }
    console.log(out);
    return 0;
  } finally {
    await engine.close();
  }
}
