// The scorers and harness, checked with models built from the world: the oracle must score 1.0, the
// trivially wrong model must score low, and degraded images must lose exactly what they should.
import { describe, expect, it } from 'vitest';
import { COLORS, parseCaption, renderScene, sceneToCaption } from '../../src/world/index.ts';
import { detectScene } from '../../src/eval/detector.ts';
import { answerQuestion, constantModel, mapImages, oracleModel } from '../../src/eval/oracle.ts';
import { evaluateGEdit, evaluateGenEval, evaluateUnderstanding, SAMPLE_SEED_STRIDE } from '../../src/eval/run.ts';
import { judgeEditScenes } from '../../src/eval/score-edit.ts';
import { cleanColorFraction } from '../../src/eval/quality.ts';
import { judgeT2i, aggregateT2i } from '../../src/eval/score-t2i.ts';
import { answerCorrect, captionExact } from '../../src/eval/score-understand.ts';
import { addGaussianNoise } from '../../src/eval/degrade.ts';
import { loadT2iSuite, loadUnderstandSuite } from '../../src/eval/suites.ts';

const LIMIT = { limit: 12 };

describe('oracle scores 1.0', () => {
  it('understanding', async () => {
    const r = await evaluateUnderstanding(oracleModel(), { limit: 30 });
    expect(r).toMatchObject({ caption_exact: 1, vqa: 1, heldout_caption_exact: 1, heldout_vqa: 1, heldout_object_vqa: 1 });
    expect(r.counts.questions).toBe(90);
    // some, not all, held-out questions ask about the held-out object
    expect(r.counts.heldout_object_questions).toBeGreaterThan(0);
    expect(r.counts.heldout_object_questions).toBeLessThan(r.counts.heldout_questions);
  });
  it('the oracle answers "" (scored wrong) when the image does not show what a question names, instead of failing the run', async () => {
    const img = renderScene({ background: 'white', objects: [{ shape: 'circle', color: 'red', size: 'large', cell: 'center' }] });
    expect(await oracleModel().answer(img, 'what size is the blue star')).toBe('');
    expect(await oracleModel().answer(img, 'what size is the red circle')).toBe('large');
  });
  it('the oracle edits an image whose detected scene breaks the world\'s rules (two red circles, five objects) instead of failing the run', async () => {
    const o = (cell: 'top left' | 'top' | 'top right' | 'left' | 'center', color: 'red' | 'blue' = 'red', shape: 'circle' | 'star' = 'circle') => ({ shape, color, size: 'large' as const, cell });
    const img = renderScene({ background: 'white', objects: [o('top left'), o('top'), o('top right', 'blue'), o('left', 'red', 'star'), o('center', 'blue', 'star')] } as never);
    const out = await oracleModel().edit(img, 'make the red star green', 0);
    expect(out.width).toBe(img.width);
  });
  it('understanding, held-out caption exact per held-out combination (every image counted under each it contains)', async () => {
    const r = await evaluateUnderstanding(oracleModel());
    const combos = r.heldout_caption_by_combination;
    expect(Object.keys(combos)).toEqual(['circle at bottom right', 'cyan triangle', 'pink square', 'triangle at top left', 'yellow star']);
    expect(Object.values(combos).every((c) => c.exact === 1 && c.images > 0)).toBe(true);
    const images = Object.values(combos).reduce((n, c) => n + c.images, 0);
    expect(images).toBeGreaterThanOrEqual(r.counts.heldout_images); // every held-out image has one or more
    // the suite's first held-out image: a large yellow circle at the bottom right (one combination)
    const wrongOnFirst = { ...oracleModel(), caption: async () => 'nothing' };
    const w = await evaluateUnderstanding(wrongOnFirst, { limit: 1 });
    expect(w.heldout_caption_by_combination).toEqual({ 'circle at bottom right': { exact: 0, images: 1 } });
  });
  it('GenEval (all categories, both splits)', async () => {
    const r = await evaluateGenEval(oracleModel(), LIMIT);
    expect(r.overall).toBe(1);
    expect(Object.keys(r.categories).sort()).toEqual(['color_attr', 'colors', 'counting', 'position', 'single_object', 'two_objects']);
    expect(Object.values(r.categories).every((v) => v === 1)).toBe(true);
    expect(r.heldout.overall).toBe(1);
    expect(Object.keys(r.heldout.categories).sort()).toEqual(['color_attr', 'colors']);
  });
  it('GEdit (every kind, both splits)', async () => {
    const r = await evaluateGEdit(oracleModel(), { limit: 8 });
    expect(r.overall).toBe(1);
    expect(r.categories).toEqual({ instruction: 1, preserved: 1, quality: 1 });
    expect(Object.keys(r.by_kind).sort()).toEqual(['add', 'background', 'move', 'recolor', 'remove', 'resize']);
    expect(r.heldout.overall).toBe(1);
  });
});

describe('a trivially wrong model scores low', () => {
  it('understanding: constant caption and "yes"', async () => {
    const r = await evaluateUnderstanding(constantModel(), { limit: 30 });
    expect(r.caption_exact).toBe(0);
    expect(r.vqa).toBeLessThan(0.2);
  });
  it('GenEval: a blank canvas satisfies nothing', async () => {
    const r = await evaluateGenEval(constantModel(), LIMIT);
    expect(r.overall).toBe(0);
    expect(r.heldout.overall).toBe(0);
  });
  it('GEdit: returning the source unchanged satisfies no instruction and scores 0 overall', async () => {
    const r = await evaluateGEdit(constantModel(), { limit: 8 });
    expect(r.categories.instruction).toBe(0);
    expect(r.categories.quality).toBe(1);
    expect(r.categories.preserved).toBeGreaterThan(0.5);
    expect(r.categories.preserved).toBeLessThan(1);
    expect(r.overall).toBe(0);
  });
  it('a model that gets every colour wrong fails colors/color_attr but not single_object/position', async () => {
    // right shapes and places, every colour replaced by the next one in the palette
    const swap = mapImages(oracleModel(), (img) => {
      const s = detectScene(img);
      return renderScene({ ...s, objects: s.objects.map((o) => ({ ...o, color: COLORS[(COLORS.indexOf(o.color) + 1) % COLORS.length]! })) });
    });
    const r = await evaluateGenEval(swap, { limit: 10 });
    expect(r.categories.single_object).toBe(1);
    expect(r.categories.position).toBe(1);
    expect(r.categories.colors).toBe(0);
    expect(r.categories.color_attr).toBe(0);
    expect(r.heldout.overall).toBe(0);
  });
});

describe('several images per prompt (samples)', () => {
  // right only for the fixed suite's own seed (sample 0); a blank canvas, or the source unchanged, otherwise
  const firstSampleOnly = () => {
    const seen: number[] = [];
    const oracle = oracleModel(), blank = constantModel();
    return {
      seen,
      model: {
        ...oracle,
        generate: async (prompt: string, seed: number) => (seen.push(seed), seed < SAMPLE_SEED_STRIDE ? oracle.generate(prompt, seed) : blank.generate(prompt, seed)),
        edit: async (img: Parameters<typeof oracle.edit>[0], instruction: string, seed: number) =>
          (seen.push(seed), seed < SAMPLE_SEED_STRIDE ? oracle.edit(img, instruction, seed) : blank.edit(img, instruction, seed)),
      },
    };
  };
  it('GenEval: every image is judged and counted; sample k is drawn at seed + k × stride', async () => {
    const one = firstSampleOnly();
    const r1 = await evaluateGenEval(one.model, { limit: 2 });
    expect(r1.overall).toBe(1);
    const four = firstSampleOnly();
    const r4 = await evaluateGenEval(four.model, { limit: 2, samples: 4 });
    expect(r4.overall).toBe(0.25);
    expect(Object.values(r4.counts).every((n) => n === 8)).toBe(true);
    expect(four.seen).toHaveLength(4 * one.seen.length);
    expect(four.seen.slice(0, 4)).toEqual([0, 1, 2, 3].map((k) => one.seen[0]! + k * SAMPLE_SEED_STRIDE));
  });
  it('GEdit: likewise, and a source image is rendered afresh for each sample', async () => {
    const two = firstSampleOnly();
    // the engine may transfer (detach) the pixels it is given: blank every source after use, so a source
    // shared between samples would reach the second one empty
    const sources: boolean[] = [];
    const edit = two.model.edit;
    two.model.edit = async (img, instruction, seed) => {
      sources.push(img.data.some((v) => v !== 0));
      const out = await edit(img, instruction, seed);
      img.data.fill(0);
      return out;
    };
    const r = await evaluateGEdit(two.model, { limit: 1, samples: 2 });
    expect(r.count).toBe(12); // 6 kinds × 1 item × 2 samples
    expect(r.categories.instruction).toBe(0.5);
    expect(sources).toHaveLength(24); // and as many on the held-out part
    expect(sources.every(Boolean)).toBe(true);
  });
  it('a samples value outside [1, 16] is a RangeError naming it, before any image is made', async () => {
    for (const samples of [0, -1, 1.5, 17, Number.NaN]) {
      const m = firstSampleOnly();
      await expect(evaluateGenEval(m.model, { limit: 1, samples }), String(samples)).rejects.toThrow(/samples must be an integer in \[1, 16\]/);
      expect(m.seen).toHaveLength(0);
    }
  });
});

describe('noisy oracle: content kept, quality lost', () => {
  it('σ=20 noise keeps instruction/preserved at 1 and drops quality below 0.8', async () => {
    const r = await evaluateGEdit(mapImages(oracleModel(), (img, seed) => addGaussianNoise(img, 20, seed)), { limit: 4 });
    expect(r.categories.instruction).toBe(1);
    expect(r.categories.preserved).toBe(1);
    expect(r.categories.quality).toBeLessThan(0.8);
    expect(r.overall).toBeLessThan(0.95);
  });
});

describe('edit judgement, scene level', () => {
  const src = parseCaption('a large red circle at the top left and a small blue star at the center on a gray background');
  const exp = parseCaption('a large green circle at the top left and a small blue star at the center on a gray background');
  it('exact result: instruction 1, preserved 1', () => expect(judgeEditScenes('recolor', src, exp, exp)).toEqual({ instruction: 1, preserved: 1 }));
  it('wrong new colour: instruction 0', () => expect(judgeEditScenes('recolor', src, exp, parseCaption('a large pink circle at the top left and a small blue star at the center on a gray background')).instruction).toBe(0));
  it('an extra object counts against preservation (2 of 3 items), not against the instruction', () => {
    const extra = { background: src.background, objects: [...exp.objects, { ...src.objects[0]!, cell: 'bottom' as const }] };
    expect(judgeEditScenes('recolor', src, exp, extra)).toEqual({ instruction: 1, preserved: 2 / 3 });
  });
  it('untouched object lost: preserved 1/2 (star lost, background kept)', () => {
    expect(judgeEditScenes('recolor', src, exp, parseCaption('a large green circle at the top left on a gray background'))).toEqual({ instruction: 1, preserved: 0.5 });
  });
  it('background changed by an object edit: preserved < 1', () => {
    expect(judgeEditScenes('recolor', src, exp, { ...exp, background: 'white' }).preserved).toBe(0.5);
  });
  it('a removal is followed only if nothing of the target\'s colour and shape is left (a resized or moved target is not removed)', () => {
    const rsrc = parseCaption('a large red circle at the top left and a small blue star at the center on a gray background');
    const rexp = parseCaption('a small blue star at the center on a gray background');
    expect(judgeEditScenes('remove', rsrc, rexp, rexp)).toEqual({ instruction: 1, preserved: 1 });
    for (const left of ['a small red circle at the top left', 'a large red circle at the bottom']) {
      const d = parseCaption(`${left} and a small blue star at the center on a gray background`);
      expect(judgeEditScenes('remove', rsrc, rexp, d).instruction, left).toBe(0);
    }
  });
  it('an object drawn twice is one extra (the detected scene is a multiset)', () => {
    const twice = { background: exp.background, objects: [...exp.objects, exp.objects[1]!] };
    expect(judgeEditScenes('recolor', src, exp, twice)).toEqual({ instruction: 1, preserved: 2 / 3 });
  });
  it('background edit is judged on the background', () => {
    const bexp = { ...src, background: 'beige' as const };
    expect(judgeEditScenes('background', src, bexp, bexp)).toEqual({ instruction: 1, preserved: 1 });
    expect(judgeEditScenes('background', src, bexp, src).instruction).toBe(0);
  });
});

describe('t2i judgement', () => {
  it('counts must be exact and categories average into overall', () => {
    const three = renderScene(parseCaption('a small red star at the top and a small blue star at the left and a large green star at the right on a white background'));
    const js = [
      judgeT2i({ category: 'counting', shape: 'star', count: 3 }, three),
      judgeT2i({ category: 'counting', shape: 'star', count: 2 }, three),
      judgeT2i({ category: 'position', a: 'star', relation: 'left of', b: 'star' }, three),
    ];
    expect(js.map((j) => j.correct)).toEqual([true, false, true]);
    const agg = aggregateT2i(js);
    expect(agg.categories).toEqual({ counting: 0.5, position: 1 });
    expect(agg.overall).toBe(0.75);
  });
});

describe('understanding judgement', () => {
  it('normalises case, punctuation and spacing, nothing else', () => {
    expect(captionExact('A large red circle at the top.  ', 'a large red circle at the top')).toBe(true);
    expect(captionExact('a large red circle at the top left', 'a large red circle at the top')).toBe(false);
    expect(answerCorrect('Yes!', 'yes')).toBe(true);
    expect(answerCorrect('yes it is', 'yes')).toBe(false);
  });
  it('the world answerer agrees with every committed question', () => {
    for (const split of ['test', 'heldout'] as const) for (const it of loadUnderstandSuite(split).items) for (const q of it.questions) expect(answerQuestion(it.scene, q.question)).toBe(q.answer);
  });
});

describe('quality proxy', () => {
  it('is 1 for clean renders and falls with noise', () => {
    const img = renderScene(parseCaption('a large red circle at the top left and a small blue star at the center on a gray background'));
    expect(cleanColorFraction(img)).toBe(1);
    expect(cleanColorFraction(addGaussianNoise(img, 10, 1))).toBeGreaterThan(cleanColorFraction(addGaussianNoise(img, 30, 1)));
    expect(cleanColorFraction(addGaussianNoise(img, 30, 1))).toBeLessThan(0.5);
  });
});

describe('think-mode thought scores (evaluateGenEval)', () => {
  it('count a thought as parsed when it is a scene caption and as satisfied when its scene fits the prompt', async () => {
    const oracle = oracleModel();
    const refs = new Map(loadT2iSuite('test').items.map((it) => [it.prompt + '#' + it.seed, it.reference]));
    let n = 0;
    // thoughts in turn: the reference scene's caption (satisfies), a valid caption of an empty-ish wrong
    // scene (parses, does not satisfy), and words that are no caption at all
    const model = {
      ...oracle,
      async generateDetailed(prompt: string, seed: number) {
        const ref = refs.get(prompt + '#' + seed);
        const kind = n++ % 3;
        const thought = kind === 0 && ref ? sceneToCaption(ref) : kind === 1 ? 'a small red circle at the top left on a white background' : 'circle circle red';
        return { image: await oracle.generate(prompt, seed), thought };
      },
    };
    const r = await evaluateGenEval(model, { limit: 3 });
    expect(r.overall).toBe(1); // the images are still the oracle's
    const t = r.thoughts!.test;
    expect(t.count).toBe(18);
    expect(t.parsed).toBeCloseTo(12 / 18, 10);
    // the reference captions satisfy their prompts; "a small red circle …" satisfies only prompts it happens to fit
    expect(t.satisfied).toBeGreaterThanOrEqual(6 / 18);
    expect(t.satisfied).toBeLessThan(12 / 18);
    expect(r.thoughts!.heldout.count).toBe(6);
    // without generateDetailed there are no thought scores
    expect((await evaluateGenEval(oracle, { limit: 1 })).thoughts).toBeUndefined();
  });
});
