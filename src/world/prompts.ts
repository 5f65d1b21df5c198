// Text-to-image prompts: GenEval-style categories, each with a checkable specification.
import type { Rng } from './rng.ts';
import { holdsRelation, type Scene, type SceneObject } from './scene.ts';
import { sceneToCaption } from './caption.ts';
import { NUMBER_WORDS, PLURAL, RELATIONS, type ObjectColor, type Relation, type Shape } from './vocabulary.ts';

export const PROMPT_CATEGORIES = ['single_object', 'two_objects', 'counting', 'colors', 'position', 'color_attr'] as const;
export type PromptCategory = (typeof PROMPT_CATEGORIES)[number];

/** What a generated image must show for the prompt to count as satisfied. */
export type PromptSpec =
  | { category: 'single_object'; shape: Shape }
  | { category: 'two_objects'; shapes: [Shape, Shape] }
  | { category: 'counting'; shape: Shape; count: number }
  | { category: 'colors'; shape: Shape; color: ObjectColor }
  | { category: 'position'; a: Shape; relation: Relation; b: Shape }
  | { category: 'color_attr'; a: { shape: Shape; color: ObjectColor }; b: { shape: Shape; color: ObjectColor } };

export interface Prompt {
  text: string;
  spec: PromptSpec;
}

const article = (w: string) => (/^[aeiou]/.test(w) ? 'an' : 'a');

export function promptText(spec: PromptSpec): string {
  switch (spec.category) {
    case 'single_object': return `a photo of ${article(spec.shape)} ${spec.shape}`;
    case 'two_objects': return `a photo of ${article(spec.shapes[0])} ${spec.shapes[0]} and ${article(spec.shapes[1])} ${spec.shapes[1]}`;
    case 'counting': return `a photo of ${NUMBER_WORDS[spec.count]} ${PLURAL[spec.shape]}`;
    case 'colors': return `a photo of a ${spec.color} ${spec.shape}`;
    case 'position': return `a photo of ${article(spec.a)} ${spec.a} ${spec.relation} ${article(spec.b)} ${spec.b}`;
    case 'color_attr': return `a photo of a ${spec.a.color} ${spec.a.shape} and a ${spec.b.color} ${spec.b.shape}`;
  }
}

const countShape = (scene: Scene, shape: Shape) => scene.objects.filter((o) => o.shape === shape).length;

/** Is the prompt satisfied by the scene (e.g. a detected one)? GenEval's rules, on the Shapes world. */
export function satisfies(spec: PromptSpec, scene: Scene): boolean {
  const has = (p: (o: SceneObject) => boolean) => scene.objects.some(p);
  switch (spec.category) {
    case 'single_object': return has((o) => o.shape === spec.shape);
    case 'two_objects':
      return spec.shapes[0] === spec.shapes[1] ? countShape(scene, spec.shapes[0]) >= 2 : has((o) => o.shape === spec.shapes[0]) && has((o) => o.shape === spec.shapes[1]);
    case 'counting': return countShape(scene, spec.shape) === spec.count;
    case 'colors': return has((o) => o.shape === spec.shape && o.color === spec.color);
    case 'position':
      return scene.objects.some((a) => a.shape === spec.a && scene.objects.some((b) => b !== a && b.shape === spec.b && holdsRelation(a, spec.relation, b)));
    case 'color_attr':
      return has((o) => o.shape === spec.a.shape && o.color === spec.a.color) && has((o) => o.shape === spec.b.shape && o.color === spec.b.color);
  }
}

/** Prompts of `category` that are true of `scene` (empty if the scene cannot illustrate that category). */
export function promptsForScene(scene: Scene, category: PromptCategory): PromptSpec[] {
  const objs = scene.objects;
  const specs: PromptSpec[] = [];
  switch (category) {
    case 'single_object':
      if (objs.length === 1) specs.push({ category, shape: objs[0]!.shape });
      break;
    case 'colors':
      if (objs.length === 1) specs.push({ category, shape: objs[0]!.shape, color: objs[0]!.color });
      break;
    case 'counting': {
      const shape = objs[0]!.shape;
      if (objs.every((o) => o.shape === shape) && objs.length >= 2) specs.push({ category, shape, count: objs.length });
      break;
    }
    case 'two_objects':
      if (objs.length === 2) specs.push({ category, shapes: [objs[0]!.shape, objs[1]!.shape] });
      break;
    case 'color_attr':
      if (objs.length === 2 && objs[0]!.shape !== objs[1]!.shape)
        specs.push({ category, a: { shape: objs[0]!.shape, color: objs[0]!.color }, b: { shape: objs[1]!.shape, color: objs[1]!.color } });
      break;
    case 'position':
      if (objs.length === 2 && objs[0]!.shape !== objs[1]!.shape)
        for (const relation of RELATIONS) if (holdsRelation(objs[0]!, relation, objs[1]!)) specs.push({ category, a: objs[0]!.shape, relation, b: objs[1]!.shape });
      break;
  }
  return specs;
}

/** Every prompt text a scene can be described with: the canonical caption plus GenEval-style paraphrases. */
export function paraphrases(scene: Scene, rng: Rng, max = 3): string[] {
  const all = PROMPT_CATEGORIES.flatMap((c) => promptsForScene(scene, c)).map(promptText);
  return [sceneToCaption(scene), ...rng.shuffle(all).slice(0, max)];
}
