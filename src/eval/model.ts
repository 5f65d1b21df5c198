// The abstract model the evaluation harness scores: anything that can caption, answer, generate and edit.
import type { RgbImage } from '../engine/types.ts';

export interface EvalModel {
  /** a caption of the image (scored by exact match with the canonical caption) */
  caption(image: RgbImage): Promise<string>;
  /** the answer to a question about the image */
  answer(image: RgbImage, question: string): Promise<string>;
  /**
   * the answer to a question asked in the same conversation right after the model captioned the image
   * (the question sent without the image again, as a chat client's second turn); models without
   * conversations leave it out
   */
  followUp?(image: RgbImage, question: string): Promise<string>;
  /** text → image */
  generate(prompt: string, seed: number): Promise<RgbImage>;
  /** text → image plus what the model wrote first in think mode (recorded in --details), when it thinks */
  generateDetailed?(prompt: string, seed: number): Promise<{ image: RgbImage; thought?: string }>;
  /** (image, instruction) → edited image */
  edit(image: RgbImage, instruction: string, seed: number): Promise<RgbImage>;
}
