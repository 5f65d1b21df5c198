// `node bench/decoder-kv-equal.mjs OLD_PACK NEW_PACK`: do two packs' decoder.onnx compute the same keys and
// values? Generation and editing read the prompt and source image only through present.N.*, so a decoder
// retrained with `train_unified.py --train-only readout` must give them bit for bit (its logits may differ).
// Seeded random prefill and decode inputs, one intra-op thread; prints one JSON object.
import fs from 'node:fs';
import * as ort from 'onnxruntime-node';

const [a, b] = process.argv.slice(2);
if (!a || !b) throw new Error('usage: node bench/decoder-kv-equal.mjs OLD_PACK NEW_PACK');
const { hidden: D, layers: L, heads: H, head_dim: Dh } = JSON.parse(fs.readFileSync(`${a}/manifest.json`, 'utf8')).decoder;
const opts = { graphOptimizationLevel: 'all', intraOpNumThreads: 1 };
const [sa, sb] = await Promise.all([a, b].map((p) => ort.InferenceSession.create(`${p}/decoder.onnx`, opts)));
let seed = 1;
const rnd = () => ((seed = (seed * 1103515245 + 12345) % 2147483648) / 2147483648) * 2 - 1;
const maxDiff = (x, y) => x.reduce((m, v, i) => Math.max(m, Math.abs(v - y[i])), 0);
let present = 0, logits = 0;
for (const [T, P] of [[37, 0], [5, 37], [1, 60]]) { // a prefill, a verification block, one decode step
  const S = P + T;
  const feeds = {
    inputs_embeds: new ort.Tensor('float32', Float32Array.from({ length: T * D }, rnd), [1, T, D]),
    position_ids: new ort.Tensor('int64', BigInt64Array.from({ length: T }, (_, i) => BigInt(P + i)), [1, T]),
    attention_mask: new ort.Tensor('float32', Float32Array.from({ length: T * S }, (_, k) => (k % S <= P + Math.floor(k / S) ? 0 : -1e9)), [1, 1, T, S]),
  };
  for (let l = 0; l < L; l++)
    for (const kv of ['key', 'value'])
      feeds[`past_key_values.${l}.${kv}`] = new ort.Tensor('float32', Float32Array.from({ length: H * P * Dh }, rnd), [1, H, P, Dh]);
  const [oa, ob] = [await sa.run(feeds), await sb.run(feeds)];
  for (const k of Object.keys(oa)) {
    const d = maxDiff(oa[k].data, ob[k].data);
    if (k.startsWith('present.')) present = Math.max(present, d);
    else if (k === 'logits') logits = Math.max(logits, d);
  }
}
console.log(JSON.stringify({ present_bitwise_equal: present === 0, present_max_abs_diff: present, logits_max_abs_diff: logits }));
