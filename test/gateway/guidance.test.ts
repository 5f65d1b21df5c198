// Guidance scales through the API on a pack with distilled graphs (test/fixtures/tiny-pack-accel: their
// manifest ranges are text [1, 5], image [1, 2.5]): every mode takes them, each sampler within its own
// range, refused with the request (no job id) outside it; models.guidance tells a client the ranges.
import sharp from 'sharp';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { RunningServer } from '../../src/gateway/server.ts';
import { gqlPost, start } from './helpers.ts';

let server: RunningServer;
let png: string;
beforeAll(async () => {
  server = await start({ packDir: 'test/fixtures/tiny-pack-accel' });
  png = (await sharp({ create: { width: 64, height: 64, channels: 3, background: '#ff0000' } }).png().toBuffer()).toString('base64');
}, 120_000);
afterAll(async () => {
  await server?.close();
});

const GEN = `mutation G($input: GenerateImageInput!) { generateImage(input: $input) { id result { nfe sampler } } }`;
const EDIT = `mutation E($input: EditImageInput!) { editImage(input: $input) { id result { nfe sampler } } }`;
const generate = (input: Record<string, unknown>) => gqlPost(server, { query: GEN, variables: { input: { prompt: 'a red circle', seed: 1, ...input } } });
const edit = (input: Record<string, unknown>) => gqlPost(server, { query: EDIT, variables: { input: { instruction: 'make the circle blue', seed: 1, image: { base64: png }, ...input } } });

describe('guidance scales', () => {
  it('models.guidance reports each sampler\'s default and range from the pack', async () => {
    const r = await gqlPost(server, { query: '{ models { guidance { baseline { text { default min max } image { default min max } } sixStep { text { default min max } image { default min max } } oneStep { text { default min max } image { default min max } } } } }' });
    expect(r.json.errors).toBeUndefined();
    const distilled = { text: { default: 4, min: 1, max: 5 }, image: { default: 1.5, min: 1, max: 2.5 } };
    expect(r.json.data.models[0].guidance).toEqual({ baseline: { text: { default: 4, min: 1, max: 20 }, image: { default: 1.5, min: 1, max: 20 } }, sixStep: distilled, oneStep: distilled });
  });

  it('a distilled mode takes a scale inside its graph\'s range, and refuses one outside it before any job', async () => {
    const ok = await generate({ mode: 'ONE_STEP', cfgTextScale: 2 });
    expect(ok.json.errors).toBeUndefined();
    expect(ok.json.data.generateImage.result).toMatchObject({ nfe: 1, sampler: 'distilled-1nfe' });
    const jobs = server.runtime.jobs.size;
    // beyond the baseline's 20 too: the range reported is the mode's own, whatever the value (25 said max 20,
    // and a retry at 20 then said max 5)
    for (const [mode, v] of [['SIX_STEP', 9], ['ONE_STEP', 7], ['PROGRESSIVE', 5.5], ['PROGRESSIVE', 25], ['SIX_STEP', 25]] as const) {
      const r = await generate({ mode, cfgTextScale: v });
      expect(r.json.data).toBeNull();
      expect(r.json.errors[0].extensions).toMatchObject({ code: 'OUT_OF_RANGE', argument: 'cfgTextScale', min: 1, max: 5 });
      expect(r.json.errors[0].message).toMatch(new RegExp(`^cfgTextScale must be in \\[1, 5\\] for the [16]-NFE sampler \\(its training range\\), got ${v}$`));
    }
    const img = await edit({ mode: 'SIX_STEP', cfgImageScale: 3 });
    expect(img.json.data).toBeNull();
    expect(img.json.errors[0].extensions).toMatchObject({ code: 'OUT_OF_RANGE', argument: 'cfgImageScale', min: 1, max: 2.5 });
    expect(server.runtime.jobs.size).toBe(jobs);
    // the baseline's range is [1, 20]: 9 is fine there
    const base = await generate({ mode: 'BASELINE', steps: 1, cfgTextScale: 9 });
    expect(base.json.errors).toBeUndefined();
    const e = await edit({ mode: 'ONE_STEP', cfgImageScale: 2.5, cfgTextScale: 1 });
    expect(e.json.errors).toBeUndefined();
  });

  it('cfgImageScale on generateImage is refused: text-to-image has no image guidance', async () => {
    for (const mode of ['BASELINE', 'PROGRESSIVE']) {
      const r = await generate({ mode, cfgImageScale: 1.5 });
      expect(r.json.data).toBeNull();
      expect(r.json.errors[0].extensions).toMatchObject({ code: 'INVALID_INPUT', argument: 'cfgImageScale' });
      expect(r.json.errors[0].message).toBe('cfgImageScale applies to editImage only (text-to-image has no image guidance)');
    }
  });
});
