// Think mode (src/engine/generation/think.ts) on the random-weight fixture: the thought is the model's
// own sampled text-only answer to the prompt, the image is generated from it, one seed reproduces both,
// and every malformed request is refused with the parameter named.
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, test } from 'vitest';
import { createEngine, type LocalEngine } from '../../src/engine/index.ts';
import type { GenerateRequest, ImageFrame, UnderstandSummary } from '../../src/engine/types.ts';
import { collect, engineError, FIXTURE } from './fixture-helpers.ts';
import { THINK_TEMPERATURE } from '../../src/engine/generation/think.ts';

/** A copy of the fixture whose manifest says the model was trained to think (or `think` as given), with more `prompts` fields if given. */
function packWithThink(think: unknown, prompts: Record<string, unknown> = {}): string {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'hb-think-'));
  for (const f of fs.readdirSync(FIXTURE)) if (fs.statSync(path.join(FIXTURE, f)).isFile()) fs.copyFileSync(path.join(FIXTURE, f), path.join(dir, f));
  const m = JSON.parse(fs.readFileSync(path.join(FIXTURE, 'manifest.json'), 'utf8'));
  fs.writeFileSync(path.join(dir, 'manifest.json'), JSON.stringify({ ...m, prompts: { ...(m.prompts ?? {}), think, ...prompts } }));
  return dir;
}

const finalOf = (frames: ImageFrame[]) => frames.find((f) => f.stage === 'final')!;

describe('think mode on the fixture', () => {
  let engine: LocalEngine;
  let plain: LocalEngine;
  const dirs: string[] = [];
  beforeAll(async () => {
    dirs.push(packWithThink(true));
    engine = await createEngine(dirs[0]!, { calibrate: false, intraOpThreads: 1 });
    plain = await createEngine(FIXTURE, { calibrate: false, intraOpThreads: 1 });
  });
  afterAll(async () => {
    await engine?.close();
    await plain?.close();
    for (const d of dirs) fs.rmSync(d, { recursive: true, force: true });
  });

  test('capabilities follow manifest prompts.think', () => {
    expect(engine.info.capabilities.think).toBe(true);
    expect(plain.info.capabilities.think).toBe(false);
  });

  test('the thought is the sampled text-only answer, the image is generated from it, one seed reproduces both', async () => {
    const req: GenerateRequest = { prompt: 'a photo of a square', mode: '6nfe', seed: 77, think: true };
    const a = await collect(engine.generate(req));
    const b = await collect(engine.generate(req));
    const thought = finalOf(a).thought!;
    expect(typeof thought).toBe('string');
    expect(thought.length).toBeGreaterThan(0);
    for (const f of a) expect(f.thought).toBe(thought);
    expect(finalOf(b).thought).toBe(thought);
    expect(finalOf(b).image.sha256).toBe(finalOf(a).image.sha256);
    expect(finalOf(a).seed).toBe(77);
    // elapsed time counts from the request: the thought's time is in it
    const thinkMs = finalOf(a).timings!.thinkMs!;
    expect(thinkMs).toBeGreaterThan(0);
    for (const f of a) expect(f.elapsedMs).toBeGreaterThanOrEqual(thinkMs);
    // the same sampled turn through understand(): text only, the default think temperature, the job seed
    const evs = await collect(engine.understand({ prompt: req.prompt, temperature: THINK_TEMPERATURE, seed: 77, maxTokens: 48 }));
    const said = (evs[evs.length - 1] as UnderstandSummary).text.trim();
    expect(thought).toBe(said || req.prompt);
    // and generating from the thought directly gives the same image
    const direct = await collect(engine.generate({ prompt: thought, mode: '6nfe', seed: 77 }));
    expect(finalOf(direct).image.sha256).toBe(finalOf(a).image.sha256);
    expect(finalOf(direct).thought).toBeUndefined();
  });

  test('temperature 0 is greedy: the same thought for any seed', async () => {
    const t = async (seed: number) => finalOf(await collect(engine.generate({ prompt: 'a photo of a circle', mode: '1nfe', seed, think: true, thinkTemperature: 0 }))).thought;
    expect(await t(1)).toBe(await t(2));
  });

  test('without think, or with think: false, no thought is reported', async () => {
    for (const think of [undefined, false]) {
      const frames = await collect(engine.generate({ prompt: 'a photo of a circle', mode: '1nfe', seed: 3, ...(think === undefined ? {} : { think }) }));
      expect(finalOf(frames).thought).toBeUndefined();
    }
  });

  test('a thought holding a word the pack declares untrained falls back to the prompt (the user never typed that word)', async () => {
    const req: GenerateRequest = { prompt: 'a photo of a square', mode: '6nfe', seed: 77, think: true };
    const thought = finalOf(await collect(engine.generate(req))).thought!;
    const word = thought.split(' ').find((w) => !req.prompt.split(' ').includes(w));
    expect(word, thought).toBeDefined();
    const dir = packWithThink(true);
    dirs.push(dir);
    const m = JSON.parse(fs.readFileSync(path.join(dir, 'manifest.json'), 'utf8'));
    fs.writeFileSync(path.join(dir, 'manifest.json'), JSON.stringify({ ...m, untrained_words: [word] }));
    const strict = await createEngine(dir, { calibrate: false, intraOpThreads: 1 });
    try {
      const frames = await collect(strict.generate(req));
      expect(finalOf(frames).thought).toBe(req.prompt);
      expect(finalOf(frames).image.sha256).toBe(finalOf(await collect(strict.generate({ prompt: req.prompt, mode: '6nfe', seed: 77 }))).image.sha256);
    } finally {
      await strict.close();
    }
  });

  test('malformed think requests are refused with the parameter named', async () => {
    const src = { width: 16, height: 16, data: new Uint8Array(16 * 16 * 3).fill(128) };
    const cases: Array<[GenerateRequest, string, string]> = [
      [{ prompt: 'a photo of a circle', think: 'yes' as unknown as boolean }, 'INVALID_INPUT', 'think'],
      [{ prompt: 'a photo of a circle', think: true, thinkTemperature: 3 }, 'OUT_OF_RANGE', 'thinkTemperature'],
      [{ prompt: 'a photo of a circle', think: true, thinkTemperature: Number.NaN }, 'OUT_OF_RANGE', 'thinkTemperature'],
      [{ prompt: 'make it red', think: true, sourceImage: src }, 'INVALID_INPUT', 'think'],
      [{ prompt: '   ', think: true }, 'INVALID_INPUT', 'prompt'],
      [{ prompt: 'a photo of a circle', think: true, seed: -1 }, 'OUT_OF_RANGE', 'seed'],
      [{ prompt: 'a photo of a circle', thinkTemperature: 0.5 }, 'INVALID_INPUT', 'thinkTemperature'],
    ];
    for (const [req, code, param] of cases) {
      const err = await engineError(() => collect(engine.generate(req)));
      expect(err.code, JSON.stringify(req)).toBe(code);
      expect(err.details?.param ?? err.message, JSON.stringify(req)).toContain(param);
    }
    const err = await engineError(() => collect(plain.generate({ prompt: 'a photo of a circle', think: true })));
    expect(err.code).toBe('INVALID_INPUT');
    expect(err.message).toContain('prompts.think');
  });

  test('a cancelled think request rejects with CANCELLED', async () => {
    const ac = new AbortController();
    ac.abort();
    const err = await engineError(() => collect(engine.generate({ prompt: 'a photo of a circle', think: true, seed: 1 }, ac.signal)));
    expect(err.code).toBe('CANCELLED');
  });

  test('a think request holds its session and its engine slot from the thought to the final', async () => {
    // on a session: a second request while the first is thinking is BUSY, and the first still succeeds
    const session = engine.createSession();
    const a = engine.generate({ prompt: 'a photo of a square', mode: '6nfe', seed: 5, think: true, session })[Symbol.asyncIterator]();
    const first = a.next(); // runs up to its first wait: admitted, the session claimed
    for (const other of [() => collect(engine.generate({ prompt: 'a red circle', mode: '1nfe', seed: 1, session })), () => collect(engine.understand({ prompt: 'a red circle', maxTokens: 2, session }))]) {
      const err = await engineError(other);
      expect(err.code).toBe('BUSY');
    }
    const frames: ImageFrame[] = [];
    for (let r = await first; !r.done; r = await a.next()) frames.push(r.value);
    expect(finalOf(frames).thought!.length).toBeGreaterThan(0);
    engine.closeSession(session);

    // one slot: a request that arrives while a think request is thinking is drawn after it, not between
    // its thought and its drawing
    const one = await createEngine(dirs[0]!, { calibrate: false, intraOpThreads: 1, maxConcurrent: 1 });
    try {
      const order: string[] = [];
      const run = async (name: string, req: GenerateRequest) => {
        await collect(one.generate(req));
        order.push(name);
      };
      const thinking = run('think', { prompt: 'a photo of a square', mode: '6nfe', seed: 5, think: true });
      const later = run('plain', { prompt: 'a red circle', mode: '1nfe', seed: 1 });
      await Promise.all([thinking, later]);
      expect(order).toEqual(['think', 'plain']);
    } finally {
      await one.close();
    }
  });

  test('prompts.think_prefix: a think prompt without the words the model\'s think prompts began with is framed with them', async () => {
    const dir = packWithThink(true, { think_prefix: 'a photo of' });
    dirs.push(dir);
    const framed = await createEngine(dir, { calibrate: false, intraOpThreads: 1 });
    try {
      const thoughtOf = async (e: LocalEngine, prompt: string) => finalOf(await collect(e.generate({ prompt, mode: '1nfe', seed: 12, think: true }))).thought!;
      const sampled = async (prompt: string) => {
        const evs = await collect(framed.understand({ prompt, temperature: THINK_TEMPERATURE, seed: 12, maxTokens: 48 }));
        return (evs.at(-1) as UnderstandSummary).text.trim();
      };
      // framed: the thought is the model's expansion of "a photo of a red circle"
      expect(await thoughtOf(framed, 'a red circle')).toBe(await sampled('a photo of a red circle'));
      // already framed (in any case): as given, not twice
      expect(await thoughtOf(framed, 'A Photo of a red circle')).toBe(await sampled('a photo of a red circle'));
      // without the field, the prompt goes as given
      expect(await thoughtOf(engine, 'a red circle')).toBe(await sampled('a red circle'));
    } finally {
      await framed.close();
    }
    // a prompt the frame would take past the word limit it passed goes as given (it was refused PROMPT_TOO_LONG)
    const tight = await createEngine(dir, { calibrate: false, intraOpThreads: 1, maxPromptWords: 4 });
    try {
      const frames = await collect(tight.generate({ prompt: 'a red circle', mode: '1nfe', seed: 12, think: true }));
      expect(finalOf(frames).stage).toBe('final');
    } finally {
      await tight.close();
    }
    for (const bad of [3, '', '  ']) {
      const d = packWithThink(true, { think_prefix: bad });
      dirs.push(d);
      const err = await engineError(() => createEngine(d, { calibrate: false }));
      expect(err.code).toBe('MODEL_LOAD_FAILED');
      expect(err.message).toContain('prompts.think_prefix');
    }
  });

  test('a manifest whose prompts.think is not a boolean fails at load, naming the field', async () => {
    const dir = packWithThink('yes');
    dirs.push(dir);
    const err = await engineError(() => createEngine(dir, { calibrate: false }));
    expect(err.code).toBe('MODEL_LOAD_FAILED');
    expect(err.message).toContain('prompts.think');
  });
});
