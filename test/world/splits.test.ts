// The compositional held-out split: its combinations never appear in train/val/test, and appear in every heldout record.
import { describe, expect, it } from 'vitest';
import { datasetRecord, HELDOUT_COLOR_SHAPE, HELDOUT_SHAPE_CELL, hasHeldoutCombination, isHeldoutObject, parseCaption, type Scene } from '../../src/world/index.ts';

const heldoutIn = (s: Scene) => s.objects.filter(isHeldoutObject).map((o) => `${o.color} ${o.shape} @ ${o.cell}`);

describe('held-out combinations', () => {
  it('are absent from 5,000 train records, edit results included, and from 1,000 val and test records', () => {
    const found: string[] = [];
    for (const [split, n] of [['train', 5000], ['val', 1000], ['test', 1000]] as const) {
      for (let i = 0; i < n; i++) {
        const r = datasetRecord(split, i);
        for (const s of [r.scene, r.edit.scene]) if (hasHeldoutCombination(s)) found.push(`${split}:${i}: ${heldoutIn(s).join(', ')}`);
        // the texts must not name a held-out colour×shape pair either
        for (const t of [r.caption, ...r.prompts, r.edit.instruction, r.edit.caption, ...r.qa.map((q) => q.question)]) {
          for (const h of HELDOUT_COLOR_SHAPE) if (t.includes(`${h.color} ${h.shape}`)) found.push(`${split}:${i}: "${t}"`);
        }
      }
    }
    expect(found).toEqual([]);
  });

  it('are present in every one of 1,000 heldout records, and both kinds occur', () => {
    const kinds = new Set<string>();
    for (let i = 0; i < 1000; i++) {
      const r = datasetRecord('heldout', i);
      expect(hasHeldoutCombination(r.scene), `heldout:${i}`).toBe(true);
      for (const o of r.scene.objects) {
        if (HELDOUT_COLOR_SHAPE.some((h) => h.color === o.color && h.shape === o.shape)) kinds.add(`${o.color} ${o.shape}`);
        if (HELDOUT_SHAPE_CELL.some((h) => h.shape === o.shape && h.cell === o.cell)) kinds.add(`${o.shape} @ ${o.cell}`);
      }
    }
    expect(kinds.size).toBe(HELDOUT_COLOR_SHAPE.length + HELDOUT_SHAPE_CELL.length);
  });

  it('isHeldoutObject recognises each documented combination', () => {
    expect(hasHeldoutCombination(parseCaption('a small yellow star at the top on a white background'))).toBe(true);
    expect(hasHeldoutCombination(parseCaption('a small red triangle at the top left on a white background'))).toBe(true);
    expect(hasHeldoutCombination(parseCaption('a small red circle at the bottom right on a white background'))).toBe(true);
    expect(hasHeldoutCombination(parseCaption('a small yellow circle at the top left on a white background'))).toBe(false);
  });
});
