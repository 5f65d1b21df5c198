// Understanding on the random-weight fixture pack through the real worker and onnxruntime.
import { isGreedy, tokenSampler } from '../../src/engine/understand/logits.ts';
import { afterAll, beforeAll, describe, expect, test } from 'vitest';
import { createEngine, type LocalEngine } from '../../src/engine/index.ts';
import { Rng } from '../../src/engine/rng.ts';
import { decodeSteps } from '../../src/engine/understand/decode.ts';
import { causalMask } from '../../src/engine/understand/target.ts';
import { WorkerSequence } from '../../src/engine/understand/worker-target.ts';
import { processLogits, type SamplingParams } from '../../src/engine/understand/logits.ts';
import { AcceptanceStats } from '../../src/engine/speculative/metrics.ts';
import { ngramProposer, TreeProposer, type Proposer, type ProposerConfig } from '../../src/engine/speculative/proposer.ts';
import type { Candidate } from '../../src/engine/speculative/tree.ts';
import type { UnderstandSummary } from '../../src/engine/types.ts';
import { WorkerClient } from '../../src/runtime/client.ts';
import { chiSquare } from './spec-helpers.ts';
import { answerIds, collect, FIXTURE } from './fixture-helpers.ts';

let engine: LocalEngine;
let client: WorkerClient;
const V = 81;

beforeAll(async () => {
  engine = await createEngine(FIXTURE, { calibrate: false, intraOpThreads: 1 });
  client = engine.workerClient;
});
afterAll(async () => {
  await engine?.close();
});

function cfg(mode: ProposerConfig['mode'], extra: Partial<ProposerConfig> = {}): ProposerConfig {
  return { mode, maxChainLength: 8, stats: new AcceptanceStats(), ...extra };
}

/** Drafts random trees over a small token pool (so some drafts are right): exercises tree masks hard. */
function poolExpander(seed: number, pool: number[]) {
  return {
    expand(paths: number[][], k: number): Candidate[][] {
      return paths.map((p) => {
        const r = new Rng(seed * 31 + p.reduce((h, t) => h * 97 + t + 1, 3));
        const picks = [...pool].sort(() => r.uniform() - 0.5).slice(0, k);
        return picks.map((token, i) => ({ token, logprob: Math.log(0.9 / (i + 1)) }));
      });
    },
  };
}

async function promptSeq(ids: number[]): Promise<{ seq: WorkerSequence; last: Float32Array }> {
  const seq = await WorkerSequence.open(client, V);
  const last = await seq.forward(Int32Array.from(ids), Int32Array.from(ids.map((_, i) => i)), causalMask(ids.length), 'last');
  return { seq, last };
}

async function decode(ids: number[], n: number, sampling: SamplingParams, seed: number, proposer: Proposer | null) {
  const { seq, last } = await promptSeq(ids);
  const out: number[] = [];
  let steps = 0;
  try {
    for await (const s of decodeSteps(seq, last, ids.length, ids, { sampling, pick: tokenSampler(seed, isGreedy(sampling)), proposer })) {
      out.push(...s.tokens);
      steps++;
      if (out.length >= n) break;
    }
  } finally {
    await seq.close();
  }
  return { tokens: out.slice(0, n), steps };
}

describe('fixture: worker KV cache', () => {
  test('incremental decoding reproduces a one-shot prefill (KV, positions, masks through the worker)', async () => {
    const ids = [1, 30, 66, 35, 4, 21, 25, 14, 56, 62];
    const full = await promptSeq(ids);
    const all = await (async () => {
      const s = await WorkerSequence.open(client, V);
      const l = await s.forward(Int32Array.from(ids), Int32Array.from(ids.map((_, i) => i)), causalMask(ids.length), 'all');
      await s.close();
      return l;
    })();
    const inc = await promptSeq(ids.slice(0, 4));
    let last = inc.last;
    for (let i = 4; i < ids.length; i++) {
      for (let v = 0; v < V; v++) expect(Math.abs(last[v]! - all[(i - 1) * V + v]!)).toBeLessThan(1e-4);
      last = await inc.seq.forward(Int32Array.of(ids[i]!), Int32Array.of(i), Uint8Array.of(1), 'last');
    }
    for (let v = 0; v < V; v++) expect(Math.abs(last[v]! - full.last[v]!)).toBeLessThan(1e-4);
    await full.seq.close();
    await inc.seq.close();
  });
});

describe('fixture: KV growth', () => {
  test('a long sequence decoded token by token (KV capacity doubling 16 → 256) matches a one-shot prefill', async () => {
    const r = new Rng(8);
    const ids = [1, ...Array.from({ length: 179 }, () => 10 + Math.floor(r.uniform() * 71))];
    const one = await WorkerSequence.open(client, V, 256);
    const all = await one.forward(Int32Array.from(ids), Int32Array.from(ids.map((_, i) => i)), causalMask(ids.length), 'all');
    await one.close();
    const inc = await WorkerSequence.open(client, V, 16);
    let maxd = 0;
    for (let i = 0; i < ids.length; i++) {
      const l = await inc.forward(Int32Array.of(ids[i]!), Int32Array.of(i), Uint8Array.of(1), 'last');
      for (let v = 0; v < V; v++) maxd = Math.max(maxd, Math.abs(l[v]! - all[i * V + v]!));
    }
    await inc.close();
    expect(maxd).toBeLessThan(1e-4);
  });
});

describe('fixture: speculation is lossless', () => {
  test('greedy output identical with and without speculation over many prompts (all proposers)', async () => {
    const r = new Rng(2024);
    let fewerSteps = 0;
    let runs = 0;
    for (let i = 0; i < 24; i++) {
      const ids = [1, ...Array.from({ length: 2 + Math.floor(r.uniform() * 8) }, () => 10 + Math.floor(r.uniform() * 71)), 4];
      const g = { temperature: 0, topK: 0, topP: 1 };
      const plain = await decode(ids, 32, g, 0, null);
      const pool = [...new Set(plain.tokens)].slice(0, 6);
      const proposers: Proposer[] = [
        ngramProposer(cfg('ngram', { chainLength: 4 })),
        ngramProposer(cfg('tree', { treeBudget: 12, treeTopK: 3, treeDepth: 4 })),
        new TreeProposer('pool', poolExpander(i, pool), cfg('chain', { chainLength: 3 })),
        new TreeProposer('pool', poolExpander(i, pool), cfg('tree', { treeBudget: 16, treeTopK: 4, treeDepth: 4 })),
      ];
      for (const p of proposers) {
        const spec = await decode(ids, 32, g, 0, p);
        expect(spec.tokens, `prompt ${ids.join(' ')} proposer ${p.source}`).toEqual(plain.tokens);
        runs++;
        if (spec.steps < plain.steps) fewerSteps++;
      }
    }
    expect(fewerSteps).toBeGreaterThan(runs / 3); // drafts were really accepted
  }, 60000);

  test('sampled first-token distributions match the exact target with and without speculation (chi-square)', async () => {
    const sampling = { temperature: 1, topK: 3, topP: 1 };
    const ids = [1, 30, 66, 35, 4];
    // exact joint of the first two tokens
    const exact = new Map<string, number>();
    const base = await promptSeq(ids);
    const p1 = processLogits(base.last, 0, V, sampling);
    for (let a = 0; a < V; a++) {
      if (!p1[a]) continue;
      const s = await promptSeq([...ids, a]);
      const p2 = processLogits(s.last, 0, V, sampling);
      for (let b = 0; b < V; b++) if (p2[b]) exact.set(`${a},${b}`, p1[a]! * p2[b]!);
      await s.seq.close();
    }
    await base.seq.close();
    const pool = [...new Set([...exact.keys()].flatMap((k) => k.split(',').map(Number)))];
    const N = 1200;
    const counts = { plain: new Map<string, number>(), tree: new Map<string, number>() };
    // one sequence per variant, truncated back to the prompt between runs
    for (const name of ['plain', 'tree'] as const) {
      const { seq, last } = await promptSeq(ids);
      for (let s = 0; s < N; s++) {
        const prop = name === 'tree' ? new TreeProposer('pool', poolExpander(s % 7, pool), cfg('tree', { treeBudget: 6, treeTopK: 3, treeDepth: 2 })) : null;
        const out: number[] = [];
        for await (const st of decodeSteps(seq, last, ids.length, ids, { sampling, pick: tokenSampler(50000 + s, isGreedy(sampling)), proposer: prop })) {
          out.push(...st.tokens);
          if (out.length >= 2) break;
        }
        const k = out.slice(0, 2).join(',');
        counts[name].set(k, (counts[name].get(k) ?? 0) + 1);
        await seq.flush();
        seq.compact({ keepFrom: ids.length, keep: new Int32Array(0) });
      }
      await seq.close();
    }
    for (const name of ['plain', 'tree'] as const) {
      const { stat, df } = chiSquare(counts[name], exact, N);
      expect(df).toBe(8);
      expect(stat, `${name} chi2 ${stat.toFixed(2)}`).toBeLessThan(26.12); // 99.9th percentile, df 8
    }
  }, 90000);

  test('engine: same text with every speculation mode (greedy), summaries report speculation', async () => {
    const prompts = ['describe the image', 'what is in the picture', 'how many objects are there', 'where is the red circle', 'is there a blue square', 'what colour is the background'];
    for (const prompt of prompts) {
      const texts: Record<string, string> = {};
      for (const mode of ['off', 'ngram', 'chain', 'tree', 'auto'] as const) {
        const evs = await collect(engine.understand({ prompt, maxTokens: 24, speculation: { mode } }));
        const s = evs[evs.length - 1] as UnderstandSummary;
        expect(s.kind).toBe('done');
        const chunks = evs.filter((e) => e.kind === 'chunk');
        expect(chunks.map((c) => (c.kind === 'chunk' ? c.text : '')).join('')).toBe(s.text);
        expect(s.usage.completionTokens).toBe(chunks.reduce((n, c) => n + (c.kind === 'chunk' ? c.tokenIds.length : 0), 0) + (s.trailing?.tokenIds.length ?? 0));
        expect(chunks.every((c) => c.kind === 'chunk' && c.text.length > 0)).toBe(true);
        expect(s.speculation.mode).toBe(mode);
        expect(s.speculation.proposer).toBe(mode === 'off' ? 'none' : 'ngram');
        texts[mode] = s.text;
      }
      expect(new Set(Object.values(texts)).size, JSON.stringify(texts)).toBe(1);
    }
  }, 60000);

  test('stop strings and max tokens apply inside a chunk', async () => {
    const all = await collect(engine.understand({ prompt: 'describe the image', maxTokens: 12, temperature: 1, seed: 7, speculation: { mode: 'off' } }));
    const s = all[all.length - 1] as UnderstandSummary;
    expect(s.usage.completionTokens).toBeLessThanOrEqual(12);
    const words = s.text.trim().split(/\s+/);
    if (words.length >= 3) {
      const stop = words[2]!;
      const again = await collect(engine.understand({ prompt: 'describe the image', maxTokens: 12, temperature: 1, seed: 7, stop: [stop], speculation: { mode: 'off' } }));
      const s2 = again[again.length - 1] as UnderstandSummary;
      expect(s2.finishReason).toBe('stop');
      expect(s2.text).toBe(s.text.slice(0, s.text.indexOf(stop)));
    }
    // no drafting beyond the answer budget: with 2 tokens allowed, at most depth-1 drafts
    const two = await collect(engine.understand({ prompt: 'describe the image', maxTokens: 2, speculation: { mode: 'tree', treeDepth: 5, treeBudget: 20 } }));
    const st = two.at(-1) as UnderstandSummary;
    expect(st.speculation.acceptancePerPosition.length).toBeLessThanOrEqual(1);
    const one = await collect(engine.understand({ prompt: 'describe the image', maxTokens: 1, temperature: 1, seed: 9 }));
    const s3 = one[one.length - 1] as UnderstandSummary;
    expect(s3.usage.completionTokens).toBeLessThanOrEqual(1);
    if (s3.usage.completionTokens === 1) expect(s3.finishReason).toBe('length');
    // seeded sampling is reproducible
    const a = await collect(engine.understand({ prompt: 'what is in the picture', maxTokens: 10, temperature: 1.2, seed: 5, speculation: { mode: 'tree' } }));
    const b = await collect(engine.understand({ prompt: 'what is in the picture', maxTokens: 10, temperature: 1.2, seed: 5, speculation: { mode: 'tree' } }));
    expect((a[a.length - 1] as UnderstandSummary).text).toBe((b[b.length - 1] as UnderstandSummary).text);
  });

  test('with an image; sessions continue a conversation', async () => {
    const img = { width: 64, height: 64, data: new Uint8Array(64 * 64 * 3).map((_, i) => (i * 7) % 256) };
    const evs = await collect(engine.understand({ prompt: 'describe the image', image: img, maxTokens: 8 }));
    const s = evs[evs.length - 1] as UnderstandSummary;
    expect(s.usage.promptTokens).toBe(1 + 1 + 16 + 1 + 3 + 1);
    const session = engine.createSession();
    const t1 = await collect(engine.understand({ prompt: 'describe the image', image: img, maxTokens: 6, session }));
    const t2 = await collect(engine.understand({ prompt: 'what colour is it', maxTokens: 6, session }));
    expect(t1[t1.length - 1]!.kind).toBe('done');
    expect(t2[t2.length - 1]!.kind).toBe('done');
    engine.closeSession(session);
    await expect(collect(engine.understand({ prompt: 'what', session }))).rejects.toThrow(/session/);
  });
});

describe('fixture: sessions', () => {
  test('a second turn answers exactly as a one-shot decode over the whole conversation', async () => {
    for (const [maxTokens, mode] of [[5, 'tree'], [40, 'off'], [7, 'chain']] as const) {
      const session = engine.createSession();
      const t1 = (await collect(engine.understand({ prompt: 'describe the image', maxTokens, session, speculation: { mode } }))).at(-1) as UnderstandSummary;
      const ids1 = answerIds(await collect(engine.understand({ prompt: 'describe the image', maxTokens, speculation: { mode: 'off' } })));
      const t2 = await collect(engine.understand({ prompt: 'what colour is it', maxTokens: 12, session, speculation: { mode } }));
      engine.closeSession(session);
      const answer2 = answerIds(t2);
      // one-shot: <bos> turn-1 words <im_start> answer-1 [<eos>] turn-2 words <im_start>
      const conv = [1, 30, 66, 35, 4, ...ids1, ...(t1.finishReason === 'eos' ? [2] : []), 75, 28, 37, 38, 4]; // what colour is it
      const ref = await decode(conv, 12, { temperature: 0, topK: 0, topP: 1 }, 0, null);
      const cut = ref.tokens.indexOf(2);
      expect(answer2, `${maxTokens} ${mode} ${t1.finishReason} ids1=${ids1.join(' ')}`).toEqual(cut >= 0 ? ref.tokens.slice(0, cut) : ref.tokens);
    }
  }, 30000);

  test('a turn the consumer stops reading (break, a client gone) leaves the session as a cancelled turn does', async () => {
    for (const mode of ['off', 'chain'] as const) {
      const turn1 = { prompt: 'describe the image', maxTokens: 6, speculation: { mode } };
      const turn2 = { prompt: 'what colour is it', maxTokens: 12, speculation: { mode } };
      const turn3 = { prompt: 'describe the image', maxTokens: 8, speculation: { mode } };
      // the reference: turn 2 cancelled by its signal after its first chunk
      const ref = engine.createSession();
      await collect(engine.understand({ ...turn1, session: ref }));
      const ac = new AbortController();
      let refFirst: number[] = [];
      for await (const ev of engine.understand({ ...turn2, session: ref }, ac.signal))
        if (ev.kind === 'chunk' && !refFirst.length) {
          refFirst = ev.tokenIds;
          ac.abort();
        }
      const refRows = engine.sessionInfo(ref).tokens;
      const refTurn3 = answerIds(await collect(engine.understand({ ...turn3, session: ref })));
      engine.closeSession(ref);
      // the same turn 2, its consumer gone after the first chunk
      const s = engine.createSession();
      await collect(engine.understand({ ...turn1, session: s }));
      let first: number[] = [];
      for await (const ev of engine.understand({ ...turn2, session: s }))
        if (ev.kind === 'chunk') {
          first = ev.tokenIds;
          break;
        }
      expect(first, mode).toEqual(refFirst);
      expect(engine.sessionInfo(s).tokens, mode).toBe(refRows);
      expect(answerIds(await collect(engine.understand({ ...turn3, session: s }))), mode).toEqual(refTurn3);
      engine.closeSession(s);
    }
  }, 30000);
});
