// Scene → 64×64 RGB. Anti-aliased by 4×4 supersampling with integer blending and no trigonometry at
// run time (star vertices are constants), so output is byte-identical on every machine.
import type { RgbImage } from '../engine/types.ts';
import { cellRowCol, type Scene, type SceneObject } from './scene.ts';
import { BACKGROUND_COLORS, OBJECT_COLORS, type Shape, type Size } from './vocabulary.ts';

export const IMAGE_SIZE = 64;
export const CELL_SIZE = IMAGE_SIZE / 3;
/** Circumradius in pixels: large objects nearly fill their cell, small ones about 60% of that. */
export const RADIUS: Record<Size, number> = { small: 6, large: 9.5 };
const SUPERSAMPLE = 4;

// Unit-circumradius polygons, y pointing down. cos/sin of multiples of 18° written out.
const C18 = 0.9510565162951535, S18 = 0.3090169943749474, C54 = 0.5877852522924731, S54 = 0.8090169943749475;
const TRIANGLE: ReadonlyArray<readonly [number, number]> = [[0, -1], [0.8660254037844386, 0.5], [-0.8660254037844386, 0.5]];
const STAR_INNER = 0.45;
const STAR: ReadonlyArray<readonly [number, number]> = [
  [0, -1], [C54 * STAR_INNER, -S54 * STAR_INNER], [C18, -S18], [C18 * STAR_INNER, S18 * STAR_INNER], [C54, S54],
  [0, STAR_INNER], [-C54, S54], [-C18 * STAR_INNER, S18 * STAR_INNER], [-C18, -S18], [-C54 * STAR_INNER, -S54 * STAR_INNER],
];
/** Square half-side relative to the radius, so a square's area is close to the circle's. */
const SQUARE_HALF = 0.82;
/** Triangles are shifted down so their bounding box is centred in the cell. */
const TRIANGLE_SHIFT = 0.25;

function insidePolygon(poly: ReadonlyArray<readonly [number, number]>, x: number, y: number): boolean {
  let inside = false;
  for (let i = 0, j = poly.length - 1; i < poly.length; j = i++) {
    const [xi, yi] = poly[i]!;
    const [xj, yj] = poly[j]!;
    if (yi > y !== yj > y && x < ((xj - xi) * (y - yi)) / (yj - yi) + xi) inside = !inside;
  }
  return inside;
}

/** Is the point (dx, dy), relative to the object's centre and divided by its radius, inside the shape? */
export function insideUnitShape(shape: Shape, u: number, v: number): boolean {
  switch (shape) {
    case 'circle': return u * u + v * v <= 1;
    case 'square': return Math.abs(u) <= SQUARE_HALF && Math.abs(v) <= SQUARE_HALF;
    case 'triangle': return insidePolygon(TRIANGLE, u, v - TRIANGLE_SHIFT);
    case 'star': return insidePolygon(STAR, u, v);
  }
}

export function objectCenter(cellObj: Pick<SceneObject, 'cell'>): { cx: number; cy: number } {
  const { row, col } = cellRowCol(cellObj.cell);
  return { cx: (col + 0.5) * CELL_SIZE, cy: (row + 0.5) * CELL_SIZE };
}

/** Coverage (0..SUPERSAMPLE²) of one object over each pixel of its cell's bounding box. */
export function objectCoverage(o: Pick<SceneObject, 'shape' | 'size' | 'cell'>, size = IMAGE_SIZE): Uint8Array {
  const scale = size / IMAGE_SIZE;
  const { cx, cy } = objectCenter(o);
  return shapeCoverage(o.shape, cx * scale, cy * scale, RADIUS[o.size] * scale, size);
}

/**
 * Coverage (0..SUPERSAMPLE²) of `shape` centred at (cx, cy) with circumradius `r`, over a size×size image: the
 * renderer's drawing, also at radii it does not draw (the evaluator's detector fits those).
 */
export function shapeCoverage(shape: Shape, cx: number, cy: number, r: number, size = IMAGE_SIZE): Uint8Array {
  const cov = new Uint8Array(size * size);
  const x0 = Math.max(0, Math.floor(cx - r - 1)), x1 = Math.min(size - 1, Math.ceil(cx + r + 1));
  const y0 = Math.max(0, Math.floor(cy - r - 1)), y1 = Math.min(size - 1, Math.ceil(cy + r + 1));
  for (let y = y0; y <= y1; y++) {
    for (let x = x0; x <= x1; x++) {
      let c = 0;
      for (let sy = 0; sy < SUPERSAMPLE; sy++) {
        const py = y + (sy + 0.5) / SUPERSAMPLE;
        for (let sx = 0; sx < SUPERSAMPLE; sx++) {
          const px = x + (sx + 0.5) / SUPERSAMPLE;
          if (insideUnitShape(shape, (px - cx) / r, (py - cy) / r)) c++;
        }
      }
      cov[y * size + x] = c;
    }
  }
  return cov;
}

/** Renders the scene; `size` other than 64 renders the same geometry at another resolution. */
export function renderScene(scene: Scene, size = IMAGE_SIZE): RgbImage {
  const data = new Uint8Array(size * size * 3);
  const bg = BACKGROUND_COLORS[scene.background];
  for (let i = 0; i < size * size; i++) data.set(bg, i * 3);
  const full = SUPERSAMPLE * SUPERSAMPLE;
  for (const o of scene.objects) {
    const fg = OBJECT_COLORS[o.color];
    const cov = objectCoverage(o, size);
    for (let i = 0; i < cov.length; i++) {
      const c = cov[i]!;
      if (c === 0) continue;
      for (let k = 0; k < 3; k++) {
        const base = data[i * 3 + k]!;
        // Integer blend with round-half-up: identical everywhere.
        data[i * 3 + k] = Math.floor((base * (full - c) + fg[k]! * c + full / 2) / full);
      }
    }
  }
  return { width: size, height: size, data };
}
