// A pack that declares words untrained (manifest `untrained_words`: in its vocabulary, in no training text)
// refuses prompts holding them with UNKNOWN_WORDS, in understanding and generation, naming the words; a
// manifest that lists a word its tokenizer lacks, or no list, is refused at load. The fixture pack, copied
// with that field; real worker.
import { cpSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, test } from 'vitest';
import { createEngine, type LocalEngine } from '../../src/engine/index.ts';
import { collect, engineError, FIXTURE } from './fixture-helpers.ts';

const dirs: string[] = [];
const withUntrained = (value: unknown) => {
  const d = mkdtempSync(join(tmpdir(), 'hb-untrained-'));
  dirs.push(d);
  cpSync(FIXTURE, d, { recursive: true });
  const m = JSON.parse(readFileSync(join(d, 'manifest.json'), 'utf8'));
  m.untrained_words = value;
  writeFileSync(join(d, 'manifest.json'), JSON.stringify(m));
  return d;
};
let engine: LocalEngine;
beforeAll(async () => {
  engine = await createEngine(withUntrained(['it', 'object']), { calibrate: false, intraOpThreads: 1 });
});
afterAll(async () => {
  await engine?.close();
  for (const d of dirs) rmSync(d, { recursive: true, force: true });
});

describe('untrained words', () => {
  test('a prompt holding one is refused, naming it; the same prompt without it runs', async () => {
    const e = await engineError(() => engine.understand({ prompt: 'what color is it', maxTokens: 2 }));
    expect(e.code).toBe('UNKNOWN_WORDS');
    expect(e.message).toBe('word the model was never trained on: it');
    expect(e.details).toMatchObject({ words: ['it'], untrained: true });
    const two = await engineError(() => engine.generate({ prompt: 'a red object and it' }));
    expect(two.code).toBe('UNKNOWN_WORDS');
    expect(two.message).toBe('words the model was never trained on: object, it');
    const ok = await collect(engine.understand({ prompt: 'what color is the circle', maxTokens: 2 }));
    expect(ok.at(-1)).toMatchObject({ kind: 'done' });
  });

  test('engine.info.words lists what prompts may use: the vocabulary less special tokens and untrained words', () => {
    const words = engine.info.words;
    expect(words).toContain('circle');
    expect(words).not.toContain('it');
    expect(words).not.toContain('object');
    expect(words.some((w) => w.startsWith('<'))).toBe(false);
    expect(words).toEqual([...words].sort());
    expect(words.length).toBe(engine.info.vocabularySize - 10 - 2); // 10 special tokens, 2 untrained
  });

  test('words the vocabulary lacks are named first, as before', async () => {
    const e = await engineError(() => engine.understand({ prompt: 'what color is zorblax it' }));
    expect(e.message).toBe('unknown word: zorblax');
  });

  test('a pack whose list is malformed or names a word its tokenizer lacks is refused at load, naming the field', async () => {
    await expect(createEngine(withUntrained(['zorblax']), { calibrate: false, intraOpThreads: 1 })).rejects.toThrow(/untrained_words.*untrained word "zorblax" is not in the tokenizer's vocabulary|field "untrained_words".*zorblax/);
    await expect(createEngine(withUntrained('it'), { calibrate: false, intraOpThreads: 1 })).rejects.toThrow(/field "untrained_words"\): expected a list of words, got "it"/);
    await expect(createEngine(withUntrained(['']), { calibrate: false, intraOpThreads: 1 })).rejects.toThrow(/field "untrained_words"/);
  });
});
