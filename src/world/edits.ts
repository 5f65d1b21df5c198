// Edit instructions: each kind maps a scene to the edited scene, and has a parseable instruction text.
import { WorldError } from './errors.ts';
import type { Rng } from './rng.ts';
import { canonicalScene, MAX_OBJECTS, validateScene, type Scene, type SceneObject } from './scene.ts';
import { readWords, parseObject } from './caption.ts';
import { BACKGROUNDS, CELLS, COLORS, SHAPES, SIZES, type BackgroundColor, type Cell, type ObjectColor, type Shape, type Size } from './vocabulary.ts';

export const EDIT_KINDS = ['recolor', 'move', 'remove', 'add', 'resize', 'background'] as const;
export type EditKind = (typeof EDIT_KINDS)[number];

/** Objects are referred to by colour and shape, which is unique within a scene. */
export interface ObjectRef { color: ObjectColor; shape: Shape }

export type Edit =
  | { kind: 'recolor'; target: ObjectRef; color: ObjectColor }
  | { kind: 'move'; target: ObjectRef; cell: Cell }
  | { kind: 'remove'; target: ObjectRef }
  | { kind: 'add'; object: SceneObject }
  | { kind: 'resize'; target: ObjectRef; size: Size }
  | { kind: 'background'; background: BackgroundColor };

const ref = (r: ObjectRef) => `the ${r.color} ${r.shape}`;

export function editInstruction(e: Edit): string {
  switch (e.kind) {
    case 'recolor': return `make ${ref(e.target)} ${e.color}`;
    case 'move': return `move ${ref(e.target)} to the ${e.cell}`;
    case 'remove': return `remove ${ref(e.target)}`;
    case 'add': return `add a ${e.object.size} ${e.object.color} ${e.object.shape} at the ${e.object.cell}`;
    case 'resize': return `make ${ref(e.target)} ${e.size}`;
    case 'background': return `change the background to ${e.background}`;
  }
}

/** Parses an instruction into an edit (the inverse of editInstruction). */
export function parseInstruction(text: string): Edit {
  const r = readWords(text);
  const readRef = (): ObjectRef => {
    r.expect('the');
    return { color: r.oneOf(COLORS, 'a colour'), shape: r.oneOf(SHAPES, 'a shape') };
  };
  let edit: Edit;
  const verb = r.oneOf(['make', 'move', 'remove', 'add', 'change'] as const, 'an edit verb');
  if (verb === 'make') {
    const target = readRef();
    const w = r.peek();
    if (w && (SIZES as readonly string[]).includes(w)) edit = { kind: 'resize', target, size: r.oneOf(SIZES, 'a size') };
    else edit = { kind: 'recolor', target, color: r.oneOf(COLORS, 'a colour or size') };
  } else if (verb === 'move') {
    const target = readRef();
    r.expect('to');
    r.expect('the');
    edit = { kind: 'move', target, cell: r.phrase(CELLS, 'a position') };
  } else if (verb === 'remove') {
    edit = { kind: 'remove', target: readRef() };
  } else if (verb === 'add') {
    edit = { kind: 'add', object: parseObject(r) };
  } else {
    r.expect('the');
    r.expect('background');
    r.expect('to');
    edit = { kind: 'background', background: r.oneOf(BACKGROUNDS, 'a background colour') };
  }
  if (!r.done) r.fail('end of instruction');
  return edit;
}

function findTarget(scene: Scene, target: ObjectRef): number {
  const i = scene.objects.findIndex((o) => o.color === target.color && o.shape === target.shape);
  if (i < 0) throw new WorldError('INVALID_EDIT', `there is no ${target.color} ${target.shape} in the scene`);
  return i;
}

/**
 * The edited scene; throws INVALID_EDIT when the edit cannot apply (missing target, occupied cell, …) or
 * would change nothing ("make the red circle red"): an edit case whose answer is its source scores a model
 * that ignores the instruction as right.
 */
export function applyEdit(scene: Scene, e: Edit): Scene {
  const objects = scene.objects.map((o) => ({ ...o }));
  let background = scene.background;
  const unchanged = (what: string): never => {
    throw new WorldError('INVALID_EDIT', `cannot ${editInstruction(e)}: ${what}, so the edit would change nothing`);
  };
  const at = (t: ObjectRef) => objects[findTarget(scene, t)]!;
  switch (e.kind) {
    case 'recolor': { const o = at(e.target); if (o.color === e.color) unchanged(`it is already ${e.color}`); o.color = e.color; break; }
    case 'resize': { const o = at(e.target); if (o.size === e.size) unchanged(`it is already ${e.size}`); o.size = e.size; break; }
    case 'move': { const o = at(e.target); if (o.cell === e.cell) unchanged(`it is already at the ${e.cell}`); o.cell = e.cell; break; }
    case 'remove': objects.splice(findTarget(scene, e.target), 1); break;
    case 'add': objects.push({ ...e.object }); break;
    case 'background': if (background === e.background) unchanged(`the background is already ${e.background}`); background = e.background; break;
  }
  const out = { background, objects };
  try {
    validateScene(out);
  } catch (err) {
    throw new WorldError('INVALID_EDIT', `cannot ${editInstruction(e)}: ${(err as Error).message}`);
  }
  return canonicalScene(out);
}

/** A random edit of `kind` that applies to the scene, or undefined if none does. */
export function randomEdit(scene: Scene, kind: EditKind, rng: Rng): Edit | undefined {
  const objs = scene.objects;
  const target = (): ObjectRef => { const o = rng.pick(objs); return { color: o.color, shape: o.shape }; };
  const freeCells = CELLS.filter((c) => !objs.some((o) => o.cell === c));
  for (let attempt = 0; attempt < 30; attempt++) {
    let e: Edit | undefined;
    switch (kind) {
      case 'recolor': { const t = target(); const color = rng.pick(COLORS.filter((c) => c !== t.color)); e = { kind, target: t, color }; break; }
      case 'move': if (freeCells.length) e = { kind, target: target(), cell: rng.pick(freeCells) }; break;
      case 'remove': if (objs.length > 1) e = { kind, target: target() }; break;
      case 'add': if (objs.length < MAX_OBJECTS && freeCells.length) e = { kind, object: { shape: rng.pick(SHAPES), color: rng.pick(COLORS), size: rng.pick(SIZES), cell: rng.pick(freeCells) } }; break;
      case 'resize': { const o = rng.pick(objs); e = { kind, target: { color: o.color, shape: o.shape }, size: o.size === 'small' ? 'large' : 'small' }; break; }
      case 'background': e = { kind, background: rng.pick(BACKGROUNDS.filter((b) => b !== scene.background)) }; break;
    }
    if (!e) return undefined;
    try { applyEdit(scene, e); return e; } catch { /* try another */ }
  }
  return undefined;
}
