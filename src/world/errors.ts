// Typed errors for the world's language and images; `code` is stable, `message` names the problem.

export type WorldErrorCode = 'UNKNOWN_WORDS' | 'PARSE_ERROR' | 'INVALID_SCENE' | 'INVALID_EDIT' | 'BAD_IMAGE' | 'BAD_NPY';

export class WorldError extends Error {
  constructor(
    readonly code: WorldErrorCode,
    message: string,
    readonly details?: Record<string, unknown>,
  ) {
    super(message);
    this.name = 'WorldError';
  }
}
