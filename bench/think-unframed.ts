// Think mode on prompts written without the GenEval frame ("a red circle" for "a photo of a red circle"):
// the share of thoughts that are a scene description (parse as a caption) and satisfy the prompt, over the
// text-to-image test prompts with "a photo of " removed, one seed each. Usage:
// npx tsx bench/think-unframed.ts [PACK] (docs/results.md, session 27; a pack whose manifest has no
// prompts.think_prefix shows the engine before it framed such prompts)
import { createEngine } from '../src/engine/index.ts';
import { DEFAULT_PACK } from '../src/engine/pack-location.ts';
import { loadT2iSuite } from '../src/eval/suites.ts';
import { parseCaption } from '../src/world/caption.ts';
import { satisfies } from '../src/world/prompts.ts';

const pack = process.argv[2] ?? DEFAULT_PACK;
const e = await createEngine(pack, { calibrate: false, intraOpThreads: 2 });
let n = 0, scenes = 0, satisfied = 0;
for (const item of loadT2iSuite('test').items) {
  const prompt = item.prompt.replace(/^a photo of /, '');
  let thought = '';
  for await (const f of e.generate({ prompt, mode: '1nfe', seed: item.seed, think: true })) thought = f.thought ?? thought;
  n++;
  try {
    const scene = parseCaption(thought);
    scenes++;
    if (satisfies(item.spec, scene)) satisfied++;
  } catch {
    // not a scene description
  }
}
console.log(JSON.stringify({ pack, prompts: n, thoughts_are_scenes: +(scenes / n).toFixed(3), thoughts_satisfy_prompt: +(satisfied / n).toFixed(3) }));
await e.close();
