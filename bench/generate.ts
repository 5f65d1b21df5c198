// `hyperbagel bench generate [--json]`: end-to-end generation/editing latency, baseline (100 / 132
// NFE) vs the 6-NFE path, the 1-NFE preview latency, and where the fixed costs go.
import fs from 'node:fs';
import path from 'node:path';
import { flag, intFlag, parseArgs, UsageError } from '../src/cli/args.ts';
import { DEFAULT_PACK, FIXTURE_PACK, resolvePack } from '../src/engine/pack-location.ts';
import { createEngine, type LocalEngine } from '../src/engine/index.ts';
import type { FrameTimings, GenerateRequest, ImageFrame } from '../src/engine/types.ts';
import { parseCaption, renderScene } from '../src/world/index.ts';
import { timeViaGateway } from './generate-gateway.ts';
import { median } from './stats.ts';

export const HELP = `Usage: hyperbagel bench generate [--json] [--pack DIR] [--runs N] [--threads N]

Times, end to end (request → encoded final image), text-to-image and editing with the baseline
sampler (50 steps with CFG: 100 / 132 NFE) and with the 6-NFE path, plus the progressive 1-NFE
preview. Every kind runs once per seed (--runs N seeds, default 10) in an order rotating from seed to
seed, and each ratio is the median over seeds of that seed's ratio (speedup_spread: the smallest and
largest). The *_vs_unbatched_baseline ratios time the baseline as BAGEL runs it (one call per CFG
context, on a second engine) in the same rotation. Prints t2i_speedup_6nfe, edit_speedup_6nfe (SIX_STEP), t2i_speedup_progressive and
edit_speedup_progressive (baseline ÷ the final of a default PROGRESSIVE request, preview included),
preview_ms, final_ms, the sampling-loop-only ratios, the fixed costs each separately (prefill; for edits the source's ViT encode and VAE encode;
VAE decode; image encode) and NFE counts; for packs
that think, "think": {think_ms, preview_ms, final_ms} of a progressive think-mode request on a short prompt;
"gateway": the progressive request through the GraphQL gateway over graphql-ws (previews @stream,
@defer result) on the same engine: client-side preview_ms / final_ms, the gateway's overhead over the
engine's own times, and the frames' base64 sizes.`;

interface Run {
  ms: number;
  final: ImageFrame;
  first: ImageFrame;
}

async function once(engine: LocalEngine, req: GenerateRequest): Promise<Run> {
  const t0 = performance.now();
  let first: ImageFrame | null = null;
  let final: ImageFrame | null = null;
  for await (const f of engine.generate(req)) {
    if (!first) first = f;
    final = f;
  }
  return { ms: performance.now() - t0, first: first!, final: final! };
}

/**
 * The fixed (per-request, not per-step) costs of a final frame, each on its own: the context prefill,
 * for edits the source image's ViT encode and VAE encode, the VAE decode and the image encode.
 */
export function fixedCosts(t: FrameTimings, edit: boolean) {
  return {
    prefill: t.prefillMs,
    ...(edit ? { vit_encode: t.vitEncodeMs ?? 0, vae_encode: t.vaeEncodeMs ?? 0 } : {}),
    vae_decode: t.decodeMs,
    image_encode: t.imageEncodeMs,
  };
}

/** Medians of a request kind's runs, and each run's time (in seed order) for per-seed ratios. */
function summarize(rs: Run[]) {
  const t = (k: keyof FrameTimings): number => +median(rs.map((r) => r.final.timings?.[k] ?? 0)).toFixed(3);
  return {
    ms: median(rs.map((r) => r.ms)),
    each: rs.map((r) => r.ms),
    eachSampling: rs.map((r) => r.final.timings?.samplingMs ?? 0),
    firstMs: median(rs.map((r) => r.first.elapsedMs)),
    nfe: rs[0]!.final.nfe,
    sampler: rs[0]!.final.sampler,
    timings: { prefillMs: t('prefillMs'), encodeSourceMs: t('encodeSourceMs'), vitEncodeMs: t('vitEncodeMs'), vaeEncodeMs: t('vaeEncodeMs'), samplingMs: t('samplingMs'), decodeMs: t('decodeMs'), imageEncodeMs: t('imageEncodeMs'), thinkMs: t('thinkMs') },
  };
}

async function timeMany(engine: LocalEngine, req: GenerateRequest, runs: number) {
  for (let w = 0; w < 3; w++) await once(engine, { ...req, seed: 900 + w }); // warm-up
  const rs: Run[] = [];
  for (let i = 0; i < runs; i++) rs.push(await once(engine, { ...req, seed: 1000 + i }));
  return summarize(rs);
}

/**
 * Every request kind once per seed, in an order that rotates from seed to seed: a burst of load on this
 * shared machine then falls on every kind alike, and the ratios are taken per seed (the same seed on
 * both sides) before their median. Timing each kind in its own block let one burst move one side's median.
 * Each kind runs on its own engine (the engines take turns, never run at once).
 */
async function timeInterleaved<K extends string>(reqs: Record<K, { engine: LocalEngine; req: GenerateRequest }>, runs: number) {
  const kinds = Object.keys(reqs) as K[];
  const rs = Object.fromEntries(kinds.map((k) => [k, [] as Run[]])) as Record<K, Run[]>;
  for (let i = 0; i < runs; i++)
    for (let j = 0; j < kinds.length; j++) {
      const k = kinds[(i + j) % kinds.length]!;
      rs[k].push(await once(reqs[k].engine, { ...reqs[k].req, seed: 1000 + i }));
    }
  return Object.fromEntries(kinds.map((k) => [k, summarize(rs[k])])) as Record<K, ReturnType<typeof summarize>>;
}

/** The median over seeds of a / b (same seed on both sides), and the smallest and largest of them. */
export function pairedRatio(a: number[], b: number[]): { median: number; min: number; max: number } {
  const rs = a.map((x, i) => x / b[i]!);
  const round = (x: number) => +x.toFixed(3);
  return { median: round(median(rs)), min: round(Math.min(...rs)), max: round(Math.max(...rs)) };
}

export async function run(argv: string[]): Promise<number> {
  const args = parseArgs(argv, { values: ['pack', 'runs', 'threads'], booleans: ['json'] });
  if (args.flags.has('help')) {
    console.log(HELP);
    return 0;
  }
  if (args.positionals.length) throw new UsageError(`unexpected argument "${args.positionals[0]}"`);
  const packFlag = flag(args, 'pack') ?? (fs.existsSync(path.join(DEFAULT_PACK, 'manifest.json')) ? undefined : FIXTURE_PACK);
  // the flags first: a usage mistake is one whatever the pack
  const runs = intFlag(args, 'runs', 10, 1, 100);
  const threads = intFlag(args, 'threads', 2, 1, 64);
  const pack = resolvePack(packFlag);
  const engine = await createEngine(pack, { intraOpThreads: threads, calibrate: false, maxConcurrent: 1 });
  // the engine batches the CFG contexts of a step into one call; a second engine times the baseline the
  // way BAGEL runs it (one call per context), to show what the batching is worth
  let unb: LocalEngine | null = null;
  try {
    unb = await createEngine(pack, { intraOpThreads: threads, calibrate: false, maxConcurrent: 1, batchCfg: false });
    const prompt = 'a large red circle at the top left on a white background';
    const src = renderScene(parseCaption(prompt), engine.info.imageSize.width);
    const instruction = 'make the circle blue';
    const t2iBaseReq: GenerateRequest = { prompt, mode: 'baseline', steps: 50 };
    const editBaseReq: GenerateRequest = { prompt: instruction, sourceImage: src, mode: 'baseline', steps: 50 };
    const kinds = {
      t2iBase: { engine, req: t2iBaseReq },
      t2i6: { engine, req: { prompt, mode: '6nfe' } },
      editBase: { engine, req: editBaseReq },
      edit6: { engine, req: { prompt: instruction, sourceImage: src, mode: '6nfe' } },
      prog: { engine, req: { prompt, mode: 'progressive' } },
      editProg: { engine, req: { prompt: instruction, sourceImage: src, mode: 'progressive' } },
      t2iUnb: { engine: unb, req: t2iBaseReq },
      editUnb: { engine: unb, req: editBaseReq },
    } satisfies Record<string, { engine: LocalEngine; req: GenerateRequest }>;
    // global warm-up (JIT, onnxruntime allocations) before anything is timed
    for (let w = 0; w < 3; w++) for (const k of Object.values(kinds)) await once(k.engine, { ...k.req, seed: w });
    const timed = await timeInterleaved(kinds, runs);
    const { t2iBase, t2i6, editBase, edit6, prog, editProg, t2iUnb, editUnb } = timed;
    // the same progressive request through the gateway, as a streaming client sees it
    const gateway = await timeViaGateway(engine, prompt, runs);
    // think mode on a short prompt: the thought is written before the preview (packs that think)
    const thinking = engine.info.capabilities.think ? await timeMany(engine, { prompt: 'a photo of a square', mode: 'progressive', think: true }, runs) : null;
    const result = {
      pack: engine.info.name,
      pack_dir: pack,
      distilled_graphs: { sixStep: engine.info.capabilities.sixStep, oneStep: engine.info.capabilities.oneStep },
      // per seed, then the median (the spread: the smallest and largest per-seed ratio)
      t2i_speedup_6nfe: pairedRatio(t2iBase.each, t2i6.each).median,
      edit_speedup_6nfe: pairedRatio(editBase.each, edit6.each).median,
      speedup_spread: { t2i: pairedRatio(t2iBase.each, t2i6.each), edit: pairedRatio(editBase.each, edit6.each) },
      // what a request in the default mode (PROGRESSIVE: the 1-NFE preview first) gets: baseline ÷ its final
      t2i_speedup_progressive: pairedRatio(t2iBase.each, prog.each).median,
      edit_speedup_progressive: pairedRatio(editBase.each, editProg.each).median,
      preview_ms: +prog.firstMs.toFixed(2),
      final_ms: +prog.ms.toFixed(2),
      gateway,
      think: thinking ? { think_ms: thinking.timings.thinkMs, preview_ms: +thinking.firstMs.toFixed(2), final_ms: +thinking.ms.toFixed(2) } : null,
      t2i_sampling_speedup: pairedRatio(t2iBase.eachSampling, t2i6.eachSampling).median,
      edit_sampling_speedup: pairedRatio(editBase.eachSampling, edit6.eachSampling).median,
      baseline_cfg_batched: true,
      t2i_speedup_6nfe_vs_unbatched_baseline: pairedRatio(t2iUnb.each, t2i6.each).median,
      edit_speedup_6nfe_vs_unbatched_baseline: pairedRatio(editUnb.each, edit6.each).median,
      t2i_ms: { baseline: +t2iBase.ms.toFixed(2), baseline_unbatched: +t2iUnb.ms.toFixed(2), six: +t2i6.ms.toFixed(2) },
      edit_ms: { baseline: +editBase.ms.toFixed(2), baseline_unbatched: +editUnb.ms.toFixed(2), six: +edit6.ms.toFixed(2) },
      fixed_ms: {
        t2i: fixedCosts(t2i6.timings, false),
        edit: fixedCosts(edit6.timings, true),
      },
      sampling_ms: { t2i_baseline: t2iBase.timings.samplingMs, t2i_6nfe: t2i6.timings.samplingMs, edit_baseline: editBase.timings.samplingMs, edit_6nfe: edit6.timings.samplingMs },
      nfe: { t2i_baseline: t2iBase.nfe, t2i_6nfe: t2i6.nfe, edit_baseline: editBase.nfe, edit_6nfe: edit6.nfe, preview: 0 },
      samplers: { six: t2i6.sampler, baseline: t2iBase.sampler },
      runs,
    };
    const first = await once(engine, { prompt, mode: 'progressive', seed: 1 });
    result.nfe.preview = first.first.nfe;
    if (args.flags.has('json')) console.log(JSON.stringify(result));
    else console.log(JSON.stringify(result, null, 2));
    return 0;
  } finally {
    await unb?.close();
    await engine.close();
  }
}
