// Shared body of `hyperbagel generate` and `hyperbagel edit`.
import fs from 'node:fs';
import path from 'node:path';
import { flag, parseArgs, threadsFlag, UsageError } from '../cli/args.ts';
import { createEngine } from './index.ts';
import { numberFlag, readImageFile, resolvePack } from './cli-support.ts';
import type { GenerateRequest, GenerationMode } from './types.ts';

export async function runGenerateCommand(argv: string[], edit: boolean, help: string): Promise<number> {
  const args = parseArgs(argv, {
    values: ['out', 'mode', 'seed', 'steps', 'cfg-text', 'cfg-image', 'shift', 'previews', 'image', 'pack', 'threads', 'think-temperature'],
    booleans: ['quiet', 'think'],
  });
  if (args.flags.has('help')) {
    console.log(help);
    return 0;
  }
  const prompt = args.positionals.join(' ');
  if (!prompt.trim()) throw new UsageError(edit ? 'an instruction is required' : 'a prompt is required');
  const out = flag(args, 'out');
  if (!out) throw new UsageError('--out FILE.png is required');
  const mode = (flag(args, 'mode') ?? 'progressive') as GenerationMode;
  if (!['progressive', '6nfe', '1nfe', 'baseline'].includes(mode)) throw new UsageError('--mode must be progressive, 6nfe, 1nfe or baseline');
  const image = flag(args, 'image');
  if (edit && !image) throw new UsageError('--image FILE is required');
  const think = args.flags.has('think');
  if (think && edit) throw new UsageError('--think applies to text-to-image only');
  const thinkTemperature = numberFlag(flag(args, 'think-temperature'), 'think-temperature');
  if (thinkTemperature !== undefined && !think) throw new UsageError('--think-temperature needs --think');
  const previews = flag(args, 'previews');
  const threads = threadsFlag(args);
  // read the image before loading the model, so a missing or unreadable file fails at once
  const sourceImage = image ? await readImageFile(image) : undefined;
  const engine = await createEngine(resolvePack(flag(args, 'pack')), { intraOpThreads: threads ?? 2, calibrate: false });
  try {
    const req: GenerateRequest = {
      prompt,
      mode,
      seed: numberFlag(flag(args, 'seed'), 'seed'),
      steps: numberFlag(flag(args, 'steps'), 'steps'),
      cfgTextScale: numberFlag(flag(args, 'cfg-text'), 'cfg-text'),
      cfgImageScale: numberFlag(flag(args, 'cfg-image'), 'cfg-image'),
      timestepShift: numberFlag(flag(args, 'shift'), 'shift'),
      intermediatePreviews: !!previews,
      ...(think ? { think, ...(thinkTemperature !== undefined ? { thinkTemperature } : {}) } : {}),
    };
    if (sourceImage) req.sourceImage = sourceImage;
    if (previews) fs.mkdirSync(previews, { recursive: true });
    let n = 0;
    let thought: string | undefined;
    for await (const f of engine.generate(req)) {
      const ext = f.image.mimeType.split('/')[1]!.replace('jpeg', 'jpg');
      if (f.stage === 'final') fs.writeFileSync(out, f.image.bytes);
      else if (previews) fs.writeFileSync(path.join(previews, `preview-${String(n).padStart(2, '0')}-nfe${f.nfe}.${ext}`), f.image.bytes);
      n++;
      if (f.thought !== undefined && thought === undefined && !args.flags.has('quiet')) process.stderr.write(JSON.stringify({ thought: (thought = f.thought) }) + '\n');
      if (!args.flags.has('quiet'))
        process.stderr.write(
            JSON.stringify({ stage: f.stage, nfe: f.nfe, step: f.step, elapsedMs: +f.elapsedMs.toFixed(2), seed: f.seed, sampler: f.sampler, sha256: f.image.sha256, ...(f.sourceImage ? { sourceImage: f.sourceImage } : {}) }) + '\n',
          );
    }
    console.log(out);
    return 0;
  } finally {
    await engine.close();
  }
}
