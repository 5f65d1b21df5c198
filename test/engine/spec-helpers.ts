import { isGreedy, tokenSampler } from '../../src/engine/understand/logits.ts';
import { Rng } from '../../src/engine/rng.ts';
import { causalMask } from '../../src/engine/understand/target.ts';
import { decodeSteps } from '../../src/engine/understand/decode.ts';
import { processLogits, type SamplingParams } from '../../src/engine/understand/logits.ts';
import type { Proposer } from '../../src/engine/speculative/proposer.ts';
import type { Candidate, Expander } from '../../src/engine/speculative/tree.ts';
import { ToyModel, ToySequence } from './toy-lm.ts';

/** An EAGLE-like draft: a second toy model (correlated with the target) proposing top-k by log-prob. */
export class ToyDraftExpander implements Expander {
  context: number[] = [];
  calls = 0;
  constructor(private draft: ToyModel) {}
  setContext(t: number[]) {
    this.context = t;
  }
  expand(paths: number[][], k: number): Candidate[][] {
    this.calls++;
    const V = this.draft.vocab;
    return paths.map((p) => {
      const toks = [...this.context, ...p];
      const vis = toks.map((token, pos) => ({ token, pos }));
      const l = new Float32Array(V);
      this.draft.logitsFor(vis, l, 0);
      const max = Math.max(...l);
      const lse = max + Math.log(l.reduce((s, x) => s + Math.exp(x - max), 0));
      return Array.from({ length: V }, (_, v) => ({ token: v, logprob: l[v]! - lse }))
        .sort((a, b) => b.logprob - a.logprob || a.token - b.token)
        .slice(0, k);
    });
  }
}

export async function prefill(seq: ToySequence, prompt: number[]): Promise<Float32Array> {
  const pos = Int32Array.from(prompt.map((_, i) => i));
  return seq.forward(Int32Array.from(prompt), pos, causalMask(prompt.length), 'last');
}

export async function runDecode(
  model: ToyModel,
  prompt: number[],
  n: number,
  sampling: SamplingParams,
  seed: number,
  proposer: Proposer | null,
): Promise<{ tokens: number[]; steps: number; seq: ToySequence; emitted: number }> {
  const seq = new ToySequence(model);
  const last = await prefill(seq, prompt);
  const out: number[] = [];
  let steps = 0;
  for await (const s of decodeSteps(seq, last, prompt.length, prompt, { sampling, pick: tokenSampler(seed, isGreedy(sampling)), proposer })) {
    steps++;
    out.push(...s.tokens);
    if (out.length >= n) break;
  }
  return { tokens: out.slice(0, n), steps, seq, emitted: out.length };
}

/** Exact distribution of the first `depth` sampled tokens (enumerated). */
export async function exactJoint(model: ToyModel, prompt: number[], depth: number, sampling: SamplingParams): Promise<Map<string, number>> {
  const out = new Map<string, number>();
  async function rec(prefix: number[], prob: number) {
    if (prefix.length === depth) {
      out.set(prefix.join(','), prob);
      return;
    }
    const seq = new ToySequence(model);
    const l = await prefill(seq, [...prompt, ...prefix]);
    const p = processLogits(l, 0, model.vocab, sampling);
    for (let v = 0; v < p.length; v++) if (p[v]! > 0) await rec([...prefix, v], prob * p[v]!);
  }
  await rec([], 1);
  return out;
}

export function chiSquare(counts: Map<string, number>, exact: Map<string, number>, n: number): { stat: number; df: number } {
  let stat = 0;
  for (const [k, p] of exact) {
    const e = p * n;
    const o = counts.get(k) ?? 0;
    stat += ((o - e) * (o - e)) / e;
  }
  for (const k of counts.keys()) if (!exact.has(k)) stat += Infinity;
  return { stat, df: exact.size - 1 };
}

export function randomPrompt(r: Rng, V: number, len: number): number[] {
  return Array.from({ length: len }, () => 10 + Math.floor(r.uniform() * (V - 10)));
}
