// The recipes' kind-balanced prompt sampler (train_gen.py --prompt-balance) classifies training prompts with
// regexes written against the world's templates. This checks them against the world itself: every prompt the
// world writes for random scenes must come back as the category it was written for, and every caption as one.
import { spawnSync } from 'node:child_process';
import { describe, expect, it } from 'vitest';
import { PROMPT_CATEGORIES, promptText, promptsForScene, Rng, sampleScene, sceneToCaption } from '../../src/world/index.ts';
import { PYTHON, REPO_ROOT, recipeSmokeEnabled } from '../recipes/helpers.ts';

const enabled = recipeSmokeEnabled('prompt kinds');

function classify(texts: string[]): string[] {
  const code = 'import json,sys; sys.path.insert(0,"models/recipes"); from accel.common import prompt_kind; '
    + 'print(json.dumps([prompt_kind(t) for t in json.load(sys.stdin)]))';
  const p = spawnSync(PYTHON, ['-c', code], { cwd: REPO_ROOT, input: JSON.stringify(texts), encoding: 'utf8', timeout: 60_000 });
  if (p.status !== 0) throw new Error(`prompt_kind failed: ${p.stderr}`);
  return JSON.parse(p.stdout) as string[];
}

describe.skipIf(!enabled)('recipes: prompt kinds (accel.common.prompt_kind) match the world\'s prompt templates', () => {
  it('classifies every category of prompt and every caption the world writes', () => {
    const rng = new Rng(15);
    const texts: string[] = [];
    const want: string[] = [];
    for (let i = 0; i < 400; i++) {
      const scene = sampleScene(rng);
      texts.push(sceneToCaption(scene));
      want.push('caption');
      for (const category of PROMPT_CATEGORIES) {
        for (const spec of promptsForScene(scene, category)) {
          texts.push(promptText(spec));
          want.push(category);
        }
      }
    }
    for (const category of PROMPT_CATEGORIES) expect(want, category).toContain(category);
    const got = classify(texts);
    const wrong = texts.map((t, i) => [t, want[i], got[i]]).filter(([, w, g]) => w !== g);
    expect(wrong).toEqual([]);
  });

  it('calls anything else a caption, not a category', () => {
    expect(classify(['a photo of', 'a photo of three', 'three circles', ''])).toEqual(['caption', 'caption', 'caption', 'caption']);
  });
});
