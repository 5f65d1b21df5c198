// `hyperbagel understand`: image + prompt → answer streamed to stdout (stats to stderr).
import { flag, parseArgs, threadsFlag, UsageError } from '../args.ts';
import { createEngine } from '../../engine/index.ts';
import { readImageFile } from '../../engine/image/file.ts';
import { resolvePack } from '../../engine/pack-location.ts';
import { numberFlag, withFlagNames } from '../flag-values.ts';
import type { SpeculationMode, UnderstandRequest } from '../../engine/types.ts';
import { checkPromptLength, checkStops, MAX_PROMPT_CHARS, MAX_STOP_CHARS, MAX_STOP_SEQUENCES } from '../input-limits.ts';
import { SPECULATION_FIELDS_READ } from '../../engine/understand/pipeline.ts';

export const HELP = `Usage: hyperbagel understand [--image FILE] [options] "prompt"   (the prompt: at most ${MAX_PROMPT_CHARS} characters; the default model reads at most 128 words)

Answers a question about an image (or about nothing); streams only the answer text to stdout and
prints a JSON summary (usage, timings, speculation statistics) to stderr.
  --image FILE          PNG/JPEG/WebP, at least 8×8 and at most 25,000,000 pixels (e.g. 5000×5000);
                        centre-cropped to a square and resized to the model's image size (64×64),
                        reported as inputImage
  --speculation MODE    auto|off|chain|tree|ngram (default auto)
  --chain-length K      drafted tokens per step in chain and ngram modes (auto: when it drafts a chain;
                        default: sized from the hardware)
  --tree-budget N       drafted nodes per step in tree mode (auto: when it drafts a tree; default: sized
                        from the hardware)
  --temperature T       0 = greedy (default 0)
  --top-p P, --top-k K  nucleus / top-k truncation (with --temperature above 0)
  --seed N              makes sampling reproducible
  --max-tokens N        answer length limit (default 64)
  --stop TEXT           stop string (repeatable: at most ${MAX_STOP_SEQUENCES}, each of at most ${MAX_STOP_CHARS} characters)
  --pack DIR            model pack (default models/shapes-mot, or $HYPERBAGEL_PACK)
  --threads N           onnxruntime intra-op threads (a positive integer, 1 to 256; default 2)
  --quiet               no summary on stderr`;

/** The request fields the engine names in its range errors, and the flags that set them. */
const FLAGS = { temperature: 'temperature', topP: 'top-p', topK: 'top-k', seed: 'seed', maxTokens: 'max-tokens', 'speculation.chainLength': 'chain-length', 'speculation.treeBudget': 'tree-budget' };

const VALUES = ['image', 'speculation', 'chain-length', 'tree-budget', 'temperature', 'top-p', 'top-k', 'seed', 'max-tokens', 'stop', 'pack', 'threads'];

/** Everything understand needs from its arguments, checked without loading anything. */
function parse(argv: string[]) {
  const args = parseArgs(argv, { values: VALUES, booleans: ['quiet'], repeatable: ['stop'] });
  if (args.flags.has('help')) return { args, help: true as const };
  const prompt = args.positionals.join(' ');
  if (!prompt.trim()) throw new UsageError('a prompt is required');
  const mode = (flag(args, 'speculation') ?? 'auto') as SpeculationMode;
  if (!['auto', 'off', 'chain', 'tree', 'ngram'].includes(mode)) throw new UsageError('--speculation must be auto, off, chain, tree or ngram');
  // flags that would be silently ignored are refused, as generate refuses its own (and the API the
  // speculation ones); auto may draft chains or trees, so it takes both
  for (const [f, field] of [['chain-length', 'chainLength'], ['tree-budget', 'treeBudget']] as const) {
    if (!args.flags.has(f) || SPECULATION_FIELDS_READ[mode].includes(field)) continue;
    const modes = (Object.keys(SPECULATION_FIELDS_READ) as SpeculationMode[]).filter((m) => SPECULATION_FIELDS_READ[m].includes(field));
    throw new UsageError(`--${f} applies to --speculation ${modes.slice(0, -1).join(', ')}${modes.length > 1 ? ' or ' : ''}${modes.at(-1)}, not ${mode}`);
  }
  const temperature = numberFlag(flag(args, 'temperature'), 'temperature');
  const sampled = (temperature ?? 0) > 0;
  for (const f of ['top-p', 'top-k'])
    if (args.flags.has(f) && !sampled) throw new UsageError(`--${f} applies to sampling, with --temperature above 0 (at 0, each step takes the most likely token)`);
  const threads = threadsFlag(args);
  checkPromptLength(prompt);
  const stop = args.flags.get('stop');
  checkStops(stop);
  // numbers are checked here, before the model loads; their pack-dependent ranges by the engine
  const req: UnderstandRequest = {
    prompt,
    temperature,
    topP: numberFlag(flag(args, 'top-p'), 'top-p'),
    topK: numberFlag(flag(args, 'top-k'), 'top-k', { integer: true }),
    seed: numberFlag(flag(args, 'seed'), 'seed', { integer: true, min: 0 }),
    maxTokens: numberFlag(flag(args, 'max-tokens'), 'max-tokens', { integer: true }),
    stop,
    speculation: { mode, chainLength: numberFlag(flag(args, 'chain-length'), 'chain-length', { integer: true }), treeBudget: numberFlag(flag(args, 'tree-budget'), 'tree-budget', { integer: true }) },
  };
  return { args, help: false as const, req, mode, threads };
}

/** The checks run() makes before loading anything (main runs them first for an over-long command line). */
export function precheck(argv: string[]): void {
  parse(argv);
}

export async function run(argv: string[]): Promise<number> {
  const parsed = parse(argv);
  const { args } = parsed;
  if (parsed.help) {
    console.log(HELP);
    return 0;
  }
  const { req, mode, threads } = parsed;
  // read the image before loading the model, so a missing or unreadable file fails at once
  const imageFile = flag(args, 'image');
  const image = imageFile ? await readImageFile(imageFile) : undefined;
  const engine = await createEngine(resolvePack(flag(args, 'pack')), { intraOpThreads: threads ?? 2, calibrate: mode === 'auto' || mode === 'tree' || mode === 'chain' || mode === 'ngram' });
  try {
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
    } catch (e) {
      throw withFlagNames(e, FLAGS);
    } finally {
      process.off('SIGINT', onSig);
    }
    return 0;
  } finally {
    await engine.close();
  }
}
