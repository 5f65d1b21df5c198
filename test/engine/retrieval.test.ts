// Retrieval drafting (src/engine/speculative/retrieval.ts) without a model: the datastore index and its
// suffix matching, the draft trees it builds (shape, budget, content), and datastore validation.
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { describe, expect, test } from 'vitest';
import { Rng } from '../../src/engine/rng.ts';
import { AcceptanceStats } from '../../src/engine/speculative/metrics.ts';
import { buildRetrievalData, RetrievalExpander, RetrievalIndex, RetrievalProposer, retrievalState } from '../../src/engine/speculative/retrieval.ts';
import { CostCurve } from '../../src/engine/speculative/sizing.ts';
import { childrenOf, treeMask, type DraftTree } from '../../src/engine/speculative/tree.ts';
import { EngineError, type SpeculationMode } from '../../src/engine/types.ts';
import { loadPack, validateRetrieval } from '../../src/runtime/manifest.ts';
import { FIXTURE } from './fixture-helpers.ts';

const IM = 4;
const EOS = 2;
const V = 81;

// prompt [10 11 IM]: answer 20 21 EOS three times, 20 22 EOS once; prompt [12 IM]: 30 EOS
const small = () =>
  buildRetrievalData(
    [
      { prompt: [10, 11, IM], answer: [20, 21, EOS], count: 3 },
      { prompt: [10, 11, IM], answer: [20, 22, EOS] },
      { prompt: [12, IM], answer: [30, EOS] },
    ],
    V,
    4,
  );

const flat: Array<[number, number]> = [[1, 1], [2, 1], [16, 1], [32, 1.5], [64, 3]];

function proposer(data = small(), mode: Exclude<SpeculationMode, 'off'> = 'tree', extra: Partial<ConstructorParameters<typeof RetrievalProposer>[1]> = {}) {
  const owner = {};
  return new RetrievalProposer(new RetrievalIndex(data), { mode, maxChainLength: 8, stats: new AcceptanceStats(), curve: new CostCurve(flat), ...extra }, retrievalState(owner));
}

function checkTree(t: DraftTree) {
  expect(t.parents[0]).toBe(-1);
  expect(() => treeMask(t)).not.toThrow(); // topological
  for (let i = 1; i < t.tokens.length; i++) {
    const p = t.parents[i]!;
    expect(t.depths[i]).toBe(t.depths[p]! + 1);
    expect(t.scores[i]).toBeLessThanOrEqual(t.scores[p]! + 1e-12);
  }
  for (const kids of childrenOf(t)) expect(new Set(kids.map((k) => t.tokens[k])).size).toBe(kids.length);
}

const pathTokens = (t: DraftTree, node: number) => {
  const out: number[] = [];
  for (let n = node; n > 0; n = t.parents[n]!) out.unshift(t.tokens[n]!);
  return out;
};

describe('retrieval index', () => {
  test('longest suffix match, continuations by count, log count shares', () => {
    const ix = new RetrievalIndex(small());
    const a = ix.lookup([1, 6, 10, 11, IM], 8);
    expect(a.n).toBe(3);
    expect(a.next.map((c) => c.token)).toEqual([20]);
    expect(a.next[0]!.logprob).toBeCloseTo(0);
    const b = ix.lookup([10, 11, IM, 20], 8);
    expect(b.n).toBe(4);
    expect(b.next.map((c) => c.token)).toEqual([21, 22]);
    expect(b.next[0]!.logprob).toBeCloseTo(Math.log(3 / 4));
    expect(b.next[1]!.logprob).toBeCloseTo(Math.log(1 / 4));
    expect(ix.lookup([10, 11, IM, 20], 1).next.length).toBe(1);
    // unknown longer context: falls back to the longest suffix that exists
    expect(ix.lookup([50, 51, 52, 20], 8)).toMatchObject({ n: 1 });
    expect(ix.lookup([12, IM], 8).next.map((c) => c.token)).toEqual([30]);
    expect(ix.lookup([77], 8)).toEqual({ n: 0, next: [] });
    expect(ix.lookup([], 8)).toEqual({ n: 0, next: [] });
  });

  test('suffix matching never looks further back than max_n', () => {
    // with max_n 2 the prompt's first token cannot disambiguate
    const d = buildRetrievalData(
      [
        { prompt: [10, 11, IM], answer: [20, EOS] },
        { prompt: [13, 11, IM], answer: [21, EOS], count: 2 },
      ],
      V,
      2,
    );
    const ix = new RetrievalIndex(d);
    const m = ix.lookup([10, 11, IM], 8);
    expect(m.n).toBe(2);
    expect(m.next.map((c) => c.token)).toEqual([21, 20]);
    const d3 = buildRetrievalData([{ prompt: [10, 11, IM], answer: [20, EOS] }, { prompt: [13, 11, IM], answer: [21, EOS], count: 2 }], V, 3);
    expect(new RetrievalIndex(d3).lookup([10, 11, IM], 8).next.map((c) => c.token)).toEqual([20]);
  });

  test('the suffix trie finds what a scan over every stored context finds (random datastores, context + path split anywhere)', () => {
    const r = new Rng(7);
    const rng = { int: (n: number) => Math.floor(r.uniform() * n) };
    for (let trial = 0; trial < 20; trial++) {
      const maxN = 1 + rng.int(5);
      const seqs = Array.from({ length: 1 + rng.int(12) }, () => ({
        prompt: [...Array.from({ length: 1 + rng.int(4) }, () => 5 + rng.int(6)), IM],
        answer: [...Array.from({ length: rng.int(6) }, () => 5 + rng.int(6)), EOS],
        count: 1 + rng.int(3),
      }));
      const data = buildRetrievalData(seqs, V, maxN);
      const ix = new RetrievalIndex(data);
      expect(ix.size).toBe(data.entries.length);
      const stored = new Map(data.entries.map(([c, nx]) => [c.join(','), nx]));
      for (let q = 0; q < 50; q++) {
        const seq = Array.from({ length: rng.int(9) }, () => (rng.int(5) === 0 ? IM : 5 + rng.int(6)));
        // reference: longest suffix (≤ maxN) stored, continuations by count then id
        let want: { n: number; tokens: number[] } = { n: 0, tokens: [] };
        for (let n = Math.min(maxN, seq.length); n >= 1; n--) {
          const nx = stored.get(seq.slice(seq.length - n).join(','));
          if (nx) {
            want = { n, tokens: nx.slice().sort((a, b) => b[1] - a[1] || a[0] - b[0]).slice(0, 3).map(([t]) => t) };
            break;
          }
        }
        const cut = rng.int(seq.length + 1);
        for (const got of [ix.lookup(seq, 3), ix.lookupAfter(seq.slice(0, cut), seq.slice(cut), 3)]) {
          expect(got.n).toBe(want.n);
          expect(got.next.map((c) => c.token)).toEqual(want.tokens);
        }
      }
    }
  });

  test('expander: datastore first, prompt lookup where nothing matches', () => {
    const ex = new RetrievalExpander(new RetrievalIndex(small()));
    ex.setContext([60, 61, 62, 60, 61]);
    // no datastore match for 61 / 60 61: the n-gram drafter copies 62 from the context
    expect(ex.expand([[]], 4)[0]!.map((c) => c.token)).toEqual([62]);
    ex.setContext([10, 11, IM]);
    expect(ex.expand([[], [20], [20, 21]], 4).map((cs) => cs.map((c) => c.token))).toEqual([[20], [21, 22], [EOS]]);
  });
});

describe('retrieval proposer', () => {
  test('trees are the trie of frequent continuations', async () => {
    const t = await proposer(small(), 'tree', { treeBudget: 8 }).propose([1, 10, 11, IM, 20]);
    checkTree(t);
    const paths = Array.from({ length: t.tokens.length - 1 }, (_, i) => pathTokens(t, i + 1).join(' '));
    expect(paths).toEqual(expect.arrayContaining(['21', '22', '21 2', '22 2']));
    // siblings best first: the more frequent continuation is tried first
    expect(t.tokens[childrenOf(t)[0]![0]!]).toBe(21);
    const c = await proposer(small(), 'chain', { chainLength: 3 }).propose([1, 10, 11, IM, 20]);
    expect(Array.from(c.tokens)).toEqual([20, 21, EOS]); // stops where the datastore has nothing more
  });

  test('auto with chainLength drafts chains of that length (the schema: "AUTO then drafts chains of this length")', async () => {
    const a = await proposer(small(), 'auto', { chainLength: 1 }).propose([1, 10, 11, IM, 20]);
    expect(Array.from(a.tokens)).toEqual([20, 21]);
    const b = await proposer(small(), 'auto', { chainLength: 3 }).propose([1, 10, 11, IM, 20]);
    expect(Array.from(b.tokens)).toEqual([20, 21, EOS]);
    expect(childrenOf(b).every((k) => k.length <= 1)).toBe(true);
  });

  test('random datastores: proposals are well-formed trees within the budget and made of datastore continuations', async () => {
    const rng = new Rng(11);
    const r = (n: number) => Math.floor(rng.uniform() * n);
    for (let trial = 0; trial < 30; trial++) {
      const seqs = Array.from({ length: 5 + r(40) }, () => ({
        prompt: [10 + r(5), 10 + r(5), IM],
        answer: [...Array.from({ length: 1 + r(12) }, () => 20 + r(8)), EOS],
        count: 1 + r(5),
      }));
      const data = buildRetrievalData(seqs, V, 1 + r(6));
      const ix = new RetrievalIndex(data);
      const s = seqs[r(seqs.length)]!;
      const ctx = [1, ...s.prompt, ...s.answer.slice(0, r(s.answer.length))];
      const budget = 1 + r(40);
      const topK = 1 + r(8);
      const depth = 1 + r(10);
      const t = await proposer(data, 'tree', { treeBudget: budget, treeTopK: topK, treeDepth: depth }).propose(ctx);
      checkTree(t);
      expect(t.tokens.length).toBeLessThanOrEqual(budget + 1);
      for (let i = 1; i < t.tokens.length; i++) {
        expect(t.depths[i]).toBeLessThanOrEqual(depth);
        const p = pathTokens(t, i);
        const m = ix.lookup([...ctx, ...p.slice(0, -1)], V);
        if (m.n > 0) expect(m.next.map((c) => c.token)).toContain(p[p.length - 1]);
      }
      expect(childrenOf(t).every((k) => k.length <= topK)).toBe(true);
      const K = 1 + r(8);
      const c = await proposer(data, 'chain', { chainLength: K }).propose(ctx);
      checkTree(c);
      expect(c.tokens.length).toBeLessThanOrEqual(K + 1);
      expect(childrenOf(c).every((k) => k.length <= 1)).toBe(true);
      // auto / sized trees stay within the default budget
      const a = await proposer(data, 'auto').propose(ctx);
      checkTree(a);
      expect(a.tokens.length).toBeLessThanOrEqual(33);
    }
  });

  test('auto drafts nothing where verification costs more than it can gain', async () => {
    const steep = new CostCurve([[1, 1], [2, 5], [32, 100]]);
    const p = proposer(small(), 'auto', { curve: steep });
    const t = await p.propose([1, 10, 11, IM, 20]);
    expect(t.tokens.length).toBe(1);
    const cheap = await proposer(small(), 'auto').propose([1, 10, 11, IM, 20]);
    expect(cheap.tokens.length).toBeGreaterThan(1);
    expect(proposer().source).toBe('retrieval');
  });

  test('observe() feeds the per-engine statistics and the calibration lowers scores after misses', async () => {
    const owner = {};
    const st = retrievalState(owner);
    expect(retrievalState(owner)).toBe(st);
    const p = new RetrievalProposer(new RetrievalIndex(small()), { mode: 'auto', maxChainLength: 8, stats: new AcceptanceStats(), curve: new CostCurve(flat) }, st);
    const before = await p.propose([1, 10, 11, IM]);
    for (let i = 0; i < 30; i++) {
      await p.propose([1, 10, 11, IM]);
      p.observe(3, 0);
    }
    expect(st.steps).toBe(30);
    expect(st.accepted).toBeCloseTo(0);
    const after = await p.propose([1, 10, 11, IM]);
    expect(after.scores[1]!).toBeLessThan(before.scores[1]!);
  });
});

describe('datastore validation', () => {
  test('bad datastores are rejected with the file and field named', () => {
    const good = small();
    expect(() => validateRetrieval(good, V, 'x/retrieval.json')).not.toThrow();
    const bad = (d: unknown, vocab = V) => {
      try {
        validateRetrieval(d, vocab, 'x/retrieval.json');
      } catch (e) {
        expect(e).toBeInstanceOf(EngineError);
        return (e as Error).message;
      }
      throw new Error('accepted a bad datastore');
    };
    expect(bad({ ...good, format: 'nope' })).toMatch(/x\/retrieval\.json.*format/);
    expect(bad(good, 99)).toMatch(/vocabulary 81 does not match the decoder's 99/);
    expect(bad({ ...good, max_n: 0 })).toMatch(/max_n/);
    expect(bad({ ...good, entries: [[[1, 500], [[2, 1]]]] })).toMatch(/entries\[0\].*token ids below 81/);
    expect(bad({ ...good, entries: [[[1], [[2, 0]]]] })).toMatch(/entries\[0\].*positive count/);
    expect(bad({ ...good, entries: [[[1, 2, 3, 4, 5], [[2, 1]]]] })).toMatch(/entries\[0\]/);
    expect(bad({ format: 'hyperbagel-retrieval/1', vocab: V, max_n: 2 })).toMatch(/entries.*missing/);
  });

  test('a pack whose retrieval file is malformed or missing fails to load, naming the file', () => {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'hb-retrieval-'));
    try {
      for (const f of fs.readdirSync(FIXTURE)) if (fs.statSync(path.join(FIXTURE, f)).isFile()) fs.copyFileSync(path.join(FIXTURE, f), path.join(dir, f));
      const m = JSON.parse(fs.readFileSync(path.join(FIXTURE, 'manifest.json'), 'utf8'));
      fs.writeFileSync(path.join(dir, 'manifest.json'), JSON.stringify({ ...m, retrieval: 'retrieval.json' }));
      const err = () => {
        try {
          loadPack(dir);
        } catch (e) {
          expect(e).toBeInstanceOf(EngineError);
          expect((e as EngineError).code).toBe('MODEL_LOAD_FAILED');
          return (e as Error).message;
        }
        throw new Error('loaded');
      };
      expect(err()).toMatch(/retrieval\.json.*cannot load retrieval datastore/);
      fs.writeFileSync(path.join(dir, 'retrieval.json'), '{"format": "hyperbagel-retrieval/1", "vocab": 81, ');
      expect(err()).toMatch(/retrieval\.json.*cannot load retrieval datastore.*JSON/);
      fs.writeFileSync(path.join(dir, 'retrieval.json'), JSON.stringify({ ...small(), entries: [[[1], 'x']] }));
      expect(err()).toMatch(/retrieval\.json \(field "entries\[0\]"\)/);
      fs.writeFileSync(path.join(dir, 'retrieval.json'), JSON.stringify(small()));
      expect(loadPack(dir).retrieval?.entries.length).toBe(small().entries.length);
      fs.writeFileSync(path.join(dir, 'manifest.json'), JSON.stringify({ ...m, retrieval: 7 }));
      expect(err()).toMatch(/field "retrieval"/);
    } finally {
      fs.rmSync(dir, { recursive: true, force: true });
    }
  });
});
