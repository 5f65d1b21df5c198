// `node bench/edit-prefill-calls.mjs [PACK]`: raw onnxruntime-node time of the three graph calls an edit's
// prefill makes (decoder over BOS + ViT tokens, the generation expert over the source latent at t = 0,
// decoder over the instruction after them), next to a short decoder call: what fusing them could save.
// One intra-op thread, zero inputs (the cost does not depend on the values), mean of 200 calls after 20.
import fs from 'node:fs';
import * as ort from 'onnxruntime-node';

const dir = process.argv[2] ?? 'models/shapes-mot';
const m = JSON.parse(fs.readFileSync(`${dir}/manifest.json`, 'utf8'));
const opts = { graphOptimizationLevel: 'all', intraOpNumThreads: 1, interOpNumThreads: 1 };
const decoder = await ort.InferenceSession.create(`${dir}/decoder.onnx`, opts);
const denoiser = await ort.InferenceSession.create(`${dir}/denoiser.onnx`, opts);
const { hidden: D, layers: L, heads: H, head_dim: Dh } = m.decoder;
const { channels: C, height, width, patch } = m.latent;
const N = (height / patch) * (width / patch); // latent tokens
const TD = C * patch * patch; // values per latent token
const PRE = 4 + m.vision.tokens; // [bos, vision_start] + ViT tokens + [vision_end, gen_start]
const POST = 10; // [gen_end] + a short instruction + [gen_start]

const f32 = (n, dims) => new ort.Tensor('float32', new Float32Array(n), dims);
const positions = (n, from) => new ort.Tensor('int64', BigInt64Array.from({ length: n }, (_, i) => BigInt(from + i)), [1, n]);
function past(P) {
  const feeds = {};
  for (let l = 0; l < L; l++) for (const kv of ['key', 'value']) feeds[`past_key_values.${l}.${kv}`] = f32(H * P * Dh, [1, H, P, Dh]);
  return feeds;
}
// P: cached KV rows; pos: the first new token's position (the latent block holds N rows at one position)
const decode = (T, P, pos = P) => decoder.run({ inputs_embeds: f32(T * D, [1, T, D]), position_ids: positions(T, pos), attention_mask: f32(T * (P + T), [1, 1, T, P + T]), ...past(P) });
const denoise = (P) => denoiser.run({
  latent_tokens: f32(N * TD, [1, N, TD]), timestep: f32(1, [1]),
  position_ids: new ort.Tensor('int64', new BigInt64Array(N).fill(BigInt(P)), [1, N]),
  attention_mask: f32(N * (P + N), [1, 1, N, P + N]), ...past(P),
});

async function time(f) {
  for (let i = 0; i < 20; i++) await f();
  const t0 = performance.now();
  for (let i = 0; i < 200; i++) await f();
  return +((performance.now() - t0) / 200).toFixed(3);
}
const out = {
  pack: dir,
  decoder_prefix_ms: await time(() => decode(PRE, 0)),
  generation_expert_t0_ms: await time(() => denoise(PRE)),
  decoder_instruction_ms: await time(() => decode(POST, PRE + N, PRE + 1)),
  decoder_1_token_ms: await time(() => decode(1, 0)),
  decoder_8_tokens_ms: await time(() => decode(8, 0)),
  tokens: { prefix: PRE, latent: N, instruction: POST },
};
console.log(JSON.stringify(out));
