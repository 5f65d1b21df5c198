// The `hyperbagel` command line: one entry, one module per subcommand, each with --help.
import { CliError, UsageError } from './args.ts';
import { describeFsError, isFsError } from './output-path.ts';
import { WorldError } from '../world/errors.ts';
import { EngineError } from '../engine/types.ts';
import { closeAllWorkers } from '../runtime/client.ts';
import { packageVersion } from '../version.ts';

interface Command {
  summary: string;
  /** `precheck`: the command's own checks of its arguments, run without loading anything (optional) */
  load: () => Promise<{ run(argv: string[]): Promise<number>; precheck?(argv: string[]): void }>;
}

const COMMANDS: Record<string, Command> = {
  render: { summary: 'render a Shapes-world caption to a PNG', load: () => import('./commands/render.ts') },
  dataset: { summary: 'export training shards for the Python recipes', load: () => import('./commands/dataset.ts') },
  detect: { summary: 'recover the scene in an image with the analytic detector', load: () => import('./commands/detect.ts') },
  eval: { summary: 'the independent evaluator: detector accuracy, model scores on the fixed suites', load: () => import('./commands/eval.ts') },
  serve: { summary: 'serve the GraphQL gateway (default pack models/shapes-mot, or $HYPERBAGEL_PACK)', load: () => import('./commands/serve.ts') },
  understand: { summary: 'answer a prompt about an image, streaming the text', load: () => import('./commands/understand.ts') },
  generate: { summary: 'generate an image from a prompt', load: () => import('./commands/generate.ts') },
  edit: { summary: 'edit an image with an instruction', load: () => import('./commands/edit.ts') },
  bench: { summary: 'benchmarks: understand, generate, gateway', load: () => import('./commands/bench.ts') },
};

/** Registers a subcommand; lets modules owned by other layers plug into the one CLI. */
export function registerCommand(name: string, cmd: Command): void {
  COMMANDS[name] = cmd;
}

/**
 * The longest single argument, and the most characters (UTF-8 bytes) all arguments together may
 * have. onnxruntime-node (1.30) crashes the process with a segmentation fault while creating a
 * session when the process's argv is large (from about 14 kB), so over-long command lines are
 * refused before any model loads. Prompts have their own, smaller limit (the gateway's).
 */
export const MAX_ARG_CHARS = 8192;
export const MAX_ARGV_BYTES = 12_288;

function usage(): string {
  const width = Math.max(...Object.keys(COMMANDS).map((n) => n.length));
  return [
    'Usage: hyperbagel <command> [options]   (hyperbagel <command> --help for details)',
    '',
    'Commands:',
    ...Object.entries(COMMANDS).map(([name, c]) => `  ${name.padEnd(width)}  ${c.summary}`),
    '',
    'hyperbagel --version prints the version.',
  ].join('\n');
}

/** package.json's version. */
export const version = packageVersion;

/** Why the command line is refused before anything runs, or undefined when it is fine. */
export function argvProblem(argv: readonly string[]): string | undefined {
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i]!;
    if (a.length <= MAX_ARG_CHARS) continue;
    const prev = argv[i - 1];
    const what = /^--[\w-]+=/.test(a) ? `the value of ${a.slice(0, a.indexOf('='))}`
      : a.startsWith('-') ? 'an option'
      : prev?.startsWith('--') && !prev.includes('=') ? `the argument after ${prev.slice(0, 40)}`
      : 'an argument';
    return `${what} ("${a.slice(0, 24)}…") is ${a.length} characters long; the limit is ${MAX_ARG_CHARS} characters per argument`;
  }
  const bytes = argv.reduce((n, a) => n + Buffer.byteLength(a, 'utf8') + 1, 0);
  if (bytes > MAX_ARGV_BYTES) return `the arguments are ${bytes} bytes long together; the limit is ${MAX_ARGV_BYTES} bytes`;
  return undefined;
}

/** At most this many characters of one word of an error message are printed. */
const MAX_SHOWN_WORD = 200;
const MAX_SHOWN_MESSAGE = 2000;
const LONG_WORD = new RegExp(`\\S{${MAX_SHOWN_WORD + 1},}`, 'g');

/**
 * An error message as printed: one line, words longer than MAX_SHOWN_WORD shortened (an unknown
 * word of thousands of characters is named, not repeated), the whole at most MAX_SHOWN_MESSAGE.
 */
export function shownMessage(message: string): string {
  let m = message.replace(/\s*\n\s*/g, ' ').replace(LONG_WORD, (w) => `${w.slice(0, MAX_SHOWN_WORD / 2)}…(${w.length} characters)`);
  if (m.length > MAX_SHOWN_MESSAGE) m = `${m.slice(0, MAX_SHOWN_MESSAGE)}… (${m.length - MAX_SHOWN_MESSAGE} more characters)`;
  return m;
}

let pipesHandled = false;
let outputFailed = false;
/**
 * A reader that closes early (`hyperbagel … | head`) makes writes fail with EPIPE: exit quietly then,
 * as a command killed by SIGPIPE would (status 141), rather than crash with an unhandled 'error'.
 * Any other write failure (`> /dev/full`) is one line on stderr and status 1.
 * The model workers are stopped first: exiting inside a native onnxruntime run aborts the process.
 */
function handleClosedPipes(): void {
  if (pipesHandled) return;
  pipesHandled = true;
  for (const stream of [process.stdout, process.stderr]) {
    stream.on('error', (err: NodeJS.ErrnoException) => {
      const closed = err.code === 'EPIPE' || err.code === 'ERR_STREAM_DESTROYED';
      if (outputFailed) return;
      outputFailed = true;
      // any other failure to write (a full disk, an I/O error): one line on stderr when stdout failed
      // (when stderr itself failed, nothing can be shown: the status says it)
      const status = closed ? 141 : 1;
      if (!closed && stream === process.stdout) process.stderr.write(`hyperbagel: cannot write the output to stdout: ${shownMessage(err.message)}\n`);
      process.exitCode = status;
      // nothing more can be shown, and the command's errors from its closed engine are moot
      for (const s of [process.stdout, process.stderr]) s.write = (() => true) as typeof s.write;
      void closeAllWorkers().finally(() => process.exit(status));
    });
  }
}

/** The process's entry (bin/hyperbagel.js): runCli, with closed pipes handled. */
export async function main(argv: string[]): Promise<number> {
  handleClosedPipes();
  const code = await runCli(argv);
  return outputFailed ? (process.exitCode as number) : code;
}

/** Runs one command line; returns the exit status (usage error 2, typed error 1). */
export async function runCli(argv: string[]): Promise<number> {
  const [name, ...rest] = argv;
  if (!name) {
    console.error(usage());
    return 1;
  }
  if (name === '--help' || name === '-h' || name === 'help') {
    console.log(usage());
    return 0;
  }
  if (name === '--version' || name === '-V' || name === 'version') {
    console.log(version());
    return 0;
  }
  // own properties only: `constructor` or `toString` are unknown commands, not Object.prototype's
  const cmd = Object.hasOwn(COMMANDS, name) ? COMMANDS[name] : undefined;
  if (!cmd) {
    console.error(`hyperbagel: unknown command "${shownMessage(name)}"\n\n${usage()}`);
    return 2;
  }
  try {
    const mod = await cmd.load();
    const problem = argvProblem(argv);
    if (problem) {
      // the command's own checks first (a prompt over its limit is PROMPT_TOO_LONG), then the general guard
      mod.precheck?.(rest);
      throw new CliError('ARGUMENT_TOO_LONG', problem);
    }
    return await mod.run(rest);
  } catch (err) {
    if (err instanceof UsageError) {
      console.error(`hyperbagel ${name}: ${shownMessage(err.message)} (see hyperbagel ${err.help ?? name} --help)`);
      return 2;
    }
    if (err instanceof WorldError || err instanceof EngineError || err instanceof CliError) {
      console.error(`hyperbagel ${name}: error ${err.code}: ${shownMessage(err.message)}`);
      return 1;
    }
    if (isFsError(err)) {
      console.error(`hyperbagel ${name}: error FILESYSTEM: ${shownMessage(describeFsError(err))}`);
      return 1;
    }
    throw err;
  }
}
