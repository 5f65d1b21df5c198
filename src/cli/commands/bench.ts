// `hyperbagel bench <understand|generate|gateway>`: benchmarks that measure ratios within one run.
import { UsageError } from '../args.ts';

const BENCHES: Record<string, { summary: string; load: () => Promise<{ run(argv: string[]): Promise<number> }> }> = {
  understand: { summary: 'plain vs speculative decoding (tokens/s, speedup, tau, lossless)', load: () => import('../../../bench/understand.ts') },
  generate: { summary: 'baseline vs 6-NFE vs 1-NFE generation and editing, end to end', load: () => import('../../../bench/generate.ts') },
  gateway: { summary: 'latency the gateway adds per event, and event-loop lag, at N streams', load: () => import('../../../bench/gateway.ts') },
};

export const HELP = `Usage: hyperbagel bench <${Object.keys(BENCHES).join('|')}> [options] [--json]

${Object.entries(BENCHES).map(([n, b]) => `  ${n.padEnd(10)} ${b.summary}`).join('\n')}
Each prints one JSON object with --json; run "hyperbagel bench NAME --help" for its options.`;

export async function run(argv: string[]): Promise<number> {
  const [name, ...rest] = argv;
  if (!name) throw new UsageError('which benchmark? one of ' + Object.keys(BENCHES).join(', '));
  if (name === '--help' || name === '-h') { console.log(HELP); return 0; }
  const bench = Object.hasOwn(BENCHES, name) ? BENCHES[name] : undefined;
  if (!bench) throw new UsageError(`unknown benchmark "${name}" (one of ${Object.keys(BENCHES).join(', ')})`);
  try {
    return await (await bench.load()).run(rest);
  } catch (e) {
    // its options are on its own help page
    if (e instanceof UsageError) e.help ??= `bench ${name}`;
    throw e;
  }
}
