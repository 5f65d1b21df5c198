// The committed suites: equal to a regeneration from their fixed seeds (so drift fails), and sound.
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { applyEdit, EDIT_KINDS, hasHeldoutCombination, HELDOUT_COLOR_SHAPE, parseInstruction, PROMPT_CATEGORIES, promptText, satisfies, sceneToCaption, validateScene } from '../../src/world/index.ts';
import { buildAllSuites, EDITS_PER_KIND, HELDOUT_T2I_CATEGORIES, loadEditSuite, loadT2iSuite, loadUnderstandSuite, SUITE_DIR, suiteFileText, T2I_PER_CATEGORY, UNDERSTAND_IMAGES } from '../../src/eval/suites.ts';

describe('committed suites', () => {
  it('equal their regeneration byte for byte', () => {
    for (const [name, suite] of Object.entries(buildAllSuites())) {
      expect(readFileSync(join(SUITE_DIR, `${name}.json`), 'utf8') === suiteFileText(suite), `${name}.json is stale: run npx hyperbagel eval suites --write`).toBe(true);
    }
  });
});

describe('t2i suites', () => {
  it('test: every category, prompts match specs, references satisfy them and hold nothing held-out', () => {
    const s = loadT2iSuite('test');
    for (const c of PROMPT_CATEGORIES) expect(s.items.filter((i) => i.category === c)).toHaveLength(T2I_PER_CATEGORY);
    for (const it of s.items) {
      expect(it.prompt).toBe(promptText(it.spec));
      validateScene(it.reference);
      expect(satisfies(it.spec, it.reference)).toBe(true);
      expect(hasHeldoutCombination(it.reference)).toBe(false);
    }
  });
  it('heldout: every prompt names a held-out colour×shape pair', () => {
    const s = loadT2iSuite('heldout');
    expect(s.items).toHaveLength(T2I_PER_CATEGORY * HELDOUT_T2I_CATEGORIES.length);
    for (const it of s.items) {
      expect(HELDOUT_COLOR_SHAPE.some((h) => it.prompt.includes(`${h.color} ${h.shape}`)), it.prompt).toBe(true);
      expect(satisfies(it.spec, it.reference)).toBe(true);
    }
  });
});

describe('edit suites', () => {
  it('expected = applyEdit(source, parseInstruction(instruction)); test holds nothing held-out, heldout results always do', () => {
    for (const split of ['test', 'heldout'] as const) {
      const s = loadEditSuite(split);
      for (const k of EDIT_KINDS) expect(s.items.filter((i) => i.kind === k)).toHaveLength(EDITS_PER_KIND);
      for (const it of s.items) {
        const e = parseInstruction(it.instruction);
        expect(e.kind).toBe(it.kind);
        expect(applyEdit(it.source, e)).toEqual(it.expected);
        if (split === 'test') expect(hasHeldoutCombination(it.source) || hasHeldoutCombination(it.expected)).toBe(false);
        else expect(hasHeldoutCombination(it.expected)).toBe(true);
      }
    }
  });
});

describe('understanding suites', () => {
  it('captions are canonical; heldout scenes all hold a held-out combination, test scenes none', () => {
    for (const split of ['test', 'heldout'] as const) {
      const s = loadUnderstandSuite(split);
      expect(s.items).toHaveLength(UNDERSTAND_IMAGES);
      for (const it of s.items) {
        expect(it.caption).toBe(sceneToCaption(it.scene));
        expect(hasHeldoutCombination(it.scene)).toBe(split === 'heldout');
        expect(new Set(it.questions.map((q) => q.kind)).size).toBe(it.questions.length);
      }
    }
  });
});
