// A tiny argv parser shared by the subcommands: --flag value, --flag=value, --bool, positionals.

export class UsageError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'UsageError';
  }
}

export interface ParsedArgs {
  flags: Map<string, string[]>;
  positionals: string[];
}

/** `booleans` lists flags that take no value. */
export function parseArgs(argv: string[], known: { values: string[]; booleans?: string[] }): ParsedArgs {
  const flags = new Map<string, string[]>();
  const positionals: string[] = [];
  const booleans = new Set(['help', ...(known.booleans ?? [])]);
  const values = new Set(known.values);
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i]!;
    if (a === '-h') { flags.set('help', ['true']); continue; }
    if (!a.startsWith('--')) { positionals.push(a); continue; }
    const eq = a.indexOf('=');
    const name = a.slice(2, eq < 0 ? undefined : eq);
    if (booleans.has(name)) { flags.set(name, ['true']); continue; }
    if (!values.has(name)) throw new UsageError(`unknown option --${name}`);
    const value = eq >= 0 ? a.slice(eq + 1) : argv[++i];
    if (value === undefined) throw new UsageError(`option --${name} needs a value`);
    flags.set(name, [...(flags.get(name) ?? []), value]);
  }
  return { flags, positionals };
}

export function flag(args: ParsedArgs, name: string): string | undefined {
  return args.flags.get(name)?.at(-1);
}

export function intFlag(args: ParsedArgs, name: string, fallback: number, min = -Infinity, max = Infinity): number {
  const raw = flag(args, name);
  if (raw === undefined) return fallback;
  const n = Number(raw);
  if (!Number.isInteger(n) || n < min || n > max) throw new UsageError(`--${name} must be an integer in [${min}, ${max}], got "${raw}"`);
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
  if (!/^\d+$/.test(raw) || !Number.isInteger(n) || n < 1 || n > 256) throw new UsageError(`--threads must be a positive integer (1 to 256), got "${raw}"`);
  return n;
}
