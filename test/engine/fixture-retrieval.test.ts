// Retrieval drafting through the real engine: greedy outputs are identical with speculation off and
// with retrieval chains/trees/auto, on copies of the fixture packs given a datastore (built from the
// pack's own greedy answers, half of them corrupted so drafts are also rejected), and on the default
// pack (models/shapes-mot, whose retrieval.json comes from the training answers) over many prompts.
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, test } from 'vitest';
import { DEFAULT_PACK } from '../../src/engine/pack-location.ts';
import { createEngine, type LocalEngine } from '../../src/engine/index.ts';
import { buildRetrievalData } from '../../src/engine/speculative/retrieval.ts';
import type { SpeculationMode, UnderstandRequest, UnderstandSummary } from '../../src/engine/types.ts';
import { captionPrompt } from '../../src/eval/engine-model.ts';
import { loadUnderstandSuite } from '../../src/eval/suites.ts';
import { renderScene } from '../../src/world/render.ts';
import { answerIds, collect, engineError, FIXTURE } from './fixture-helpers.ts';

const ACCEL = path.join(path.dirname(FIXTURE), 'tiny-pack-accel');
const CURVE: Array<[number, number]> = [[1, 1], [2, 1.02], [8, 1.1], [32, 1.4]];
const PROMPTS = ['describe the image', 'what color is the star', 'where is the red square', 'how many objects are there', 'is there a green star', 'what shape is at the left'];
const SPEC: SpeculationMode[] = ['chain', 'tree', 'auto'];

async function answer(engine: LocalEngine, r: UnderstandRequest, mode: SpeculationMode) {
  const evs = await collect(engine.understand({ ...r, speculation: { mode } }));
  return { ids: answerIds(evs), summary: evs[evs.length - 1] as UnderstandSummary };
}

/** A copy of `src` with a retrieval.json from `data` (and the manifest key). */
function packWithDatastore(src: string, data: unknown, file = 'retrieval.json'): string {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'hb-rest-'));
  for (const f of fs.readdirSync(src)) if (fs.statSync(path.join(src, f)).isFile()) fs.copyFileSync(path.join(src, f), path.join(dir, f));
  const m = JSON.parse(fs.readFileSync(path.join(src, 'manifest.json'), 'utf8'));
  fs.writeFileSync(path.join(dir, 'manifest.json'), JSON.stringify({ ...m, retrieval: file }));
  fs.writeFileSync(path.join(dir, file), typeof data === 'string' ? data : JSON.stringify(data));
  return dir;
}

describe('retrieval speculation on the fixture packs', () => {
  const dirs: string[] = [];
  const plain = new Map<string, number[]>();
  let data: ReturnType<typeof buildRetrievalData>;
  let sp: { im_start: number; eos: number };
  beforeAll(async () => {
    const base = await createEngine(FIXTURE, { calibrate: false, intraOpThreads: 1 });
    try {
      sp = JSON.parse(fs.readFileSync(path.join(FIXTURE, 'manifest.json'), 'utf8')).special_tokens;
      const vocab = JSON.parse(fs.readFileSync(path.join(FIXTURE, 'tokenizer.json'), 'utf8')).model.vocab as Record<string, number>;
      const seqs = [];
      for (const [i, prompt] of PROMPTS.entries()) {
        const a = await answer(base, { prompt, maxTokens: 24, temperature: 0 }, 'off');
        plain.set(prompt, a.ids);
        const words = prompt.split(' ').map((w) => vocab[w]!);
        // odd prompts: the true answer; even prompts: the answer with every third token changed
        const ans = i % 2 ? a.ids : a.ids.map((t, k) => (k % 3 === 2 ? 10 + ((t + 7) % 60) : t));
        seqs.push({ prompt: [...words, sp.im_start], answer: ans, count: 2 }, { prompt: [...words, sp.im_start], answer: ans.slice(0, 4).reverse() });
      }
      data = buildRetrievalData(seqs, 81, 4);
    } finally {
      await base.close();
    }
  }, 60_000);
  afterAll(() => {
    for (const d of dirs) fs.rmSync(d, { recursive: true, force: true });
  });

  test('greedy answers are identical with retrieval chains, trees and auto; drafts are accepted and rejected', async () => {
    const dir = packWithDatastore(FIXTURE, data);
    dirs.push(dir);
    const engine = await createEngine(dir, { calibrate: false, intraOpThreads: 1, costCurve: CURVE });
    try {
      let accepted = 0;
      let drafted = 0;
      for (const prompt of PROMPTS)
        for (const mode of SPEC) {
          const a = await answer(engine, { prompt, maxTokens: 24, temperature: 0 }, mode);
          expect(a.ids, `${mode}: ${prompt}`).toEqual(plain.get(prompt));
          expect(a.summary.speculation.proposer).toBe('retrieval');
          accepted += a.summary.speculation.acceptedTokens;
          drafted += a.summary.speculation.draftedTokens;
        }
      expect(accepted).toBeGreaterThan(0);
      expect(drafted).toBeGreaterThan(accepted);
      // ngram mode keeps the prompt-lookup drafter; explicit tree shapes are honoured
      const ng = await answer(engine, { prompt: PROMPTS[1]!, maxTokens: 24, temperature: 0 }, 'ngram');
      expect(ng.summary.speculation.proposer).toBe('ngram');
      const evs = await collect(engine.understand({ prompt: PROMPTS[1]!, maxTokens: 24, temperature: 0, speculation: { mode: 'tree', treeBudget: 5, treeTopK: 2, treeDepth: 3 } }));
      expect(answerIds(evs)).toEqual(plain.get(PROMPTS[1]!));
      // sampling runs through the rejection rule (point-mass drafts over siblings)
      const s = await collect(engine.understand({ prompt: PROMPTS[0]!, maxTokens: 16, temperature: 1, seed: 3, speculation: { mode: 'tree' } }));
      expect((s[s.length - 1] as UnderstandSummary).speculation.proposer).toBe('retrieval');
    } finally {
      await engine.close();
    }
  }, 120_000);

  test('drafts verified with the prompt: lossless at every answer budget, in sessions, with stop strings', async () => {
    const dir = packWithDatastore(FIXTURE, data);
    dirs.push(dir);
    const engine = await createEngine(dir, { calibrate: false, intraOpThreads: 1, costCurve: CURVE });
    try {
      let firstAccepted = 0;
      for (const prompt of PROMPTS.slice(0, 4))
        for (const maxTokens of [1, 2, 3, 5, 9]) {
          const r: UnderstandRequest = { prompt, maxTokens, temperature: 0 };
          const off = await answer(engine, r, 'off');
          for (const mode of ['tree', 'auto'] as const) {
            const evs = await collect(engine.understand({ ...r, speculation: { mode } }));
            expect(answerIds(evs), `${mode} ${maxTokens}: ${prompt}`).toEqual(off.ids);
            const c = evs[0]!;
            if (c.kind === 'chunk') firstAccepted += c.acceptedTokens;
          }
        }
      expect(firstAccepted).toBeGreaterThan(0); // some answers start with several tokens from one forward
      // sessions: turn 2 after a retrieval turn answers as after a plain turn
      for (const mode of ['tree', 'auto'] as const) {
        const a = engine.createSession();
        const b = engine.createSession();
        for (const prompt of [PROMPTS[1]!, PROMPTS[0]!, PROMPTS[3]!]) {
          const x = answerIds(await collect(engine.understand({ prompt, maxTokens: 10, temperature: 0, session: a, speculation: { mode } })));
          const y = answerIds(await collect(engine.understand({ prompt, maxTokens: 10, temperature: 0, session: b, speculation: { mode: 'off' } })));
          expect(x, `${mode} session: ${prompt}`).toEqual(y);
        }
        engine.closeSession(a);
        engine.closeSession(b);
      }
      // stop strings cut the same text
      const plainText = (await collect(engine.understand({ prompt: PROMPTS[1]!, maxTokens: 24, temperature: 0, speculation: { mode: 'off' } }))).at(-1) as UnderstandSummary;
      const words = plainText.text.split(' ');
      if (words.length > 2) {
        const stop = [words[2]!];
        const t0 = (await collect(engine.understand({ prompt: PROMPTS[1]!, maxTokens: 24, temperature: 0, stop, speculation: { mode: 'off' } }))).at(-1) as UnderstandSummary;
        const t1 = (await collect(engine.understand({ prompt: PROMPTS[1]!, maxTokens: 24, temperature: 0, stop, speculation: { mode: 'tree' } }))).at(-1) as UnderstandSummary;
        expect(t1.text).toBe(t0.text);
        expect(t1.finishReason).toBe(t0.finishReason);
      }
    } finally {
      await engine.close();
    }
  }, 120_000);

  test('with a draft model too: auto uses retrieval first, chain/tree the draft model; all lossless', async () => {
    const dir = packWithDatastore(ACCEL, data);
    dirs.push(dir);
    const engine = await createEngine(dir, { calibrate: false, intraOpThreads: 1, costCurve: CURVE, draftCost: { perToken: 0.5, fixed: 0.5 } });
    try {
      const auto = await answer(engine, { prompt: PROMPTS[0]!, maxTokens: 24, temperature: 0 }, 'auto');
      expect(auto.summary.speculation.proposer).toBe('retrieval');
      for (const prompt of PROMPTS.slice(0, 3)) {
        const off = await answer(engine, { prompt, maxTokens: 24, temperature: 0 }, 'off');
        for (const mode of SPEC) {
          const a = await answer(engine, { prompt, maxTokens: 24, temperature: 0 }, mode);
          expect(a.ids, `${mode}: ${prompt}`).toEqual(off.ids);
          if (mode !== 'auto') expect(a.summary.speculation.proposer).toBe('draft-model');
        }
      }
    } finally {
      await engine.close();
    }
  }, 120_000);

  test('a malformed datastore: the engine does not start and the error names the file', async () => {
    const dir = packWithDatastore(FIXTURE, '{"format": "hyperbagel-retrieval/1", "entries": [', 'rest-store.json');
    dirs.push(dir);
    const e = await engineError(() => createEngine(dir, { calibrate: false, intraOpThreads: 1 }));
    expect(e.code).toBe('MODEL_LOAD_FAILED');
    expect(e.message).toContain(path.join(dir, 'rest-store.json'));
  });
});

const present = fs.existsSync(path.join(DEFAULT_PACK, 'manifest.json')) && fs.existsSync(path.join(DEFAULT_PACK, 'retrieval.json'));

/** The pack without its draft graph (symlinked files, manifest minus `draft`): chain and tree modes then
 * draft from the datastore. (With a draft graph they use it; default-pack.test.ts covers that path.) */
function packWithoutDraft(src: string): string {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'hb-nodraft-'));
  for (const f of fs.readdirSync(src)) if (f !== 'manifest.json') fs.symlinkSync(path.join(src, f), path.join(dir, f));
  const m = JSON.parse(fs.readFileSync(path.join(src, 'manifest.json'), 'utf8')) as { graphs: Record<string, unknown>; draft?: unknown };
  delete m.graphs['draft'];
  delete m.draft;
  fs.writeFileSync(path.join(dir, 'manifest.json'), JSON.stringify(m));
  return dir;
}

describe.runIf(present)('retrieval speculation on the default pack', () => {
  let engine: LocalEngine;
  beforeAll(async () => {
    engine = await createEngine(packWithoutDraft(DEFAULT_PACK), { calibrate: false, intraOpThreads: 1, costCurve: [[1, 1], [8, 1], [16, 1.2], [32, 1.8]] });
  }, 60_000);
  afterAll(async () => {
    await engine?.close();
  });

  test('greedy answers identical in every mode over 25 images × (caption + 3 questions); captions accept several tokens per step', async () => {
    const items = loadUnderstandSuite('test').items.slice(0, 25);
    const size = engine.info.imageSize.width;
    let capSteps = 0;
    let capAccepted = 0;
    for (const it of items) {
      const image = renderScene(it.scene, size);
      const prompts = [captionPrompt(DEFAULT_PACK), ...it.questions.slice(0, 3).map((q) => q.question)];
      for (const [k, prompt] of prompts.entries()) {
        const r: UnderstandRequest = { prompt, image, maxTokens: 48, temperature: 0 };
        const off = await answer(engine, r, 'off');
        for (const mode of SPEC) {
          const a = await answer(engine, r, mode);
          expect(a.ids, `${mode}: ${prompt}`).toEqual(off.ids);
          expect(a.summary.speculation.proposer).toBe('retrieval');
          if (k === 0 && mode === 'tree') {
            capSteps += a.summary.speculation.drafts;
            capAccepted += a.summary.speculation.acceptedTokens;
          }
        }
      }
    }
    expect(capSteps).toBeGreaterThan(0);
    expect(1 + capAccepted / capSteps).toBeGreaterThan(2); // τ of caption trees
  }, 300_000);
});
