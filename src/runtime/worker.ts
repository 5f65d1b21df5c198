// Model worker: owns the onnxruntime sessions and KV caches of one pack. run() is synchronous inside
// onnxruntime-node, so it lives here, off the main thread.
import { parentPort, receiveMessageOnPort, type MessagePort } from 'node:worker_threads';
import ort from 'onnxruntime-node';
import { KvCache } from './kv-cache.ts';
import type { GraphName, GraphSpec, Manifest } from './manifest.ts';
import { CostCurve, chooseTreeSize } from '../engine/speculative/sizing.ts';
import { buildDynamicTree, replayExpander, treeMask, treePositions } from '../engine/speculative/tree.ts';
import { causalMask } from '../engine/understand/target.ts';
import type { InitResult, Segment, SessionTuning, WorkerMessage, WorkerReply, WorkerStats } from './protocol.ts';

const port = parentPort;
if (!port) throw new Error('worker.ts must run in a worker thread');

class CodedError extends Error {
  constructor(
    readonly code: string,
    message: string,
    readonly details?: Record<string, unknown>,
  ) {
    super(message);
  }
}

let manifest: Manifest;
const sessions: Partial<Record<GraphName, ort.InferenceSession>> = {};
const seqs = new Map<number, KvCache>();
let embedTable: Float32Array | null = null;
const stats: WorkerStats = { modelCalls: 0, decodeCalls: 0, openSequences: 0, kvAllocations: 0, embedTable: false, runMs: 0, handleMs: 0, spinHits: 0, byGraph: {} };

function sess(g: GraphName): ort.InferenceSession {
  const s = sessions[g];
  if (!s) throw new CodedError('INVALID_INPUT', `this pack has no ${g} graph`);
  return s;
}

async function run(g: GraphName, feeds: Record<string, ort.Tensor>, fetches?: Record<string, ort.Tensor> | string[]) {
  stats.modelCalls++;
  const s = sess(g);
  const t0 = performance.now();
  const r = fetches ? await s.run(feeds, fetches as never) : await s.run(feeds);
  const dt = performance.now() - t0;
  stats.runMs += dt;
  const g1 = (stats.byGraph[g] ??= { calls: 0, ms: 0 });
  g1.calls++;
  g1.ms += dt;
  return r;
}

function i64(a: ArrayLike<number>): BigInt64Array {
  const out = new BigInt64Array(a.length);
  for (let i = 0; i < a.length; i++) out[i] = BigInt(a[i]!);
  return out;
}

/**
 * Latency-bound graphs of hundreds of tiny ops, where intra-op thread dispatch costs more than it
 * saves: the per-token ones, and the distilled denoisers (batch 1, no CFG batch). Measured with
 * `bench generate` (quiet, A/B twice): edit 6-NFE sampling 6.6–7.1 → 5.1–5.6 ms on 1 thread.
 */
const DECODE_GRAPHS = new Set<GraphName>(['decoder', 'draft', 'embed', 'denoise_6nfe', 'denoise_1nfe']);

async function init(files: Partial<Record<GraphName, string>>, m: Manifest, tuning: SessionTuning): Promise<InitResult> {
  manifest = m;
  const opts: ort.InferenceSession.SessionOptions = {
    graphOptimizationLevel: 'all',
    intraOpNumThreads: tuning.intraOpThreads,
    interOpNumThreads: tuning.interOpThreads,
    executionMode: 'sequential',
    extra: { session: { 'intra_op.allow_spinning': tuning.allowSpinning ? '1' : '0' } },
  };
  const inputNames: Record<string, string[]> = {};
  const outputNames: Record<string, string[]> = {};
  const decodeOpts: ort.InferenceSession.SessionOptions = { ...opts, intraOpNumThreads: tuning.decodeIntraOpThreads ?? tuning.intraOpThreads };
  for (const [g, file] of Object.entries(files) as Array<[GraphName, string]>) {
    let s: ort.InferenceSession;
    try {
      s = await ort.InferenceSession.create(file, DECODE_GRAPHS.has(g) ? decodeOpts : opts);
    } catch (e) {
      throw new CodedError('MODEL_LOAD_FAILED', `${file}: cannot load graph "${g}": ${(e as Error).message}`, { file, graph: g });
    }
    const spec = m.graphs[g]!;
    for (const name of Object.keys(spec.inputs))
      if (!s.inputNames.includes(name))
        throw new CodedError('MODEL_LOAD_FAILED', `${file}: graph "${g}" has no input "${name}" (manifest graphs.${g}.inputs)`, { file, graph: g, field: name });
    for (const name of Object.keys(spec.outputs))
      if (!s.outputNames.includes(name))
        throw new CodedError('MODEL_LOAD_FAILED', `${file}: graph "${g}" has no output "${name}" (manifest graphs.${g}.outputs)`, { file, graph: g, field: name });
    checkGraphShapes(g, file, spec, s);
    sessions[g] = s;
    inputNames[g] = [...s.inputNames];
    outputNames[g] = [...s.outputNames];
  }
  await buildEmbedTable();
  return { inputNames, outputNames, embedTable: embedTable !== null };
}

/**
 * The manifest's dtypes and fixed dimensions against the graph's own: a pack whose manifest disagrees with
 * its graphs fails here, naming the file and the field, instead of failing every request.
 */
function checkGraphShapes(g: GraphName, file: string, spec: GraphSpec, s: ort.InferenceSession): void {
  const meta = (list: readonly ort.InferenceSession.ValueMetadata[] | undefined, name: string) =>
    list?.find((x) => x.name === name) as { isTensor: boolean; type?: string; shape?: Array<number | string> } | undefined;
  for (const [io, specs, list] of [['inputs', spec.inputs, s.inputMetadata], ['outputs', spec.outputs, s.outputMetadata]] as const)
    for (const [name, t] of Object.entries(specs)) {
      const m = meta(list, name);
      if (!m?.isTensor || !m.shape) continue;
      const field = `graphs.${g}.${io}.${name}`;
      if (m.type && m.type !== t.dtype)
        throw new CodedError('MODEL_LOAD_FAILED', `${file}: graph "${g}" ${io.slice(0, -1)} "${name}" is ${m.type}, the manifest says ${t.dtype} (${field})`, { file, graph: g, field });
      const bad = m.shape.length !== t.shape.length || m.shape.some((d, i) => typeof d === 'number' && typeof t.shape[i] === 'number' && d !== t.shape[i]);
      if (bad)
        throw new CodedError('MODEL_LOAD_FAILED', `${file}: graph "${g}" ${io.slice(0, -1)} "${name}" has shape [${m.shape.join(', ')}], the manifest says [${t.shape.join(', ')}] (${field})`, { file, graph: g, field });
    }
}

/**
 * embed.onnx is a per-token lookup in every pack seen so far; tabulate it once (one run over the
 * whole vocabulary) and check it against a direct run, so decoding needs one graph call per step.
 */
async function buildEmbedTable(): Promise<void> {
  const V = manifest.decoder.vocab;
  const D = manifest.decoder.hidden;
  const ids = Array.from({ length: V }, (_, i) => i);
  const all = (await run('embed', { input_ids: new ort.Tensor('int64', i64(ids), [1, V]) }))['inputs_embeds']!.data as Float32Array;
  const probe = [1, 6, 7, V - 1, 3, 1, 0];
  const direct = (await run('embed', { input_ids: new ort.Tensor('int64', i64(probe), [1, probe.length]) }))['inputs_embeds']!.data as Float32Array;
  for (let t = 0; t < probe.length; t++)
    for (let d = 0; d < D; d++) if (Math.abs(direct[t * D + d]! - all[probe[t]! * D + d]!) > 1e-6) return; // not a lookup: keep calling the graph
  embedTable = Float32Array.from(all);
  stats.embedTable = true;
}

async function embedIds(ids: Int32Array): Promise<Float32Array> {
  const D = manifest.decoder.hidden;
  const V = manifest.decoder.vocab;
  for (const id of ids) if (id < 0 || id >= V) throw new CodedError('INVALID_INPUT', `token id ${id} out of range`);
  if (embedTable) {
    const out = new Float32Array(ids.length * D);
    for (let t = 0; t < ids.length; t++) out.set(embedTable.subarray(ids[t]! * D, ids[t]! * D + D), t * D);
    return out;
  }
  const r = await run('embed', { input_ids: new ort.Tensor('int64', i64(ids), [1, ids.length]) });
  return r['inputs_embeds']!.data as Float32Array;
}

/** image_embeds of one image's pixels [3, S, S] (a decode segment of kind 'pixels'). */
async function visionEmbeds(pixels: Float32Array, count: number): Promise<Float32Array> {
  const S = manifest.vision.image_size;
  if (pixels.length !== 3 * S * S) throw new CodedError('INTERNAL', `pixels have ${pixels.length} values, expected ${3 * S * S}`);
  const e = (await run('vision', { pixels: new ort.Tensor('float32', pixels, [1, 3, S, S]) }))['image_embeds']!.data as Float32Array;
  if (e.length !== count * manifest.decoder.hidden) throw new CodedError('INTERNAL', `vision gave ${e.length} values, expected ${count}×${manifest.decoder.hidden}`);
  return e;
}

function seqOf(id: number): KvCache {
  const c = seqs.get(id);
  if (!c) throw new CodedError('INTERNAL', `unknown sequence ${id}`);
  return c;
}

function pastFeeds(cache: KvCache): Record<string, ort.Tensor> {
  const { layers, heads, headDim: head_dim } = cache.shape;
  const feeds: Record<string, ort.Tensor> = {};
  for (let l = 0; l < layers; l++) {
    feeds[`past_key_values.${l}.key`] = new ort.Tensor('float32', cache.past(2 * l), [1, heads, cache.length, head_dim]);
    feeds[`past_key_values.${l}.value`] = new ort.Tensor('float32', cache.past(2 * l + 1), [1, heads, cache.length, head_dim]);
  }
  return feeds;
}

function presentFetches(cache: KvCache, T: number): Record<string, ort.Tensor> {
  const { layers, heads, headDim: head_dim } = cache.shape;
  const targets = cache.presentTargets(T);
  const f: Record<string, ort.Tensor> = {};
  for (let l = 0; l < layers; l++) {
    f[`present.${l}.key`] = new ort.Tensor('float32', targets[2 * l]!, [1, heads, cache.length + T, head_dim]);
    f[`present.${l}.value`] = new ort.Tensor('float32', targets[2 * l + 1]!, [1, heads, cache.length + T, head_dim]);
  }
  return f;
}

function additiveMask(P: number, T: number, local: Uint8Array): Float32Array {
  const m = new Float32Array(T * (P + T));
  for (let i = 0; i < T; i++) for (let j = 0; j < T; j++) if (!local[i * T + j]) m[i * (P + T) + P + j] = -1e9;
  return m;
}

async function decode(msg: Extract<WorkerMessage, { op: 'decode' }>): Promise<{ logits: Float32Array; rows: number; features?: Float32Array }> {
  const cache = seqOf(msg.seq);
  if (msg.compact) cache.compact(msg.compact.keepFrom, msg.compact.keep);
  const D = manifest.decoder.hidden;
  const V = manifest.decoder.vocab;
  const T = msg.positions.length;
  if (msg.mask.length !== T * T) throw new CodedError('INTERNAL', `mask has ${msg.mask.length} entries, expected ${T * T}`);
  if (cache.length + T > manifest.decoder.max_positions * 4) throw new CodedError('PROMPT_TOO_LONG', 'sequence exceeds the KV limit');
  const embeds = new Float32Array(T * D);
  let off = 0;
  for (const s of msg.segments as Segment[]) {
    const e = s.kind === 'ids' ? await embedIds(s.ids) : s.kind === 'embeds' ? s.data : await visionEmbeds(s.pixels, s.count);
    const n = s.kind === 'ids' ? s.ids.length : s.count;
    embeds.set(e.subarray(0, n * D), off * D);
    off += n;
  }
  if (off !== T) throw new CodedError('INTERNAL', `segments give ${off} tokens, positions ${T}`);
  const P = cache.length;
  const feeds: Record<string, ort.Tensor> = {
    inputs_embeds: new ort.Tensor('float32', embeds, [1, T, D]),
    position_ids: new ort.Tensor('int64', i64(msg.positions), [1, T]),
    attention_mask: new ort.Tensor('float32', additiveMask(P, T, msg.mask), [1, 1, T, P + T]),
    ...pastFeeds(cache),
  };
  const logitsOut = new Float32Array(T * V);
  const fetches: Record<string, ort.Tensor> = { logits: new ort.Tensor('float32', logitsOut, [1, T, V]), ...presentFetches(cache, T) };
  const Lyr = manifest.decoder.layers;
  let hidden: Float32Array | null = null;
  if (msg.features) {
    hidden = new Float32Array(T * Lyr * D);
    fetches['hidden_states'] = new ort.Tensor('float32', hidden, [1, T, Lyr, D]);
  }
  stats.decodeCalls++;
  await run('decoder', feeds, fetches);
  cache.commit(T);
  const features = hidden ?? undefined; // [T, L, D]: every layer, what draft.onnx reads
  if (msg.rows === 'last') return { logits: logitsOut.slice((T - 1) * V), rows: 1, features };
  return { logits: logitsOut, rows: T, features };
}

/**
 * CFG contexts batched into one denoiser run: their KV caches padded to the longest one (padding
 * masked out) and stacked along the batch axis. Contexts do not change while a request samples, so
 * the stacked past is built once and reused at every step (dropped when a context is closed).
 */
const batchPast = new Map<string, { seqIds: number[]; P: number; past: Record<string, ort.Tensor>; mask: Float32Array }>();

function batchedContexts(ids: number[], N: number) {
  const lens = ids.map((id) => seqOf(id).length);
  const key = ids.map((id, i) => `${id}:${lens[i]}`).join(',') + `/${N}`;
  const hit = batchPast.get(key);
  if (hit) return hit;
  const { layers, heads: H, head_dim: Dh } = manifest.decoder;
  const B = ids.length;
  const P = Math.max(...lens);
  const past: Record<string, ort.Tensor> = {};
  for (let l = 0; l < layers; l++)
    for (const [j, kv] of [[2 * l, 'key'], [2 * l + 1, 'value']] as const) {
      const buf = new Float32Array(B * H * P * Dh);
      ids.forEach((id, b) => {
        const src = seqOf(id).past(j);
        const len = lens[b]!;
        for (let h = 0; h < H; h++) buf.set(src.subarray(h * len * Dh, (h + 1) * len * Dh), (b * H + h) * P * Dh);
      });
      past[`past_key_values.${l}.${kv}`] = new ort.Tensor('float32', buf, [B, H, P, Dh]);
    }
  const mask = new Float32Array(B * N * (P + N));
  ids.forEach((_, b) => {
    for (let i = 0; i < N; i++) for (let j = lens[b]!; j < P; j++) mask[(b * N + i) * (P + N) + j] = -1e9;
  });
  const e = { seqIds: ids.slice(), P, past, mask };
  batchPast.set(key, e);
  return e;
}

function dropBatches(seqId: number): void {
  for (const [k, e] of batchPast) if (e.seqIds.includes(seqId)) batchPast.delete(k);
}

/**
 * Caches of closed sequences, by kind (target / draft), reused by 'open': every request opens and
 * closes a sequence, and allocating (zeroing) its ping-pong buffers each time costs more than the
 * request's own KV work.
 */
const KV_POOL = 4;
const kvPool = new Map<string, KvCache[]>();
const kvKind = new Map<number, string>();

/** zero-filled buffers by length (draft inputs that feature_select switches off); never written */
const zeros = new Map<number, Float32Array>();
function zerosOf(n: number): Float32Array {
  let z = zeros.get(n);
  if (!z) zeros.set(n, (z = new Float32Array(n)));
  return z;
}

interface DraftRun {
  embeds: Float32Array;
  hidden?: Float32Array;
  prev?: Float32Array;
  positions: ArrayLike<number>;
  mask: Uint8Array;
  past?: { from: number; mask: Uint8Array };
}

/** One draft.onnx forward appending T rows to the draft cache. */
async function draftRun(cache: KvCache, r: DraftRun): Promise<{ logits: Float32Array; features: Float32Array }> {
  const D = manifest.decoder.hidden;
  const L = manifest.decoder.layers;
  const V = manifest.decoder.vocab;
  const T = r.positions.length;
  const P = cache.length;
  const m = additiveMask(P, T, r.mask);
  if (r.past) {
    const from = r.past.from;
    const n = P - from;
    if (r.past.mask.length !== T * n) throw new CodedError('INTERNAL', `draft past mask has ${r.past.mask.length} entries, expected ${T * n}`);
    for (let i = 0; i < T; i++) for (let j = 0; j < n; j++) if (!r.past.mask[i * n + j]) m[i * (P + T) + from + j] = -1e9;
  }
  // feature_select 0: target hidden states; 1: the draft's own previous features (the other is zeros)
  const useTarget = !!r.hidden;
  const feeds: Record<string, ort.Tensor> = {
    inputs_embeds: new ort.Tensor('float32', r.embeds, [1, T, D]),
    hidden_states: new ort.Tensor('float32', r.hidden ?? zerosOf(T * L * D), [1, T, L, D]),
    prev_features: new ort.Tensor('float32', r.prev ?? zerosOf(T * D), [1, T, D]),
    feature_select: new ort.Tensor('float32', new Float32Array(T).fill(useTarget ? 0 : 1), [1, T]),
    position_ids: new ort.Tensor('int64', i64(r.positions), [1, T]),
    attention_mask: new ort.Tensor('float32', m, [1, 1, T, P + T]),
    ...pastFeeds(cache),
  };
  const logits = new Float32Array(T * V);
  const features = new Float32Array(T * D);
  await run('draft', feeds, {
    logits: new ort.Tensor('float32', logits, [1, T, V]),
    features: new ort.Tensor('float32', features, [1, T, D]),
    ...presentFetches(cache, T),
  });
  cache.commit(T);
  return { logits, features };
}

async function draftForward(msg: Extract<WorkerMessage, { op: 'draft' }>): Promise<{ logits: Float32Array; features: Float32Array }> {
  const cache = seqOf(msg.seq);
  if (msg.compact) cache.compact(msg.compact.keepFrom, msg.compact.keep);
  return draftRun(cache, msg);
}

/**
 * A greedy draft chain in one request (no round trip per draft step): the committed rows, then
 * steps − 1 draft steps, each on the previous step's top-1 token (its embedding, the parent's
 * features, position rootPos + i; a chain sees all its earlier rows). Token choice and log-prob are
 * those of eagle.ts topK(·, 1): highest logit, ties to the lower id, log-softmax in float64.
 */
async function draftChain(
  msg: Extract<WorkerMessage, { op: 'draft_chain' }>,
): Promise<{ tokens: Int32Array; logprobs: Float64Array; verify?: Verified }> {
  const cache = seqOf(msg.seq);
  if (msg.compact) cache.compact(msg.compact.keepFrom, msg.compact.keep);
  const D = manifest.decoder.hidden;
  const V = manifest.decoder.vocab;
  const n = msg.commit.positions.length;
  let out = await draftRun(cache, msg.commit);
  let row = n - 1;
  const tokens = new Int32Array(msg.steps);
  const logprobs = new Float64Array(msg.steps);
  const top: number[] = [];
  const topLp: number[] = [];
  for (let i = 0; i < msg.steps; i++) {
    top.length = topLp.length = 0;
    topKOf(out.logits.subarray(row * V, (row + 1) * V), 1, top, topLp);
    const best = top[0]!;
    tokens[i] = best;
    logprobs[i] = topLp[0]!;
    if (i === msg.steps - 1) break;
    const embeds = await embedIds(Int32Array.of(best));
    out = await draftRun(cache, { embeds, prev: out.features.slice(row * D, (row + 1) * D), positions: [msg.rootPos + i], mask: ONE });
    row = 0;
  }
  if (!msg.verify) return { tokens, logprobs };
  // verify [root, chain] on the target right away (what the engine's next 'decode' request would be)
  const v = msg.verify;
  const T = msg.steps + 1;
  const ids = new Int32Array(T);
  ids[0] = v.root;
  ids.set(tokens, 1);
  const mask = causalMask(T);
  const positions = Int32Array.from({ length: T }, (_, i) => msg.rootPos + i);
  const r = await decode({ op: 'decode', id: msg.id, seq: v.seq, segments: [{ kind: 'ids', ids }], positions, mask, rows: 'all', compact: v.compact, features: v.features });
  return { tokens, logprobs, verify: { tokens: ids, positions, mask, logits: r.logits, features: r.features } };
}
const ONE = Uint8Array.of(1);

function verifiedBuffers(v: Verified | undefined): ArrayBuffer[] {
  if (!v) return [];
  return [...new Set([v.tokens.buffer, v.positions.buffer, v.mask.buffer, v.logits.buffer, ...(v.features ? [v.features.buffer] : [])])] as ArrayBuffer[];
}

/** eagle.ts topK: the k best tokens by logit (ties to the lower id) with log-softmax (float64) */
function topKOf(lg: Float32Array, k: number, tokens: number[], logprobs: number[]): void {
  let max = -Infinity;
  for (const x of lg) max = Math.max(max, x);
  let z = 0;
  for (const x of lg) z += Math.exp(x - max);
  const lse = max + Math.log(z);
  // insertion into a sorted list of at most k (k ≤ 10): same order as sorting by (−logit, id)
  const best: number[] = [];
  for (let t = 0; t < lg.length; t++) {
    const x = lg[t]!;
    if (best.length === k && !(x > lg[best[k - 1]!]!)) continue;
    let i = best.length;
    while (i > 0 && x > lg[best[i - 1]!]!) i--;
    best.splice(i, 0, t);
    if (best.length > k) best.pop();
  }
  for (const t of best) {
    tokens.push(t);
    logprobs.push(lg[t]! - lse);
  }
}

interface Verified {
  tokens: Int32Array;
  positions: Int32Array;
  mask: Uint8Array;
  logits: Float32Array;
  features?: Float32Array;
}

/**
 * EAGLE-2 dynamic-tree expansion in one request: the committed rows, then per level one draft
 * forward over the frontier (tree.ts buildDynamicTree with eagle.ts EagleDrafter.expand, same
 * order and visibility: a node sees the committed rows and its own ancestors). Returns, per level,
 * the top-k candidates (tokens, log-probs) of every frontier node, frontier order; the engine
 * replays them through buildDynamicTree (ranking and sizing stay there).
 */
async function draftTree(msg: Extract<WorkerMessage, { op: 'draft_tree' }>): Promise<{ tokens: Int32Array; logprobs: Float64Array; frontier: Int32Array; verify?: Verified }> {
  const cache = seqOf(msg.seq);
  if (msg.compact) cache.compact(msg.compact.keepFrom, msg.compact.keep);
  const D = manifest.decoder.hidden;
  const V = manifest.decoder.vocab;
  const k = msg.topK;
  const n = msg.commit.positions.length;
  const root = await draftRun(cache, msg.commit);
  const stable = cache.length;
  interface Cand { token: number; score: number; len: number; feat: Float32Array | null; slots: number[]; parentFeat: Float32Array; parentSlots: number[] }
  const cands: Cand[] = [];
  const outTokens: number[] = [];
  const outLp: number[] = [];
  const frontierSizes: number[] = [];
  // frontier entries: -1 = root
  let frontier: number[] = [-1];
  let rootLogits = root.logits.subarray((n - 1) * V, n * V);
  const rootFeat = root.features.slice((n - 1) * D, n * D);
  for (let level = 0; level < msg.depth && frontier.length > 0; level++) {
    frontierSizes.push(frontier.length);
    let logits: Float32Array;
    if (level === 0) logits = rootLogits;
    else {
      // run the frontier nodes (all new) as draft rows: token embedding, parent features
      const T = frontier.length;
      const base = cache.length;
      const temp = base - stable;
      const prev = new Float32Array(T * D);
      const pastMask = new Uint8Array(T * temp);
      frontier.forEach((f, i) => {
        const c = cands[f]!;
        prev.set(c.parentFeat, i * D);
        for (const sl of c.parentSlots) pastMask[i * temp + (sl - stable)] = 1;
      });
      const local = new Uint8Array(T * T);
      for (let i = 0; i < T; i++) local[i * T + i] = 1;
      const out = await draftRun(cache, {
        embeds: await embedIds(Int32Array.from(frontier, (f) => cands[f]!.token)),
        prev,
        positions: Array.from(frontier, (f) => msg.rootPos + cands[f]!.len - 1),
        mask: local,
        past: { from: stable, mask: pastMask },
      });
      frontier.forEach((f, i) => {
        const c = cands[f]!;
        c.feat = out.features.slice(i * D, (i + 1) * D);
        c.slots = [...c.parentSlots, base + i];
      });
      logits = out.logits;
    }
    const created: number[] = [];
    frontier.forEach((f, fi) => {
      const tk: number[] = [];
      const lp: number[] = [];
      topKOf(logits.subarray(fi * V, (fi + 1) * V), k, tk, lp);
      outTokens.push(...tk);
      outLp.push(...lp);
      const parentScore = f < 0 ? 0 : cands[f]!.score;
      const parentFeat = f < 0 ? rootFeat : cands[f]!.feat!;
      const parentSlots = f < 0 ? [] : cands[f]!.slots;
      const len = f < 0 ? 1 : cands[f]!.len + 1;
      const seen = new Set<number>();
      tk.forEach((t, j) => {
        if (seen.has(t)) return;
        seen.add(t);
        cands.push({ token: t, score: parentScore + Math.min(0, lp[j]!), len, feat: null, slots: [], parentFeat, parentSlots });
        created.push(cands.length - 1);
      });
    });
    frontier = created
      .slice()
      .sort((a, b) => cands[b]!.score - cands[a]!.score || a - b)
      .slice(0, k);
  }
  const rec = { tokens: Int32Array.from(outTokens), logprobs: Float64Array.from(outLp), frontier: Int32Array.from(frontierSizes) };
  if (!msg.verify) return rec;
  // the engine's tree from this expansion (same code: tree.ts, sizing.ts), verified right away
  const v = msg.verify;
  const curve = v.choose ? new CostCurve(v.choose.points) : null;
  const fixed = v.choose?.fixed ?? 0;
  const tree = await buildDynamicTree(v.root, replayExpander(rec, k), { topK: k, depth: msg.depth, budget: v.budget }, curve ? (sc) => chooseTreeSize(curve, sc, fixed) : undefined);
  const positions = treePositions(tree, msg.rootPos);
  const mask = treeMask(tree);
  const r = await decode({ op: 'decode', id: msg.id, seq: v.seq, segments: [{ kind: 'ids', ids: tree.tokens }], positions, mask, rows: 'all', compact: v.compact, features: v.features });
  return { ...rec, verify: { tokens: tree.tokens, positions, mask, logits: r.logits, features: r.features } };
}

async function denoise(msg: Extract<WorkerMessage, { op: 'denoise' }>): Promise<Float32Array> {
  const { latent: L } = manifest;
  const N = (L.height / L.patch) * (L.width / L.patch);
  const C = L.channels * L.patch * L.patch;
  if (msg.latent.length !== N * C) throw new CodedError('INTERNAL', `latent has ${msg.latent.length} values, expected ${N * C}`);
  const B = msg.seqs.length;
  if (B > 1 && !msg.append && msg.batch) {
    const ctx = batchedContexts(msg.seqs, N);
    const lat = new Float32Array(B * N * C);
    for (let b = 0; b < B; b++) lat.set(msg.latent, b * N * C);
    const pos: number[] = [];
    for (let b = 0; b < B; b++) for (let i = 0; i < N; i++) pos.push(msg.positions[b]!);
    const feeds: Record<string, ort.Tensor> = {
      latent_tokens: new ort.Tensor('float32', lat, [B, N, C]),
      timestep: new ort.Tensor('float32', new Float32Array(B).fill(msg.t), [B]),
      position_ids: new ort.Tensor('int64', i64(pos), [B, N]),
      attention_mask: new ort.Tensor('float32', ctx.mask, [B, 1, N, ctx.P + N]),
      ...ctx.past,
    };
    const vel = new Float32Array(B * N * C);
    await run(msg.graph, feeds, { velocity: new ort.Tensor('float32', vel, [B, N, C]) });
    return vel;
  }
  const out = new Float32Array(B * N * C);
  for (let b = 0; b < B; b++) {
    const cache = seqOf(msg.seqs[b]!);
    const P = cache.length;
    const feeds: Record<string, ort.Tensor> = {
      latent_tokens: new ort.Tensor('float32', msg.latent, [1, N, C]),
      timestep: new ort.Tensor('float32', Float32Array.of(msg.t), [1]),
      position_ids: new ort.Tensor('int64', i64(new Array(N).fill(msg.positions[b]!)), [1, N]),
      attention_mask: new ort.Tensor('float32', new Float32Array(N * (P + N)), [1, 1, N, P + N]),
      ...pastFeeds(cache),
    };
    if (msg.graph !== 'denoiser') {
      feeds['cfg_text_scale'] = new ort.Tensor('float32', Float32Array.of(msg.cfgText ?? 1), [1]);
      feeds['cfg_image_scale'] = new ort.Tensor('float32', Float32Array.of(msg.cfgImage ?? 1), [1]);
    }
    const vel = new Float32Array(N * C);
    const fetches: Record<string, ort.Tensor> = { velocity: new ort.Tensor('float32', vel, [1, N, C]) };
    if (msg.append) Object.assign(fetches, presentFetches(cache, N));
    await run(msg.graph, feeds, fetches);
    if (msg.append) {
      cache.commit(N);
      dropBatches(msg.seqs[b]!);
    }
    out.set(vel, b * N * C);
  }
  return out;
}

async function handle(msg: WorkerMessage): Promise<{ result: unknown; transfer?: ArrayBuffer[] }> {
  switch (msg.op) {
    case 'init':
      return { result: await init(msg.files, msg.manifest, msg.tuning) };
    case 'open': {
      if (msg.kind === 'draft' && !manifest.draft) throw new CodedError('INVALID_INPUT', 'this pack has no draft model');
      const { layers, heads, head_dim } = msg.kind === 'draft' ? manifest.draft! : manifest.decoder;
      const pool = kvPool.get(msg.kind ?? 'target');
      const reused = pool?.pop();
      reused?.reset();
      seqs.set(msg.seq, reused ?? new KvCache({ layers, heads, headDim: head_dim }, msg.capacity));
      kvKind.set(msg.seq, msg.kind ?? 'target');
      stats.openSequences = seqs.size;
      return { result: null };
    }
    case 'close': {
      const c = seqs.get(msg.seq);
      const kind = kvKind.get(msg.seq);
      seqs.delete(msg.seq);
      kvKind.delete(msg.seq);
      dropBatches(msg.seq);
      // keep a few closed caches' buffers for the next sequences (one request = one open + close)
      if (c && kind) {
        let pool = kvPool.get(kind);
        if (!pool) kvPool.set(kind, (pool = []));
        if (pool.length < KV_POOL) pool.push(c);
      }
      stats.openSequences = seqs.size;
      return { result: null };
    }
    case 'vision': {
      const S = manifest.vision.image_size;
      const r = await run('vision', { pixels: new ort.Tensor('float32', msg.pixels, [msg.batch, 3, S, S]) });
      const e = (r['image_embeds']!.data as Float32Array).slice();
      return { result: e, transfer: [e.buffer as ArrayBuffer] };
    }
    case 'decode': {
      const r = await decode(msg);
      return { result: r, transfer: [r.logits.buffer as ArrayBuffer, ...(r.features ? [r.features.buffer as ArrayBuffer] : [])] };
    }
    case 'compact':
      seqOf(msg.seq).compact(msg.keepFrom, msg.keep);
      return { result: null };
    case 'draft': {
      const r = await draftForward(msg);
      return { result: r, transfer: [r.logits.buffer as ArrayBuffer, r.features.buffer as ArrayBuffer] };
    }
    case 'draft_chain': {
      const r = await draftChain(msg);
      return { result: r, transfer: [r.tokens.buffer as ArrayBuffer, r.logprobs.buffer as ArrayBuffer, ...verifiedBuffers(r.verify)] };
    }
    case 'draft_tree': {
      const r = await draftTree(msg);
      return { result: r, transfer: [r.tokens.buffer as ArrayBuffer, r.logprobs.buffer as ArrayBuffer, r.frontier.buffer as ArrayBuffer, ...verifiedBuffers(r.verify)] };
    }
    case 'embed_table': {
      const V = manifest.decoder.vocab;
      const t = embedTable ? embedTable.slice() : await embedIds(Int32Array.from({ length: V }, (_, i) => i));
      return { result: t, transfer: [t.buffer as ArrayBuffer] };
    }
    case 'denoise': {
      const v = await denoise(msg);
      return { result: v, transfer: [v.buffer as ArrayBuffer] };
    }
    case 'vae_encode': {
      const G = manifest.latent.image_size;
      const r = await run('vae_encoder', { pixels: new ort.Tensor('float32', msg.pixels, [1, 3, G, G]) });
      const z = (r['latent']!.data as Float32Array).slice();
      return { result: z, transfer: [z.buffer as ArrayBuffer] };
    }
    case 'vae_decode': {
      const { channels, height, width } = manifest.latent;
      const r = await run('vae_decoder', { latent: new ort.Tensor('float32', msg.latent, [1, channels, height, width]) });
      const px = (r['pixels']!.data as Float32Array).slice();
      return { result: px, transfer: [px.buffer as ArrayBuffer] };
    }
    case 'stats': {
      let alloc = 0;
      for (const c of seqs.values()) alloc += c.allocations;
      return { result: { ...stats, byGraph: structuredClone(stats.byGraph), kvAllocations: alloc } };
    }
    case '__crash':
      process.exit(3);
    // falls through (unreachable)
    case '__sleep': {
      const until = Date.now() + msg.ms;
      while (Date.now() < until);
      return { result: null };
    }
  }
}

// Requests are handled strictly one at a time, in the order they were sent (sessions are not re-entrant,
// and a sequence's `open` must run before its first `decode`). After a reply the worker may spin-poll its
// port for up to `spinUs` (SessionTuning.replySpinUs): in a decode loop the next request follows within a
// fraction of a millisecond, and picking it up while still on the CPU skips the thread wake-up, which on a
// busy host costs more than the run. Messages delivered as events while a request ran wait in `queue`, and
// are older than anything still on the port, so the spin only runs when the queue is empty.
const queue: WorkerMessage[] = [];
let serving = false;
let spinUs = 0;

async function serveQueue(): Promise<void> {
  serving = true;
  try {
    for (let msg: WorkerMessage | null = queue.shift() ?? null; msg; msg = queue.shift() ?? spinForNext()) {
      let reply: WorkerReply;
      let transfer: ArrayBuffer[] = [];
      try {
        const t0 = performance.now();
        const r = await handle(msg);
        stats.handleMs += performance.now() - t0;
        if (msg.op === 'init') spinUs = Math.max(0, msg.tuning.replySpinUs ?? 0);
        reply = { id: msg.id, ok: true, result: r.result };
        transfer = r.transfer ?? [];
      } catch (e) {
        const err = e as CodedError;
        const code = err.code ?? 'INTERNAL';
        const message = code === 'INTERNAL' || !err.code ? `${msg.op}: ${err.message ?? String(e)}` : err.message;
        reply = { id: msg.id, ok: false, error: { code, message, details: err.details } };
      }
      try {
        port!.postMessage(reply, transfer);
      } catch (e) {
        // a reply that cannot be sent still answers its request, and the requests behind it are served
        const was = reply.ok ? '' : ` (it was the error ${reply.error.code}: ${reply.error.message})`;
        port!.postMessage({ id: msg.id, ok: false, error: { code: 'INTERNAL', message: `${msg.op}: reply could not be sent: ${(e as Error).message}${was}` } });
      }
    }
  } finally {
    serving = false;
  }
}

function spinForNext(): WorkerMessage | null {
  if (spinUs <= 0) return null;
  const until = performance.now() + spinUs / 1000;
  do {
    const next = receiveMessageOnPort(port as unknown as MessagePort);
    if (next) {
      stats.spinHits++;
      return next.message as WorkerMessage;
    }
  } while (performance.now() < until);
  return null;
}

port.on('message', (msg: WorkerMessage) => {
  queue.push(msg);
  if (!serving) void serveQueue();
});
