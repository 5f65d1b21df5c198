// Scene model: a background plus 1-4 objects, each in its own cell of a 3×3 grid.
import { BACKGROUNDS, CELLS, COLORS, SHAPES, SIZES, type BackgroundColor, type Cell, type ObjectColor, type Relation, type Shape, type Size } from './vocabulary.ts';
import { WorldError } from './errors.ts';

export interface SceneObject {
  shape: Shape;
  color: ObjectColor;
  size: Size;
  cell: Cell;
}

export interface Scene {
  background: BackgroundColor;
  objects: SceneObject[];
}

export const MAX_OBJECTS = 4;

export function cellIndex(cell: Cell): number {
  return CELLS.indexOf(cell);
}
export function cellRowCol(cell: Cell): { row: number; col: number } {
  const i = cellIndex(cell);
  return { row: Math.floor(i / 3), col: i % 3 };
}

/** Objects in canonical order (row-major by cell), so equal scenes compare equal. */
export function canonicalScene(scene: Scene): Scene {
  return {
    background: scene.background,
    objects: [...scene.objects].sort((a, b) => cellIndex(a.cell) - cellIndex(b.cell)).map((o) => ({ shape: o.shape, color: o.color, size: o.size, cell: o.cell })),
  };
}

export function scenesEqual(a: Scene, b: Scene): boolean {
  return JSON.stringify(canonicalScene(a)) === JSON.stringify(canonicalScene(b));
}

/** Does `a` stand in `rel` to `b`? Follows from grid positions alone. */
export function holdsRelation(a: SceneObject, rel: Relation, b: SceneObject): boolean {
  const pa = cellRowCol(a.cell);
  const pb = cellRowCol(b.cell);
  switch (rel) {
    case 'left of': return pa.col < pb.col;
    case 'right of': return pa.col > pb.col;
    case 'above': return pa.row < pb.row;
    case 'below': return pa.row > pb.row;
  }
}

/** Throws INVALID_SCENE naming the first problem found. */
export function validateScene(scene: Scene): void {
  const fail = (msg: string) => { throw new WorldError('INVALID_SCENE', msg); };
  if (!scene || typeof scene !== 'object') fail('scene must be an object');
  if (!BACKGROUNDS.includes(scene.background)) fail(`unknown background colour "${scene.background}"`);
  if (!Array.isArray(scene.objects) || scene.objects.length < 1 || scene.objects.length > MAX_OBJECTS) fail(`a scene has 1 to ${MAX_OBJECTS} objects, got ${scene.objects?.length}`);
  const cells = new Set<string>();
  const kinds = new Set<string>();
  for (const o of scene.objects) {
    if (!SHAPES.includes(o.shape)) fail(`unknown shape "${o.shape}"`);
    if (!COLORS.includes(o.color)) fail(`unknown colour "${o.color}"`);
    if (!SIZES.includes(o.size)) fail(`unknown size "${o.size}"`);
    if (!CELLS.includes(o.cell)) fail(`unknown position "${o.cell}"`);
    if (cells.has(o.cell)) fail(`two objects at the ${o.cell}`);
    const kind = `${o.color} ${o.shape}`;
    if (kinds.has(kind)) fail(`two ${kind}s: each colour-shape pair appears at most once`);
    cells.add(o.cell);
    kinds.add(kind);
  }
}
