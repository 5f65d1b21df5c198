// How near each intermediate preview of a 6-NFE request is to its final image: mean absolute difference in
// RGB levels (0-255) per step, over the first N (default 20) text-to-image test prompts at seed 0, as the
// engine streams them. Usage: npx tsx bench/intermediate-previews.ts [PACK] [N] (docs/results.md, session 27)
import { createEngine } from '../src/engine/index.ts';
import { DEFAULT_PACK } from '../src/engine/pack-location.ts';
import { loadT2iSuite } from '../src/eval/suites.ts';
import type { ImageFrame } from '../src/engine/types.ts';

const pack = process.argv[2] ?? DEFAULT_PACK;
const n = Number(process.argv[3] ?? 20);
const e = await createEngine(pack, { calibrate: false, intraOpThreads: 2 });
const mad = (a: Uint8Array, b: Uint8Array) => a.reduce((s, x, i) => s + Math.abs(x - b[i]!), 0) / a.length;
const byStep: number[][] = [];
const mimes = new Set<string>();
for (const item of loadT2iSuite('test').items.slice(0, n)) {
  const frames: ImageFrame[] = [];
  for await (const f of e.generate({ prompt: item.prompt, mode: '6nfe', seed: 0, intermediatePreviews: true })) frames.push(f);
  const final = frames.at(-1)!;
  frames.slice(0, -1).forEach((f, i) => {
    (byStep[i] ??= []).push(mad(f.rgb.data, final.rgb.data));
    mimes.add(f.image.mimeType);
  });
}
const mean = (xs: number[]) => +(xs.reduce((a, b) => a + b, 0) / xs.length).toFixed(2);
console.log(JSON.stringify({ pack, prompts: n, preview_mime: [...mimes], mad_from_final_by_step: byStep.map(mean) }));
await e.close();
