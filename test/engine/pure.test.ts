import { describe, expect, test } from 'vitest';
import { Rng } from '../../src/engine/rng.ts';
import { argmax, processLogits } from '../../src/engine/understand/logits.ts';
import { IncrementalDetokenizer } from '../../src/engine/understand/detok.ts';
import { cutTokens, StopStringFilter } from '../../src/engine/understand/stop.ts';
import { NgramExpander } from '../../src/engine/speculative/ngram.ts';
import { AcceptanceStats, SpecMetrics } from '../../src/engine/speculative/metrics.ts';
import { chooseChainLength, chooseTreeSize, CostCurve } from '../../src/engine/speculative/sizing.ts';
import { KvCache } from '../../src/runtime/kv-cache.ts';
import { shiftImage } from '../../src/engine/image/pixels.ts';

describe('rng', () => {
  test('seeded and reproducible, uniform in [0,1)', () => {
    const a = new Rng(42);
    const b = new Rng(42);
    const c = new Rng(43);
    const xs = Array.from({ length: 1000 }, () => a.uniform());
    expect(xs).toEqual(Array.from({ length: 1000 }, () => b.uniform()));
    expect(xs[0]).not.toBe(c.uniform());
    expect(Math.min(...xs)).toBeGreaterThanOrEqual(0);
    expect(Math.max(...xs)).toBeLessThan(1);
    const mean = xs.reduce((s, x) => s + x, 0) / xs.length;
    expect(Math.abs(mean - 0.5)).toBeLessThan(0.05);
    const n = new Rng(7);
    const ns = Array.from({ length: 20000 }, () => n.normal());
    const m = ns.reduce((s, x) => s + x, 0) / ns.length;
    const v = ns.reduce((s, x) => s + (x - m) ** 2, 0) / ns.length;
    expect(Math.abs(m)).toBeLessThan(0.03);
    expect(Math.abs(v - 1)).toBeLessThan(0.05);
  });
});

describe('logits processing', () => {
  const logits = Float32Array.from([1, 3, 2, 0, 3]);
  test('greedy is one-hot at the first maximum', () => {
    const p = processLogits(logits, 0, 5, { temperature: 0, topK: 0, topP: 1 });
    expect(Array.from(p)).toEqual([0, 1, 0, 0, 0]);
    expect(argmax(logits, 0, 5)).toBe(1);
  });
  test('temperature softmax', () => {
    const p = processLogits(logits, 0, 5, { temperature: 2, topK: 0, topP: 1 });
    const e = [1, 3, 2, 0, 3].map((x) => Math.exp(x / 2));
    const s = e.reduce((a, b) => a + b);
    e.forEach((x, i) => expect(p[i]).toBeCloseTo(x / s, 12));
  });
  test('top-k keeps the k largest (ties by index) and renormalises', () => {
    const p = processLogits(logits, 0, 5, { temperature: 1, topK: 2, topP: 1 });
    expect(p[0]).toBe(0);
    expect(p[2]).toBe(0);
    expect(p[3]).toBe(0);
    expect(p[1]).toBeCloseTo(0.5, 12);
    expect(p[4]).toBeCloseTo(0.5, 12);
  });
  test('top-p keeps the smallest prefix reaching p', () => {
    const l = Float32Array.from([Math.log(0.5), Math.log(0.3), Math.log(0.15), Math.log(0.05)]);
    const p = processLogits(l, 0, 4, { temperature: 1, topK: 0, topP: 0.8 });
    expect(p[0]).toBeCloseTo(0.5 / 0.8, 6);
    expect(p[1]).toBeCloseTo(0.3 / 0.8, 6);
    expect(p[2]).toBe(0);
    const q = processLogits(l, 0, 4, { temperature: 1, topK: 0, topP: 0.81 });
    expect(q[2]).toBeGreaterThan(0);
    expect(q[3]).toBe(0);
    const one = processLogits(l, 0, 4, { temperature: 1, topK: 0, topP: 0.01 });
    expect(Array.from(one)).toEqual([1, 0, 0, 0]);
  });
  test('with top-k and top-p, top-p runs on the top-k distribution renormalised (HF, vLLM)', () => {
    // top-2 of [.5, .3, .2] is [.625, .375]: .625 alone reaches 0.6 (on the full distribution .5 did not)
    const l = Float32Array.from([0.5, 0.3, 0.2].map(Math.log));
    expect(Array.from(processLogits(l, 0, 3, { temperature: 1, topK: 2, topP: 0.6 }))).toEqual([1, 0, 0]);
    const both = processLogits(l, 0, 3, { temperature: 1, topK: 2, topP: 0.7 });
    expect(both[0]).toBeCloseTo(0.625, 6);
    expect(both[1]).toBeCloseTo(0.375, 6);
    expect(both[2]).toBe(0);
  });
  test('a temperature too small for 1/T to be finite gives the T → 0 limit, not NaN; ties share it', () => {
    for (const temperature of [4e-309, 1e-320, Number.MIN_VALUE]) {
      expect(Array.from(processLogits([1, 3, 2, 0], 0, 4, { temperature, topK: 0, topP: 1 }))).toEqual([0, 1, 0, 0]);
      expect(Array.from(processLogits([3, 1, 3, 0], 0, 4, { temperature, topK: 0, topP: 0.4 }))).toEqual([1, 0, 0, 0]);
      expect(Array.from(processLogits([3, 1, 3, 0], 0, 4, { temperature, topK: 0, topP: 1 }))).toEqual([0.5, 0, 0.5, 0]);
    }
  });
});

describe('incremental detokeniser', () => {
  test('never splits a character and reassembles the full text', () => {
    // byte-level toy: token = one UTF-8 byte
    const text = 'héllo ✓ wörld 🎉!';
    const bytes = Array.from(new TextEncoder().encode(text));
    const dec = (ids: number[]) => new TextDecoder().decode(Uint8Array.from(ids));
    const d = new IncrementalDetokenizer(dec);
    let out = '';
    for (let i = 0; i < bytes.length; i += 2) {
      const delta = d.push(bytes.slice(i, i + 2));
      expect(delta.includes('\uFFFD')).toBe(false);
      out += delta;
    }
    out += d.flush();
    expect(out).toBe(text);
  });
  test('word-level tokens joined by spaces', () => {
    const vocab = ['a', 'red', 'circle', 'on', 'top'];
    const d = new IncrementalDetokenizer((ids) => ids.map((i) => vocab[i]).join(' '));
    const parts = [d.push([0]), d.push([1, 2]), d.push([3]), d.push([4])];
    expect(parts.join('') + d.flush()).toBe('a red circle on top');
  });
});

describe('stop conditions', () => {
  test('EOS is cut and not emitted; max tokens', () => {
    expect(cutTokens([5, 6, 2, 7], 2, 0, 100)).toEqual({ keep: 2, finish: 'eos' });
    expect(cutTokens([5, 6, 7], 2, 8, 10)).toEqual({ keep: 2, finish: 'length' });
    expect(cutTokens([5, 6, 7], 2, 0, 10)).toEqual({ keep: 3, finish: null });
  });
  test('stop strings across chunk boundaries, held text released at the end', () => {
    const f = new StopStringFilter(['red circle']);
    expect(f.push('a big re')).toEqual({ text: 'a big ', stopped: false });
    // "re" at the end of "square" could start "red circle": held back
    expect(f.push('d square')).toEqual({ text: 'red squa', stopped: false });
    expect(f.push(' and red')).toEqual({ text: 're and ', stopped: false });
    expect(f.push(' circle now')).toEqual({ text: '', stopped: true });
    const g = new StopStringFilter(['xyz']);
    expect(g.push('abcxy')).toEqual({ text: 'abc', stopped: false });
    expect(g.flush()).toBe('xy');
  });
});

describe('n-gram proposer', () => {
  test('continues the longest matching suffix', () => {
    const e = new NgramExpander({ maxN: 3, minN: 1, logPrior: 0 });
    const ctx = [1, 2, 3, 4, 9, 1, 2, 3, 5, 7, 1, 2, 3];
    const c = e.continuations(ctx, 4);
    // "1 2 3" was followed by 4 and by 5: equal counts, most recent first
    expect(c.map((x) => x.token)).toEqual([5, 4]);
    expect(c[0]!.logprob).toBeCloseTo(Math.log(0.5), 12);
    expect(e.continuations([1, 2, 3], 4)).toEqual([]);
    e.setContext([7, 8, 9, 7]);
    expect(e.expand([[], [8]], 2).map((l) => l.map((x) => x.token))).toEqual([[8], [9]]);
  });
});

describe('metrics and sizing', () => {
  test('vLLM-style definitions', () => {
    const m = new SpecMetrics();
    m.record(4, 4, 2);
    m.record(4, 4, 4);
    m.record(0, 0, 0); // plain step: not a draft
    expect(m.drafts).toBe(2);
    expect(m.meanAcceptedLength).toBe(4);
    expect(m.acceptanceRate).toBe(0.75);
    expect(m.acceptancePerPosition).toEqual([1, 1, 0.5, 0.5]);
  });
  test('chain length follows cost curve and acceptance', () => {
    const flat = new CostCurve([[1, 1], [2, 1.05], [4, 1.1], [8, 1.3], [16, 2]]);
    const steep = new CostCurve([[1, 1], [2, 2], [4, 4], [8, 8]]);
    const good = new AcceptanceStats(0.9);
    const bad = new AcceptanceStats(0.05);
    expect(chooseChainLength(flat, good, 8).size).toBeGreaterThanOrEqual(4);
    expect(chooseChainLength(steep, good, 8).size).toBe(0);
    expect(chooseChainLength(flat, bad, 8).size).toBe(0);
    expect(good.expectedTokens(2)).toBeCloseTo(1 + 0.9 + 0.81, 12);
    for (let i = 0; i < 200; i++) bad.update(3, 3);
    expect(bad.at(0)).toBeGreaterThan(0.9);
    expect(chooseTreeSize(flat, [-0.1, -0.2, -0.3, -5, -6])).toBe(3);
    expect(chooseTreeSize(steep, [-0.1, -0.2])).toBe(0);
  });
});

describe('KV cache', () => {
  const shape = { layers: 2, heads: 3, headDim: 4 };
  function write(c: KvCache, T: number, tag: (t: number) => number) {
    const targets = c.presentTargets(T);
    const len = c.length + T;
    targets.forEach((buf, j) => {
      const past = c.past(j);
      for (let h = 0; h < 3; h++)
        for (let t = 0; t < len; t++)
          for (let d = 0; d < 4; d++)
            buf[(h * len + t) * 4 + d] = t < c.length ? past[(h * c.length + t) * 4 + d]! : 1000 * j + 100 * h + tag(t) + d / 10;
    });
    c.commit(T);
  }
  test('grows by doubling, past stays intact', () => {
    const c = new KvCache(shape, 2);
    for (let s = 0; s < 40; s++) write(c, 3, (t) => t);
    expect(c.length).toBe(120);
    expect(c.tokenCapacity).toBe(128);
    // 2 sets × 4 slots initially; each growth reallocates both sets (≤ 2·4 per doubling): O(log n)
    expect(c.allocations).toBeLessThanOrEqual(8 + 8 * Math.ceil(Math.log2(128 / 2)));
    for (const t of [0, 57, 119]) expect(Array.from(c.row(3, 2, t))).toEqual([3000 + 200 + t, 3200.1 + t, 3200.2 + t, 3200.3 + t].map((x) => Math.fround(x)));
  });
  test('compaction keeps the prefix and the selected slots in order', () => {
    const c = new KvCache(shape, 4);
    write(c, 5, (t) => t); // committed prefix 0..4
    write(c, 6, (t) => t); // tree slots 5..10 (local 0..5)
    c.compact(5, [0, 2, 5]);
    expect(c.length).toBe(8);
    const expectT = [0, 1, 2, 3, 4, 5, 7, 10];
    for (let j = 0; j < 4; j++)
      for (let h = 0; h < 3; h++)
        expectT.forEach((src, t) => expect(c.row(j, h, t)[0]).toBe(1000 * j + 100 * h + src));
    // the next step sees the compacted past
    write(c, 1, () => 50);
    expect(c.length).toBe(9);
    expect(c.row(1, 2, 7)[0]).toBe(1210);
    expect(c.row(1, 2, 8)[0]).toBe(1250);
    expect(() => c.compact(5, [2, 1])).toThrow();
    // arguments outside the cache are refused, the cache untouched (they used to copy rows from the wrong place)
    expect(() => c.compact(12, [])).toThrow(/keepFrom 12 outside \[0, 9\]/);
    expect(() => c.compact(-1, [0])).toThrow(/keepFrom -1/);
    expect(() => c.compact(2, [-1, 0])).toThrow(/keep index -1 is negative/);
    expect(c.length).toBe(9);
    expect(c.row(1, 2, 8)[0]).toBe(1250);
    c.truncate(3);
    expect(c.length).toBe(3);
    expect(c.row(0, 1, 2)[0]).toBe(102);
  });
});

describe('Limiter', () => {
  test('removes its abort listener once a queued request gets its slot', async () => {
    const { Limiter } = await import('../../src/engine/limiter.ts');
    const limiter = new Limiter(1, 4);
    const ac = new AbortController();
    let listeners = 0;
    const add = ac.signal.addEventListener.bind(ac.signal);
    const remove = ac.signal.removeEventListener.bind(ac.signal);
    ac.signal.addEventListener = ((...a: Parameters<AbortSignal['addEventListener']>) => { listeners++; add(...a); }) as AbortSignal['addEventListener'];
    ac.signal.removeEventListener = ((...a: Parameters<AbortSignal['removeEventListener']>) => { listeners--; remove(...a); }) as AbortSignal['removeEventListener'];
    for (let i = 0; i < 20; i++) {
      const first = await limiter.acquire(ac.signal);
      const queued = limiter.acquire(ac.signal);
      first();
      (await queued)();
    }
    expect(listeners).toBe(0);
    // A queued request is still cancellable.
    const held = await limiter.acquire();
    const ac2 = new AbortController();
    const waiting = limiter.acquire(ac2.signal);
    ac2.abort();
    await expect(waiting).rejects.toMatchObject({ code: 'CANCELLED' });
    held();
    expect(limiter.running).toBe(0);
  });
});

describe('shiftImage', () => {
  test('output pixel (x, y) is input pixel (x − dx, y − dy), clamped to the edge, for every move and size', () => {
    const rng = new Rng(5);
    for (const [w, h] of [[64, 64], [5, 3], [1, 1], [7, 9]] as const) {
      const img = { width: w, height: h, data: Uint8Array.from({ length: w * h * 3 }, () => Math.floor(rng.uniform() * 256)) };
      for (let dx = -10; dx <= 10; dx++)
        for (let dy = -10; dy <= 10; dy++) {
          const out = shiftImage(img, dx, dy).data;
          for (let y = 0; y < h; y++)
            for (let x = 0; x < w; x++) {
              const sx = Math.min(w - 1, Math.max(0, x - dx)), sy = Math.min(h - 1, Math.max(0, y - dy));
              for (let c = 0; c < 3; c++) if (out[(y * w + x) * 3 + c] !== img.data[(sy * w + sx) * 3 + c]) throw new Error(`${w}×${h} move (${dx}, ${dy}) differs at (${x}, ${y})`);
            }
        }
    }
    // the image itself is not touched
    const a = { width: 2, height: 1, data: Uint8Array.from([1, 2, 3, 4, 5, 6]) };
    expect([...shiftImage(a, 1, 0).data]).toEqual([1, 2, 3, 1, 2, 3]);
    expect([...a.data]).toEqual([1, 2, 3, 4, 5, 6]);
  });
});
