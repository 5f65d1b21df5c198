// `hyperbagel understand`: image + prompt → answer streamed to stdout (stats to stderr).
import { flag, parseArgs, threadsFlag, UsageError } from '../args.ts';
import { createEngine } from '../../engine/index.ts';
import { numberFlag, readImageFile, resolvePack } from '../../engine/cli-support.ts';
import type { SpeculationMode, UnderstandRequest } from '../../engine/types.ts';

export const HELP = `Usage: hyperbagel understand [--image FILE] [options] "prompt"

Answers a question about an image (or about nothing); streams only the answer text to stdout and
prints a JSON summary (usage, timings, speculation statistics) to stderr.
  --image FILE          PNG/JPEG/WebP of any size up to 4096×4096 pixels; centre-cropped to a square
                        and resized to the model's image size (64×64), reported as inputImage
  --speculation MODE    auto|off|chain|tree|ngram (default auto)
  --chain-length K      drafted tokens per step in chain/ngram mode (default: sized from the hardware)
  --tree-budget N       drafted nodes per step in tree mode (default: sized from the hardware)
  --temperature T       0 = greedy (default 0)
  --top-p P, --top-k K  nucleus / top-k truncation
  --seed N              makes sampling reproducible
  --max-tokens N        answer length limit (default 64)
  --stop TEXT           stop string (repeatable)
  --pack DIR            model pack (default models/shapes-mot, or $HYPERBAGEL_PACK)
  --threads N           onnxruntime intra-op threads (a positive integer, 1 to 256; default 2)
  --quiet               no summary on stderr`;

export async function run(argv: string[]): Promise<number> {
  const args = parseArgs(argv, {
    values: ['image', 'speculation', 'chain-length', 'tree-budget', 'temperature', 'top-p', 'top-k', 'seed', 'max-tokens', 'stop', 'pack', 'threads'],
    booleans: ['quiet'],
  });
  if (args.flags.has('help')) {
    console.log(HELP);
    return 0;
  }
  const prompt = args.positionals.join(' ');
  if (!prompt.trim()) throw new UsageError('a prompt is required');
  const mode = (flag(args, 'speculation') ?? 'auto') as SpeculationMode;
  if (!['auto', 'off', 'chain', 'tree', 'ngram'].includes(mode)) throw new UsageError('--speculation must be auto, off, chain, tree or ngram');
  const threads = threadsFlag(args);
  // read the image before loading the model, so a missing or unreadable file fails at once
  const imageFile = flag(args, 'image');
  const image = imageFile ? await readImageFile(imageFile) : undefined;
  const engine = await createEngine(resolvePack(flag(args, 'pack')), { intraOpThreads: threads ?? 2, calibrate: mode === 'auto' || mode === 'tree' || mode === 'chain' || mode === 'ngram' });
  try {
    const req: UnderstandRequest = {
      prompt,
      temperature: numberFlag(flag(args, 'temperature'), 'temperature'),
      topP: numberFlag(flag(args, 'top-p'), 'top-p'),
      topK: numberFlag(flag(args, 'top-k'), 'top-k'),
      seed: numberFlag(flag(args, 'seed'), 'seed'),
      maxTokens: numberFlag(flag(args, 'max-tokens'), 'max-tokens'),
      stop: args.flags.get('stop'),
      speculation: { mode, chainLength: numberFlag(flag(args, 'chain-length'), 'chain-length'), treeBudget: numberFlag(flag(args, 'tree-budget'), 'tree-budget') },
    };
    if (image) req.image = image;
    const ac = new AbortController();
    const onSig = () => ac.abort();
    process.once('SIGINT', onSig);
    try {
      for await (const ev of engine.understand(req, ac.signal)) {
        if (ev.kind === 'chunk') process.stdout.write(ev.text);
        else {
          process.stdout.write('\n');
          if (!args.flags.has('quiet')) process.stderr.write(JSON.stringify({ finishReason: ev.finishReason, usage: ev.usage, timings: ev.timings, speculation: ev.speculation, seed: ev.seed, ...(ev.inputImage ? { inputImage: ev.inputImage } : {}) }) + '\n');
          return ev.finishReason === 'cancelled' ? 130 : 0; // Ctrl-C: the shell's SIGINT convention
        }
      }
    } finally {
      process.off('SIGINT', onSig);
    }
    return 0;
  } finally {
    await engine.close();
  }
}
