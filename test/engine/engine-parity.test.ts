// The engine's own decoder plumbing (layout → worker → KV cache → decode) against the PyTorch
// parity references shipped with the fixture pack.
import fs from 'node:fs';
import path from 'node:path';
import { afterAll, beforeAll, expect, test } from 'vitest';
import { layout, type Part } from '../../src/engine/context.ts';
import { createEngine, type LocalEngine } from '../../src/engine/index.ts';
import { WorkerSequence } from '../../src/engine/understand/worker-target.ts';
import { FIXTURE } from './fixture-helpers.ts';

interface T {
  dims: number[];
  data: number[];
}
const load = (f: string) => JSON.parse(fs.readFileSync(path.join(FIXTURE, 'parity', f), 'utf8')) as { inputs: Record<string, T>; outputs: Record<string, T> };

let engine: LocalEngine;
beforeAll(async () => {
  engine = await createEngine(FIXTURE, { calibrate: false, intraOpThreads: 1 });
});
afterAll(async () => {
  await engine?.close();
});

function maxDiff(a: ArrayLike<number>, b: ArrayLike<number>): number {
  expect(a.length).toBe(b.length);
  let m = 0;
  for (let i = 0; i < a.length; i++) m = Math.max(m, Math.abs(a[i]! - b[i]!));
  return m;
}

test('prefill (with an image block) and cached decode reproduce PyTorch through the engine path', async () => {
  const pre = load('decoder_prefill.json');
  const dec = load('decoder_decode.json');
  const D = 32;
  // rebuild the prefill as engine parts: tokens sharing a position id form one image block
  const pos = pre.inputs['position_ids']!.data;
  const emb = Float32Array.from(pre.inputs['inputs_embeds']!.data);
  const parts: Part[] = [];
  for (let i = 0; i < pos.length; ) {
    let j = i + 1;
    while (j < pos.length && pos[j] === pos[i]) j++;
    parts.push({ kind: 'image', embeds: emb.slice(i * D, j * D), count: j - i });
    i = j;
  }
  const lay = layout(parts, 0);
  expect(Array.from(lay.positions)).toEqual(pos);
  const T = pos.length;
  const additive = pre.inputs['attention_mask']!.data;
  expect(Array.from(lay.mask)).toEqual(additive.map((x) => (x === 0 ? 1 : 0)).slice(0, T * T));
  const seq = await WorkerSequence.open(engine.workerClient, 81);
  const logits = await seq.extend(lay.segments, lay.positions, lay.mask, 'all');
  expect(maxDiff(logits, pre.outputs['logits']!.data)).toBeLessThan(1e-4);
  // decode two tokens on top of the cached prefill (causal between them)
  const dpos = dec.inputs['position_ids']!.data;
  const dmask = dec.inputs['attention_mask']!.data; // [1,1,2,8]
  const local = new Uint8Array(4);
  for (let i = 0; i < 2; i++) for (let j = 0; j < 2; j++) local[i * 2 + j] = dmask[i * 8 + 6 + j] === 0 ? 1 : 0;
  const dl = await seq.extend([{ kind: 'embeds', data: Float32Array.from(dec.inputs['inputs_embeds']!.data), count: 2 }], Int32Array.from(dpos), local, 'all');
  expect(maxDiff(dl, dec.outputs['logits']!.data)).toBeLessThan(1e-4);
  await seq.close();
});
