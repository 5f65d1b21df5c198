// Admission for one request: claim its session (one request at a time per conversation), then a
// limiter slot. Shared by understanding and generation so both free the session the same way.
import type { EngineCtx } from './context.ts';
import { EngineError } from './types.ts';

export interface Admission {
  /** gives the limiter slot back */
  release: () => void;
  /** frees the session for its next request; idempotent, and never frees a session it no longer holds */
  freeSession: () => void;
}

export async function admit(ctx: EngineCtx, conversation: { busy: boolean } | null, signal?: AbortSignal): Promise<Admission> {
  if (conversation?.busy) throw new EngineError('BUSY', 'this session is already answering a request');
  let holding = !!conversation;
  const freeSession = () => {
    if (conversation && holding) conversation.busy = false;
    holding = false;
  };
  if (conversation) conversation.busy = true;
  try {
    return { release: await ctx.limiter.acquire(signal), freeSession };
  } catch (e) {
    freeSession();
    throw e;
  }
}

/**
 * An admission for a part of a request whose caller holds the real one (think mode: the thought, then
 * the drawing, under one admission): the slot stays with the caller, and the session is freed only if
 * freeSession is passed on.
 */
export function heldAdmission(freeSession: () => void = () => {}): Admission {
  return { release: () => {}, freeSession };
}
