// Sampling with retrieval drafts stays exact: the drafts are point masses over tree siblings, which the
// same verification rule as every other draft accepts (speculative/rejection.ts). The first two sampled tokens through decodeSteps with a
// RetrievalProposer tree follow the target's exact joint distribution (chi-square), on the fixture pack.
import { isGreedy, tokenSampler } from '../../src/engine/understand/logits.ts';
import { afterAll, beforeAll, expect, test } from 'vitest';
import { createEngine, type LocalEngine } from '../../src/engine/index.ts';
import { Rng } from '../../src/engine/rng.ts';
import { AcceptanceStats } from '../../src/engine/speculative/metrics.ts';
import { buildRetrievalData, RetrievalIndex, RetrievalProposer, retrievalState } from '../../src/engine/speculative/retrieval.ts';
import { decodeSteps } from '../../src/engine/understand/decode.ts';
import { exactTwoTokenJoint, FIXTURE, prefixOpener } from './fixture-helpers.ts';
import { chiSquare } from './spec-helpers.ts';

let engine: LocalEngine;
const V = 81;
beforeAll(async () => {
  engine = await createEngine(FIXTURE, { calibrate: false, intraOpThreads: 1 });
});
afterAll(async () => {
  await engine?.close();
});

test('sampled: the first two tokens follow the exact target distribution with retrieval trees (chi-square)', async () => {
  const client = engine.workerClient;
  const sampling = { temperature: 1, topK: 3, topP: 1 };
  const ids = [1, 30, 66, 35, 4];
  const open = prefixOpener(client, V, ids);
  const { exact, support: supports } = await exactTwoTokenJoint(open, V, sampling);
  const seqs: Array<{ prompt: number[]; answer: number[]; count: number }> = [];
  const r = new Rng(5);
  for (const [a, support] of supports) {
    // the datastore proposes two of the target's three tokens after `a`, plus one it never samples
    for (const c of [support[0]!, support[2]!, (support[1]! + 1) % V === support[2] ? 12 : (support[1]! + 1) % V])
      seqs.push({ prompt: ids.slice(1), answer: [a, c], count: 1 + Math.floor(r.uniform() * 5) });
  }
  const index = new RetrievalIndex(buildRetrievalData(seqs, V, 3));
  const N = 500;
  const counts = new Map<string, number>();
  let drafted = 0;
  let accepted = 0;
  for (let s = 0; s < N; s++) {
    const { s: seq, l } = await open();
    const proposer = new RetrievalProposer(index, { mode: 'tree', treeBudget: 8, treeTopK: 4, treeDepth: 2, maxChainLength: 8, stats: new AcceptanceStats() }, retrievalState({}));
    const out: number[] = [];
    for await (const st of decodeSteps(seq, l, ids.length, ids, { sampling, pick: tokenSampler(700 + s, isGreedy(sampling)), proposer })) {
      out.push(...st.tokens);
      if (out.length > 1 || st.drafted) {
        drafted += st.drafted;
        accepted += st.accepted;
      }
      if (out.length >= 2) break;
    }
    const k = out.slice(0, 2).join(',');
    counts.set(k, (counts.get(k) ?? 0) + 1);
    await seq.close();
  }
  expect(drafted).toBeGreaterThanOrEqual(N);
  expect(accepted).toBeGreaterThan(N / 4);
  const { stat, df } = chiSquare(counts, exact, N);
  expect(df).toBe(8);
  expect(stat).toBeLessThan(26.12); // χ²(8) at p = 0.001
}, 90_000);

test('sampled through the engine: drafts verified in the prefill forward keep the exact distribution of the first two tokens (chi-square)', async () => {
  const fs = await import('node:fs');
  const os = await import('node:os');
  const path = await import('node:path');
  const client = engine.workerClient;
  const sampling = { temperature: 1, topK: 3, topP: 1 };
  const vocab = JSON.parse(fs.readFileSync(path.join(FIXTURE, 'tokenizer.json'), 'utf8')).model.vocab as Record<string, number>;
  const prompt = 'describe the image';
  const words = prompt.split(' ').map((w) => vocab[w]!);
  const ids = [1, ...words, 4]; // bos, words, im_start: the engine's prompt without an image
  const open = prefixOpener(client, V, ids);
  const { exact, support } = await exactTwoTokenJoint(open, V, sampling);
  const seqs: Array<{ prompt: number[]; answer: number[]; count: number }> = [];
  for (const [a, s2] of support)
    seqs.push({ prompt: [...words, 4], answer: [a, s2[1]!], count: 3 }, { prompt: [...words, 4], answer: [a, s2[2]!], count: 1 });
  // the datastore also proposes a first token the target never samples
  seqs.push({ prompt: [...words, 4], answer: [support.has(11) ? 12 : 11, 13], count: 2 });
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'hb-rest-s-'));
  for (const f of fs.readdirSync(FIXTURE)) if (fs.statSync(path.join(FIXTURE, f)).isFile()) fs.copyFileSync(path.join(FIXTURE, f), path.join(dir, f));
  const m = JSON.parse(fs.readFileSync(path.join(FIXTURE, 'manifest.json'), 'utf8'));
  fs.writeFileSync(path.join(dir, 'manifest.json'), JSON.stringify({ ...m, retrieval: 'retrieval.json' }));
  fs.writeFileSync(path.join(dir, 'retrieval.json'), JSON.stringify(buildRetrievalData(seqs, V, 4)));
  const e = await createEngine(dir, { calibrate: false, intraOpThreads: 1, costCurve: [[1, 1], [8, 1], [32, 1.2]] });
  try {
    const N = 500;
    const counts = new Map<string, number>();
    let firstAccepted = 0;
    for (let s = 0; s < N; s++) {
      const out: number[] = [];
      for await (const ev of e.understand({ prompt, maxTokens: 2, temperature: 1, topK: 3, seed: 1000 + s, speculation: { mode: 'tree' } })) {
        if (ev.kind === 'chunk') {
          out.push(...ev.tokenIds);
          if (out.length === ev.tokenIds.length) firstAccepted += ev.acceptedTokens;
        } else out.push(...(ev.trailing?.tokenIds ?? []));
      }
      const k = out.slice(0, 2).join(',');
      counts.set(k, (counts.get(k) ?? 0) + 1);
    }
    expect(firstAccepted).toBeGreaterThan(N / 4); // most requests take drafted tokens from the prefill forward
    const { stat, df } = chiSquare(counts, exact, N);
    expect(df).toBe(8);
    expect(stat).toBeLessThan(26.12);
  } finally {
    await e.close();
    fs.rmSync(dir, { recursive: true, force: true });
  }
}, 120_000);
