// Seeded scene sampler: the same (split, index) gives the same scene on every machine.
import { Rng } from './rng.ts';
import { MAX_OBJECTS, type Scene, type SceneObject } from './scene.ts';
import { BACKGROUNDS, CELLS, COLORS, SHAPES, SIZES } from './vocabulary.ts';
import { HELDOUT_COLOR_SHAPE, HELDOUT_SHAPE_CELL, hasHeldoutCombination, isHeldoutObject, type Split } from './splits.ts';

export interface SampleOptions {
  minObjects?: number;
  maxObjects?: number;
  /** train/val/test never contain held-out combinations; heldout always contains at least one */
  split?: Split;
}

function randomObject(rng: Rng, taken: Scene['objects']): SceneObject | undefined {
  const freeCells = CELLS.filter((c) => !taken.some((o) => o.cell === c));
  for (let attempt = 0; attempt < 100 && freeCells.length > 0; attempt++) {
    const o: SceneObject = { shape: rng.pick(SHAPES), color: rng.pick(COLORS), size: rng.pick(SIZES), cell: rng.pick(freeCells) };
    if (!taken.some((t) => t.color === o.color && t.shape === o.shape)) return o;
  }
  return undefined;
}

/** A random scene for `split`; the rng is advanced deterministically. */
export function sampleScene(rng: Rng, opts: SampleOptions = {}): Scene {
  const min = opts.minObjects ?? 1;
  const max = Math.min(opts.maxObjects ?? MAX_OBJECTS, MAX_OBJECTS);
  const split = opts.split ?? 'train';
  for (;;) {
    const n = rng.int(min, max);
    const objects: SceneObject[] = [];
    if (split === 'heldout') {
      // Plant one held-out combination, then fill the rest freely.
      if (rng.next() < 0.6) {
        const h = rng.pick(HELDOUT_COLOR_SHAPE);
        objects.push({ shape: h.shape, color: h.color, size: rng.pick(SIZES), cell: rng.pick(CELLS) });
      } else {
        const h = rng.pick(HELDOUT_SHAPE_CELL);
        objects.push({ shape: h.shape, color: rng.pick(COLORS), size: rng.pick(SIZES), cell: h.cell });
      }
    }
    while (objects.length < n) {
      const o = randomObject(rng, objects);
      if (!o) break;
      if (split !== 'heldout' && isHeldoutObject(o)) continue;
      objects.push(o);
    }
    const scene: Scene = { background: rng.pick(BACKGROUNDS), objects };
    if (split === 'heldout' ? hasHeldoutCombination(scene) : !hasHeldoutCombination(scene)) return scene;
  }
}

/** The scene number `index` of `split`: independent of any other index. */
export function sceneFor(split: Split, index: number, opts: Omit<SampleOptions, 'split'> = {}): Scene {
  return sampleScene(new Rng(`scene:${split}:${index}`), { ...opts, split });
}
