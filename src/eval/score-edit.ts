// Editing scoring, GEdit-style, on detected scenes. Objects compare as whole tuples
// (shape, colour, size, cell). With S the source scene, E the expected edited scene and D the scene
// detected in the model's output:
//   instruction  1 if D contains every object of E∖S (what the edit creates), none of S∖E (what it
//                destroys; for a removal, nothing of the removed object's colour and shape at any size or
//                cell), and, for a background edit, D's background is E's; else 0.
//   preserved    of the things the edit must leave alone (the objects of S∩E, plus the background
//                unless the edit is a background change), the fraction D still shows exactly, with
//                every extra object in D (not in E, or a second copy of one) counted as one more failed item.
//   quality      cleanColorFraction(image): share of pixels that are clean palette colour/blends.
//   overall      per case the geometric mean ∛(instruction·preserved·quality), averaged over cases —
//                so returning the source unchanged (preserved 1, quality 1, instruction 0) scores 0.
import type { RgbImage } from '../engine/types.ts';
import type { EditKind } from '../world/edits.ts';
import type { Scene, SceneObject } from '../world/scene.ts';
import { detectScene } from './detector.ts';
import { cleanColorFraction } from './quality.ts';

const key = (o: SceneObject) => `${o.size} ${o.color} ${o.shape} @ ${o.cell}`;

export interface EditJudgement { kind: EditKind; instruction: number; preserved: number; quality: number; overall: number; detected: Scene }

export function judgeEdit(kind: EditKind, source: Scene, expected: Scene, image: RgbImage): EditJudgement {
  const detected = detectScene(image);
  const { instruction, preserved } = judgeEditScenes(kind, source, expected, detected);
  const quality = cleanColorFraction(image);
  return { kind, instruction, preserved, quality, overall: Math.cbrt(instruction * preserved * quality), detected };
}

/** The scene-level part of the judgement (instruction and preserved), exposed for tests. */
export function judgeEditScenes(kind: EditKind, source: Scene, expected: Scene, detected: Scene): { instruction: number; preserved: number } {
  const S = new Set(source.objects.map(key));
  const E = new Set(expected.objects.map(key));
  // the detected scene as a multiset: an object drawn twice is there twice (a copy is one extra)
  const inD = new Map<string, number>();
  for (const o of detected.objects) inD.set(key(o), (inD.get(key(o)) ?? 0) + 1);
  const has = (k: string) => (inD.get(k) ?? 0) > 0;
  const created = [...E].filter((k) => !S.has(k));
  const destroyed = [...S].filter((k) => !E.has(k));
  const kept = [...S].filter((k) => E.has(k));
  // a removed object is referred to by colour and shape (unique in a scene): it is gone only if nothing of
  // that colour and shape is left, whatever its size or cell (a resized or moved target is not removed)
  const gone = (o: SceneObject) => !detected.objects.some((d) => d.color === o.color && d.shape === o.shape);
  const removedOk = kind !== 'remove' || source.objects.filter((o) => !E.has(key(o))).every(gone);
  const instruction = created.every(has) && destroyed.every((k) => !has(k)) && removedOk && (kind !== 'background' || detected.background === expected.background) ? 1 : 0;
  let items = kept.length, ok = kept.filter(has).length;
  if (kind !== 'background') { items++; if (detected.background === source.background) ok++; }
  let extras = 0;
  for (const [k, n] of inD) extras += Math.max(0, n - (E.has(k) ? 1 : 0));
  const preserved = items + extras === 0 ? 1 : ok / (items + extras);
  return { instruction, preserved };
}

export interface EditScores {
  overall: number;
  categories: { instruction: number; preserved: number; quality: number };
  by_kind: Partial<Record<EditKind, { instruction: number; preserved: number; quality: number; overall: number; count: number }>>;
  count: number;
}

const mean = (xs: number[]) => (xs.length ? xs.reduce((a, b) => a + b, 0) / xs.length : 0);

export function aggregateEdits(js: EditJudgement[]): EditScores {
  const by_kind: EditScores['by_kind'] = {};
  for (const kind of [...new Set(js.map((j) => j.kind))]) {
    const k = js.filter((j) => j.kind === kind);
    by_kind[kind] = { instruction: mean(k.map((j) => j.instruction)), preserved: mean(k.map((j) => j.preserved)), quality: mean(k.map((j) => j.quality)), overall: mean(k.map((j) => j.overall)), count: k.length };
  }
  return {
    overall: mean(js.map((j) => j.overall)),
    categories: { instruction: mean(js.map((j) => j.instruction)), preserved: mean(js.map((j) => j.preserved)), quality: mean(js.map((j) => j.quality)) },
    by_kind,
    count: js.length,
  };
}
