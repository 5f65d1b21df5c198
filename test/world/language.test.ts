// The world's language: scene ↔ caption round trips, prompts, questions, vocabulary errors.
import { describe, expect, it } from 'vitest';
import {
  assertKnownWords, canonicalScene, parseCaption, promptsForScene, promptText, PROMPT_CATEGORIES, questionObject, questionsForScene, Rng,
  satisfies, sceneFor, sceneToCaption, scenesEqual, SPLITS, unknownWords, VOCABULARY, WorldError,
} from '../../src/world/index.ts';

function worldError(f: () => unknown): WorldError {
  try { f(); } catch (err) { if (err instanceof WorldError) return err; throw err; }
  throw new Error('expected a WorldError');
}

describe('scene → caption → scene', () => {
  it('round-trips 2,000 scenes of every split, and the caption is canonical', () => {
    for (const split of SPLITS) {
      for (let i = 0; i < 500; i++) {
        const scene = sceneFor(split, i);
        const caption = sceneToCaption(scene);
        const back = parseCaption(caption);
        expect(back).toEqual(canonicalScene(scene));
        expect(sceneToCaption(back)).toBe(caption);
      }
    }
  });

  it('ignores case, punctuation and spacing, and accepts "an"', () => {
    const s = parseCaption('A Large  RED circle at the top left, and an small blue star at the center on a gray background.');
    expect(sceneToCaption(s)).toBe('a large red circle at the top left and a small blue star at the center on a gray background');
  });

  it('orders objects canonically (row-major by cell) whatever the caption order', () => {
    const a = parseCaption('a small blue star at the bottom right and a large red circle at the top on a white background');
    expect(a.objects.map((o) => o.cell)).toEqual(['top', 'bottom right']);
  });

  it('rejects unparseable captions with PARSE_ERROR naming where parsing stopped', () => {
    const e = worldError(() => parseCaption('a large red circle at the on a white background'));
    expect(e.code).toBe('PARSE_ERROR');
    expect(e.message).toMatch(/expected a position/);
    expect(worldError(() => parseCaption('a large red circle at the top')).message).toMatch(/expected "on".*end of text/);
    expect(worldError(() => parseCaption('')).code).toBe('PARSE_ERROR');
    // "a" and "an" are both accepted, and the message names both (it said expected "an")
    expect(worldError(() => parseCaption('large red circle at the top on a white background')).message).toMatch(/expected "a" or "an" at word 1, got "large"/);
    expect(worldError(() => parseCaption('a large red circle at the top and the blue star at the left on a white background')).message).toMatch(/expected "a" or "an" at word 9, got "the"/);
  });

  it('rejects captions of invalid scenes with INVALID_SCENE', () => {
    expect(worldError(() => parseCaption('a large red circle at the top and a small blue star at the top on a white background')).code).toBe('INVALID_SCENE');
    expect(worldError(() => parseCaption('a large red circle at the top and a small red circle at the left on a white background')).message).toMatch(/at most once/);
    const five = ['top left', 'top', 'top right', 'left', 'center'].map((c, i) => `a large ${['red', 'blue', 'green', 'pink', 'cyan'][i]} circle at the ${c}`).join(' and ');
    expect(worldError(() => parseCaption(`${five} on a white background`)).message).toMatch(/1 to 4 objects/);
  });
});

describe('vocabulary', () => {
  it('lists every unknown word, in order, once', () => {
    expect(unknownWords('a large crimson hexagon at the top left near a crimson dog')).toEqual(['crimson', 'hexagon', 'near', 'dog']);
    const e = worldError(() => parseCaption('a large crimson hexagon at the top left on a white background'));
    expect(e.code).toBe('UNKNOWN_WORDS');
    expect(e.message).toContain('"crimson"');
    expect(e.message).toContain('"hexagon"');
    expect(e.details).toEqual({ unknownWords: ['crimson', 'hexagon'] });
  });

  it('knows every word the world itself produces', () => {
    for (const split of SPLITS) {
      for (let i = 0; i < 200; i++) {
        const scene = sceneFor(split, i);
        const rng = new Rng(`vocab:${split}:${i}`);
        const texts = [sceneToCaption(scene), ...questionsForScene(scene, rng).flatMap((q) => [q.question, q.answer]), ...PROMPT_CATEGORIES.flatMap((c) => promptsForScene(scene, c).map(promptText))];
        for (const t of texts) expect(() => assertKnownWords(t), t).not.toThrow();
      }
    }
  });

  it('is sorted and has no duplicates', () => {
    expect([...VOCABULARY]).toEqual([...new Set(VOCABULARY)].sort());
  });
});

describe('prompts', () => {
  it('every prompt a scene yields is satisfied by that scene', () => {
    let n = 0;
    for (let i = 0; i < 1000; i++) {
      const scene = sceneFor('train', i);
      for (const c of PROMPT_CATEGORIES) for (const spec of promptsForScene(scene, c)) { expect(satisfies(spec, scene)).toBe(true); n++; }
    }
    expect(n).toBeGreaterThan(500);
  });

  it('GenEval-style texts', () => {
    expect(promptText({ category: 'single_object', shape: 'circle' })).toBe('a photo of a circle');
    expect(promptText({ category: 'counting', shape: 'square', count: 2 })).toBe('a photo of two squares');
    expect(promptText({ category: 'position', a: 'circle', relation: 'left of', b: 'square' })).toBe('a photo of a circle left of a square');
    expect(promptText({ category: 'color_attr', a: { shape: 'circle', color: 'red' }, b: { shape: 'star', color: 'blue' } })).toBe('a photo of a red circle and a blue star');
  });
});

describe('questions', () => {
  it('answers follow from the scene', () => {
    const scene = parseCaption('a large red circle at the top left and a small blue star at the center on a gray background');
    const qa = questionsForScene(scene, new Rng(1));
    const ask = (q: string) => qa.find((x) => x.question === q)?.answer;
    expect(ask('what color is the circle')).toBe('red');
    expect(ask('where is the blue star')).toBe('center');
    expect(ask('what size is the red circle')).toBe('large');
    expect(ask('what shape is at the center')).toBe('star');
    // which object each question asks about (eval: held-out VQA about the held-out object)
    const about = (q: string) => questionObject(qa.find((x) => x.question === q)!, scene);
    expect(about('what color is the circle')).toMatchObject({ shape: 'circle', color: 'red' });
    expect(about('where is the blue star')).toMatchObject({ shape: 'star', cell: 'center' });
    expect(about('what size is the red circle')).toMatchObject({ shape: 'circle' });
    expect(about('what shape is at the center')).toMatchObject({ shape: 'star' });
    expect(about('how many objects are there')).toBeUndefined();
    expect(about('what color is the background')).toBeUndefined();
    for (const q of qa.filter((x) => x.kind === 'exists')) expect(questionObject(q, scene) === undefined, q.question).toBe(q.answer === 'no');
    expect(ask('how many objects are there')).toBe('two');
    expect(ask('what color is the background')).toBe('gray');
    expect(qa.filter((q) => q.kind === 'exists').map((q) => q.answer).sort()).toEqual(['no', 'yes']);
  });
});

it('scenesEqual ignores object order', () => {
  const a = parseCaption('a large red circle at the top left and a small blue star at the center on a gray background');
  expect(scenesEqual(a, { ...a, objects: [...a.objects].reverse() })).toBe(true);
  expect(scenesEqual(a, { ...a, background: 'white' })).toBe(false);
});
