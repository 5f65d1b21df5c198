// `hyperbagel eval`: the independent evaluator: detector accuracy, and model scores on the fixed suites.
import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { parseArgs, flag, intFlag, UsageError } from '../args.ts';
import { checkOutputFile } from '../output-path.ts';
import { resolvePack } from '../../engine/pack-location.ts';
import type { Engine, GenerationMode } from '../../engine/types.ts';
import { DETECTOR_CONDITIONS, evaluateDetector } from '../../eval/detector-eval.ts';
import { buildAllSuites, EVAL_SUITES, SUITE_DIR, suiteFileText, writeSuites, type EvalSuite } from '../../eval/suites.ts';
import { evaluateGEdit, evaluateGenEval, evaluateUnderstanding, MAX_SAMPLES, SAMPLE_SEED_STRIDE, type RunOptions } from '../../eval/run.ts';
import { captionPrompt, DEFAULT_PACK, engineModel, openEngine } from '../../eval/engine-model.ts';
import { constantModel, oracleModel } from '../../eval/oracle.ts';
import { ceilingModel, openImagePath, type ImagePath } from '../../eval/ceiling.ts';
import { evaluateDraft } from '../../eval/draft-eval.ts';
import type { EvalModel } from '../../eval/model.ts';

const MODES: GenerationMode[] = ['baseline', '6nfe', '1nfe', 'progressive'];
const MODELS = ['engine', 'oracle', 'constant', 'lowres-oracle', 'vae-oracle'] as const;
const TARGETS = ['detector', 'understand', 'geneval', 'gedit', 'draft', 'suites'] as const;
/** The evaluations that run on a suite set, and so take --suite. */
const SUITE_TARGETS: readonly string[] = ['understand', 'geneval', 'gedit'];

export const HELP = `Usage: hyperbagel eval <${TARGETS.join('|')}> [options]

  detector    exact-scene accuracy of the analytic detector on random renders (all splits), clean and
              under noise, blur and down/up-sampling. --count N images per condition (default 2000).
  understand  caption exact match and VQA accuracy on the fixed suites (test and held-out split):
              {caption_exact, vqa, heldout_caption_exact, heldout_vqa, heldout_caption_by_combination:
              {"yellow star": {exact, images}, "triangle at top left": …}, suite}
  geneval     GenEval-style text-to-image scores: {overall, categories: {single_object, two_objects,
              counting, colors, position, color_attr}, heldout: {overall, categories}, suite}
  gedit       GEdit-style editing scores: {overall, categories: {instruction, preserved, quality},
              by_kind, heldout: {…}, suite}
  draft       speculative draft quality, Hyper-Bagel Table 1 style: {tau_chain, acceptance_10, lossless,
              proposer, ablation: [{variant, tau_chain, acceptance_10}]} (10-step chains, greedy, test split).
              --variant NAME=PACKDIR (repeatable) adds an ablation row for another pack's draft.
  suites      check that the committed suites (src/eval/suites/*.json, test and val sets) equal a
              regeneration from their fixed seeds (exit 1 if not); --write regenerates them

Options:
  --json          print one JSON object (and nothing else) on stdout
  --pack DIR      model pack to evaluate (default $HYPERBAGEL_PACK, else ${DEFAULT_PACK})
  --mode MODE     geneval/gedit: generation mode, ${MODES.join('|')} (default baseline)
  --suite S       understand/geneval/gedit: which suite set, ${EVAL_SUITES.join('|')} (default test). test is what
                  results report; val (*-val.json: own seeds, val-split scenes, no item equal to a test
                  item, same sizes, its own held-out part) is for choosing between recipe variants, so
                  "picked on val, reported on test". Output keys are the same (unprefixed ones and
                  thoughts.test: the set's main part; heldout: its held-out part); "suite" says which.
  --limit N       understand/geneval/gedit: at most N items per category/kind/split (default: the whole
                  suite); draft: at most N images, each with its caption prompt and its questions (default 50)
  --shift N       understand: every image moved N pixels right and down (N in [-8, 8], edge pixels
                  replicated), answers unchanged: robustness to objects off the cell centres the world
                  always draws them at (the output gains "shift"); a pack's vision.understand_offset
                  moves it again as the engine reads it
  --followup      understand: also ask every question as a chat client's second turn, in one conversation
                  after the model captioned the image and without sending the image again (the output gains
                  "followup_vqa" and "heldout_followup_vqa"); the session reads what the pack's
                  prompts.session_context says: the conversation, or the image alone
  --samples N     geneval/gedit: images per prompt, N in [1, ${MAX_SAMPLES}] (default 1). Sample k is drawn with the
                  item's seed + k × ${SAMPLE_SEED_STRIDE.toLocaleString('en-US')}, so sample 0 is the fixed suite's image; every image is
                  judged and counted (the output gains "samples"). GenEval itself draws 4 per prompt: one per
                  prompt leaves 300-prompt scores a standard error of about 0.03, 4 about halves it
  --count N       detector: images per condition (default 2000)
  --model M       understand/geneval/gedit: ${MODELS.join('|')} (default engine). oracle renders the ground truth and must score 1.0;
                  constant is trivially wrong; both check the evaluator itself and need no pack.
                  lowres-oracle and vae-oracle are ceilings of --pack's image path: the oracle's images
                  at the latent grid's resolution, and also through the pack's VAE (geneval, gedit)
  --details FILE  understand/geneval/gedit: also write one JSON line per judged item (prompt/instruction/
                  question, output, verdict)
  --variant N=DIR draft: an ablation row (e.g. plain=runs/packs/plain)
  --think         geneval: the model first expands each prompt into a scene description (think mode,
                  BAGEL's rewriter/CoT protocol), seeded by the item's seed; reported as "think": true, with
                  "thoughts": {test, heldout}: {parsed (valid scene captions), satisfied (their scene
                  satisfies the prompt), count}; --think-temperature T samples them at T (default 0.5)
  --write         suites: regenerate the files instead of checking them
Definitions: docs/world.md ("Evaluation").`;

/** The draft variant a pack ships (manifest.draft.variant), if it has a draft model. */
/** The pack's vision.understand_offset when it declares one: results read at different offsets must say so. */
function understandOffset(engine: Engine | undefined): [number, number] | undefined {
  const off = engine?.info.understandOffset;
  return off && (off[0] || off[1]) ? off : undefined;
}

function draftVariant(packDir: string): string | undefined {
  try {
    const m = JSON.parse(readFileSync(join(packDir, 'manifest.json'), 'utf8')) as { draft?: { variant?: unknown } };
    return typeof m.draft?.variant === 'string' ? m.draft.variant : undefined;
  } catch {
    return undefined;
  }
}

function printResult(json: boolean, result: object, human: () => string): void {
  console.log(json ? JSON.stringify(result) : human());
}

const pct = (x: number | undefined) => (x === undefined ? '   -  ' : `${(x * 100).toFixed(1).padStart(5)}%`);

export async function run(argv: string[]): Promise<number> {
  const args = parseArgs(argv, { values: ['pack', 'mode', 'limit', 'count', 'model', 'details', 'variant', 'think-temperature', 'suite', 'shift', 'samples'], booleans: ['json', 'write', 'think', 'followup'], repeatable: ['variant'] });
  if (args.flags.has('help')) { console.log(HELP); return 0; }
  const [target, ...extra] = args.positionals;
  if (!target) throw new UsageError(`say what to evaluate: ${TARGETS.join(', ')}`);
  if (!(TARGETS as readonly string[]).includes(target)) throw new UsageError(`unknown evaluation "${target}"; expected one of ${TARGETS.join(', ')}`);
  if (extra.length) throw new UsageError(`unexpected argument "${extra[0]}"`);
  const json = args.flags.has('json');
  // options that would be silently ignored by this target are refused
  const only = (names: string[], targets: readonly string[]) => {
    if (targets.includes(target)) return;
    for (const n of names) if (args.flags.has(n)) throw new UsageError(`--${n} applies to eval ${targets.join(', ')} only`);
  };
  only(['mode'], ['geneval', 'gedit']);
  only(['count'], ['detector']);
  only(['model', 'details'], SUITE_TARGETS);
  only(['limit'], [...SUITE_TARGETS, 'draft']);
  only(['pack'], [...SUITE_TARGETS, 'draft']);
  only(['variant'], ['draft']);
  only(['write'], ['suites']);
  only(['think-temperature'], ['geneval']);
  const modeRaw = flag(args, 'mode');
  if (modeRaw !== undefined && !(MODES as string[]).includes(modeRaw)) throw new UsageError(`--mode must be one of ${MODES.join(', ')}`);
  const detailsPath = flag(args, 'details');
  if (detailsPath !== undefined) checkOutputFile(detailsPath, 'details');
  if (args.flags.has('think') && target !== 'geneval') throw new UsageError('--think applies to geneval only');
  if (flag(args, 'shift') !== undefined && target !== 'understand') throw new UsageError('--shift applies to eval understand only');
  const shift = flag(args, 'shift') === undefined ? undefined : intFlag(args, 'shift', 0, -8, 8);
  if (args.flags.has('followup') && target !== 'understand') throw new UsageError('--followup applies to eval understand only');
  const followup = args.flags.has('followup');
  if (flag(args, 'samples') !== undefined && target !== 'geneval' && target !== 'gedit') throw new UsageError('--samples applies to eval geneval and gedit only');
  const samples = intFlag(args, 'samples', 1, 1, MAX_SAMPLES);
  const suiteRaw = flag(args, 'suite');
  if (suiteRaw !== undefined && !SUITE_TARGETS.includes(target)) throw new UsageError(`--suite applies to ${SUITE_TARGETS.join(', ')} only`);
  if (suiteRaw !== undefined && !(EVAL_SUITES as readonly string[]).includes(suiteRaw))
    throw new UsageError(`--suite must be one of ${EVAL_SUITES.join(', ')}, got "${suiteRaw}"`);
  const suite = (suiteRaw ?? 'test') as EvalSuite;

  if (target === 'suites') {
    if (args.flags.has('write')) {
      const files = writeSuites();
      printResult(json, { written: files }, () => `wrote ${files.length} suites:\n${files.map((f) => `  ${f}`).join('\n')}`);
      return 0;
    }
    const stale: string[] = [];
    for (const [name, suite] of Object.entries(buildAllSuites())) {
      let committed = '';
      try { committed = readFileSync(join(SUITE_DIR, `${name}.json`), 'utf8'); } catch { /* missing counts as stale */ }
      if (committed !== suiteFileText(suite)) stale.push(name);
    }
    printResult(json, { ok: stale.length === 0, stale }, () => (stale.length ? `suites differ from their regeneration: ${stale.join(', ')} (run: hyperbagel eval suites --write)` : 'all suites equal their regeneration'));
    return stale.length ? 1 : 0;
  }

  if (target === 'detector') {
    const count = intFlag(args, 'count', 2000, 1, 1_000_000);
    const report = await evaluateDetector(count);
    printResult(json, report, () => [
      `detector: exact-scene accuracy on ${count} random renders per condition (${report.seconds.toFixed(1)} s)`,
      ...DETECTOR_CONDITIONS.map((c) => `  ${c.name.padEnd(20)} ${pct(report.accuracy[c.name])}   objects ${pct(report.object_recall[c.name])}   ${c.description}`),
    ].join('\n'));
    return 0;
  }

  if (target === 'draft') {
    const limit = flag(args, 'limit') === undefined ? 50 : intFlag(args, 'limit', 0, 1);
    const variants = (args.flags.get('variant') ?? []).map((v) => {
      const eq = v.indexOf('=');
      if (eq <= 0 || eq === v.length - 1) throw new UsageError(`--variant must be NAME=PACKDIR, got "${v}"`);
      return { name: v.slice(0, eq), dir: v.slice(eq + 1) };
    });
    const pack = resolvePack(flag(args, 'pack'));
    // every pack is found before the first is scored (a missing variant used to fail after the main run)
    for (const v of variants) resolvePack(v.dir);
    const score = async (dir: string) => {
      const engine = await openEngine(dir);
      try { return await evaluateDraft(engine, { captionPrompt: captionPrompt(dir), limit }); } finally { await engine.close(); }
    };
    const main = await score(pack);
    const ablation = [{ variant: draftVariant(pack) ?? `no draft model (${main.proposer})`, tau_chain: main.tau_chain, acceptance_10: main.acceptance_10 }];
    for (const v of variants) {
      const r = await score(v.dir);
      ablation.push({ variant: v.name, tau_chain: r.tau_chain, acceptance_10: r.acceptance_10 });
    }
    const result = { ...main, ablation, model: pack };
    printResult(json, result, () => [
      `draft (${pack}, proposer ${main.proposer}): tau ${main.tau_chain.toFixed(3)}, 10-alpha ${main.acceptance_10.toFixed(3)}, lossless ${main.lossless} over ${main.prompts} prompts`,
      ...ablation.map((a) => `  ${a.variant.padEnd(16)} tau ${a.tau_chain.toFixed(3)}   10-alpha ${a.acceptance_10.toFixed(3)}`),
    ].join('\n'));
    return 0;
  }

  const mode = (flag(args, 'mode') ?? 'baseline') as GenerationMode;
  if (!MODES.includes(mode)) throw new UsageError(`--mode must be one of ${MODES.join(', ')}`);
  const which = (flag(args, 'model') ?? 'engine') as (typeof MODELS)[number];
  if (!MODELS.includes(which)) throw new UsageError(`--model must be one of ${MODELS.join(', ')}`);
  const limit = flag(args, 'limit') === undefined ? undefined : intFlag(args, 'limit', 0, 1);
  // what a model without the engine would silently ignore
  if (modeRaw !== undefined && which !== 'engine') throw new UsageError(`--mode applies to --model engine only (${which} draws no samples)`);
  if (flag(args, 'pack') !== undefined && (which === 'oracle' || which === 'constant')) throw new UsageError(`--pack applies to --model engine, vae-oracle and lowres-oracle (${which} reads no pack)`);
  if (followup && which !== 'engine' && which !== 'oracle') throw new UsageError(`--followup needs a model that holds a conversation: --model engine or oracle, not ${which}`);
  // oracle and constant need no pack: the default one is only looked for when it is used
  const pack = which === 'engine' || which.endsWith('-oracle') ? resolvePack(flag(args, 'pack')) : (flag(args, 'pack') ?? DEFAULT_PACK);
  const think = args.flags.has('think');
  if (think && which !== 'engine') throw new UsageError('--think applies to the engine (--model engine) only');
  const ttRaw = flag(args, 'think-temperature');
  const thinkTemperature = ttRaw === undefined ? undefined : /^[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?$/.test(ttRaw) ? Number(ttRaw) : NaN;
  if (thinkTemperature !== undefined && (!think || !(thinkTemperature >= 0 && thinkTemperature <= 2)))
    throw new UsageError('--think-temperature T needs --think and T in [0, 2]');

  let engine: Engine | undefined;
  let imagePath: ImagePath | undefined;
  let model: EvalModel;
  if (which === 'engine') {
    engine = await openEngine(pack);
    model = engineModel(engine, { mode, captionPrompt: captionPrompt(pack), think, ...(thinkTemperature !== undefined ? { thinkTemperature } : {}) });
  } else {
    model = which === 'oracle' ? oracleModel()
      : which === 'constant' ? constantModel()
      : ceilingModel(imagePath = await openImagePath(pack, which === 'vae-oracle'));
  }
  const details: string[] = [];
  const opts: RunOptions = {
    suite,
    limit,
    ...(shift ? { shift } : {}),
    ...(followup ? { followup } : {}),
    ...(samples > 1 ? { samples } : {}),
    onItem: detailsPath ? (rec) => details.push(JSON.stringify(rec)) : undefined,
    onProgress: process.stderr.isTTY ? (what, done, total) => process.stderr.write(`\r${what}: ${done}/${total}${done === total ? '\n' : ''}`) : undefined,
  };
  const offset = target === 'understand' ? understandOffset(engine) : undefined;
  const about = { model: which === 'engine' ? pack : which.endsWith('-oracle') ? `${which} ${pack}` : which, suite, ...(target === 'understand' ? { ...(shift ? { shift } : {}), ...(offset ? { understand_offset: offset } : {}) } : { mode, ...(samples > 1 ? { samples } : {}) }), ...(think ? { think, ...(thinkTemperature !== undefined ? { think_temperature: thinkTemperature } : {}) } : {}) };
  try {
    if (target === 'understand') {
      const r = await evaluateUnderstanding(model, opts);
      printResult(json, { ...r, ...about }, () => [
        `understanding (${about.model}, ${suite} suites): caption exact ${pct(r.caption_exact)}, VQA ${pct(r.vqa)} on ${r.counts.images} ${suite} images / ${r.counts.questions} questions`,
        `  held-out${suite === 'val' ? ' (val)' : ''}: caption exact ${pct(r.heldout_caption_exact)}, VQA ${pct(r.heldout_vqa)} on ${r.counts.heldout_images} images / ${r.counts.heldout_questions} questions; about the held-out object ${pct(r.heldout_object_vqa)} (${r.counts.heldout_object_questions} questions)`,
        ...(r.followup_vqa !== undefined ? [`  follow-up VQA (asked after the caption, in one conversation): ${pct(r.followup_vqa)}   held-out ${pct(r.heldout_followup_vqa!)}`] : []),
        ...Object.entries(r.heldout_caption_by_combination).map(([k, v]) => `    with a ${k.padEnd(22)} caption exact ${pct(v.exact)} (${v.images} images)`),
      ].join('\n'));
    } else if (target === 'geneval') {
      const r = await evaluateGenEval(model, opts);
      printResult(json, { ...r, ...about }, () => [
        `GenEval-style (${about.model}, mode ${mode}, ${suite} suites): overall ${pct(r.overall)}   held-out overall ${pct(r.heldout.overall)}`,
        ...Object.entries(r.categories).map(([c, v]) => `  ${c.padEnd(14)} ${pct(v)}   held-out ${pct(r.heldout.categories[c as keyof typeof r.categories])}   (n=${r.counts[c as keyof typeof r.counts]})`),
        ...(r.thoughts
          ? [`  thoughts: valid captions ${pct(r.thoughts.test.parsed)}, satisfy the prompt ${pct(r.thoughts.test.satisfied)}   held-out ${pct(r.thoughts.heldout.parsed)} / ${pct(r.thoughts.heldout.satisfied)}`]
          : []),
      ].join('\n'));
    } else {
      const r = await evaluateGEdit(model, opts);
      printResult(json, { ...r, ...about }, () => [
        `GEdit-style (${about.model}, mode ${mode}, ${suite} suites): overall ${pct(r.overall)}   held-out overall ${pct(r.heldout.overall)}   (n=${r.count}, held-out n=${r.heldout.count})`,
        ...Object.entries(r.categories).map(([c, v]) => `  ${c.padEnd(12)} ${pct(v)}   held-out ${pct(r.heldout.categories[c as keyof typeof r.categories])}`),
        '  by kind:',
        ...Object.entries(r.by_kind).map(([k, v]) => `    ${k.padEnd(10)} overall ${pct(v!.overall)}  instruction ${pct(v!.instruction)}  preserved ${pct(v!.preserved)}  quality ${pct(v!.quality)}`),
      ].join('\n'));
    }
  } finally {
    await engine?.close();
    await imagePath?.close();
  }
  if (detailsPath) writeFileSync(detailsPath, details.map((l) => l + '\n').join(''));
  return 0;
}
