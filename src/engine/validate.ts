// Parameter validation → EngineError('OUT_OF_RANGE' | 'INVALID_INPUT') with the parameter named.
import { EngineError } from './types.ts';

export function num(name: string, v: unknown, lo: number, hi: number, opts: { integer?: boolean; loExclusive?: boolean } = {}): number {
  if (typeof v !== 'number' || !Number.isFinite(v)) throw new EngineError('OUT_OF_RANGE', `${name} must be a number, got ${typeof v === 'number' ? v : JSON.stringify(v)}`, { param: name });
  if (opts.integer && !Number.isInteger(v)) throw new EngineError('OUT_OF_RANGE', `${name} must be an integer, got ${v}`, { param: name });
  if ((opts.loExclusive ? v <= lo : v < lo) || v > hi)
    throw new EngineError('OUT_OF_RANGE', `${name} must be in ${opts.loExclusive ? '(' : '['}${lo}, ${hi}], got ${v}`, { param: name, min: lo, max: hi });
  return v;
}

export function opt<T>(v: T | undefined | null, f: (v: T) => T, dflt: T): T {
  return v === undefined || v === null ? dflt : f(v);
}

export function prompt(v: unknown, name = 'prompt'): string {
  if (typeof v !== 'string') throw new EngineError('INVALID_INPUT', `${name} must be a string`, { param: name });
  if (!v.trim()) throw new EngineError('INVALID_INPUT', `${name} is empty`, { param: name });
  return v;
}
