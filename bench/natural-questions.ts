// Questions of the understand test suite as people write them ("an orange", "colour"),
// answered by a pack; accuracy against the suite's answers. Usage: npx tsx bench/natural-questions.ts PACK (docs/results.md, session 26)
import { createEngine } from '../src/engine/index.ts';
import { loadUnderstandSuite } from '../src/eval/suites.ts';
import { renderScene } from '../src/world/render.ts';
const pack = process.argv[2]!;
const natural = (q: string) => q.replace(/\ba (orange)\b/g, 'an $1').replace(/\bcolor\b/g, 'colour');
const e = await createEngine(pack, { calibrate: false, intraOpThreads: 1 });
let n = 0, ok = 0, okAsWritten = 0, refused = 0;
for (const it of loadUnderstandSuite('test').items) {
  const image = renderScene(it.scene);
  for (const q of it.questions) {
    const nq = natural(q.question);
    if (nq === q.question) continue;
    n++;
    const answer = async (prompt: string) => {
      let text = '';
      for await (const ev of e.understand({ prompt, image, temperature: 0, maxTokens: 8 })) if (ev.kind === 'chunk') text += ev.text;
      return text.trim();
    };
    if ((await answer(q.question)) === q.answer) okAsWritten++;
    try { if ((await answer(nq)) === q.answer) ok++; } catch (err) { refused++; }
  }
}
console.log(JSON.stringify({ pack, rewritten_questions: n, accuracy_as_trained: okAsWritten / n, accuracy_natural: ok / n, refused }));
await e.close();
