// Smoke versions of `bench understand` and `bench generate` on the fixture packs: each runs end to end
// and prints one JSON object whose fields agree with each other. No timing is asserted (speed is the
// benchmarks' job, on the default pack), only what must hold whatever the machine's speed.
import { describe, expect, it } from 'vitest';
import { cli, TINY } from './helpers.ts';

const ACCEL = 'test/fixtures/tiny-pack-accel';

describe('bench understand (smoke, fixture pack)', () => {
  it('prints every mode, lossless, and a ceiling no speculation can pass', async () => {
    const r = await cli(['bench', 'understand', '--pack', TINY, '--rounds', '1', '--max-tokens', '8', '--json']);
    expect(r.code, r.stderr).toBe(0);
    const out = JSON.parse(r.stdout);
    expect(out).toMatchObject({ pack_dir: TINY, rounds: 1, max_tokens: 8, lossless: true });
    expect(out.requests).toBeGreaterThan(0);
    for (const k of ['plain_tps', 'chain_tps', 'tree_tps', 'auto_tps', 'speedup']) expect(out[k], k).toBeGreaterThan(0);
    expect(out.speedup).toBeCloseTo(out[`${out.best_mode}_tps`] / out.plain_tps, 2);
    // the best mode is the fastest one
    for (const m of ['chain', 'tree', 'auto']) expect(out[`${out.best_mode}_tps`]).toBeGreaterThanOrEqual(out[`${m}_tps`]);
    expect(out.tau).toBeGreaterThanOrEqual(1);
    // plain's own time over its time to the first token: at least 1, and 1 only if no request decodes
    expect(out.speedup_ceiling).toBeGreaterThan(1);
    for (const [kind, modes] of Object.entries(out.by_kind as Record<string, Record<string, { speedup_ceiling?: number; tps: number }>>)) {
      expect(modes['off']!.speedup_ceiling, kind).toBeGreaterThanOrEqual(1);
      for (const m of ['chain', 'tree', 'auto']) expect(modes[m]!.speedup_ceiling, `${kind}.${m}`).toBeUndefined();
    }
    expect(out.gateway).toMatchObject({ same_text: true });
    // a follow-up reads the conversation, not the same prompt, so a random model's answers may differ
    expect(typeof out.session_followup.same_answers).toBe('boolean');
    expect(out.session_followup.followups).toBeGreaterThan(0);
  }, 60_000);
});

describe('bench generate (smoke, fixture pack with distilled graphs)', () => {
  it('times both paths with the NFE counts each one ran', async () => {
    const r = await cli(['bench', 'generate', '--pack', ACCEL, '--runs', '1', '--json']);
    expect(r.code, r.stderr).toBe(0);
    const out = JSON.parse(r.stdout);
    expect(out).toMatchObject({
      distilled_graphs: { sixStep: true, oneStep: true },
      nfe: { t2i_baseline: 100, t2i_6nfe: 6, edit_baseline: 132, edit_6nfe: 6, preview: 1 },
      samplers: { six: 'distilled-6nfe', baseline: 'euler-50 baseline' },
      runs: 1,
    });
    for (const k of ['t2i_speedup_6nfe', 'edit_speedup_6nfe', 'preview_ms', 'final_ms', 't2i_sampling_speedup', 'edit_sampling_speedup']) expect(out[k], k).toBeGreaterThan(0);
    expect(Object.keys(out.fixed_ms.t2i).sort()).toEqual(['image_encode', 'prefill', 'vae_decode']);
    expect(Object.keys(out.fixed_ms.edit).sort()).toEqual(['image_encode', 'prefill', 'vae_decode', 'vae_encode', 'vit_encode']);
    // one seed: the per-seed ratio is the totals' ratio, its spread that one value
    expect(out.t2i_speedup_6nfe).toBeCloseTo(out.t2i_ms.baseline / out.t2i_ms.six, 1);
    expect(out.t2i_speedup_6nfe_vs_unbatched_baseline).toBeCloseTo(out.t2i_ms.baseline_unbatched / out.t2i_ms.six, 1);
    expect(out.edit_speedup_6nfe_vs_unbatched_baseline).toBeCloseTo(out.edit_ms.baseline_unbatched / out.edit_ms.six, 1);
    expect(out.speedup_spread.t2i).toEqual({ median: out.t2i_speedup_6nfe, min: out.t2i_speedup_6nfe, max: out.t2i_speedup_6nfe });
    for (const k of ['t2i_speedup_progressive', 'edit_speedup_progressive']) expect(out[k], k).toBeGreaterThan(0);
    // the fixed costs and the sampling loop are parts of the request's time
    const parts = Object.values(out.fixed_ms.t2i as Record<string, number>).reduce((a, b) => a + b, 0) + out.sampling_ms.t2i_6nfe;
    expect(parts).toBeLessThanOrEqual(out.t2i_ms.six);
    expect(out.gateway).toMatchObject({ preview_mime: 'image/jpeg', final_mime: 'image/png' });
  }, 60_000);
});
