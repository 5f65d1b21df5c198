// Generation and editing: shared prefill of the CFG contexts (one KV per context, reused by every
// sampler of the request), samplers behind one step() interface, progressive frames, decoding and
// encoding.
import { admit, type Admission } from '../admission.ts';
import { layout, type EngineCtx, type Part } from '../context.ts';
import { encodeImage } from '../image/codec.ts';
import { checkInputImage, fitImage } from '../image/codec.ts';
import { chwToRgb, rgbToChw } from '../image/pixels.ts';
import { Rng, randomSeed } from '../rng.ts';
import { EngineError, type FrameTimings, type GenerateRequest, type GenerationMode, type ImageFrame, type InputImageInfo, type RgbImage, type SamplerGuidance, type ScaleRange } from '../types.ts';
import { sessionLost, type ConversationState } from '../understand/pipeline.ts';
import * as V from '../validate.ts';
import { WorkerSequence } from '../understand/worker-target.ts';
import { cfgActive, combineCfg, EulerFlowScheduler, patchify, unpatchify, type CfgParams } from './scheduler.ts';

const MODES: GenerationMode[] = ['progressive', '1nfe', '6nfe', 'baseline'];

/**
 * Sampler parameter limits (inclusive; timestepShift's min is exclusive); the gateway checks the
 * same ones before a job is created. cfgInterval is [start, end] with 0 <= start < end <= 1.
 * A guidance scale of 1 turns that guidance off (BAGEL applies CFG above 1 only), so scales below 1,
 * which would otherwise be run as 1 without a word, are refused.
 */
export const SAMPLER_LIMITS = {
  steps: { min: 1, max: 250 },
  cfgScale: { min: 1, max: 20 },
  timestepShift: { min: 0, max: 20 },
} as const;

type DenoiseGraph = 'denoiser' | 'denoise_6nfe' | 'denoise_1nfe';

export interface SamplerPlan {
  name: string;
  graph: DenoiseGraph;
  scheduler: EulerFlowScheduler;
  /** CFG combined in the engine (base denoiser) */
  cfg: CfgParams;
  /** guidance is inside the graph (distilled): one evaluation per step, scales passed as inputs */
  distilled: boolean;
}

export interface ValidatedGenerate {
  words: number[];
  mode: GenerationMode;
  seed: number;
  edit: boolean;
  /** edits: the image to edit as given (request) or remembered (session), before fitting */
  source?: { image: RgbImage; from: InputImageInfo['source']; info?: InputImageInfo };
  steps: number;
  cfg: CfgParams;
  shift: number;
  /** timestepShift was given: the distilled samplers step on shiftedTimesteps(nfe, shift), not their manifest grid */
  shiftGiven: boolean;
  /** guidance scales the request gave; the others default per sampler (a distilled graph's manifest entry first) */
  scalesGiven: { text: boolean; image: boolean };
  intermediatePreviews: boolean;
}

export function validateGenerate(ctx: EngineCtx, req: GenerateRequest, conversation: ConversationState | null = null): ValidatedGenerate {
  if (!req || typeof req !== 'object') throw new EngineError('INVALID_INPUT', 'request must be an object');
  const m = ctx.manifest;
  if (!m.graphs.denoiser || !m.graphs.vae_decoder) throw new EngineError('INVALID_INPUT', 'this model pack cannot generate images');
  const words = ctx.tokenizer.encodeWords(V.prompt(req.prompt));
  if (!words.length) throw new EngineError('INVALID_INPUT', 'prompt has no words');
  if (words.length > ctx.opts.maxPromptWords)
    throw new EngineError('PROMPT_TOO_LONG', `prompt has ${words.length} words, limit ${ctx.opts.maxPromptWords}`, { words: words.length, limit: ctx.opts.maxPromptWords });
  const mode = req.mode ?? 'progressive';
  if (!MODES.includes(mode)) throw new EngineError('OUT_OF_RANGE', `mode must be one of ${MODES.join(', ')}`, { param: 'mode' });
  // a sizing field the mode never reads is refused, not silently ignored
  if (mode !== 'baseline')
    for (const k of ['steps', 'cfgInterval'] as const)
      if (req[k] !== undefined && req[k] !== null) throw new EngineError('INVALID_INPUT', `${k} applies to mode baseline only (the ${mode} samplers have their own fixed steps)`, { param: k });
  if (req.edit !== undefined && req.edit !== null && typeof req.edit !== 'boolean') throw new EngineError('INVALID_INPUT', 'edit must be a boolean', { param: 'edit' });
  if (req.thinkTemperature !== undefined && req.thinkTemperature !== null && req.think !== true)
    throw new EngineError('INVALID_INPUT', 'thinkTemperature applies with think: true only', { param: 'thinkTemperature' });
  let source: ValidatedGenerate['source'];
  if (req.sourceImage !== undefined && req.sourceImage !== null) source = { image: req.sourceImage, from: 'request' };
  else if (req.edit) {
    if (!req.session) throw new EngineError('INVALID_INPUT', 'an edit needs sourceImage, or a session whose latest image to edit', { param: 'sourceImage' });
    if (!conversation?.image) throw new EngineError('INVALID_INPUT', 'this session has no image to edit yet; give sourceImage', { param: 'sourceImage' });
    source = { image: conversation.image, from: 'session', ...(conversation.imageInfo ? { info: conversation.imageInfo } : {}) };
  }
  const edit = !!source;
  if (source) {
    if (!m.graphs.vision || !m.graphs.vae_encoder) throw new EngineError('INVALID_INPUT', 'this model pack cannot edit images');
    checkInputImage(source.image, 'sourceImage', 'sourceImage');
  }
  if (!edit && req.cfgImageScale != null)
    throw new EngineError('INVALID_INPUT', 'cfgImageScale applies to edits only (text-to-image has no image guidance)', { param: 'cfgImageScale' });
  const d = m.sampler_defaults;
  const seed = V.opt(req.seed, (v) => V.num('seed', v, 0, Number.MAX_SAFE_INTEGER, { integer: true }), randomSeed());
  const steps = V.opt(req.steps, (v) => V.num('steps', v, SAMPLER_LIMITS.steps.min, SAMPLER_LIMITS.steps.max, { integer: true }), d.steps);
  const textScale = V.opt(req.cfgTextScale, (v) => V.num('cfgTextScale', v, SAMPLER_LIMITS.cfgScale.min, SAMPLER_LIMITS.cfgScale.max), d.cfg_text_scale);
  const imageScale = V.opt(req.cfgImageScale, (v) => V.num('cfgImageScale', v, SAMPLER_LIMITS.cfgScale.min, SAMPLER_LIMITS.cfgScale.max), d.cfg_image_scale);
  const shift = V.opt(req.timestepShift, (v) => V.num('timestepShift', v, SAMPLER_LIMITS.timestepShift.min, SAMPLER_LIMITS.timestepShift.max, { loExclusive: true }), d.shift);
  let interval: [number, number];
  if (req.cfgInterval != null) {
    const iv = req.cfgInterval;
    if (!Array.isArray(iv) || iv.length !== 2) throw new EngineError('OUT_OF_RANGE', 'cfgInterval must be [lo, hi]', { param: 'cfgInterval' });
    const lo = V.num('cfgInterval[0]', iv[0], 0, 1);
    const hi = V.num('cfgInterval[1]', iv[1], 0, 1);
    if (lo >= hi) throw new EngineError('OUT_OF_RANGE', 'cfgInterval must have lo < hi', { param: 'cfgInterval' });
    interval = [lo, hi];
  } else {
    // Hyper-Bagel's baselines: text-to-image = GenEval settings (CFG over the whole trajectory,
    // 100 NFE at 50 steps); editing = GEdit settings (the pack's interval, 132 NFE at 50 steps).
    interval = edit ? [d.cfg_interval[0], d.cfg_interval[1]] : [0, 1];
  }
  return {
    words,
    mode,
    seed,
    edit,
    ...(source ? { source } : {}),
    steps,
    shift,
    shiftGiven: req.timestepShift != null,
    scalesGiven: { text: req.cfgTextScale != null, image: req.cfgImageScale != null },
    intermediatePreviews: !!req.intermediatePreviews,
    cfg: { textScale, imageScale: edit ? imageScale : 1, interval, renormType: d.cfg_renorm_type, renormMin: d.cfg_renorm_min },
  };
}

export function planSamplers(ctx: EngineCtx, v: ValidatedGenerate): { preview?: SamplerPlan; main: SamplerPlan } {
  const g = ctx.manifest.graphs;
  const few = (n: 1 | 6): SamplerPlan => {
    const graph: DenoiseGraph = n === 6 ? 'denoise_6nfe' : 'denoise_1nfe';
    const distilled = !!g[graph];
    // distilled graphs come with their own timestep grid (manifest.distilled.<graph>.timesteps), which an
    // explicit timestepShift replaces: the grid matters (docs/recipes-acceleration.md, "6-step grid")
    const grid = distilled && !v.shiftGiven ? ctx.manifest.distilled?.[graph]?.timesteps : undefined;
    const cfg = distilled ? distilledScales(ctx, graph, v) : v.cfg;
    return {
      name: distilled ? `distilled-${n}nfe` : `euler-${n} (base denoiser + CFG; no ${graph}.onnx in pack)`,
      graph: distilled ? graph : 'denoiser',
      scheduler: grid ? new EulerFlowScheduler(grid.length - 1, v.shift, grid) : new EulerFlowScheduler(n, v.shift),
      cfg,
      distilled,
    };
  };
  const baseline: SamplerPlan = { name: `euler-${v.steps} baseline`, graph: 'denoiser', scheduler: new EulerFlowScheduler(v.steps, v.shift), cfg: v.cfg, distilled: false };
  switch (v.mode) {
    case 'baseline':
      return { main: baseline };
    case '1nfe':
      return { main: few(1) };
    case '6nfe':
      return { main: few(6) };
    case 'progressive':
      return { preview: few(1), main: few(6) };
  }
}

/**
 * The guidance scales a sampler uses where a request gives none, and the range a request's must lie in:
 * a distilled graph's own (manifest.distilled.<graph>: cfg_*_scale, and cfg_*_range, the scales it was
 * trained on), else the pack's sampler defaults over SAMPLER_LIMITS (the baseline, and the base denoiser
 * standing in for a graph the pack lacks).
 */
export function samplerGuidance(manifest: EngineCtx['manifest'], graph: 'denoiser' | 'denoise_6nfe' | 'denoise_1nfe'): SamplerGuidance {
  const d = manifest.sampler_defaults;
  const dd = graph !== 'denoiser' && manifest.graphs[graph] ? manifest.distilled?.[graph] : undefined;
  const { min, max } = SAMPLER_LIMITS.cfgScale;
  const scale = (dflt: number, range?: [number, number]): ScaleRange => ({ default: dflt, min: range?.[0] ?? min, max: range?.[1] ?? max });
  return {
    text: scale(dd?.cfg_text_scale ?? d.cfg_text_scale, dd?.cfg_text_range),
    image: scale(dd?.cfg_image_scale ?? d.cfg_image_scale, dd?.cfg_image_range),
  };
}

/**
 * The guidance scales a distilled graph runs with: the request's, else the graph's own defaults, checked
 * against the range the graph was trained on (samplerGuidance). Text-to-image has no image guidance.
 */
function distilledScales(ctx: EngineCtx, graph: 'denoise_6nfe' | 'denoise_1nfe', v: ValidatedGenerate): CfgParams {
  const g = samplerGuidance(ctx.manifest, graph);
  const textScale = v.scalesGiven.text ? v.cfg.textScale : g.text.default;
  const imageScale = !v.edit ? 1 : v.scalesGiven.image ? v.cfg.imageScale : g.image.default;
  const check = (name: string, value: number, range: ScaleRange) => {
    if (value < range.min || value > range.max)
      throw new EngineError('OUT_OF_RANGE', `${name} must be in [${range.min}, ${range.max}] for the ${graph === 'denoise_6nfe' ? '6-NFE' : '1-NFE'} sampler (its training range), got ${value}`, {
        param: name,
        min: range.min,
        max: range.max,
      });
  };
  check('cfgTextScale', textScale, g.text);
  if (v.edit) check('cfgImageScale', imageScale, g.image);
  return { ...v.cfg, textScale, imageScale };
}

interface Ctx {
  seq: WorkerSequence;
  latentPos: number;
}

type Piece = Part | { kind: 'vae'; tokens: Float32Array };

/** Prefill one context: decoder for text/ViT runs, denoiser at t = 0 for a clean VAE block. */
async function buildContext(ectx: EngineCtx, pieces: Piece[], signal?: AbortSignal): Promise<Ctx> {
  const seq = await WorkerSequence.open(ectx.client, ectx.manifest.decoder.vocab, 64);
  try {
    let pos = 0;
    let run: Part[] = [];
    const flush = async () => {
      if (!run.length) return;
      const lay = layout(run, pos);
      run = [];
      if (!lay.positions.length) return;
      throwIfAborted(signal);
      await seq.extend(lay.segments, lay.positions, lay.mask, 'last');
      pos = lay.nextPos;
    };
    for (const p of pieces) {
      if (p.kind !== 'vae') {
        run.push(p);
        continue;
      }
      await flush();
      throwIfAborted(signal);
      // (the expected worker generation: after a crash the context's cache is gone, WORKER_CRASHED)
      await ectx.client.call({ op: 'denoise', graph: 'denoiser', seqs: [seq.id], positions: [pos], latent: p.tokens, t: 0, append: true }, [], seq.generation);
      pos += 1;
    }
    await flush();
    return { seq, latentPos: pos };
  } catch (e) {
    await seq.close();
    throw e;
  }
}

function throwIfAborted(signal?: AbortSignal) {
  if (signal?.aborted) throw new EngineError('CANCELLED', 'request cancelled');
}

/**
 * @param conversation the session's state when the request carries a session: an edit without
 *   sourceImage reads its latest image, and the final frame becomes its latest image
 */
export async function* runGenerate(
  ctx: EngineCtx,
  req: GenerateRequest,
  signal?: AbortSignal,
  conversation: ConversationState | null = null,
  /** the request's admission when the caller already holds it (think mode), else this admits */
  admitted?: Admission,
): AsyncGenerator<ImageFrame, void, void> {
  const t0 = performance.now();
  const v = validateGenerate(ctx, req, conversation);
  const plans = planSamplers(ctx, v);
  // the session is ours until freeSession(): called once its state is final (before the last event, so
  // the caller may send the next turn at once), never later, when a next request may hold it
  const { release, freeSession } = admitted ?? (await admit(ctx, conversation, signal));
  const m = ctx.manifest;
  const sp = m.special_tokens;
  const L = m.latent;
  const display = m.vision.image_size;
  const tokenDim = L.channels * L.patch * L.patch;
  const contexts: Ctx[] = [];
  const tm: Required<Omit<FrameTimings, 'thinkMs'>> = { prefillMs: 0, encodeSourceMs: 0, vitEncodeMs: 0, vaeEncodeMs: 0, samplingMs: 0, decodeMs: 0, imageEncodeMs: 0 };
  const timed = async <T>(k: keyof typeof tm, f: () => Promise<T>): Promise<T> => {
    const a = performance.now();
    try {
      return await f();
    } finally {
      tm[k] += performance.now() - a;
    }
  };
  let sourceInfo: InputImageInfo | undefined;
  try {
    // ---- shared prefill
    const needCfg = [plans.preview, plans.main].some((p) => p && !p.distilled && (p.cfg.textScale > 1 || p.cfg.imageScale > 1));
    let cond: Ctx;
    let textUncond: Ctx | null = null;
    let imageUncond: Ctx | null = null;
    if (v.edit) {
      const fit = await fitImage(v.source!.image, m.vision.image_size, v.source!.from);
      const src = fit.image;
      // a remembered image reports how it was fitted when it came into the session
      sourceInfo = v.source!.info ? { ...v.source!.info, source: v.source!.from } : fit.info;
      throwIfAborted(signal);
      const px64 = rgbToChw(src, m.vision.image_size);
      const vit = await timed('vitEncodeMs', () => ctx.client.call<Float32Array>({ op: 'vision', pixels: px64, batch: 1 }, [px64.buffer as ArrayBuffer]));
      throwIfAborted(signal);
      const pxG = rgbToChw(src, L.image_size);
      const z = await timed('vaeEncodeMs', () => ctx.client.call<Float32Array>({ op: 'vae_encode', pixels: pxG }, [pxG.buffer as ArrayBuffer]));
      tm.encodeSourceMs = tm.vitEncodeMs + tm.vaeEncodeMs;
      const vae = patchify(z, L.channels, L.height, L.width, L.patch);
      const img = (): Piece[] => [
        { kind: 'ids', ids: [sp.bos, sp.vision_start] },
        { kind: 'image', embeds: vit, count: m.vision.tokens },
        { kind: 'ids', ids: [sp.vision_end, sp.gen_start] },
        { kind: 'vae', tokens: vae },
      ];
      cond = await timed('prefillMs', () => buildContext(ctx, [...img(), { kind: 'ids', ids: [sp.gen_end, ...v.words, sp.gen_start] }], signal));
      contexts.push(cond);
      if (needCfg && v.cfg.textScale > 1) {
        textUncond = await timed('prefillMs', () => buildContext(ctx, [...img(), { kind: 'ids', ids: [sp.gen_end, sp.gen_start] }], signal));
        contexts.push(textUncond);
      }
      if (needCfg && v.cfg.imageScale > 1) {
        imageUncond = await timed('prefillMs', () => buildContext(ctx, [{ kind: 'ids', ids: [sp.bos, ...v.words, sp.gen_start] }], signal));
        contexts.push(imageUncond);
      }
    } else {
      cond = await timed('prefillMs', () => buildContext(ctx, [{ kind: 'ids', ids: [sp.bos, ...v.words, sp.gen_start] }], signal));
      contexts.push(cond);
      if (needCfg && v.cfg.textScale > 1) {
        textUncond = await timed('prefillMs', () => buildContext(ctx, [{ kind: 'ids', ids: [sp.bos, sp.gen_start] }], signal));
        contexts.push(textUncond);
      }
    }
    // ---- noise (the same for every sampler of the request: seeds make images reproducible)
    const rng = new Rng(v.seed);
    const noise = patchify(rng.fillNormal(new Float32Array(L.channels * L.height * L.width)), L.channels, L.height, L.width, L.patch);

    // every frame is decoded by the VAE: the pack's linear latent→RGB factors (manifest preview) cannot
    // show this VAE's latents (even the final's own latent shows as grey blocks through them)
    const frame = async (stage: ImageFrame['stage'], nfe: number, step: number, tokens: Float32Array, plan: SamplerPlan): Promise<ImageFrame> => {
      const latent = unpatchify(tokens, L.channels, L.height, L.width, L.patch);
      const d0 = performance.now();
      throwIfAborted(signal);
      const px = await ctx.client.call<Float32Array>({ op: 'vae_decode', latent }, [latent.buffer as ArrayBuffer]);
      const rgb = chwToRgb(px, L.image_size, display);
      tm.decodeMs += performance.now() - d0;
      const image = await timed('imageEncodeMs', () => encodeImage(rgb, stage === 'final' ? 'png' : 'jpeg'));
      const f: ImageFrame = { stage, nfe, step, elapsedMs: performance.now() - t0, seed: v.seed, image, rgb, sampler: plan.name, timings: { ...tm } };
      if (sourceInfo) f.sourceImage = sourceInfo;
      return f;
    };

    /** Runs one sampler from the shared noise; yields intermediate x0 previews if asked. */
    async function* sample(plan: SamplerPlan, previews: boolean): AsyncGenerator<ImageFrame, { x: Float32Array; nfe: number }, void> {
      let x = noise;
      let nfe = 0;
      const s = plan.scheduler;
      for (let i = 0; i < s.steps; i++) {
        throwIfAborted(signal);
        const st0 = performance.now();
        const t = s.timesteps[i]!;
        let vel: Float32Array;
        if (plan.distilled) {
          vel = await ctx.client.call<Float32Array>({
            op: 'denoise', graph: plan.graph, seqs: [cond.seq.id], positions: [cond.latentPos], latent: x, t, append: false,
            cfgText: plan.cfg.textScale, cfgImage: plan.cfg.imageScale,
          }, [], cond.seq.generation);
          nfe += 1;
        } else {
          const on = cfgActive(t, plan.cfg.interval);
          const use = [cond, ...(on && textUncond ? [textUncond] : []), ...(on && imageUncond ? [imageUncond] : [])];
          const out = await ctx.client.call<Float32Array>({
            op: 'denoise', graph: 'denoiser', seqs: use.map((c) => c.seq.id), positions: use.map((c) => c.latentPos), latent: x, t, append: false,
            batch: ctx.opts.batchCfg,
          }, [], cond.seq.generation);
          nfe += use.length;
          const n = x.length;
          const part = (c: Ctx | null) => (c && use.includes(c) ? out.subarray(use.indexOf(c) * n, (use.indexOf(c) + 1) * n) : null);
          vel = on ? combineCfg(out.subarray(0, n), part(textUncond), part(imageUncond), plan.cfg, tokenDim) : out.subarray(0, n);
        }
        const r = s.step(vel, i, x);
        x = r.prev;
        tm.samplingMs += performance.now() - st0;
        if (previews && i < s.steps - 1) yield await frame('preview', nfe, i + 1, r.x0, plan);
      }
      return { x, nfe };
    }

    if (plans.preview) {
      const it = sample(plans.preview, false);
      let r = await it.next();
      while (!r.done) r = await it.next();
      yield await frame('preview', r.value.nfe, plans.preview.scheduler.steps, r.value.x, plans.preview);
    }
    const it = sample(plans.main, v.intermediatePreviews);
    let r = await it.next();
    while (!r.done) {
      yield r.value;
      r = await it.next();
    }
    const final = await frame('final', r.value.nfe, plans.main.scheduler.steps, r.value.x, plans.main);
    if (conversation) {
      // the final is the session's latest image; the conversation has not seen it yet (the next
      // understand turn feeds it). The session is free once this is recorded.
      // (a copy: the caller owns the frame's pixels and may transfer them)
      const kept = await fitImage(final.rgb, m.vision.image_size);
      // a cancel that came while the final was decoded and encoded: the client will not get this image,
      // so the session must not keep it (no await between this check and the yield below)
      throwIfAborted(signal);
      conversation.image = kept.image === final.rgb ? { ...final.rgb, data: final.rgb.data.slice() } : kept.image;
      conversation.imageInfo = { originalWidth: final.rgb.width, originalHeight: final.rgb.height, width: display, height: display, resized: final.rgb.width !== display, cropped: false, source: 'session' };
      conversation.imageInContext = false;
      freeSession();
    }
    yield final;
  } catch (e) {
    // a worker crash during the job took the session's conversation (its KV cache) with it too: reset it
    // and say so here, rather than fail the session's next understand turn with it
    if (conversation?.seq && !conversation.seq.alive && e instanceof EngineError && e.code === 'WORKER_CRASHED') throw sessionLost(conversation);
    throw e;
  } finally {
    freeSession();
    await Promise.all(contexts.map((c) => c.seq.close()));
    release!();
  }
}
