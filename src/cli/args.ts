// A tiny argv parser shared by the subcommands: --flag value, --flag=value, --bool, positionals,
// and `--` (everything after it is a positional, as POSIX utilities do).

export class UsageError extends Error {
  /** the command whose --help explains the mistake, when it is not the top-level one (`bench understand`) */
  help?: string;
  constructor(message: string) {
    super(message);
    this.name = 'UsageError';
  }
}

/**
 * A typed CLI failure that is not a usage mistake (an output path that cannot be written, an
 * over-long argument): main prints `error CODE: message` and exits 1, like WorldError / EngineError.
 */
export class CliError extends Error {
  constructor(
    readonly code: string,
    message: string,
  ) {
    super(message);
    this.name = 'CliError';
  }
}

export interface ParsedArgs {
  flags: Map<string, string[]>;
  positionals: string[];
}

/** A negative number given as a word (e.g. a prompt "-3 degrees"), not an option. */
const NEGATIVE_NUMBER = /^-(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?$/;

/** At most this many characters of an option name are echoed back in an error. */
const SHOWN_NAME = 40;
const shown = (s: string) => (s.length > SHOWN_NAME ? `${s.slice(0, SHOWN_NAME)}…` : s);

/**
 * `booleans` lists flags that take no value; `repeatable`, the value flags that may be given more than once
 * (each value kept). Any other value flag given twice is refused: `--split train --split val` took the last.
 */
export function parseArgs(argv: string[], known: { values: string[]; booleans?: string[]; repeatable?: string[] }): ParsedArgs {
  const flags = new Map<string, string[]>();
  const positionals: string[] = [];
  const booleans = new Set(['help', ...(known.booleans ?? [])]);
  const values = new Set(known.values);
  const repeatable = new Set(known.repeatable ?? []);
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i]!;
    if (a === '--') {
      positionals.push(...argv.slice(i + 1));
      break;
    }
    if (a === '-h') { flags.set('help', ['true']); continue; }
    if (!a.startsWith('-') || a === '-' || NEGATIVE_NUMBER.test(a)) { positionals.push(a); continue; }
    if (!a.startsWith('--')) throw new UsageError(`unknown option ${shown(a)}`);
    const eq = a.indexOf('=');
    const name = a.slice(2, eq < 0 ? undefined : eq);
    if (booleans.has(name)) {
      if (eq >= 0) throw new UsageError(`option --${name} takes no value (give --${name} alone, or leave it out)`);
      flags.set(name, ['true']);
      continue;
    }
    if (!values.has(name)) throw new UsageError(`unknown option --${shown(name)}`);
    const value = eq >= 0 ? a.slice(eq + 1) : argv[++i];
    if (value === undefined) throw new UsageError(`option --${name} needs a value`);
    // an unset shell variable (--image "$IMG") must not quietly mean "no image" or "the current folder"
    if (value === '') throw new UsageError(`option --${name} needs a value, got an empty one`);
    if (flags.has(name) && !repeatable.has(name)) throw new UsageError(`option --${name} is given more than once; give it once`);
    flags.set(name, [...(flags.get(name) ?? []), value]);
  }
  return { flags, positionals };
}

export function flag(args: ParsedArgs, name: string): string | undefined {
  return args.flags.get(name)?.at(-1);
}

/** Decimal integers only: no "", "0x10", "1e3", " 7" or "7.0". */
const INTEGER = /^[+-]?\d+$/;

/** An integer flag: decimal digits, a safe integer (|n| < 2^53), in [min, max]. */
export function intFlag(args: ParsedArgs, name: string, fallback: number, min = -Number.MAX_SAFE_INTEGER, max = Number.MAX_SAFE_INTEGER): number {
  const raw = flag(args, name);
  if (raw === undefined) return fallback;
  const lo = Math.max(min, -Number.MAX_SAFE_INTEGER);
  const hi = Math.min(max, Number.MAX_SAFE_INTEGER);
  const n = INTEGER.test(raw) ? Number(raw) : NaN;
  if (!Number.isSafeInteger(n) || n < lo || n > hi) throw new UsageError(`--${name} must be an integer in [${lo}, ${hi}], got "${shown(raw)}"`);
  return n;
}

/**
 * --threads N (onnxruntime intra-op threads; serve, understand, generate, edit): a positive integer
 * (at most 256), or undefined when not given.
 */
export function threadsFlag(args: ParsedArgs): number | undefined {
  const raw = flag(args, 'threads');
  if (raw === undefined) return undefined;
  const n = Number(raw);
  if (!/^\d+$/.test(raw) || !Number.isInteger(n) || n < 1 || n > 256) throw new UsageError(`--threads must be a positive integer (1 to 256), got "${shown(raw)}"`);
  return n;
}

/** Refuses a flag given with a command or mode it does not apply to: `--NAME applies to WHERE only`. */
export function refuseFlags(args: ParsedArgs, names: readonly string[], where: string): void {
  for (const n of names) if (args.flags.has(n)) throw new UsageError(`--${n} applies to ${where} only`);
}
