// Reference chain speculative decoding on onnxruntime-node with draft.onnx (greedy), written exactly as
// docs/model-pack.md "Draft and distilled graphs" describes, for tests and as a template for the engine.
import * as path from 'node:path';
import * as ort from 'onnxruntime-node';
import { openSession, type Manifest } from '../recipes/helpers.ts';

export interface DraftManifest extends Manifest { draft: { layers: number; heads: number; head_dim: number; hidden: number } }

type Feeds = Record<string, ort.Tensor>;
const f32 = (d: Float32Array, dims: number[]): ort.Tensor => new ort.Tensor('float32', d, dims);
const i64 = (v: number[], dims: number[]): ort.Tensor => new ort.Tensor('int64', BigInt64Array.from(v.map(BigInt)), dims);

/** Keep the first n positions of a [1,H,P,Dh] cache tensor. */
function crop(t: ort.Tensor, n: number): ort.Tensor {
  const [, H, P, Dh] = t.dims as [number, number, number, number];
  if (n === P) return t;
  const src = t.data as Float32Array;
  const out = new Float32Array(H * n * Dh);
  for (let h = 0; h < H; h++) out.set(src.subarray(h * P * Dh, h * P * Dh + n * Dh), h * n * Dh);
  return f32(out, [1, H, n, Dh]);
}

function causal(T: number, P: number): ort.Tensor {
  const m = new Float32Array(T * (P + T));
  for (let i = 0; i < T; i++) for (let j = P + i + 1; j < P + T; j++) m[i * (P + T) + j] = -1e9;
  return f32(m, [1, 1, T, P + T]);
}

function argmaxRow(t: ort.Tensor, row: number): number {
  const V = t.dims[2]!;
  const d = t.data as Float32Array;
  let best = 0;
  for (let v = 1; v < V; v++) if (d[row * V + v]! > d[row * V + best]!) best = v;
  return best;
}

function rows(t: ort.Tensor, from: number, to: number): ort.Tensor {
  const per = t.dims.slice(2).reduce((a, b) => a * b, 1);
  return f32((t.data as Float32Array).slice(from * per, to * per), [1, to - from, ...t.dims.slice(2)]);
}

export interface ChainResult { tokens: number[]; greedy: number[]; acceptLengths: number[] }

export async function chainDecode(pack: string, manifest: DraftManifest, promptIds: number[], K = 10, maxNew = 24): Promise<ChainResult> {
  const sess = async (g: string): Promise<ort.InferenceSession> => openSession(path.join(pack, manifest.graphs[g]!.file));
  const [embed, dec, draft] = await Promise.all([sess('embed'), sess('decoder'), sess('draft')]);
  const d = manifest.decoder;
  const Ld = manifest.draft.layers;
  const D = d.hidden;
  const eos = manifest.special_tokens.eos!;
  const emb = async (ids: number[]): Promise<ort.Tensor> => (await embed.run({ input_ids: i64(ids, [1, ids.length]) })).inputs_embeds!;
  const empty = (n: number): Feeds => {
    const o: Feeds = {};
    for (let i = 0; i < n; i++) for (const kv of ['key', 'value']) o[`past_key_values.${i}.${kv}`] = f32(new Float32Array(0), [1, d.heads, 0, d.head_dim]);
    return o;
  };
  const presents = (out: Feeds, n: number, keep: number): Feeds => {
    const o: Feeds = {};
    for (let i = 0; i < n; i++) for (const kv of ['key', 'value']) o[`past_key_values.${i}.${kv}`] = crop(out[`present.${i}.${kv}`]!, keep);
    return o;
  };
  const target = async (ids: number[], pos0: number, past: Feeds, P: number): Promise<Feeds> =>
    dec.run({ inputs_embeds: await emb(ids), position_ids: i64(ids.map((_, i) => pos0 + i), [1, ids.length]), attention_mask: causal(ids.length, P), ...past });
  const draftRun = async (nextIds: number[], hs: ort.Tensor | null, prev: Float32Array | null, pos0: number, past: Feeds, P: number, mask: ort.Tensor): Promise<Feeds> => {
    const T = nextIds.length;
    return draft.run({
      inputs_embeds: await emb(nextIds),
      hidden_states: hs ?? f32(new Float32Array(T * d.layers * D), [1, T, d.layers, D]),
      prev_features: f32(prev ?? new Float32Array(T * D), [1, T, D]),
      feature_select: f32(new Float32Array(T).fill(prev ? 1 : 0), [1, T]),
      position_ids: i64(nextIds.map((_, i) => pos0 + i), [1, T]),
      attention_mask: mask,
      ...past,
    });
  };

  // plain greedy reference
  const greedy: number[] = [];
  {
    let out = await target(promptIds, 0, empty(d.layers), 0);
    let P = promptIds.length;
    for (;;) {
      const t = argmaxRow(out.logits!, out.logits!.dims[1]! - 1);
      if (t === eos || greedy.length >= maxNew) break;
      greedy.push(t);
      out = await target([t], P, presents(out, d.layers, P), P);
      P += 1;
    }
  }

  // 1. prefill (text-only prompt: rows 0..n-1, positions 0..n-1)
  const n = promptIds.length;
  const pre = await target(promptIds, 0, empty(d.layers), 0);
  let tpast = presents(pre, d.layers, n);
  let x = argmaxRow(pre.logits!, n - 1);
  let dout = await draftRun([...promptIds.slice(1), x], pre.hidden_states!, null, 0, empty(Ld), 0, causal(n, 0));
  let committed = n;
  let dpast = presents(dout, Ld, committed);
  const tokens: number[] = [];
  const acceptLengths: number[] = [];
  while (x !== eos && tokens.length < maxNew) {
    tokens.push(x);
    if (tokens.length >= maxNew) break;
    // 2. draft steps (temporary rows)
    const drafts: number[] = [];
    let last = dout;
    let lastRow = last.logits!.dims[1]! - 1;
    let tmp = dpast;
    let P = committed;
    for (let k = 0; k < K; k++) {
      const tok = argmaxRow(last.logits!, lastRow);
      drafts.push(tok);
      if (k === K - 1) break;
      const feat = (last.features!.data as Float32Array).slice(lastRow * D, (lastRow + 1) * D);
      last = await draftRun([tok], null, feat, committed + k, tmp, P, f32(new Float32Array(P + 1), [1, 1, 1, P + 1]));
      P += 1;
      tmp = presents(last, Ld, P);
      lastRow = 0;
    }
    // 3. verify [x, d1..dK]
    const ver = await target([x, ...drafts], committed, tpast, committed);
    let a = 0;
    while (a < K && drafts[a] === argmaxRow(ver.logits!, a)) {
      a += 1;
      if (drafts[a - 1] === eos) break;
    }
    const y = argmaxRow(ver.logits!, a);
    const accepted = drafts.slice(0, a);
    acceptLengths.push(a + 1);
    tpast = presents(ver, d.layers, committed + a + 1);
    // 4. catch-up on the committed rows x, d1..da with their target hidden states
    dout = await draftRun([...accepted, y], rows(ver.hidden_states!, 0, a + 1), null, committed, dpast, committed, causal(a + 1, committed));
    committed += a + 1;
    dpast = presents(dout, Ld, committed);
    let stop = false;
    for (const t of accepted) {
      if (t === eos || tokens.length >= maxNew) { stop = true; break; }
      tokens.push(t);
    }
    if (stop) break;
    x = y;
  }
  await Promise.all([embed.release(), dec.release(), draft.release()]);
  return { tokens, greedy, acceptLengths };
}
