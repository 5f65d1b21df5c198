// The `hyperbagel` command line: one entry, one module per subcommand, each with --help.
import { UsageError } from './args.ts';
import { WorldError } from '../world/errors.ts';
import { EngineError } from '../engine/types.ts';

interface Command {
  summary: string;
  load: () => Promise<{ run(argv: string[]): Promise<number> }>;
}

const COMMANDS: Record<string, Command> = {
  render: { summary: 'render a Shapes-world caption to a PNG', load: () => import('./commands/render.ts') },
  dataset: { summary: 'export training shards for the Python recipes', load: () => import('./commands/dataset.ts') },
  detect: { summary: 'recover the scene in an image with the analytic detector', load: () => import('./commands/detect.ts') },
  eval: { summary: 'the independent evaluator: detector accuracy, model scores on the fixed suites', load: () => import('./commands/eval.ts') },
  serve: { summary: 'serve the GraphQL gateway (default pack models/shapes-mot)', load: () => import('./commands/serve.ts') },
  understand: { summary: 'answer a prompt about an image, streaming the text', load: () => import('./commands/understand.ts') },
  generate: { summary: 'generate an image from a prompt', load: () => import('./commands/generate.ts') },
  edit: { summary: 'edit an image with an instruction', load: () => import('./commands/edit.ts') },
  bench: { summary: 'benchmarks: understand, generate, gateway', load: () => import('./commands/bench.ts') },
};

/** Registers a subcommand; lets modules owned by other layers plug into the one CLI. */
export function registerCommand(name: string, cmd: Command): void {
  COMMANDS[name] = cmd;
}

function usage(): string {
  const width = Math.max(...Object.keys(COMMANDS).map((n) => n.length));
  return [
    'Usage: hyperbagel <command> [options]   (hyperbagel <command> --help for details)',
    '',
    'Commands:',
    ...Object.entries(COMMANDS).map(([name, c]) => `  ${name.padEnd(width)}  ${c.summary}`),
  ].join('\n');
}

export async function main(argv: string[]): Promise<number> {
  const [name, ...rest] = argv;
  if (!name || name === '--help' || name === '-h' || name === 'help') {
    console.log(usage());
    return name ? 0 : 1;
  }
  const cmd = COMMANDS[name];
  if (!cmd) {
    console.error(`hyperbagel: unknown command "${name}"\n\n${usage()}`);
    return 2;
  }
  try {
    const mod = await cmd.load();
    return await mod.run(rest);
  } catch (err) {
    if (err instanceof UsageError) {
      console.error(`hyperbagel ${name}: ${err.message} (see hyperbagel ${name} --help)`);
      return 2;
    }
    if (err instanceof WorldError || err instanceof EngineError) {
      console.error(`hyperbagel ${name}: error ${err.code}: ${err.message}`);
      return 1;
    }
    throw err;
  }
}
