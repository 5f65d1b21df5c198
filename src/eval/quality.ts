// Image-quality proxy for edited/generated images: the share of pixels that are "clean colour".
// A clean render consists only of the background colour, object colours and anti-aliasing blends
// between the background and one object colour; noise, smears, colour casts and artefacts are not.
import type { RgbImage } from '../engine/types.ts';
import { BACKGROUND_COLORS, OBJECT_COLORS } from '../world/vocabulary.ts';
import { detectBackground, resampleRgb } from './detector.ts';

/** RGB distance within which a pixel counts as clean. Renders are exact up to rounding (≤ 1). */
export const CLEAN_TOLERANCE = 20;

/**
 * Fraction of pixels within CLEAN_TOLERANCE (Euclidean RGB, 0–255) of some segment from the image's
 * background palette colour to an object palette colour. 1.0 for any clean render.
 */
export function cleanColorFraction(input: RgbImage): number {
  const img = resampleRgb(input);
  const B = BACKGROUND_COLORS[detectBackground(img)];
  const segs = Object.values(OBJECT_COLORS).map((C) => {
    const e = [C[0] - B[0], C[1] - B[1], C[2] - B[2]] as const;
    return { e, ee: e[0] * e[0] + e[1] * e[1] + e[2] * e[2] };
  });
  const tol2 = CLEAN_TOLERANCE * CLEAN_TOLERANCE;
  let clean = 0;
  const n = img.width * img.height;
  for (let i = 0; i < n; i++) {
    const d0 = img.data[i * 3]! - B[0], d1 = img.data[i * 3 + 1]! - B[1], d2 = img.data[i * 3 + 2]! - B[2];
    const dd = d0 * d0 + d1 * d1 + d2 * d2;
    if (dd <= tol2) { clean++; continue; }
    for (const { e, ee } of segs) {
      const t = Math.min(1, Math.max(0, (d0 * e[0] + d1 * e[1] + d2 * e[2]) / ee));
      const r = (d0 - t * e[0]) ** 2 + (d1 - t * e[1]) ** 2 + (d2 - t * e[2]) ** 2;
      if (r <= tol2) { clean++; break; }
    }
  }
  return clean / n;
}
