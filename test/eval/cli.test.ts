// `hyperbagel eval`: JSON output, clear errors, and the adapter to the real engine (tiny random pack).
import { execFile } from 'node:child_process';
import { cpSync, mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { shiftImage } from '../../src/eval/degrade.ts';
import { evaluateUnderstanding } from '../../src/eval/run.ts';
import { loadUnderstandSuite } from '../../src/eval/suites.ts';
import { renderScene } from '../../src/world/render.ts';
import type { RgbImage } from '../../src/engine/types.ts';

const ROOT = join(import.meta.dirname, '../..');
const TINY_PACK = join(ROOT, 'test/fixtures/tiny-pack');
function cli(...args: string[]): Promise<{ code: number; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    execFile(process.execPath, [join(ROOT, 'bin/hyperbagel.js'), ...args], { cwd: ROOT, timeout: 90_000 }, (err, stdout, stderr) => {
      resolve({ code: err ? (typeof err.code === 'number' ? err.code : -1) : 0, stdout, stderr });
    });
  });
}

describe('hyperbagel eval', () => {
  it('suites: the committed suites equal their regeneration', async () => {
    const r = await cli('eval', 'suites', '--json');
    expect(r.code, r.stdout + r.stderr).toBe(0);
    expect(JSON.parse(r.stdout)).toEqual({ ok: true, stale: [] });
  });

  it('geneval --model oracle --json prints one JSON object scoring 1; --details writes one line per image', async () => {
    const details = join(mkdtempSync(join(tmpdir(), 'hb-eval-')), 'd.jsonl');
    const r = await cli('eval', 'geneval', '--model', 'oracle', '--limit', '1', '--json', '--details', details);
    expect(r.code, r.stderr).toBe(0);
    const lines = r.stdout.trim().split('\n');
    expect(lines).toHaveLength(1);
    const j = JSON.parse(lines[0]!);
    expect(j.overall).toBe(1);
    expect(Object.keys(j.categories)).toHaveLength(6);
    expect(j.heldout.overall).toBe(1);
    const recs = readFileSync(details, 'utf8').trim().split('\n').map((l) => JSON.parse(l));
    expect(recs).toHaveLength(8); // 6 test categories + 2 held-out categories, 1 each
    expect(recs.every((x) => x.correct === true && typeof x.prompt === 'string')).toBe(true);
  });

  it('--samples N draws N images per prompt (geneval, gedit: details show their seeds); it is checked and applies to those two only', async () => {
    const details = join(mkdtempSync(join(tmpdir(), 'hb-eval-samples-')), 'd.jsonl');
    const r = await cli('eval', 'geneval', '--model', 'oracle', '--limit', '1', '--samples', '3', '--json', '--details', details);
    expect(r.code, r.stderr).toBe(0);
    const j = JSON.parse(r.stdout);
    expect(j).toMatchObject({ overall: 1, samples: 3 });
    expect(Object.values(j.counts)).toEqual([3, 3, 3, 3, 3, 3]);
    const recs = readFileSync(details, 'utf8').trim().split('\n').map((l) => JSON.parse(l));
    expect(recs).toHaveLength(24);
    expect(recs.slice(0, 3).map((x) => x.seed - recs[0].seed)).toEqual([0, 1_000_000, 2_000_000]);
    const e = await cli('eval', 'gedit', '--model', 'oracle', '--limit', '1', '--samples', '2', '--json');
    expect(e.code, e.stderr).toBe(0);
    expect(JSON.parse(e.stdout)).toMatchObject({ overall: 1, samples: 2, count: 12 });
    const plain = await cli('eval', 'gedit', '--model', 'oracle', '--limit', '1', '--json');
    expect(JSON.parse(plain.stdout).samples).toBeUndefined();
    for (const bad of ['0', '17', '2.5', 'four']) {
      const b = await cli('eval', 'geneval', '--model', 'oracle', '--samples', bad, '--json');
      expect(b.code, bad).toBe(2);
      expect(b.stderr).toMatch(/--samples must be an integer in \[1, 16\]/);
      expect(b.stdout).toBe('');
    }
    const u = await cli('eval', 'understand', '--model', 'oracle', '--samples', '2', '--json');
    expect(u.code).toBe(2);
    expect(u.stderr).toMatch(/--samples applies to eval geneval and gedit only/);
  });

  it('bad targets, modes and packs are clear errors with non-zero exit', async () => {
    const a = await cli('eval', 'bogus');
    expect(a.code).toBe(2);
    expect(a.stderr).toMatch(/unknown evaluation "bogus"/);
    const b = await cli('eval', 'geneval', '--mode', '2nfe', '--model', 'oracle');
    expect(b.code).toBe(2);
    expect(b.stderr).toMatch(/--mode must be one of/);
    const c = await cli('eval', 'understand', '--pack', join(ROOT, 'test/fixtures/no-such-pack'), '--json');
    expect(c.code).toBe(1);
    expect(c.stderr).toMatch(/MODEL_LOAD_FAILED.*no model pack/);
    expect(c.stdout).toBe('');
  });

  it('--suite val runs the val suites and says so; test is the default; anything else is a usage error naming test and val', async () => {
    const details = join(mkdtempSync(join(tmpdir(), 'hb-eval-val-')), 'd.jsonl');
    const v = await cli('eval', 'geneval', '--model', 'oracle', '--suite', 'val', '--limit', '1', '--json', '--details', details);
    expect(v.code, v.stderr).toBe(0);
    expect(JSON.parse(v.stdout)).toMatchObject({ suite: 'val', overall: 1, heldout: { overall: 1 } });
    const recs = readFileSync(details, 'utf8').trim().split('\n').map((l) => JSON.parse(l));
    expect(recs).toHaveLength(8);
    expect(new Set(recs.map((x) => x.suite))).toEqual(new Set(['t2i-val', 't2i-heldout-val']));
    expect(recs.every((x) => x.seed >= 100_000)).toBe(true);
    const u = await cli('eval', 'understand', '--model', 'oracle', '--suite=val', '--limit', '1', '--json');
    expect(u.code, u.stderr).toBe(0);
    expect(JSON.parse(u.stdout)).toMatchObject({ suite: 'val', caption_exact: 1, heldout_vqa: 1 });
    const e = await cli('eval', 'gedit', '--model', 'oracle', '--limit', '1', '--json');
    expect(e.code, e.stderr).toBe(0);
    expect(JSON.parse(e.stdout)).toMatchObject({ suite: 'test', overall: 1 });
    for (const target of ['understand', 'geneval', 'gedit']) {
      const bad = await cli('eval', target, '--model', 'oracle', '--suite', 'nope', '--json');
      expect(bad.code).toBe(2);
      expect(bad.stderr).toMatch(/--suite must be one of test, val, got "nope"/);
      expect(bad.stdout).toBe('');
    }
    const empty = await cli('eval', 'understand', '--model', 'oracle', '--suite');
    expect(empty.code).toBe(2);
    expect(empty.stderr).toMatch(/--suite needs a value/);
    const elsewhere = await cli('eval', 'detector', '--suite', 'val');
    expect(elsewhere.code).toBe(2);
    expect(elsewhere.stderr).toMatch(/--suite applies to understand, geneval, gedit only/);
    const help = await cli('eval', '--help');
    expect(help.stdout).toMatch(/--suite S .*test\|val \(default test\)/);
  });

  it('runs the real engine on the tiny random pack (understand, geneval, gedit keys)', async () => {
    const pack = join(ROOT, 'test/fixtures/tiny-pack');
    const u = await cli('eval', 'understand', '--pack', pack, '--limit', '1', '--json');
    expect(u.code, u.stderr).toBe(0);
    expect(Object.keys(JSON.parse(u.stdout))).toEqual(expect.arrayContaining(['caption_exact', 'vqa', 'heldout_caption_exact', 'heldout_vqa']));
    const g = await cli('eval', 'gedit', '--pack', pack, '--limit', '1', '--mode', '1nfe', '--json');
    expect(g.code, g.stderr).toBe(0);
    const j = JSON.parse(g.stdout);
    expect(Object.keys(j.categories)).toEqual(['instruction', 'preserved', 'quality']);
    expect(j.count).toBe(6);
  });

  it('geneval --think runs think mode on a pack that can think and records each thought in --details', async () => {
    const { cpSync, writeFileSync } = await import('node:fs');
    const dir = mkdtempSync(join(tmpdir(), 'hb-eval-think-'));
    const pack = join(dir, 'pack');
    cpSync(join(ROOT, 'test/fixtures/tiny-pack'), pack, { recursive: true });
    const mf = join(pack, 'manifest.json');
    writeFileSync(mf, JSON.stringify({ ...JSON.parse(readFileSync(mf, 'utf8')), prompts: { think: true } }));
    const details = join(dir, 'd.jsonl');
    const r = await cli('eval', 'geneval', '--pack', pack, '--mode', '1nfe', '--think', '--limit', '1', '--json', '--details', details);
    expect(r.code, r.stderr).toBe(0);
    expect(JSON.parse(r.stdout)).toMatchObject({ think: true, mode: '1nfe' });
    const recs = readFileSync(details, 'utf8').trim().split('\n').map((l) => JSON.parse(l));
    expect(recs).toHaveLength(8);
    expect(recs.every((x) => typeof x.thought === 'string' && x.thought.length > 0 && typeof x.thought_satisfies === 'boolean')).toBe(true);
    // the thought scores agree with the per-item records (random weights rarely write a valid caption)
    const j = JSON.parse(r.stdout);
    const test = recs.filter((x) => x.suite === 't2i-test');
    expect(j.thoughts.test.count).toBe(test.length);
    expect(j.thoughts.test.parsed).toBeCloseTo(test.filter((x) => x.thought_parsed).length / test.length, 10);
    expect(j.thoughts.test.satisfied).toBeCloseTo(test.filter((x) => x.thought_satisfies).length / test.length, 10);
    // the plain fixture cannot think; --think elsewhere is a usage error
    const plain = await cli('eval', 'geneval', '--pack', join(ROOT, 'test/fixtures/tiny-pack'), '--mode', '1nfe', '--think', '--limit', '1', '--json');
    expect(plain.code).toBe(1);
    expect(plain.stderr).toMatch(/prompts\.think/);
    const u = await cli('eval', 'understand', '--think', '--json');
    expect(u.code).toBe(2);
    expect(u.stderr).toMatch(/--think applies to geneval only/);
  });

  it('eval draft measures the pack draft through the engine, with ablation rows per --variant', async () => {
    const accel = join(ROOT, 'test/fixtures/tiny-pack-accel');
    const plain = join(ROOT, 'test/fixtures/tiny-pack');
    const r = await cli('eval', 'draft', '--pack', accel, '--variant', `ngram=${plain}`, '--limit', '1', '--json');
    expect(r.code, r.stderr).toBe(0);
    const j = JSON.parse(r.stdout);
    expect(j.proposer).toBe('draft-model');
    expect(j.lossless).toBe(true);
    expect(j.prompts).toBe(4);
    expect(j.tau_chain).toBeGreaterThanOrEqual(1);
    expect(j.acceptance_10).toBeGreaterThanOrEqual(0);
    expect(j.acceptance_10).toBeLessThanOrEqual(1);
    expect(j.ablation.map((a: { variant: string }) => a.variant)).toEqual(['full', 'ngram']);
    // The random-weight fixture draft almost never matches its target; prompt lookup on a repetitive
    // random target does: the two rows must differ, or the variant was not really loaded.
    expect(j.ablation[1].tau_chain).toBeGreaterThan(j.ablation[0].tau_chain);
    const bad = await cli('eval', 'draft', '--pack', accel, '--variant', 'nodir');
    expect(bad.code).toBe(2);
    expect(bad.stderr).toMatch(/--variant must be NAME=PACKDIR/);
  });

  it('understand reports the offset a pack reads its images at, so results read at different offsets differ in name', async () => {
    const pack = mkdtempSync(join(tmpdir(), 'hb-eval-offset-'));
    cpSync(TINY_PACK, pack, { recursive: true });
    const m = JSON.parse(readFileSync(join(pack, 'manifest.json'), 'utf8'));
    m.vision.understand_offset = [1, -2];
    writeFileSync(join(pack, 'manifest.json'), JSON.stringify(m));
    const moved = await cli('eval', 'understand', '--pack', pack, '--limit', '1', '--json');
    expect(moved.code, moved.stderr).toBe(0);
    expect(JSON.parse(moved.stdout).understand_offset).toEqual([1, -2]);
    const plain = await cli('eval', 'understand', '--pack', TINY_PACK, '--limit', '1', '--json');
    expect(JSON.parse(plain.stdout)).not.toHaveProperty('understand_offset');
  });

  it('understand --shift N shows the model shifted images, reports "shift", and is refused elsewhere or out of range', async () => {
    const seen: RgbImage[] = [];
    const recording = { caption: async (img: RgbImage) => (seen.push(img), ''), answer: async () => '', generate: async () => { throw new Error('unused'); }, edit: async () => { throw new Error('unused'); } };
    await evaluateUnderstanding(recording, { limit: 1, shift: -3 });
    const [first] = loadUnderstandSuite('test', 'test').items;
    expect(Buffer.compare(Buffer.from(seen[0]!.data), Buffer.from(shiftImage(renderScene(first!.scene), -3, -3).data))).toBe(0);
    expect(Buffer.compare(Buffer.from(seen[0]!.data), Buffer.from(renderScene(first!.scene).data))).not.toBe(0);
    // the analytic detector (the oracle) reads objects off-centre by a pixel or two
    const ok = await cli('eval', 'understand', '--model', 'oracle', '--shift', '1', '--limit', '2', '--json');
    expect(ok.code, ok.stderr).toBe(0);
    expect(JSON.parse(ok.stdout)).toMatchObject({ shift: 1, caption_exact: 1, heldout_caption_exact: 1 });
    const range = await cli('eval', 'understand', '--model', 'oracle', '--shift', '9');
    expect(range.code).toBe(2);
    expect(range.stderr).toMatch(/--shift must be an integer in \[-8, 8\], got "9"/);
    const where = await cli('eval', 'geneval', '--model', 'oracle', '--shift', '1');
    expect(where.code).toBe(2);
    expect(where.stderr).toMatch(/--shift applies to eval understand only/);
  });

  it('understand --followup asks every question again as a second turn after the caption, without the image, and scores it apart', async () => {
    // what the harness asks: the image with the question; the first-turn answer is not consulted
    const asked: Array<[string, boolean]> = [];
    const model = {
      caption: async () => '',
      answer: async () => 'wrong',
      followUp: async (img: RgbImage, q: string) => (asked.push([q, img.width === 64]), q.startsWith('is there') ? 'yes' : 'no'),
      generate: async () => { throw new Error('unused'); },
      edit: async () => { throw new Error('unused'); },
    };
    const r = await evaluateUnderstanding(model, { limit: 2, followup: true });
    expect(r.vqa).toBe(0);
    expect(asked).toHaveLength(r.counts.questions + r.counts.heldout_questions);
    expect(r.followup_vqa).toBeGreaterThan(0);
    expect(r.followup_vqa).toBeLessThan(1);
    expect((await evaluateUnderstanding(model, { limit: 1 })).followup_vqa).toBeUndefined();
    await expect(evaluateUnderstanding({ ...model, followUp: undefined }, { limit: 1, followup: true })).rejects.toThrow(/no conversations/);
    // the oracle remembers perfectly; the engine's sessions run the real second turn (tiny random pack: any score)
    const oracle = JSON.parse((await cli('eval', 'understand', '--model', 'oracle', '--followup', '--limit', '2', '--json')).stdout);
    expect(oracle).toMatchObject({ followup_vqa: 1, heldout_followup_vqa: 1 });
    const details = join(mkdtempSync(join(tmpdir(), 'hb-eval-followup-')), 'followup.jsonl');
    const tiny = await cli('eval', 'understand', '--pack', 'test/fixtures/tiny-pack', '--followup', '--limit', '1', '--json', '--details', details);
    expect(tiny.code, tiny.stderr).toBe(0);
    const out = JSON.parse(tiny.stdout);
    expect(out.followup_vqa).toBeGreaterThanOrEqual(0);
    expect(out.followup_vqa).toBeLessThanOrEqual(1);
    const rec = JSON.parse(readFileSync(details, 'utf8').split('\n')[0]!);
    expect(typeof rec.questions[0].followup_answer).toBe('string');
    expect(typeof rec.questions[0].followup_correct).toBe('boolean');
    const where = await cli('eval', 'geneval', '--model', 'oracle', '--followup');
    expect(where.code).toBe(2);
    expect(where.stderr).toMatch(/--followup applies to eval understand only/);
  }, 60_000);
});
