// The val suite set (src/eval/suites/*-val.json): for choosing recipe variants, so it must share no
// item with the test set it stands in for, draw its scenes from the val split, keep the held-out pairs
// out of its main part, and match the test set's sizes and balance.
import { readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import {
  applyEdit, canonicalScene, EDIT_KINDS, hasHeldoutCombination, HELDOUT_COLOR_SHAPE, parseInstruction, PROMPT_CATEGORIES,
  promptText, satisfies, sceneToCaption, validateScene, type Scene,
} from '../../src/world/index.ts';
import { Rng } from '../../src/world/rng.ts';
import { sampleScene } from '../../src/world/sampler.ts';
import {
  buildAllSuites, EDITS_PER_KIND, HELDOUT_T2I_CATEGORIES, loadEditSuite, loadT2iSuite, loadUnderstandSuite, QUESTIONS_PER_IMAGE,
  SUITE_DIR, suiteFileText, T2I_PER_CATEGORY, UNDERSTAND_IMAGES, VAL_SEED_BASE, type EvalSplit,
} from '../../src/eval/suites.ts';
import { evaluateGEdit, evaluateGenEval, evaluateUnderstanding } from '../../src/eval/run.ts';
import { answerQuestion, oracleModel } from '../../src/eval/oracle.ts';

const key = (s: Scene) => JSON.stringify(canonicalScene(s));
/** Does the text name a held-out colour×shape pair ("yellow star", "yellow stars")? */
const namesHeldoutPair = (text: string) => HELDOUT_COLOR_SHAPE.some((h) => new RegExp(`\\b${h.color} ${h.shape}`).test(text));
const TEST_PARTS = [['test', 'test'], ['heldout', 'test']] as const;
const VAL_PARTS = [['val', 'val'], ['heldout', 'val']] as const;
const VAL_FILES = ['edit-heldout-val', 'edit-val', 't2i-heldout-val', 't2i-val', 'understand-heldout-val', 'understand-val'];

describe('val suite files', () => {
  it('are exactly the six *-val.json files, each equal to its regeneration, and modest in size', () => {
    const onDisk = readdirSync(SUITE_DIR).filter((f) => f.endsWith('-val.json')).map((f) => f.replace(/\.json$/, '')).sort();
    expect(onDisk).toEqual(VAL_FILES);
    const all = buildAllSuites() as Record<string, Parameters<typeof suiteFileText>[0]>;
    for (const name of VAL_FILES) {
      const text = readFileSync(join(SUITE_DIR, `${name}.json`), 'utf8');
      expect(text === suiteFileText(all[name]!), `${name}.json is stale: run npx hyperbagel eval suites --write`).toBe(true);
      expect(text.length).toBeLessThan(200_000);
    }
  });

  it('say which set and split they are', () => {
    for (const [split, suite] of VAL_PARTS) {
      for (const s of [loadT2iSuite(split, suite), loadEditSuite(split, suite), loadUnderstandSuite(split, suite)]) {
        expect(s.suite).toBe('val');
        expect(s.split).toBe(split);
        expect(s.name.endsWith(split === 'heldout' ? '-heldout-val' : '-val')).toBe(true);
      }
    }
    // the test files carry no `suite` field: they are byte-for-byte what they were before val existed
    expect(loadT2iSuite('test').suite).toBeUndefined();
    expect(() => loadT2iSuite('test', 'val')).toThrow(/no test part/);
  });
});

describe('val vs test: same sizes and balance, no shared item', () => {
  it('t2i: same categories and counts; no (spec, seed) of val is a test one; val seeds are offset', () => {
    const testKeys = new Set(TEST_PARTS.flatMap(([sp, su]) => loadT2iSuite(sp, su).items.map((it) => `${JSON.stringify(it.spec)}#${it.seed}`)));
    for (const [i, [split, suite]] of VAL_PARTS.entries()) {
      const val = loadT2iSuite(split, suite), test = loadT2iSuite(TEST_PARTS[i]![0], 'test');
      expect(val.items).toHaveLength(test.items.length);
      for (const c of split === 'heldout' ? HELDOUT_T2I_CATEGORIES : PROMPT_CATEGORIES) expect(val.items.filter((it) => it.category === c)).toHaveLength(T2I_PER_CATEGORY);
      for (const it of val.items) {
        expect(testKeys.has(`${JSON.stringify(it.spec)}#${it.seed}`), it.prompt).toBe(false);
        expect(it.seed).toBe(VAL_SEED_BASE + it.id);
      }
    }
  });

  it('edit: same kinds and counts; no (source scene, instruction) of val is a test one', () => {
    const testKeys = new Set(TEST_PARTS.flatMap(([sp, su]) => loadEditSuite(sp, su).items.map((it) => `${key(it.source)}|${it.instruction}`)));
    for (const [split, suite] of VAL_PARTS) {
      const val = loadEditSuite(split, suite);
      for (const k of EDIT_KINDS) expect(val.items.filter((it) => it.kind === k)).toHaveLength(EDITS_PER_KIND);
      for (const it of val.items) {
        expect(testKeys.has(`${key(it.source)}|${it.instruction}`), it.instruction).toBe(false);
        expect(it.seed).toBeGreaterThanOrEqual(VAL_SEED_BASE);
      }
    }
  });

  it('understand: same counts; no (scene, question) of val is a test one, and no val image is a test image', () => {
    const testScenes = new Set<string>(), testPairs = new Set<string>();
    for (const [sp, su] of TEST_PARTS) {
      for (const it of loadUnderstandSuite(sp, su).items) {
        testScenes.add(key(it.scene));
        for (const q of it.questions) testPairs.add(`${key(it.scene)}|${q.question}`);
      }
    }
    for (const [split, suite] of VAL_PARTS) {
      const val = loadUnderstandSuite(split, suite);
      expect(val.items).toHaveLength(UNDERSTAND_IMAGES);
      for (const it of val.items) {
        expect(it.questions).toHaveLength(QUESTIONS_PER_IMAGE);
        for (const q of it.questions) expect(testPairs.has(`${key(it.scene)}|${q.question}`)).toBe(false);
        expect(testScenes.has(key(it.scene)), it.caption).toBe(false);
      }
    }
  });
});

describe('val suites: the val split, held-out pairs kept out', () => {
  it('understand scenes are the val split sampler at the val seeds (and the held-out part at its own seeds), test scenes skipped', () => {
    const testScenes = new Set(TEST_PARTS.flatMap(([sp, su]) => loadUnderstandSuite(sp, su).items.map((it) => key(it.scene))));
    const draw = (seed: string, split: EvalSplit) => {
      const rng = new Rng(seed);
      for (;;) { const s = canonicalScene(sampleScene(rng, { split: split === 'val' ? 'val' : 'heldout' })); if (!testScenes.has(key(s))) return s; }
    };
    for (const [split, tag] of [['val', 'val'], ['heldout', 'heldout-val']] as const) {
      const items = loadUnderstandSuite(split, 'val').items;
      for (const it of items.slice(0, 40)) expect(it.scene).toEqual(draw(`eval:understand:${tag}:${it.id}`, split));
    }
    // the held-out part is not the test's held-out part re-labelled
    const th = loadUnderstandSuite('heldout', 'test').items, vh = loadUnderstandSuite('heldout', 'val').items;
    expect(vh.filter((it, i) => key(it.scene) === key(th[i]!.scene))).toHaveLength(0);
  });

  it('the main part holds no held-out combination: not in a scene, an edit result, a prompt, an instruction, a caption or a question', () => {
    for (const it of loadT2iSuite('val').items) {
      validateScene(it.reference);
      expect(it.prompt).toBe(promptText(it.spec));
      expect(satisfies(it.spec, it.reference)).toBe(true);
      expect(hasHeldoutCombination(it.reference)).toBe(false);
      expect(namesHeldoutPair(it.prompt), it.prompt).toBe(false);
    }
    for (const it of loadEditSuite('val').items) {
      const e = parseInstruction(it.instruction);
      expect(e.kind).toBe(it.kind);
      expect(applyEdit(it.source, e)).toEqual(it.expected);
      expect(hasHeldoutCombination(it.source) || hasHeldoutCombination(it.expected)).toBe(false);
      expect(namesHeldoutPair(it.instruction), it.instruction).toBe(false);
    }
    for (const it of loadUnderstandSuite('val').items) {
      expect(hasHeldoutCombination(it.scene)).toBe(false);
      expect(it.caption).toBe(sceneToCaption(it.scene));
      expect(namesHeldoutPair(it.caption)).toBe(false);
      for (const q of it.questions) {
        expect(namesHeldoutPair(q.question), q.question).toBe(false);
        expect(answerQuestion(it.scene, q.question)).toBe(q.answer);
      }
    }
  });

  it('the held-out part measures the held-out combinations, as the test one does', () => {
    for (const it of loadT2iSuite('heldout', 'val').items) {
      expect(namesHeldoutPair(it.prompt), it.prompt).toBe(true);
      expect(satisfies(it.spec, it.reference)).toBe(true);
    }
    for (const it of loadEditSuite('heldout', 'val').items) {
      expect(applyEdit(it.source, parseInstruction(it.instruction))).toEqual(it.expected);
      expect(hasHeldoutCombination(it.expected)).toBe(true);
    }
    for (const it of loadUnderstandSuite('heldout', 'val').items) expect(hasHeldoutCombination(it.scene)).toBe(true);
  });
});

describe('the harness on the val set', () => {
  it('the oracle scores 1.0 on val, and every judged item comes from a val part', async () => {
    const seen = new Set<string>();
    const opts = { suite: 'val' as const, limit: 2, onItem: (r: Record<string, unknown>) => void seen.add(String(r.suite)) };
    const u = await evaluateUnderstanding(oracleModel(), opts);
    expect([u.caption_exact, u.vqa, u.heldout_caption_exact, u.heldout_vqa]).toEqual([1, 1, 1, 1]);
    expect((await evaluateGenEval(oracleModel(), opts)).heldout.overall).toBe(1);
    expect((await evaluateGEdit(oracleModel(), opts)).overall).toBeCloseTo(1, 10);
    expect([...seen].sort()).toEqual(['edit-heldout-val', 'edit-val', 't2i-heldout-val', 't2i-val', 'understand-heldout-val', 'understand-val']);
  });
});
