// Pack loading: read and validate manifest.json (errors name the file and the field), check that
// every listed graph file exists. Graph I/O names are checked against the real sessions in the worker.
import fs from 'node:fs';
import path from 'node:path';
import { EngineError } from '../engine/types.ts';

export interface TensorSpec {
  dtype: string;
  shape: Array<string | number>;
}
export interface GraphSpec {
  file: string;
  inputs: Record<string, TensorSpec>;
  outputs: Record<string, TensorSpec>;
}

export type GraphName =
  | 'vision'
  | 'embed'
  | 'decoder'
  | 'denoiser'
  | 'vae_encoder'
  | 'vae_decoder'
  | 'draft'
  | 'denoise_6nfe'
  | 'denoise_1nfe';

export interface Manifest {
  format: string;
  name: string;
  description: string;
  tokenizer: string;
  special_tokens: {
    pad: number;
    bos: number;
    eos: number;
    unk: number;
    im_start: number;
    im_end: number;
    vision_start: number;
    vision_end: number;
    gen_start: number;
    gen_end: number;
  };
  decoder: { layers: number; heads: number; head_dim: number; hidden: number; vocab: number; max_positions: number };
  /**
   * `understand_offset` [dx, dy]: understanding reads each image moved by this many pixels (right and down when
   * positive, edge pixels replicated) before the vision encoder; edits read it as given. For an encoder that reads
   * images slightly off the grid the world draws on more reliably than on it (chosen on a validation suite).
   */
  vision: { image_size: number; tokens: number; understand_offset?: [number, number] };
  latent: { image_size: number; channels: number; height: number; width: number; patch: number; scale: number; resize?: string };
  preview: { latent_rgb_factors: number[][]; latent_rgb_bias: number[] };
  sampler_defaults: {
    steps: number;
    shift: number;
    cfg_text_scale: number;
    cfg_image_scale: number;
    cfg_interval: [number, number];
    cfg_renorm_min: number;
    cfg_renorm_type: 'global' | 'channel' | 'text_channel';
  };
  graphs: Partial<Record<GraphName, GraphSpec>>;
  /**
   * Prompts the model was trained with. `think`: the model expands a short text-to-image prompt into a
   * full scene description in a text-only turn (`<bos> prompt <|im_start|> description <eos>`).
   */
  prompts?: {
    caption?: string;
    think?: boolean;
    /**
     * The words every prompt the model learned to expand began with (the default model: "a photo of", as
     * GenEval writes them). A think prompt without them is framed with them: without, the turn reads as a
     * text-only question ("a red circle" → "no circle at the left ...").
     */
    think_prefix?: string;
    /**
     * What a session's later understanding turn reads: `conversation` (the default) the whole conversation
     * so far; `image` only the session's image, as a first question (a model trained on one question per
     * image reads a transcript of earlier turns poorly; the default model answers 0.11 of such second turns).
     */
    session_context?: 'conversation' | 'image';
  };
  /** retrieval datastore for speculative decoding (file name in the pack; docs/model-pack.md) */
  retrieval?: string;
  /**
   * Vocabulary words no training text used: their embeddings learned nothing, so a prompt holding one is
   * refused (UNKNOWN_WORDS) rather than answered from noise. Each must be in the tokenizer's vocabulary.
   */
  untrained_words?: string[];
  /** EAGLE-style draft (with graphs.draft): its own KV cache shape (docs/model-pack.md "Draft rows") */
  draft?: { layers: number; heads: number; head_dim: number; hidden?: number; chain_steps?: number };
  /** distilled samplers: timestep grids, default and trained guidance scales */
  distilled?: Partial<
    Record<
      'denoise_6nfe' | 'denoise_1nfe',
      { timesteps?: number[]; cfg_text_scale?: number; cfg_image_scale?: number; cfg_text_range?: [number, number]; cfg_image_range?: [number, number] }
    >
  >;
}

export interface LoadedPack {
  dir: string;
  manifest: Manifest;
  /** absolute paths of the graphs present */
  files: Partial<Record<GraphName, string>>;
  tokenizerJson: unknown;
  /** the validated retrieval datastore, when the manifest lists one */
  retrieval?: RetrievalData;
}

/**
 * Retrieval datastore (`retrieval.json`, format hyperbagel-retrieval/1): for context n-grams of 1..max_n
 * token ids, the tokens that followed them in the training answers, with counts (most frequent first).
 */
export interface RetrievalData {
  format: 'hyperbagel-retrieval/1';
  vocab: number;
  max_n: number;
  /** [context ids, [[next id, count], ...]] */
  entries: Array<[number[], Array<[number, number]>]>;
  source?: unknown;
}

const REQUIRED_GRAPHS: GraphName[] = ['embed', 'decoder'];
const KNOWN_GRAPHS: GraphName[] = ['vision', 'embed', 'decoder', 'denoiser', 'vae_encoder', 'vae_decoder', 'draft', 'denoise_6nfe', 'denoise_1nfe'];

function fail(file: string, msg: string, field?: string): never {
  throw new EngineError('MODEL_LOAD_FAILED', `${file}${field ? ` (field "${field}")` : ''}: ${msg}`, { file, field });
}

function need(obj: unknown, field: string, kind: 'number' | 'string' | 'object' | 'array', file: string): unknown {
  const parts = field.split('.');
  let cur: unknown = obj;
  for (const p of parts) {
    if (cur === null || typeof cur !== 'object' || !(p in (cur as Record<string, unknown>))) fail(file, 'missing field', field);
    cur = (cur as Record<string, unknown>)[p];
  }
  const ok =
    kind === 'array' ? Array.isArray(cur) : kind === 'object' ? cur !== null && typeof cur === 'object' && !Array.isArray(cur) : typeof cur === kind;
  if (!ok || (kind === 'number' && !Number.isFinite(cur as number))) fail(file, `expected ${kind}, got ${JSON.stringify(cur)}`, field);
  return cur;
}

function positiveInt(obj: unknown, field: string, file: string): number {
  const v = need(obj, field, 'number', file) as number;
  if (!(Number.isInteger(v) && v > 0)) fail(file, `expected a positive integer, got ${v}`, field);
  return v;
}

/** A file the manifest names must be a plain relative path inside the pack's folder. */
function packFile(name: string, field: string, file: string): void {
  if (!name || path.isAbsolute(name) || path.normalize(name).split(/[\\/]/).includes('..'))
    fail(file, `expected a file inside the pack's folder, got ${JSON.stringify(name)}`, field);
}

export function validateManifest(m: unknown, file = 'manifest.json'): Manifest {
  if (need(m, 'format', 'string', file) !== 'hyperbagel-pack/1') fail(file, `unsupported format ${JSON.stringify((m as Manifest).format)}`, 'format');
  need(m, 'name', 'string', file);
  need(m, 'tokenizer', 'string', file);
  for (const k of ['layers', 'heads', 'head_dim', 'hidden', 'vocab', 'max_positions']) positiveInt(m, `decoder.${k}`, file);
  const vocab = (m as Manifest).decoder.vocab;
  for (const k of ['pad', 'bos', 'eos', 'unk', 'im_start', 'im_end', 'vision_start', 'vision_end', 'gen_start', 'gen_end']) {
    const v = need(m, `special_tokens.${k}`, 'number', file);
    // an id outside the vocabulary would never be produced (an EOS the model cannot emit never stops it)
    if (!isId(v, vocab)) fail(file, `expected a token id in [0, ${vocab}), got ${v}`, `special_tokens.${k}`);
  }
  need(m, 'graphs', 'object', file);
  const mm = m as Manifest;
  for (const g of REQUIRED_GRAPHS) if (!mm.graphs[g]) fail(file, `graph "${g}" is required`, `graphs.${g}`);
  for (const [g, spec] of Object.entries(mm.graphs)) {
    if (!KNOWN_GRAPHS.includes(g as GraphName)) continue;
    packFile(need(m, `graphs.${g}.file`, 'string', file) as string, `graphs.${g}.file`, file);
    need(m, `graphs.${g}.inputs`, 'object', file);
    need(m, `graphs.${g}.outputs`, 'object', file);
    for (const [io, specs] of [['inputs', spec.inputs], ['outputs', spec.outputs]] as const) {
      for (const [name, t] of Object.entries(specs)) {
        const f = `graphs.${g}.${io}.${name}`;
        need(m, `graphs.${g}.${io}`, 'object', file);
        if (!t || typeof t !== 'object' || typeof t.dtype !== 'string' || !Array.isArray(t.shape))
          fail(file, 'expected {dtype, shape}', f);
      }
    }
  }
  const g = mm.graphs;
  packFile(mm.tokenizer, 'tokenizer', file);
  if (g.draft) for (const k of ['layers', 'heads', 'head_dim']) positiveInt(m, `draft.${k}`, file);
  for (const k of ['denoise_6nfe', 'denoise_1nfe'] as const) {
    const dk = mm.distilled?.[k];
    const ts = dk?.timesteps;
    if (ts !== undefined && (!Array.isArray(ts) || ts.length < 2 || !ts.every((t, i) => typeof t === 'number' && t >= 0 && t <= 1 && (i === 0 || t < ts[i - 1]!))))
      fail(file, 'expected ≥ 2 decreasing timesteps in [0, 1]', `distilled.${k}.timesteps`);
    // a graph's default guidance scales are used whenever a request gives none: they must be ones it was trained on
    for (const [scale, range] of [['cfg_text_scale', 'cfg_text_range'], ['cfg_image_scale', 'cfg_image_range']] as const) {
      // a range the requests may ask within: no scale below 1 passes the gateway's and the engine's checks
      const r0 = dk?.[range] as unknown;
      if (r0 !== undefined && (!Array.isArray(r0) || r0.length !== 2 || !r0.every((x) => typeof x === 'number' && Number.isFinite(x)) || r0[0] < 1 || r0[0] > r0[1]))
        fail(file, `expected [lo, hi] with 1 ≤ lo ≤ hi (a scale of 1 is guidance off), got ${JSON.stringify(r0)}`, `distilled.${k}.${range}`);
      const v = dk?.[scale];
      if (v === undefined) continue;
      const r = dk?.[range];
      if (typeof v !== 'number' || !Number.isFinite(v) || v < 1 || (Array.isArray(r) && (v < r[0] || v > r[1])))
        fail(file, `expected a number${Array.isArray(r) ? ` in [${r[0]}, ${r[1]}] (${range})` : ' ≥ 1'}, got ${JSON.stringify(v)}`, `distilled.${k}.${scale}`);
    }
  }
  if (mm.prompts !== undefined) {
    const pr = mm.prompts as Record<string, unknown> | null;
    if (!pr || typeof pr !== 'object' || Array.isArray(pr)) fail(file, `expected an object, got ${JSON.stringify(mm.prompts)}`, 'prompts');
    if (pr.caption !== undefined && typeof pr.caption !== 'string') fail(file, `expected a string, got ${JSON.stringify(pr.caption)}`, 'prompts.caption');
    if (pr.think !== undefined && typeof pr.think !== 'boolean') fail(file, `expected a boolean, got ${JSON.stringify(pr.think)}`, 'prompts.think');
    if (pr.think_prefix !== undefined && (typeof pr.think_prefix !== 'string' || !pr.think_prefix.trim()))
      fail(file, `expected a non-empty string, got ${JSON.stringify(pr.think_prefix)}`, 'prompts.think_prefix');
    if (pr.session_context !== undefined && pr.session_context !== 'conversation' && pr.session_context !== 'image')
      fail(file, `expected "conversation" or "image", got ${JSON.stringify(pr.session_context)}`, 'prompts.session_context');
  }
  if (mm.retrieval !== undefined) {
    if (typeof mm.retrieval !== 'string' || !mm.retrieval) fail(file, `expected a file name, got ${JSON.stringify(mm.retrieval)}`, 'retrieval');
    packFile(mm.retrieval, 'retrieval', file);
  }
  // the world's image size: what every image is read at, and what generated images are shown at
  positiveInt(m, 'vision.image_size', file);
  if (g.vision) positiveInt(m, 'vision.tokens', file);
  checkDims(mm, file);
  const untrained = (m as { untrained_words?: unknown }).untrained_words;
  if (untrained !== undefined && (!Array.isArray(untrained) || !untrained.every((w) => typeof w === 'string' && w.length > 0)))
    fail(file, `expected a list of words, got ${JSON.stringify(untrained)}`, 'untrained_words');
  const off = (mm.vision as { understand_offset?: unknown } | undefined)?.understand_offset;
  if (off !== undefined) {
    // at most an eighth of the image: a larger move pushes objects off the frame, not off the grid
    const most = Math.floor((mm.vision?.image_size ?? 0) / 8);
    if (!Array.isArray(off) || off.length !== 2 || !off.every((v) => Number.isInteger(v) && Math.abs(v) <= most))
      fail(file, `expected [dx, dy], two integers in [-${most}, ${most}] (an eighth of vision.image_size), got ${JSON.stringify(off)}`, 'vision.understand_offset');
  }
  if (g.denoiser || g.vae_decoder || g.vae_encoder) {
    for (const k of ['image_size', 'channels', 'height', 'width', 'patch']) positiveInt(m, `latent.${k}`, file);
    need(m, 'latent.scale', 'number', file);
    // the defaults every request without its own values runs on: a sampler they would break is a broken pack
    positiveInt(m, 'sampler_defaults.steps', file);
    for (const k of ['shift', 'cfg_text_scale', 'cfg_image_scale', 'cfg_renorm_min']) {
      const v = need(m, `sampler_defaults.${k}`, 'number', file) as number;
      // a guidance scale of 1 is guidance off; below 1 the sampler would run it as 1 (and requests may not ask for it)
      const [ok, what] = k === 'shift' ? [v > 0, 'a positive number'] : k === 'cfg_renorm_min' ? [v >= 0, 'a non-negative number'] : [v >= 1, 'a number ≥ 1 (1 = no guidance)'];
      if (!ok) fail(file, `expected ${what}, got ${v}`, `sampler_defaults.${k}`);
    }
    const iv = need(m, 'sampler_defaults.cfg_interval', 'array', file) as unknown[];
    if (iv.length !== 2 || !iv.every((x) => typeof x === 'number')) fail(file, 'expected [lo, hi]', 'sampler_defaults.cfg_interval');
    const rt = need(m, 'sampler_defaults.cfg_renorm_type', 'string', file);
    if (!['global', 'channel', 'text_channel'].includes(rt as string)) fail(file, `unknown renorm type ${rt}`, 'sampler_defaults.cfg_renorm_type');
    const f = need(m, 'preview.latent_rgb_factors', 'array', file) as unknown[];
    if (f.length !== mm.latent.channels || !f.every((r) => Array.isArray(r) && r.length === 3))
      fail(file, `expected ${mm.latent.channels} rows of 3 numbers`, 'preview.latent_rgb_factors');
    need(m, 'preview.latent_rgb_bias', 'array', file);
  }
  return mm;
}

/**
 * The model sizes the engine builds tensors from (decoder.*, vision.*) against the graph specs' fixed
 * dimensions: a disagreement would load and then fail every request. The worker checks the specs
 * against the graphs themselves.
 */
function checkDims(mm: Manifest, file: string): void {
  const dim = (g: GraphName, io: 'inputs' | 'outputs', name: string, i: number) => {
    const d = mm.graphs[g]?.[io]?.[name]?.shape?.[i];
    return typeof d === 'number' ? d : undefined;
  };
  const expect = (field: string, want: number, g: GraphName, io: 'inputs' | 'outputs', name: string, i: number) => {
    const d = dim(g, io, name, i);
    if (d !== undefined && d !== want)
      fail(file, `${want} disagrees with graphs.${g}.${io}.${name}, whose dimension ${i} is ${d}`, field);
  };
  const dec = mm.decoder;
  expect('decoder.hidden', dec.hidden, 'decoder', 'inputs', 'inputs_embeds', 2);
  expect('decoder.hidden', dec.hidden, 'embed', 'outputs', 'inputs_embeds', 2);
  expect('decoder.vocab', dec.vocab, 'decoder', 'outputs', 'logits', 2);
  expect('decoder.heads', dec.heads, 'decoder', 'inputs', 'past_key_values.0.key', 1);
  expect('decoder.head_dim', dec.head_dim, 'decoder', 'inputs', 'past_key_values.0.key', 3);
  const layers = Object.keys(mm.graphs.decoder?.inputs ?? {}).filter((n) => /^past_key_values\.\d+\.key$/.test(n)).length;
  if (layers && layers !== dec.layers) fail(file, `${dec.layers} disagrees with graphs.decoder.inputs, which has ${layers} layers of past keys`, 'decoder.layers');
  if (mm.graphs.vision && mm.vision) {
    expect('vision.image_size', mm.vision.image_size, 'vision', 'inputs', 'pixels', 2);
    expect('vision.image_size', mm.vision.image_size, 'vision', 'inputs', 'pixels', 3);
    expect('vision.tokens', mm.vision.tokens, 'vision', 'outputs', 'image_embeds', 1);
    expect('decoder.hidden', dec.hidden, 'vision', 'outputs', 'image_embeds', 2);
  }
}

export function loadPack(dir: string): LoadedPack {
  const mf = path.join(dir, 'manifest.json');
  let raw: string;
  try {
    raw = fs.readFileSync(mf, 'utf8');
  } catch (e) {
    fail(mf, `cannot read: ${(e as Error).message}`);
  }
  let json: unknown;
  try {
    json = JSON.parse(raw);
  } catch (e) {
    fail(mf, `invalid JSON: ${(e as Error).message}`);
  }
  const manifest = validateManifest(json, mf);
  const files: Partial<Record<GraphName, string>> = {};
  for (const [g, spec] of Object.entries(manifest.graphs) as Array<[GraphName, GraphSpec]>) {
    if (!KNOWN_GRAPHS.includes(g)) continue;
    const p = path.join(dir, spec.file);
    let st: fs.Stats;
    try {
      st = fs.statSync(p);
    } catch {
      fail(p, `model file for graph "${g}" is missing`, `graphs.${g}.file`);
    }
    if (!st.isFile() || st.size === 0) fail(p, `model file for graph "${g}" is empty or not a file`, `graphs.${g}.file`);
    files[g] = p;
  }
  const tp = path.join(dir, manifest.tokenizer);
  let tokenizerJson: unknown;
  try {
    tokenizerJson = JSON.parse(fs.readFileSync(tp, 'utf8'));
  } catch (e) {
    fail(tp, `cannot load tokenizer: ${(e as Error).message}`, 'tokenizer');
  }
  const vocab = (tokenizerJson as { model?: { vocab?: Record<string, number> } } | null)?.model?.vocab;
  for (const w of manifest.untrained_words ?? [])
    if (!vocab || typeof vocab !== 'object' || !Object.hasOwn(vocab, w))
      fail(path.join(dir, 'manifest.json'), `untrained word ${JSON.stringify(w)} is not in the tokenizer's vocabulary`, 'untrained_words');
  const pack: LoadedPack = { dir, manifest, files, tokenizerJson };
  if (manifest.retrieval !== undefined) pack.retrieval = loadRetrieval(path.join(dir, manifest.retrieval), manifest.decoder.vocab);
  return pack;
}

const isId = (x: unknown, vocab: number) => Number.isInteger(x) && (x as number) >= 0 && (x as number) < vocab;

/** Validate a retrieval datastore (errors name the file and the field or entry). */
export function validateRetrieval(d: unknown, vocab: number, file = 'retrieval.json'): RetrievalData {
  if (need(d, 'format', 'string', file) !== 'hyperbagel-retrieval/1') fail(file, `unsupported format ${JSON.stringify((d as RetrievalData).format)}`, 'format');
  const v = need(d, 'vocab', 'number', file);
  if (v !== vocab) fail(file, `datastore vocabulary ${v} does not match the decoder's ${vocab}`, 'vocab');
  const maxN = need(d, 'max_n', 'number', file) as number;
  if (!(Number.isInteger(maxN) && maxN >= 1 && maxN <= 64)) fail(file, `expected an integer in [1, 64], got ${maxN}`, 'max_n');
  const entries = need(d, 'entries', 'array', file) as unknown[];
  entries.forEach((e, i) => {
    const f = `entries[${i}]`;
    if (!Array.isArray(e) || e.length !== 2) fail(file, 'expected [context ids, [[next id, count], ...]]', f);
    const [c, nx] = e as [unknown, unknown];
    if (!Array.isArray(c) || c.length < 1 || c.length > maxN || !c.every((x) => isId(x, vocab)))
      fail(file, `context must be 1..${maxN} token ids below ${vocab}, got ${JSON.stringify(c)}`, f);
    if (!Array.isArray(nx) || nx.length < 1 || !nx.every((p) => Array.isArray(p) && p.length === 2 && isId(p[0], vocab) && Number.isInteger(p[1]) && p[1] > 0))
      fail(file, `continuations must be [[token id below ${vocab}, positive count], ...], got ${JSON.stringify(nx).slice(0, 80)}`, f);
  });
  return d as RetrievalData;
}

/** Read and validate the pack's retrieval datastore. */
export function loadRetrieval(p: string, vocab: number): RetrievalData {
  let json: unknown;
  try {
    json = JSON.parse(fs.readFileSync(p, 'utf8'));
  } catch (e) {
    fail(p, `cannot load retrieval datastore: ${(e as Error).message}`, 'retrieval');
  }
  return validateRetrieval(json, vocab, p);
}
