// The independent evaluator's detector: image → recovered Scene, analytic (colour model + template
// fit against the renderer's own coverage masks), no learned weights, nothing any recipe can train.
//
// Model of a cell: every pixel is  B + t·(C − B)  where B is the background colour, C one object
// colour and t ∈ [0,1] the object's coverage there (exactly how render.ts blends). Per cell we
//   1. fit jointly, by least squares, the object colour C and a template t for each shape×size: the
//      renderer's coverage mask (sharp, and blurred by one and by two 3×3 box passes, to tolerate soft
//      images), keeping the combination of least error;
//   2. refit every template moved (≤ 2 px per axis) so its centroid meets the observed one, for objects
//      drawn slightly off the grid;
//   3. call an object only when that template explains a real share of its own energy better than
//      "background only" does.
import type { RgbImage } from '../engine/types.ts';
import { canonicalScene, type Scene, type SceneObject } from '../world/scene.ts';
import { IMAGE_SIZE, objectCoverage } from '../world/render.ts';
import { BACKGROUND_COLORS, BACKGROUNDS, CELLS, COLORS, OBJECT_COLORS, SHAPES, SIZES, type BackgroundColor, type Cell, type ObjectColor, type Shape, type Size } from '../world/vocabulary.ts';
import { WorldError } from '../world/errors.ts';

type Rgb = readonly [number, number, number];

/** Resamples to size×size: area averaging when shrinking, bilinear (pixel centres aligned) when growing. */
export function resampleRgb(img: RgbImage, size = IMAGE_SIZE): RgbImage {
  const { width: w, height: h, data } = img;
  if (w === size && h === size) return img;
  const out = new Uint8Array(size * size * 3);
  const sx = w / size, sy = h / size;
  for (let y = 0; y < size; y++) {
    for (let x = 0; x < size; x++) {
      const acc = [0, 0, 0];
      if (sx >= 1 && sy >= 1) {
        // area average over the source footprint [x·sx, (x+1)·sx) × [y·sy, (y+1)·sy)
        const x0 = x * sx, x1 = (x + 1) * sx, y0 = y * sy, y1 = (y + 1) * sy;
        let wsum = 0;
        for (let yy = Math.floor(y0); yy < Math.ceil(y1); yy++) {
          const wy = Math.min(yy + 1, y1) - Math.max(yy, y0);
          for (let xx = Math.floor(x0); xx < Math.ceil(x1); xx++) {
            const wx = Math.min(xx + 1, x1) - Math.max(xx, x0);
            const wgt = wx * wy;
            const i = (yy * w + xx) * 3;
            for (let k = 0; k < 3; k++) acc[k]! += data[i + k]! * wgt;
            wsum += wgt;
          }
        }
        for (let k = 0; k < 3; k++) acc[k] = acc[k]! / wsum;
      } else {
        const fx = Math.min(Math.max((x + 0.5) * sx - 0.5, 0), w - 1), fy = Math.min(Math.max((y + 0.5) * sy - 0.5, 0), h - 1);
        const xa = Math.floor(fx), ya = Math.floor(fy), xb = Math.min(xa + 1, w - 1), yb = Math.min(ya + 1, h - 1);
        const ax = fx - xa, ay = fy - ya;
        for (let k = 0; k < 3; k++) {
          const p = (xx: number, yy: number) => data[(yy * w + xx) * 3 + k]!;
          acc[k] = (1 - ay) * ((1 - ax) * p(xa, ya) + ax * p(xb, ya)) + ay * ((1 - ax) * p(xa, yb) + ax * p(xb, yb));
        }
      }
      for (let k = 0; k < 3; k++) out[(y * size + x) * 3 + k] = Math.min(255, Math.max(0, Math.round(acc[k]!)));
    }
  }
  return { width: size, height: size, data: out };
}

const dist2 = (a: ArrayLike<number>, b: ArrayLike<number>) => (a[0]! - b[0]!) ** 2 + (a[1]! - b[1]!) ** 2 + (a[2]! - b[2]!) ** 2;

/** Background: the palette background colour that the most pixels are nearest to (among all palette colours). */
export function detectBackground(img: RgbImage): BackgroundColor {
  const palette: Array<[string, Rgb]> = [...Object.entries(BACKGROUND_COLORS), ...Object.entries(OBJECT_COLORS)];
  const votes = new Map<string, number>();
  for (let i = 0; i < img.width * img.height; i++) {
    const px = img.data.subarray(i * 3, i * 3 + 3);
    let best = '', bd = Infinity;
    for (const [name, c] of palette) { const d = dist2(px, c); if (d < bd) { bd = d; best = name; } }
    votes.set(best, (votes.get(best) ?? 0) + 1);
  }
  let bg: BackgroundColor = BACKGROUNDS[0]!, n = -1;
  for (const b of BACKGROUNDS) { const v = votes.get(b) ?? 0; if (v > n) { n = v; bg = b; } }
  return bg;
}

interface CellBox { x0: number; y0: number; x1: number; y1: number } // inclusive
interface Template { shape: Shape; size: Size; variants: Float32Array[]; energy: number; cx: number; cy: number }

const S = IMAGE_SIZE;

function cellBox(cell: Cell): CellBox {
  const i = CELLS.indexOf(cell);
  const row = Math.floor(i / 3), col = i % 3;
  const c = S / 3;
  return { x0: Math.ceil(col * c), x1: Math.ceil((col + 1) * c) - 1, y0: Math.ceil(row * c), y1: Math.ceil((row + 1) * c) - 1 };
}

function boxBlur(t: Float32Array, w: number, h: number): Float32Array {
  const out = new Float32Array(t.length);
  for (let y = 0; y < h; y++) {
    for (let x = 0; x < w; x++) {
      let s = 0, n = 0;
      for (let dy = -1; dy <= 1; dy++) for (let dx = -1; dx <= 1; dx++) {
        const yy = y + dy, xx = x + dx;
        if (yy < 0 || yy >= h || xx < 0 || xx >= w) continue;
        s += t[yy * w + xx]!; n++;
      }
      out[y * w + x] = s / n;
    }
  }
  return out;
}

let templateCache: Map<Cell, { box: CellBox; templates: Template[] }> | undefined;

/** Coverage templates per cell (t in [0,1] over the cell box), sharp and blurred; computed once. */
function templatesByCell(): Map<Cell, { box: CellBox; templates: Template[] }> {
  if (templateCache) return templateCache;
  templateCache = new Map();
  for (const cell of CELLS) {
    const box = cellBox(cell);
    const w = box.x1 - box.x0 + 1, h = box.y1 - box.y0 + 1;
    const templates: Template[] = [];
    for (const shape of SHAPES) {
      for (const size of SIZES) {
        const cov = objectCoverage({ shape, size, cell });
        const sharp = new Float32Array(w * h);
        for (let y = 0; y < h; y++) for (let x = 0; x < w; x++) sharp[y * w + x] = cov[(box.y0 + y) * S + box.x0 + x]! / 16;
        const b1 = boxBlur(sharp, w, h);
        const b2 = boxBlur(b1, w, h);
        let energy = 0, sw = 0, sx = 0, sy = 0;
        for (const v of sharp) energy += v * v;
        for (let y = 0; y < h; y++) for (let x = 0; x < w; x++) if (sharp[y * w + x]! > 0.5) { sw++; sx += x; sy += y; }
        templates.push({ shape, size, variants: [sharp, b1, b2], energy, cx: sx / sw, cy: sy / sw });
      }
    }
    templateCache.set(cell, { box, templates });
  }
  return templateCache;
}

/** Median of each channel over pixels within RGB distance 40 of the `bg` palette colour: the observed background. */
function observedBackground(img: RgbImage, bg: BackgroundColor): [number, number, number] {
  const ref = BACKGROUND_COLORS[bg];
  const hist = [new Uint32Array(256), new Uint32Array(256), new Uint32Array(256)];
  let n = 0;
  for (let i = 0; i < img.width * img.height; i++) {
    const px = img.data.subarray(i * 3, i * 3 + 3);
    if (dist2(px, ref) > 40 * 40) continue;
    for (let k = 0; k < 3; k++) hist[k]![px[k]!]!++;
    n++;
  }
  if (n === 0) return [ref[0], ref[1], ref[2]];
  const med = (hgm: Uint32Array) => { let acc = 0; for (let v = 0; v < 256; v++) { acc += hgm[v]!; if (acc * 2 >= n) return v; } return 255; };
  return [med(hist[0]!), med(hist[1]!), med(hist[2]!)];
}

export interface CellFit {
  cell: Cell;
  object?: SceneObject;
  /** 1 − SSE(best template) / SSE(background only): 1 = perfectly explained, ≤ 0 = nothing there */
  gain: number;
}

/** Minimum share of a template's own energy its fit must gain over "background only" to count as an object. */
const MIN_GAIN = 0.35;
const COLOR_CANDIDATES = 3;
/** Largest off-grid displacement (pixels, per axis) the shifted template fit allows. */
const MAX_SHIFT = 2;
const SHIFT_MARGIN = 0.1;

function fitCell(img: RgbImage, B: readonly number[], cell: Cell, box: CellBox, templates: Template[]): CellFit {
  const w = box.x1 - box.x0 + 1, h = box.y1 - box.y0 + 1;
  const n = w * h;
  // the cell's pixels minus the background: d = P − B
  const d = new Float32Array(n * 3);
  let nullSse = 0;
  for (let y = 0; y < h; y++) for (let x = 0; x < w; x++) {
    const i = ((box.y0 + y) * S + box.x0 + x) * 3, j = (y * w + x) * 3;
    for (let k = 0; k < 3; k++) { const v = img.data[i + k]! - B[k]!; d[j + k] = v; nullSse += v * v; }
  }
  // Joint least-squares fit over colour × shape × size × blur: SSE = Σ|d − t·e|² = nullSse − Σ(2t·(d·e) − t²·ee),
  // so maximising gain = Σ(2t·(d·e) − t²·ee) minimises the error.
  // To save time, only the COLOR_CANDIDATES colours whose free per-pixel fit (t ∈ [0,1] chosen for
  // each pixel) leaves the least residual go on to the template fit.
  const proj = new Float32Array(n);
  const free: Array<{ color: ObjectColor; res: number }> = [];
  for (const color of COLORS) {
    const C = OBJECT_COLORS[color];
    const e0 = C[0] - B[0]!, e1 = C[1] - B[1]!, e2 = C[2] - B[2]!;
    const ee = e0 * e0 + e1 * e1 + e2 * e2;
    let res = 0;
    for (let p = 0; p < n; p++) {
      const j = p * 3;
      const t = Math.min(1, Math.max(0, (d[j]! * e0 + d[j + 1]! * e1 + d[j + 2]! * e2) / ee));
      res += (d[j]! - t * e0) ** 2 + (d[j + 1]! - t * e1) ** 2 + (d[j + 2]! - t * e2) ** 2;
    }
    free.push({ color, res });
  }
  free.sort((a, b) => a.res - b.res);
  let best: { tpl: Template; color: ObjectColor } | undefined, bestGain = -Infinity, bestRel = -Infinity;
  let bestEe = 1;
  const bestProj = new Float32Array(n);
  for (const { color } of free.slice(0, COLOR_CANDIDATES)) {
    const C = OBJECT_COLORS[color];
    const e0 = C[0] - B[0]!, e1 = C[1] - B[1]!, e2 = C[2] - B[2]!;
    const ee = e0 * e0 + e1 * e1 + e2 * e2;
    for (let p = 0; p < n; p++) proj[p] = d[p * 3]! * e0 + d[p * 3 + 1]! * e1 + d[p * 3 + 2]! * e2;
    let improved = false;
    for (const tpl of templates) {
      for (const t of tpl.variants) {
        let gain = 0, tt = 0;
        for (let p = 0; p < n; p++) { const v = t[p]!; if (v === 0) continue; gain += 2 * v * proj[p]! - v * v * ee; tt += v * v; }
        if (gain > bestGain) { bestGain = gain; best = { tpl, color }; bestRel = gain / (tt * ee); improved = true; }
      }
    }
    if (improved) { bestProj.set(proj); bestEe = ee; }
  }
  // Generated images may place an object a pixel or two off the grid. With the best colour, try each
  // template once more, moved so that its centroid lands on the observed object's centroid.
  if (best) {
    let sw = 0, sx = 0, sy = 0;
    for (let y = 0; y < h; y++) for (let x = 0; x < w; x++) {
      if (bestProj[y * w + x]! / bestEe > 0.5) { sw++; sx += x; sy += y; }
    }
    if (sw >= 3) {
      const shiftBase = bestGain;
      const ox = sx / sw, oy = sy / sw;
      for (const tpl of templates) {
        const dx = Math.max(-MAX_SHIFT, Math.min(MAX_SHIFT, Math.round(ox - tpl.cx)));
        const dy = Math.max(-MAX_SHIFT, Math.min(MAX_SHIFT, Math.round(oy - tpl.cy)));
        if (dx === 0 && dy === 0) continue;
        for (const t of tpl.variants) {
          let gain = 0, tt = 0;
          for (let y = Math.max(0, dy); y < Math.min(h, h + dy); y++) {
            for (let x = Math.max(0, dx); x < Math.min(w, w + dx); x++) {
              const v = t[(y - dy) * w + (x - dx)]!;
              if (v === 0) continue;
              gain += 2 * v * bestProj[y * w + x]! - v * v * bestEe; tt += v * v;
            }
          }
          // a moved template must beat the on-grid fit clearly (SHIFT_MARGIN of its own energy), so blur is not read as displacement
          if (gain - SHIFT_MARGIN * tt * bestEe > shiftBase && gain > bestGain) { bestGain = gain; best = { tpl, color: best.color }; bestRel = gain / (tt * bestEe); }
        }
      }
    }
  }
  const rel = nullSse > 0 ? bestGain / nullSse : 0;
  if (!best || bestRel < MIN_GAIN) return { cell, gain: Math.min(rel, 0) };
  return { cell, gain: rel, object: { shape: best.tpl.shape, color: best.color, size: best.tpl.size, cell } };
}

export interface Detection {
  scene: Scene;
  cells: CellFit[];
}

/** Full detection with per-cell fit diagnostics. Throws BAD_IMAGE for an image with no data. */
export function detectDetailed(input: RgbImage): Detection {
  if (!input || input.width < 4 || input.height < 4 || input.data.length !== input.width * input.height * 3) {
    throw new WorldError('BAD_IMAGE', `cannot detect on an image of ${input?.width}×${input?.height} with ${input?.data?.length} bytes`);
  }
  const img = resampleRgb(input);
  const background = detectBackground(img);
  const B = observedBackground(img, background);
  const cells: CellFit[] = [];
  for (const [cell, { box, templates }] of templatesByCell()) cells.push(fitCell(img, B, cell, box, templates));
  // Each colour-shape pair appears at most once in a valid scene; if the fit found it twice keep the best fit.
  const objects: SceneObject[] = [];
  for (const fit of [...cells].sort((a, b) => b.gain - a.gain)) {
    const o = fit.object;
    if (!o) continue;
    if (objects.some((p) => p.color === o.color && p.shape === o.shape)) continue;
    objects.push(o);
  }
  // A scene holds at most 4 objects: keep the four best-explained ones.
  const kept = objects.slice(0, 4);
  return { scene: canonicalScene({ background, objects: kept }), cells };
}

/**
 * Image (64×64, or any size: it is resampled to 64×64 first) → recovered scene. The result may hold
 * zero objects (an empty image) — it is what the image shows, not necessarily a valid world scene.
 */
export function detectScene(img: RgbImage): Scene {
  return detectDetailed(img).scene;
}
