// Ceilings for a pack's image path: the oracle's ground-truth images squeezed through what any
// generator of the pack must draw through. `lowres-oracle` keeps only the latent grid's pixel
// resolution (area-downsampled, then enlarged like the engine's frames); `vae-oracle` also passes
// them through the pack's VAE (encode, decode). It is the suite's reference scenes after the image path, not an
// upper bound: the reference draws one scene per prompt (small stars, objects near a cell edge blur in the VAE),
// and a generator choosing scenes that survive the VAE can score above it (think mode does: docs/results.md,
// "Session 27"); what it shows is how much the image path costs those scenes ("Session 17").
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { EngineError, type RgbImage } from '../engine/types.ts';
import { chwToRgb, rgbToChw } from '../engine/image/pixels.ts';
import { WorkerClient } from '../runtime/client.ts';
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
  /** stops the model worker, if one was started */
  close(): Promise<void>;
}

/** Opens the pack; with `withVae`, a model worker holding its VAE graphs (the engine's vae_encode / vae_decode). */
export async function openImagePath(packDir: string, withVae: boolean): Promise<ImagePath> {
  if (!existsSync(join(packDir, 'manifest.json'))) {
    throw new EngineError('MODEL_LOAD_FAILED', `no model pack at "${packDir}" (expected ${join(packDir, 'manifest.json')}); pass --pack DIR`);
  }
  const pack = loadPack(packDir);
  const m = pack.manifest;
  const size = m.latent.image_size;
  const display = m.vision.image_size;
  if (!withVae) return { size, display, close: async () => {} };
  const { embed, vae_encoder, vae_decoder } = pack.files;
  if (!vae_encoder || !vae_decoder) throw new EngineError('MODEL_LOAD_FAILED', `${packDir}: the pack has no vae_encoder and vae_decoder graphs to bound`);
  // the worker tabulates embed.onnx at start-up, so it comes along
  const client = new WorkerClient({ op: 'init', files: { embed, vae_encoder, vae_decoder }, manifest: m, tuning: { intraOpThreads: 1, interOpThreads: 1, allowSpinning: false } });
  try {
    await client.start();
  } catch (e) {
    await client.close();
    throw e;
  }
  return {
    size,
    display,
    roundTrip: async (chw) => {
      const latent = await client.call<Float32Array>({ op: 'vae_encode', pixels: chw }, [chw.buffer as ArrayBuffer]);
      return await client.call<Float32Array>({ op: 'vae_decode', latent }, [latent.buffer as ArrayBuffer]);
    },
    close: () => client.close(),
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
