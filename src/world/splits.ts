// Data splits, including the compositional held-out split: attribute combinations never seen in training.
import type { Scene, SceneObject } from './scene.ts';
import type { Cell, ObjectColor, Shape } from './vocabulary.ts';

export const SPLITS = ['train', 'val', 'test', 'heldout'] as const;
export type Split = (typeof SPLITS)[number];

/** Colour×shape pairs that never appear in train/val/test; the held-out suite measures them. */
export const HELDOUT_COLOR_SHAPE: ReadonlyArray<{ color: ObjectColor; shape: Shape }> = [
  { color: 'yellow', shape: 'star' },
  { color: 'cyan', shape: 'triangle' },
  { color: 'pink', shape: 'square' },
];

/** Shape×position pairs that never appear in train/val/test. */
export const HELDOUT_SHAPE_CELL: ReadonlyArray<{ shape: Shape; cell: Cell }> = [
  { shape: 'circle', cell: 'bottom right' },
  { shape: 'triangle', cell: 'top left' },
];

export function isHeldoutObject(o: Pick<SceneObject, 'shape' | 'color' | 'cell'>): boolean {
  return (
    HELDOUT_COLOR_SHAPE.some((h) => h.color === o.color && h.shape === o.shape) ||
    HELDOUT_SHAPE_CELL.some((h) => h.shape === o.shape && h.cell === o.cell)
  );
}

/** The held-out combinations a scene contains, named as captions word them ("yellow star", "triangle at top left"). */
export function heldoutCombinations(scene: Scene): string[] {
  const out = new Set<string>();
  for (const o of scene.objects) {
    for (const h of HELDOUT_COLOR_SHAPE) if (h.color === o.color && h.shape === o.shape) out.add(`${h.color} ${h.shape}`);
    for (const h of HELDOUT_SHAPE_CELL) if (h.shape === o.shape && h.cell === o.cell) out.add(`${h.shape} at ${h.cell}`);
  }
  return [...out].sort();
}

export function hasHeldoutCombination(scene: Scene): boolean {
  return scene.objects.some(isHeldoutObject);
}
