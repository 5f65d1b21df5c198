// The detector reports what an image shows: every object (no merging of a repeated colour-shape pair,
// no cap at four), and a correct shape drawn at a size between the two rendered ones as that shape.
import { describe, expect, it } from 'vitest';
import type { RgbImage } from '../../src/engine/types.ts';
import { detectDetailed, detectScene, SIZE_SPLIT_RADIUS } from '../../src/eval/detector.ts';
import { judgeT2i } from '../../src/eval/score-t2i.ts';
import { BACKGROUND_COLORS, CELLS, IMAGE_SIZE, insideUnitShape, objectCenter, OBJECT_COLORS, renderScene, sceneToCaption, scenesEqual, SHAPES, type BackgroundColor, type Cell, type ObjectColor, type Scene, type SceneObject, type Shape, type Size } from '../../src/world/index.ts';

const O = (shape: Shape, color: ObjectColor, cell: Cell, size: Size = 'large'): SceneObject => ({ shape, color, size, cell });

/** One object drawn exactly as render.ts draws (4×4 supersampled coverage, integer blend) but at circumradius `r`. */
function drawAtRadius(shape: Shape, cell: Cell, r: number, color: ObjectColor, background: BackgroundColor): RgbImage {
  const S = IMAGE_SIZE, SS = 4, full = SS * SS;
  const data = new Uint8Array(S * S * 3);
  for (let i = 0; i < S * S; i++) data.set(BACKGROUND_COLORS[background], i * 3);
  const { cx, cy } = objectCenter({ cell });
  const fg = OBJECT_COLORS[color];
  for (let y = Math.max(0, Math.floor(cy - r - 1)); y <= Math.min(S - 1, Math.ceil(cy + r + 1)); y++) for (let x = Math.max(0, Math.floor(cx - r - 1)); x <= Math.min(S - 1, Math.ceil(cx + r + 1)); x++) {
    let c = 0;
    for (let sy = 0; sy < SS; sy++) for (let sx = 0; sx < SS; sx++) {
      if (insideUnitShape(shape, (x + (sx + 0.5) / SS - cx) / r, (y + (sy + 0.5) / SS - cy) / r)) c++;
    }
    if (c === 0) continue;
    const i = (y * S + x) * 3;
    for (let k = 0; k < 3; k++) data[i + k] = Math.floor((data[i + k]! * (full - c) + fg[k]! * c + full / 2) / full);
  }
  return { width: S, height: S, data };
}

describe('detector: every object the image shows', () => {
  it('three circles (two of them red) drawn for "two circles" fail the counting prompt', () => {
    const img = renderScene({ background: 'white', objects: [O('circle', 'red', 'top left'), O('circle', 'red', 'top right'), O('circle', 'blue', 'center')] });
    const j = judgeT2i({ category: 'counting', shape: 'circle', count: 2 }, img);
    expect(j.detected.objects).toHaveLength(3);
    expect(j.correct).toBe(false);
    // and the right number passes
    expect(judgeT2i({ category: 'counting', shape: 'circle', count: 3 }, img).correct).toBe(true);
  });

  it('a 5-object render is detected as those 5 objects, with the broken world rule named', () => {
    const scene: Scene = {
      background: 'gray',
      objects: [O('circle', 'red', 'top left'), O('circle', 'blue', 'top right', 'small'), O('circle', 'green', 'center'), O('circle', 'cyan', 'bottom left'), O('circle', 'red', 'bottom right', 'small')],
    };
    const d = detectDetailed(renderScene(scene));
    expect(d.scene.objects).toHaveLength(5);
    expect(scenesEqual(d.scene, scene)).toBe(true);
    expect(detectScene(renderScene(scene)).objects).toHaveLength(5);
    expect(d.violations.some((v) => v.startsWith('5 objects'))).toBe(true);
    expect(d.violations.some((v) => v.startsWith('2 red circles'))).toBe(true);
    expect(judgeT2i({ category: 'counting', shape: 'circle', count: 4 }, renderScene(scene)).correct).toBe(false);
    // a caption describes a scene outside the world's rules too
    expect(sceneToCaption(d.scene).split(' and ')).toHaveLength(5);
  });

  it('all nine cells filled: nine objects', () => {
    const objects = CELLS.map((cell, i) => O(SHAPES[i % 4]!, 'purple', cell, i % 2 ? 'small' : 'large'));
    const scene: Scene = { background: 'beige', objects };
    expect(scenesEqual(detectScene(renderScene(scene)), scene)).toBe(true);
  });

  it('a valid scene has no violations', () => {
    const d = detectDetailed(renderScene({ background: 'black', objects: [O('square', 'yellow', 'left'), O('triangle', 'pink', 'bottom', 'small')] }));
    expect(d.violations).toEqual([]);
  });
});

describe('detector: shapes drawn between the two rendered sizes', () => {
  const radii = [5.5, 6, 6.5, 7, 7.5, 8, 8.5, 9, 9.5, 10, 10.5];

  it('circles at r = 5.5 … 10.5 are all read as circles, small below the split and large above', () => {
    const wrong: string[] = [];
    for (const cell of CELLS) for (const r of radii) for (const [color, bg] of [['blue', 'white'], ['orange', 'black'], ['green', 'gray'], ['red', 'beige']] as const) {
      const o = detectScene(drawAtRadius('circle', cell, r, color, bg)).objects;
      const want = { shape: 'circle', color, size: r < SIZE_SPLIT_RADIUS ? 'small' : 'large', cell };
      if (o.length !== 1 || JSON.stringify(o[0]) !== JSON.stringify(want)) wrong.push(`r=${r} ${cell} ${color}/${bg}: ${o.map((p) => `${p.size} ${p.color} ${p.shape}@${p.cell}`).join(', ') || 'nothing'}`);
    }
    expect(wrong).toEqual([]);
  });

  it('every shape at r = 5.5 … 10.5 keeps its shape (all cells, white background)', () => {
    const wrong: string[] = [];
    for (const shape of SHAPES) for (const cell of CELLS) for (const r of radii) {
      const o = detectScene(drawAtRadius(shape, cell, r, 'purple', 'white')).objects;
      if (o.length !== 1 || o[0]!.shape !== shape || o[0]!.size !== (r < SIZE_SPLIT_RADIUS ? 'small' : 'large')) wrong.push(`${shape} r=${r} ${cell}: ${o.map((p) => `${p.size} ${p.shape}`).join(', ') || 'nothing'}`);
    }
    expect(wrong).toEqual([]);
  });
});
