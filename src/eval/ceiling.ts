// Ceilings for a pack's image path: the oracle's ground-truth images squeezed through what any
// generator of the pack must draw through. `lowres-oracle` keeps only the latent grid's pixel
// resolution (area-downsampled, then enlarged like the engine's frames); `vae-oracle` also passes
// them through the pack's VAE (encode, decode). No generator drawing in that latent space can
// score above the second on GenEval or GEdit, so it bounds what more training of the unified model can
// reach (docs/results.md, "Session 17").
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import * as ort from 'onnxruntime-node';
import { EngineError, type RgbImage } from '../engine/types.ts';
import { chwToRgb, rgbToChw } from '../engine/image/pixels.ts';
import { loadPack } from '../runtime/manifest.ts';
import type { EvalModel } from './model.ts';
import { oracleModel } from './oracle.ts';

export interface ImagePath {
  /** the latent grid's pixel size (manifest.latent.image_size) */
  size: number;
  /** the frames' size (manifest.vision.image_size) */
  display: number;
  /** VAE encode + decode of CHW pixels in [-1, 1] at `size`, or undefined for resolution alone */
  roundTrip?: (chw: Float32Array) => Promise<Float32Array>;
}

/**
 * Opens the pack's VAE graphs. An offline scoring tool: the sessions run on the calling thread
 * (the engine's worker_threads protect a server's event loop, which the evaluator does not have).
 */
export async function openImagePath(packDir: string, withVae: boolean): Promise<ImagePath> {
  if (!existsSync(join(packDir, 'manifest.json'))) {
    throw new EngineError('MODEL_LOAD_FAILED', `no model pack at "${packDir}" (expected ${join(packDir, 'manifest.json')}); pass --pack DIR`);
  }
  const pack = loadPack(packDir);
  const m = pack.manifest;
  const size = m.latent.image_size;
  const display = m.vision.image_size;
  if (!withVae) return { size, display };
  const enc = pack.files.vae_encoder;
  const dec = pack.files.vae_decoder;
  if (!enc || !dec) throw new EngineError('MODEL_LOAD_FAILED', `${packDir}: the pack has no vae_encoder and vae_decoder graphs to bound`);
  const opts: ort.InferenceSession.SessionOptions = { graphOptimizationLevel: 'all', intraOpNumThreads: 1 };
  const [e, d] = await Promise.all([ort.InferenceSession.create(enc, opts), ort.InferenceSession.create(dec, opts)]);
  const { channels, height, width } = m.latent;
  return {
    size,
    display,
    roundTrip: async (chw) => {
      const z = (await e.run({ pixels: new ort.Tensor('float32', chw, [1, 3, size, size]) }))['latent']!.data as Float32Array;
      const px = (await d.run({ latent: new ort.Tensor('float32', z, [1, channels, height, width]) }))['pixels']!.data as Float32Array;
      return px;
    },
  };
}

/** One image through the path: down to the latent grid's resolution, [VAE], and back up to the frame size. */
export async function throughPath(img: RgbImage, path: ImagePath): Promise<RgbImage> {
  let chw = rgbToChw(img, path.size);
  if (path.roundTrip) chw = await path.roundTrip(chw);
  return chwToRgb(chw, path.size, path.display);
}

/** The oracle whose generated and edited images go through `path` (its understanding is the oracle's). */
export function ceilingModel(path: ImagePath): EvalModel {
  const oracle = oracleModel();
  return {
    caption: (img) => oracle.caption(img),
    answer: (img, q) => oracle.answer(img, q),
    generate: async (p, seed) => throughPath(await oracle.generate(p, seed), path),
    edit: async (img, ins, seed) => throughPath(await oracle.edit(img, ins, seed), path),
  };
}
