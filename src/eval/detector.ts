// The independent evaluator's detector: image → recovered Scene, analytic (colour model + template
// fit against the renderer's own coverage masks), no learned weights, nothing any recipe can train.
//
// Model of a cell: every pixel is  B + t·(C − B)  where B is the background colour, C one object
// colour and t ∈ [0,1] the object's coverage there (exactly how render.ts blends). Per cell we
//   1. fit jointly, by least squares, the object colour C and a template t for each shape at every
//      radius of TEMPLATE_RADII (4.5–11 px, which includes the two rendered ones): the renderer's
//      coverage mask (sharp, and blurred by one and by two 3×3 box passes, to tolerate soft images),
//      keeping the combination of least error (a radius the renderer does not draw must do RADIUS_MARGIN
//      better than the drawn ones). The shape is the best fit's at whatever radius; the
//      size follows from that radius (below SIZE_SPLIT_RADIUS small, else large), so a correct shape
//      drawn a little too big or too small is still read as that shape;
//   2. refit every template moved (≤ 2 px per axis) so its centroid meets the observed one, for objects
//      drawn slightly off the grid;
//   3. call an object only when that template explains a real share of its own energy better than
//      "background only" does.
// Every cell is fitted on its own and every object found is returned: two objects of the same colour
// and shape, or more than four, are what the image shows (Detection.violations names such breaches of
// the world's rules; the scene itself is never trimmed to a valid one).
import type { RgbImage } from '../engine/types.ts';
import { canonicalScene, MAX_OBJECTS, type Scene, type SceneObject } from '../world/scene.ts';
import { IMAGE_SIZE, objectCenter, RADIUS, shapeCoverage } from '../world/render.ts';
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

/** Background: the palette background colour that the most pixels are nearest to (among all palette colours). */
export function detectBackground(img: RgbImage): BackgroundColor {
  // backgrounds first, then object colours (the first of equally near colours wins)
  const palette: Rgb[] = [...BACKGROUNDS.map((b) => BACKGROUND_COLORS[b]), ...COLORS.map((c) => OBJECT_COLORS[c])];
  const votes = new Uint32Array(palette.length);
  const data = img.data;
  for (let i = 0; i < img.width * img.height * 3; i += 3) {
    const r = data[i]!, g = data[i + 1]!, b = data[i + 2]!;
    let best = 0, bd = Infinity;
    for (let k = 0; k < palette.length; k++) {
      const c = palette[k]!;
      const d = (r - c[0]) ** 2 + (g - c[1]) ** 2 + (b - c[2]) ** 2;
      if (d < bd) { bd = d; best = k; }
    }
    votes[best]!++;
  }
  let bg: BackgroundColor = BACKGROUNDS[0]!, n = -1;
  for (const [k, b] of BACKGROUNDS.entries()) { const v = votes[k]!; if (v > n) { n = v; bg = b; } }
  return bg;
}

interface CellBox { x0: number; y0: number; x1: number; y1: number } // inclusive
/** One coverage mask over a cell box, stored sparsely: its non-zero pixels (x, y, index, value) and Σv². */
interface Mask { xs: Uint8Array; ys: Uint8Array; idx: Uint16Array; val: Float32Array; tt: number }
/** A shape at one radius: sharp and blurred masks, and the centroid of its sharp mask's inner pixels. */
interface Template { shape: Shape; radius: number; size: Size; variants: Mask[]; cx: number; cy: number; /** 0 at a rendered radius, else RADIUS_MARGIN */ margin: number }

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

/**
 * Radii (px) every shape is fitted at: 4.5 to 11 in 0.5 px steps, which includes the rendered ones
 * (RADIUS: small 6, large 9.5), so a generated shape drawn at an in-between size is matched by its
 * own outline and not by another shape's outline at one of the two rendered sizes.
 */
export const TEMPLATE_RADII: readonly number[] = Array.from({ length: 14 }, (_, i) => 4.5 + 0.5 * i);
/** A fitted radius below this (halfway between the rendered small and large radii) reads as small. */
export const SIZE_SPLIT_RADIUS = (RADIUS.small + RADIUS.large) / 2;

/**
 * Coverage (0..16) of `shape` centred on `cell` at circumradius `r`, over the whole image: the renderer's own
 * drawing (shapeCoverage, which objectCoverage draws with), so at a rendered radius clean renders fit exactly.
 */
function coverageAt(shape: Shape, cell: Cell, r: number): Uint8Array {
  const { cx, cy } = objectCenter({ cell });
  return shapeCoverage(shape, cx, cy, r);
}

function sparseMask(t: Float32Array, w: number): Mask {
  let nnz = 0;
  for (const v of t) if (v !== 0) nnz++;
  const m: Mask = { xs: new Uint8Array(nnz), ys: new Uint8Array(nnz), idx: new Uint16Array(nnz), val: new Float32Array(nnz), tt: 0 };
  let k = 0;
  for (let p = 0; p < t.length; p++) {
    const v = t[p]!;
    if (v === 0) continue;
    m.xs[k] = p % w; m.ys[k] = Math.floor(p / w); m.idx[k] = p; m.val[k] = v; m.tt += v * v; k++;
  }
  return m;
}

let templateCache: Map<Cell, { box: CellBox; templates: Template[] }> | undefined;

/** Coverage templates per cell (t in [0,1] over the cell box) for every shape and radius, sharp and blurred; computed once. */
function templatesByCell(): Map<Cell, { box: CellBox; templates: Template[] }> {
  if (templateCache) return templateCache;
  templateCache = new Map();
  for (const cell of CELLS) {
    const box = cellBox(cell);
    const w = box.x1 - box.x0 + 1, h = box.y1 - box.y0 + 1;
    const templates: Template[] = [];
    for (const shape of SHAPES) {
      for (const radius of TEMPLATE_RADII) {
        const cov = coverageAt(shape, cell, radius);
        const sharp = new Float32Array(w * h);
        for (let y = 0; y < h; y++) for (let x = 0; x < w; x++) sharp[y * w + x] = cov[(box.y0 + y) * S + box.x0 + x]! / 16;
        const b1 = boxBlur(sharp, w, h);
        const b2 = boxBlur(b1, w, h);
        let sw = 0, sx = 0, sy = 0;
        for (let y = 0; y < h; y++) for (let x = 0; x < w; x++) if (sharp[y * w + x]! > 0.5) { sw++; sx += x; sy += y; }
        const size: Size = radius < SIZE_SPLIT_RADIUS ? 'small' : 'large';
        const margin = SIZES.some((z) => RADIUS[z] === radius) ? 0 : RADIUS_MARGIN;
        templates.push({ shape, radius, size, variants: [sharp, b1, b2].map((t) => sparseMask(t, w)), cx: sx / sw, cy: sy / sw, margin });
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
  const data = img.data;
  for (let i = 0; i < img.width * img.height * 3; i += 3) {
    const r = data[i]!, g = data[i + 1]!, b = data[i + 2]!;
    if ((r - ref[0]) ** 2 + (g - ref[1]) ** 2 + (b - ref[2]) ** 2 > 40 * 40) continue;
    hist[0]![r]!++; hist[1]![g]!++; hist[2]![b]!++;
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
  /** circumradius (px) of the best-fitting template, when an object was found; size is read from it */
  radius?: number;
}

/** Minimum share of a template's own energy its fit must gain over "background only" to count as an object. */
const MIN_GAIN = 0.35;
const COLOR_CANDIDATES = 3;
/** Largest off-grid displacement (pixels, per axis) the shifted template fit allows. */
const MAX_SHIFT = 2;
const SHIFT_MARGIN = 0.1;
/**
 * A template at a radius the renderer does not draw must beat the rendered-radius fits by this share of
 * its own energy: soft small squares and circles (JPEG, 1 px shifts) are otherwise matched about as well
 * by the other shape a half pixel bigger or smaller, while a shape really drawn at an in-between size
 * fits its own outline there far better than this.
 */
const RADIUS_MARGIN = 0.02;

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
  // Σ t·(d·e) = (Σ t·d)·e: one pass per mask gives its gain for every candidate colour.
  const cands = free.slice(0, COLOR_CANDIDATES).map(({ color }) => {
    const C = OBJECT_COLORS[color];
    const e0 = C[0] - B[0]!, e1 = C[1] - B[1]!, e2 = C[2] - B[2]!;
    return { color, e0, e1, e2, ee: e0 * e0 + e1 * e1 + e2 * e2 };
  });
  // candidates compete on score = gain − margin·(own energy), margin RADIUS_MARGIN off the rendered radii;
  // bestGain and bestRel are the chosen fit's own, unpenalised
  let best: { tpl: Template; color: ObjectColor } | undefined, bestGain = -Infinity, bestRel = -Infinity, bestScore = -Infinity;
  for (const tpl of templates) {
    for (const m of tpl.variants) {
      // gain = Σ(2v·(d·e) − v²·ee) = 2·(Σ v·d)·e − tt·ee
      const { idx, val } = m;
      let D0 = 0, D1 = 0, D2 = 0;
      for (let k = 0; k < idx.length; k++) {
        const v = val[k]!, j = idx[k]! * 3;
        D0 += v * d[j]!; D1 += v * d[j + 1]!; D2 += v * d[j + 2]!;
      }
      for (const c of cands) {
        const gain = 2 * (D0 * c.e0 + D1 * c.e1 + D2 * c.e2) - m.tt * c.ee;
        const score = gain - tpl.margin * m.tt * c.ee;
        if (score > bestScore) { bestScore = score; bestGain = gain; best = { tpl, color: c.color }; bestRel = gain / (m.tt * c.ee); }
      }
    }
  }
  // the best colour's projection d·e per pixel, for the off-grid refit below
  const bestProj = new Float32Array(n);
  let bestEe = 1;
  const bc = cands.find((c) => c.color === best?.color);
  if (bc) {
    bestEe = bc.ee;
    for (let p = 0; p < n; p++) bestProj[p] = d[p * 3]! * bc.e0 + d[p * 3 + 1]! * bc.e1 + d[p * 3 + 2]! * bc.e2;
  }
  // Generated images may place an object a pixel or two off the grid. With the best colour, try each
  // template once more, moved so that its centroid lands on the observed object's centroid.
  if (best) {
    let sw = 0, sx = 0, sy = 0;
    for (let y = 0; y < h; y++) for (let x = 0; x < w; x++) {
      if (bestProj[y * w + x]! / bestEe > 0.5) { sw++; sx += x; sy += y; }
    }
    if (sw >= 3) {
      const shiftBase = bestScore;
      const ox = sx / sw, oy = sy / sw;
      for (const tpl of templates) {
        const dx = Math.max(-MAX_SHIFT, Math.min(MAX_SHIFT, Math.round(ox - tpl.cx)));
        const dy = Math.max(-MAX_SHIFT, Math.min(MAX_SHIFT, Math.round(oy - tpl.cy)));
        if (dx === 0 && dy === 0) continue;
        for (const m of tpl.variants) {
          // the mask moved by (dx, dy); what leaves the cell box is dropped
          let gain = 0, tt = 0;
          for (let k = 0; k < m.idx.length; k++) {
            const x = m.xs[k]! + dx, y = m.ys[k]! + dy;
            if (x < 0 || x >= w || y < 0 || y >= h) continue;
            const v = m.val[k]!;
            gain += 2 * v * bestProj[y * w + x]! - v * v * bestEe; tt += v * v;
          }
          // a moved template must beat the on-grid fit clearly (SHIFT_MARGIN of its own energy), so blur is not read as displacement
          const score = gain - tpl.margin * tt * bestEe;
          if (score - SHIFT_MARGIN * tt * bestEe > shiftBase && score > bestScore) { bestScore = score; bestGain = gain; best = { tpl, color: best.color }; bestRel = gain / (tt * bestEe); }
        }
      }
    }
  }
  const rel = nullSse > 0 ? bestGain / nullSse : 0;
  if (!best || bestRel < MIN_GAIN) return { cell, gain: Math.min(rel, 0) };
  return { cell, gain: rel, radius: best.tpl.radius, object: { shape: best.tpl.shape, color: best.color, size: best.tpl.size, cell } };
}

export interface Detection {
  /** background and every object found, one per cell where one was found: never merged or capped */
  scene: Scene;
  cells: CellFit[];
  /**
   * The world's scene rules the detected scene breaks (more than MAX_OBJECTS objects, a colour-shape pair
   * twice, no object at all), one line each; empty when it is a valid world scene. Informational: the
   * scorers judge the scene as detected.
   */
  violations: string[];
}

/** The world's scene rules (world/scene.ts validateScene) that `scene` breaks, all of them, without throwing. */
export function worldRuleViolations(scene: Scene): string[] {
  const out: string[] = [];
  const n = scene.objects.length;
  if (n === 0) out.push('no object');
  if (n > MAX_OBJECTS) out.push(`${n} objects (a scene holds at most ${MAX_OBJECTS})`);
  const kinds = new Map<string, number>();
  for (const o of scene.objects) kinds.set(`${o.color} ${o.shape}`, (kinds.get(`${o.color} ${o.shape}`) ?? 0) + 1);
  for (const [kind, k] of kinds) if (k > 1) out.push(`${k} ${kind}s (each colour-shape pair appears at most once)`);
  return out;
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
  // every cell's object, as drawn: a duplicate colour-shape pair or a fifth object is a real error of the
  // image (three circles for "two circles", a move drawn as a copy) and must count against it
  const scene = canonicalScene({ background, objects: cells.flatMap((c) => (c.object ? [c.object] : [])) });
  return { scene, cells, violations: worldRuleViolations(scene) };
}

/**
 * Image (64×64, or any size: it is resampled to 64×64 first) → recovered scene. The result may hold
 * zero objects (an empty image), more than four, or a colour-shape pair twice — it is what the image
 * shows, not necessarily a valid world scene (detectDetailed(img).violations says which rules it breaks).
 */
export function detectScene(img: RgbImage): Scene {
  return detectDetailed(img).scene;
}
