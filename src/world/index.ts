// The Shapes world: scenes, language, renderer and dataset export.
export * from './vocabulary.ts';
export * from './errors.ts';
export * from './rng.ts';
export * from './scene.ts';
export * from './splits.ts';
export * from './sampler.ts';
export * from './caption.ts';
export * from './prompts.ts';
export * from './questions.ts';
export * from './edits.ts';
export * from './render.ts';
export * from './npy.ts';
export * from './dataset.ts';
