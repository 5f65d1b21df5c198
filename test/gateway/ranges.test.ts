// The gateway checks numeric arguments against the engine's own limits (exported by the engine's
// pipelines), so an out-of-range value fails the request itself, typed and naming the field and the
// real range, before any engine work or job id; boundary values pass through to the engine.
import sharp from 'sharp';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { SAMPLER_LIMITS } from '../../src/engine/generation/pipeline.ts';
import { SPECULATION_LIMITS } from '../../src/engine/understand/pipeline.ts';
import type { RunningServer } from '../../src/gateway/server.ts';
import { FakeEngine } from './fake-engine.ts';
import { gqlPost, start, wsClient, wsRun } from './helpers.ts';

let engine: FakeEngine;
let server: RunningServer;
beforeAll(async () => {
  engine = new FakeEngine({ stepMs: 1, tokens: 1, nfeMs: 1 });
  server = await start({ engine });
});
afterAll(async () => {
  await server?.close();
});

type Err = { message: string; extensions: Record<string, unknown> };

describe('speculation ranges (understand)', () => {
  const U = `subscription U($input: UnderstandInput!) { understand(input: $input) { done } }`;
  const run = async (speculation: Record<string, unknown>): Promise<Err | undefined> => {
    const client = wsClient(server);
    try {
      return await wsRun(client, U, { input: { prompt: 'x', speculation } }).then(
        (out) => out.at(-1)!.errors?.[0] as Err | undefined,
        (e) => e.errors?.[0] as Err,
      );
    } finally {
      await client.dispose();
    }
  };

  it('the engine limits are the documented ones', () => {
    expect(SPECULATION_LIMITS).toEqual({ chainLength: { min: 1, max: 16 }, treeBudget: { min: 1, max: 64 }, treeTopK: { min: 1, max: 10 }, treeDepth: { min: 1, max: 10 } });
  });

  for (const [field, { min, max }] of Object.entries(SPECULATION_LIMITS)) {
    it(`${field}: outside [${min}, ${max}] is OUT_OF_RANGE before any work; ${min} and ${max} reach the engine`, async () => {
      const calls = engine.requests.understand.length;
      for (const v of [min - 1, max + 1, -1000, 2 ** 31 - 1]) {
        const e = await run({ mode: 'AUTO', [field]: v });
        expect(e?.extensions).toMatchObject({ code: 'OUT_OF_RANGE', argument: `speculation.${field}`, min, max });
        expect(e?.message).toBe(`speculation.${field} must be in [${min}, ${max}], got ${v}`);
      }
      // malformed: not an Int (the message says where in the variable)
      for (const v of [2.5, '3', true])
        expect(await run({ mode: 'AUTO', [field]: v }), String(v)).toMatchObject({
          extensions: { code: 'INVALID_INPUT' },
          message: expect.stringMatching(new RegExp(`^Variable "\\$input" got invalid value .* at "input\\.speculation\\.${field}"; Int cannot represent non-integer value: `)),
        });
      expect(engine.requests.understand.length).toBe(calls);
      for (const v of [min, max]) {
        expect(await run({ mode: 'AUTO', [field]: v })).toBeUndefined();
        expect(engine.requests.understand.at(-1)!.speculation![field as keyof typeof SPECULATION_LIMITS]).toBe(v);
      }
    });
  }
});

describe('speculation fields a mode never reads', () => {
  it('are refused with INVALID_INPUT naming the field, before any work; the fields it reads pass', async () => {
    const U = `subscription U($input: UnderstandInput!) { understand(input: $input) { done } }`;
    const client = wsClient(server);
    const run = (speculation: Record<string, unknown>) =>
      wsRun(client, U, { input: { prompt: 'x', speculation } }).then(
        (out) => out.at(-1)!.errors?.[0] as Err | undefined,
        (e) => e.errors?.[0] as Err,
      );
    try {
      const calls = engine.requests.understand.length;
      for (const [mode, field] of [['OFF', 'treeBudget'], ['OFF', 'chainLength'], ['CHAIN', 'treeDepth'], ['NGRAM', 'treeTopK'], ['TREE', 'chainLength']] as const) {
        const e = await run({ mode, [field]: 3 });
        expect(e?.extensions).toMatchObject({ code: 'INVALID_INPUT', argument: `speculation.${field}` });
        expect(e?.message).toBe(`speculation.${field} does not apply to mode ${mode}`);
      }
      expect(engine.requests.understand.length).toBe(calls);
      for (const speculation of [{ mode: 'CHAIN', chainLength: 3 }, { mode: 'TREE', treeBudget: 8, treeTopK: 2, treeDepth: 3 }, { mode: 'AUTO', chainLength: 2, treeDepth: 3 }, { mode: 'OFF' }])
        expect(await run(speculation)).toBeUndefined();
    } finally {
      await client.dispose();
    }
  });
});

describe('sampler ranges (generateImage / editImage)', () => {
  const G = `mutation G($input: GenerateImageInput!) { generateImage(input: $input) { id result { nfe } } }`;
  const E = `mutation E($input: EditImageInput!) { editImage(input: $input) { id result { nfe } } }`;
  /** a BASELINE job; one given cfgImageScale is an edit (text-to-image refuses that field) */
  const gen = async (input: Record<string, unknown>) => {
    const edit = 'cfgImageScale' in input;
    const png = edit ? (await sharp({ create: { width: 8, height: 8, channels: 3, background: '#ff0000' } }).png().toBuffer()).toString('base64') : '';
    const r = await gqlPost(server, {
      query: edit ? E : G,
      variables: { input: { ...(edit ? { instruction: 'x', image: { base64: png } } : { prompt: 'x' }), mode: 'BASELINE', steps: 2, ...input } },
    });
    const data = r.json.data && { generateImage: r.json.data.generateImage ?? r.json.data.editImage };
    return { data, error: r.json.errors?.[0] as Err | undefined };
  };
  /** rejected with the request: no data (so no job id), no job, no engine call */
  const rejected = async (input: Record<string, unknown>) => {
    const calls = engine.requests.generate.length;
    const jobs = server.runtime.jobs.size;
    const r = await gen(input);
    expect(r.data ?? null).toBeNull(); // null: failed in the resolver; absent: failed variable coercion
    expect(engine.requests.generate.length).toBe(calls);
    expect(server.runtime.jobs.size).toBe(jobs);
    return r.error!;
  };
  const accepted = async (input: Record<string, unknown>) => {
    const r = await gen(input);
    expect(r.error).toBeUndefined();
    expect(r.data.generateImage.result.nfe).toBeGreaterThan(0);
    return engine.requests.generate.at(-1)!;
  };

  it('the engine limits are the documented ones', () => {
    expect(SAMPLER_LIMITS).toEqual({ steps: { min: 1, max: 250 }, cfgScale: { min: 1, max: 20 }, timestepShift: { min: 0, max: 20 } });
  });

  it('CFG scales: outside [1, 20] is OUT_OF_RANGE naming the field (below 1 would run as 1, guidance off); 1 and 20 are accepted', async () => {
    const { min, max } = SAMPLER_LIMITS.cfgScale;
    for (const field of ['cfgTextScale', 'cfgImageScale']) {
      for (const v of [max + 0.5, 21, 50, -0.1, 0, 0.5, 0.999]) {
        const e = await rejected({ [field]: v });
        expect(e.extensions).toMatchObject({ code: 'OUT_OF_RANGE', argument: field, min, max });
        expect(e.message).toBe(`${field} must be in [1, 20], got ${v}`);
      }
      expect(await rejected({ [field]: 'high' })).toMatchObject({ extensions: { code: 'INVALID_INPUT' }, message: `Variable "$input" got invalid value "high" at "input.${field}"; Float cannot represent non numeric value: "high"` }); // not a Float
      for (const v of [min, max]) expect((await accepted({ [field]: v }))[field as 'cfgTextScale']).toBe(v);
    }
  });

  it('steps: outside [1, 250] is OUT_OF_RANGE; 1 and 250 are accepted', async () => {
    for (const v of [0, 251]) expect((await rejected({ steps: v })).message).toBe(`steps must be in [1, 250], got ${v}`);
    expect((await accepted({ steps: 1 })).steps).toBe(1);
    expect((await accepted({ steps: 250 })).steps).toBe(250);
  });

  it('timestepShift: outside (0, 20] is OUT_OF_RANGE in every mode; just above 0 and 20 are accepted', async () => {
    for (const mode of ['BASELINE', 'PROGRESSIVE']) {
      const base = mode === 'BASELINE' ? {} : { steps: undefined }; // steps are BASELINE only
      for (const v of [0, -1, 20.001, 100]) {
        const e = await rejected({ ...base, mode, timestepShift: v });
        expect(e.extensions).toMatchObject({ code: 'OUT_OF_RANGE', argument: 'timestepShift', min: 0, max: 20 });
        expect(e.message).toBe(`timestepShift must be in (0, 20], got ${v}`);
      }
      for (const v of [0.001, 20]) expect((await accepted({ ...base, mode, timestepShift: v })).timestepShift).toBe(v);
    }
  });

  it('cfgInterval: [start, end] with 0 <= start < end <= 1; an empty or reversed interval is OUT_OF_RANGE', async () => {
    for (const v of [[0.5, 0.5], [0.6, 0.4], [-0.1, 1], [0, 1.1], [0.2], [], [0, 0.5, 1]]) {
      const e = await rejected({ cfgInterval: v });
      expect(e.extensions).toMatchObject({ code: 'OUT_OF_RANGE', argument: 'cfgInterval' });
      expect(e.message).toBe('cfgInterval must be [start, end] with 0 <= start < end <= 1');
    }
    expect((await accepted({ cfgInterval: [0, 1] })).cfgInterval).toEqual([0, 1]);
    expect((await accepted({ cfgInterval: [0.4, 0.41] })).cfgInterval).toEqual([0.4, 0.41]);
  });

  it('editImage checks the same ranges, also when its image fails to decode (no unhandled rejection)', async () => {
    const r = await gqlPost(server, {
      query: `mutation { editImage(input: { instruction: "x", mode: BASELINE, cfgImageScale: 25, image: { base64: "AAAA" } }) { id } }`,
    });
    expect(r.json.data).toBeNull();
    expect(r.json.errors[0].extensions).toMatchObject({ code: 'OUT_OF_RANGE', argument: 'cfgImageScale', max: 20 });
  });
});
