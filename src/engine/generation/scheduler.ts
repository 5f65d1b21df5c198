// Euler flow-matching scheduler (diffusers style: timesteps + step()) with BAGEL's timestep shift.
// Convention (docs/model-pack.md): x_t = (1 - t)·x0 + t·ε, v = ε - x0, Euler from t to s:
// x_s = x_t + (s - t)·v, x0 prediction = x_t - t·v.

/** BAGEL: t' = shift·t / (1 + (shift - 1)·t) over t = linspace(1, 0, steps + 1). */
export function shiftedTimesteps(steps: number, shift: number): Float64Array {
  const ts = new Float64Array(steps + 1);
  for (let i = 0; i <= steps; i++) {
    const t = 1 - i / steps;
    ts[i] = (shift * t) / (1 + (shift - 1) * t);
  }
  ts[steps] = 0;
  return ts;
}

export interface StepOutput {
  /** x at the next timestep */
  prev: Float32Array;
  /** predicted clean sample at this step */
  x0: Float32Array;
}

export class EulerFlowScheduler {
  readonly timesteps: Float64Array;
  constructor(
    readonly steps: number,
    readonly shift: number,
    /** explicit timestep grid (distilled samplers use their own); overrides steps/shift */
    grid?: number[],
  ) {
    this.timesteps = grid ? Float64Array.from(grid) : shiftedTimesteps(steps, shift);
    if (grid) this.steps = grid.length - 1;
  }

  /** One Euler step from timesteps[i] to timesteps[i + 1] given the (guided) velocity. */
  step(v: Float32Array, i: number, x: Float32Array): StepOutput {
    const t = this.timesteps[i]!;
    const s = this.timesteps[i + 1]!;
    const prev = new Float32Array(x.length);
    const x0 = new Float32Array(x.length);
    for (let k = 0; k < x.length; k++) {
      prev[k] = x[k]! + (s - t) * v[k]!;
      x0[k] = x[k]! - t * v[k]!;
    }
    return { prev, x0 };
  }
}

export type RenormType = 'global' | 'channel' | 'text_channel';

export interface CfgParams {
  textScale: number;
  imageScale: number;
  /** CFG on when lo < t ≤ hi (shifted t) */
  interval: [number, number];
  renormType: RenormType;
  /** lower clamp of the renorm factor (1 disables renorm) */
  renormMin: number;
}

export function cfgActive(t: number, interval: [number, number]): boolean {
  return t > interval[0] && t <= interval[1];
}

function norms(x: Float32Array, perToken: number | null): Float64Array {
  if (perToken === null) {
    let s = 0;
    for (let i = 0; i < x.length; i++) s += x[i]! * x[i]!;
    return Float64Array.of(Math.sqrt(s));
  }
  const n = x.length / perToken;
  const out = new Float64Array(n);
  for (let j = 0; j < n; j++) {
    let s = 0;
    for (let c = 0; c < perToken; c++) s += x[j * perToken + c]! ** 2;
    out[j] = Math.sqrt(s);
  }
  return out;
}

/** Scale `x` so its norm (global or per token) does not exceed that of `ref` (BAGEL CFG-renorm). */
function renorm(x: Float32Array, ref: Float32Array, perToken: number | null, min: number): Float32Array {
  const nr = norms(ref, perToken);
  const nx = norms(x, perToken);
  const out = new Float32Array(x.length);
  const width = perToken ?? x.length;
  for (let j = 0; j < nr.length; j++) {
    const scale = Math.min(1, Math.max(min, nr[j]! / (nx[j]! + 1e-8)));
    for (let c = 0; c < width; c++) out[j * width + c] = x[j * width + c]! * scale;
  }
  return out;
}

/**
 * BAGEL's dual CFG: v_text = v_t_uncond + s_t·(v − v_t_uncond); v_cfg = v_i_uncond + s_i·(v_text − v_i_uncond);
 * then renorm ('global' over everything, 'channel' per token, 'text_channel' per token on v_text only).
 * `vText` / `vImage` null = that branch off (scale treated as 1). `tokenDim` = channels per token.
 * Unlike BAGEL, which guides only when the text scale is above 1, each guidance switches on by its own
 * scale (the API documents image guidance alone as valid).
 */
export function combineCfg(v: Float32Array, vText: Float32Array | null, vImage: Float32Array | null, p: CfgParams, tokenDim: number): Float32Array {
  if (!vText || p.textScale <= 1) {
    if (!vImage || p.imageScale <= 1) return v;
    const out = new Float32Array(v.length);
    for (let k = 0; k < v.length; k++) out[k] = vImage[k]! + p.imageScale * (v[k]! - vImage[k]!);
    // (text_channel renorms v_text only, which is v here: nothing to renorm)
    return p.renormMin >= 1 || p.renormType === 'text_channel' ? out : renorm(out, v, p.renormType === 'global' ? null : tokenDim, p.renormMin);
  }
  let vt: Float32Array = new Float32Array(v.length);
  for (let k = 0; k < v.length; k++) vt[k] = vText[k]! + p.textScale * (v[k]! - vText[k]!);
  if (p.renormType === 'text_channel' && p.renormMin < 1) vt = renorm(vt, v, tokenDim, p.renormMin);
  let out: Float32Array = vt;
  if (vImage && p.imageScale > 1) {
    out = new Float32Array(v.length);
    for (let k = 0; k < v.length; k++) out[k] = vImage[k]! + p.imageScale * (vt[k]! - vImage[k]!);
  }
  if (p.renormType !== 'text_channel' && p.renormMin < 1) out = renorm(out, v, p.renormType === 'global' ? null : tokenDim, p.renormMin);
  return out;
}

/** Latent [C,h,w] → tokens [(h/p)(w/p), C·p·p], row-major over patches, channel-major inside a token. */
export function patchify(latent: Float32Array, C: number, h: number, w: number, p: number): Float32Array {
  const gh = h / p;
  const gw = w / p;
  const D = C * p * p;
  const out = new Float32Array(gh * gw * D);
  for (let i = 0; i < gh; i++)
    for (let j = 0; j < gw; j++)
      for (let c = 0; c < C; c++)
        for (let a = 0; a < p; a++)
          for (let b = 0; b < p; b++) out[(i * gw + j) * D + c * p * p + a * p + b] = latent[c * h * w + (i * p + a) * w + (j * p + b)]!;
  return out;
}

export function unpatchify(tokens: Float32Array, C: number, h: number, w: number, p: number): Float32Array {
  const gh = h / p;
  const gw = w / p;
  const D = C * p * p;
  const out = new Float32Array(C * h * w);
  for (let i = 0; i < gh; i++)
    for (let j = 0; j < gw; j++)
      for (let c = 0; c < C; c++)
        for (let a = 0; a < p; a++)
          for (let b = 0; b < p; b++) out[c * h * w + (i * p + a) * w + (j * p + b)] = tokens[(i * gw + j) * D + c * p * p + a * p + b]!;
  return out;
}
