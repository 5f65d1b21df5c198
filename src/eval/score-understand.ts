// Understanding scoring: caption exact match and VQA accuracy, both after normalizeText (lower case,
// punctuation dropped, whitespace collapsed) on prediction and reference alike.
import { normalizeText } from '../world/vocabulary.ts';

export const captionExact = (predicted: string, reference: string): boolean => normalizeText(predicted) === normalizeText(reference);
export const answerCorrect = (predicted: string, reference: string): boolean => normalizeText(predicted) === normalizeText(reference);
