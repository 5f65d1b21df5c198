// Numeric flag values and engine range errors reworded to name the flag a command line user gave.
import { EngineError } from '../engine/types.ts';

/** A decimal number: "1", "-0.5", ".5", "2e-3"; not "", "0x10", "Infinity" or " 1". */
const DECIMAL = /^[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?$/;

/**
 * A numeric flag, checked before any model loads: a finite decimal number; with `integer`, a safe
 * integer (|n| < 2^53) written without a fraction. Ranges that depend on the pack are the engine's.
 */
export function numberFlag(raw: string | undefined, name: string, opts: { integer?: boolean; min?: number } = {}): number | undefined {
  if (raw === undefined) return undefined;
  const shown = raw.length > 40 ? `${raw.slice(0, 40)}…` : raw;
  const n = DECIMAL.test(raw) ? Number(raw) : NaN;
  if (!Number.isFinite(n)) throw new EngineError('OUT_OF_RANGE', `--${name} must be a number, got "${shown}"`, { param: name });
  // integers in decimal digits, as every other integer flag reads them ("1.0" and "1e3" are refused there too)
  if (opts.integer && !/^[+-]?\d+$/.test(raw)) throw new EngineError('OUT_OF_RANGE', `--${name} must be an integer in decimal digits, got "${shown}"`, { param: name });
  if (opts.integer && !Number.isSafeInteger(n))
    throw new EngineError('OUT_OF_RANGE', `--${name} must be an integer of at most ${Number.MAX_SAFE_INTEGER}, got "${shown}"`, { param: name });
  if (opts.min !== undefined && n < opts.min) throw new EngineError('OUT_OF_RANGE', `--${name} must be at least ${opts.min}, got "${shown}"`, { param: name, min: opts.min });
  return n;
}

/**
 * The engine names a request's fields (topP, speculation.chainLength); a command line user gave
 * flags. An engine range error on a field a flag sets is reworded to name the flag.
 */
export function withFlagNames(e: unknown, flags: Readonly<Record<string, string>>): unknown {
  if (!(e instanceof EngineError) || e.code !== 'OUT_OF_RANGE') return e;
  const param = e.details?.['param'];
  const f = typeof param === 'string' ? flags[param] : undefined;
  if (!f || !e.message.startsWith(param as string)) return e;
  return new EngineError(e.code, `--${f}${e.message.slice((param as string).length)}`, { ...e.details, param: f });
}

