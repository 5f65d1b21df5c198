// `hyperbagel bench understand [--json]`: plain vs chain vs tree speculative decoding, measured in one
// run on one pack (default models/shapes-mot; falls back to the fixture pack if it is not built).
// Greedy, so the outputs of every mode must be identical (`lossless`).
import { flag, intFlag, parseArgs, UsageError } from '../src/cli/args.ts';
import { DEFAULT_PACK, FIXTURE_PACK, resolvePack } from '../src/engine/pack-location.ts';
import { createEngine } from '../src/engine/index.ts';
import { chooseShape, CostCurve } from '../src/engine/speculative/sizing.ts';
import { EngineError, type SpeculationMode, type UnderstandRequest, type UnderstandSummary } from '../src/engine/types.ts';
import { renderScene } from '../src/world/index.ts';
import { captionPrompt } from '../src/eval/engine-model.ts';
import { loadUnderstandSuite } from '../src/eval/suites.ts';
import { benchSessionFollowups } from './session-followup.ts';
import { compareUnderstandViaGateway } from './understand-gateway.ts';
import fs from 'node:fs';
import path from 'node:path';

export const HELP = `Usage: hyperbagel bench understand [--json] [--pack DIR] [--max-tokens N] [--rounds R] [--threads N]

Times greedy answers over a fixed prompt set (10 test-suite images: caption + 2 questions each) with speculation off, chain, tree and auto (interleaved
per prompt; auto on an engine of its own, so its choices learn only from its own requests), and prints plain_tps, chain_tps, tree_tps, auto_tps, speedup (best speculative ÷ plain),
tau (mean accepted length of the best mode) and lossless (all modes gave identical answers);
speedup_ceiling (plain's time over its time to first token: the speedup if every later token were free);
by_kind (caption vs questions: tau, tokens/s, tokens per request, plain's ceiling); time_split_ms per mode;
"gateway": each request once straight to the engine and once through the GraphQL gateway over
graphql-ws (image as base64 PNG), interleaved: time to first token and total both ways, the
gateway's overhead (median per-request difference) and whether the text was the same;
"session_followup": each image captioned in a session, then its questions asked there without the image
against the same questions with their image (medians of time to first token, total and prompt tokens).`;

// The prompt set: the first BENCH_IMAGES scenes of the committed understanding test suite, each with
// the pack's caption prompt (long answers, 8–30 tokens) and its first two questions (short answers),
// i.e. what the evaluator asks, so tau and speedup describe the answers the model is scored on.
const BENCH_IMAGES = 10;
const QUESTIONS_PER_IMAGE = 2;

interface ModeStats {
  /** where the time of this mode's requests went (ms, summed): see time_split_ms */
  split: { decoder: number; draft: number; otherGraphs: number; workerJs: number; outsideWorker: number; requests: number };
  tokens: number;
  ms: number;
  decodeTokens: number;
  decodeMs: number;
  /** wall ms up to each request's first token (prefill + first step): what speculation cannot shorten */
  firstTokenMs: number;
  drafts: number;
  accepted: number;
  outputs: string[];
}

export async function run(argv: string[]): Promise<number> {
  const args = parseArgs(argv, { values: ['pack', 'max-tokens', 'rounds', 'threads'], booleans: ['json'] });
  if (args.flags.has('help')) {
    console.log(HELP);
    return 0;
  }
  if (args.positionals.length) throw new UsageError(`unexpected argument "${args.positionals[0]}"`);
  const packFlag = flag(args, 'pack') ?? (fs.existsSync(path.join(DEFAULT_PACK, 'manifest.json')) ? undefined : FIXTURE_PACK);
  // the flags first: a usage mistake is one whatever the pack
  const maxTokens = intFlag(args, 'max-tokens', 64, 1, 1024);
  const rounds = intFlag(args, 'rounds', 3, 1, 50);
  const threads = intFlag(args, 'threads', 2, 1, 64);
  const pack = resolvePack(packFlag);
  const engine = await createEngine(pack, { intraOpThreads: threads, calibrate: true, maxConcurrent: 1 });
  // auto on an engine of its own: its choices learn from its own acceptance statistics only, as on a
  // server whose clients all send AUTO (sharing an engine, it learned from the chain and tree runs too).
  // The engines take turns, never run at once.
  let autoEngine: Awaited<ReturnType<typeof createEngine>>;
  try {
    autoEngine = await createEngine(pack, { intraOpThreads: threads, calibrate: true, maxConcurrent: 1 });
  } catch (e) {
    await engine.close();
    throw e;
  }
  const engineFor = (mode: SpeculationMode) => (mode === 'auto' ? autoEngine : engine);
  const modes: SpeculationMode[] = ['off', 'chain', 'tree', 'auto'];
  const stats: Record<string, ModeStats> = Object.fromEntries(modes.map((m) => [m, { split: { decoder: 0, draft: 0, otherGraphs: 0, workerJs: 0, outsideWorker: 0, requests: 0 }, tokens: 0, ms: 0, decodeTokens: 0, decodeMs: 0, firstTokenMs: 0, drafts: 0, accepted: 0, outputs: [] }]));
  let lossless = true;
  const proposers: Record<string, Set<string>> = { chain: new Set(), tree: new Set(), auto: new Set() };
  const size = engine.info.imageSize.width;
  const items = loadUnderstandSuite('test').items.slice(0, BENCH_IMAGES);
  try {
    const requests: UnderstandRequest[] = [];
    // caption or vqa, per request (for tau by prompt type)
    const kinds: Array<'caption' | 'vqa'> = [];
    const byKind: Record<string, Record<string, { drafts: number; accepted: number; tokens: number; ms: number; firstMs: number }>> = {};
    for (const it of items) {
      const image = renderScene(it.scene, size);
      for (const [k, prompt] of [captionPrompt(pack), ...it.questions.slice(0, QUESTIONS_PER_IMAGE).map((q) => q.question)].entries()) {
        const r: UnderstandRequest = { prompt, image, maxTokens, temperature: 0 };
        try {
          for await (const _ of engine.understand({ ...r, maxTokens: 1, speculation: { mode: 'off' } }));
          requests.push(r);
          kinds.push(k === 0 ? 'caption' : 'vqa');
        } catch (e) {
          // a pack trained on another vocabulary: skip what it cannot read
          if (!(e instanceof EngineError && e.code === 'UNKNOWN_WORDS')) throw e;
        }
      }
    }
    for (let round = 0; round < rounds; round++) {
      for (const [i, r] of requests.entries()) {
        const out: Record<string, string> = {};
        // rotate the order so no mode always runs first (warm caches, JIT)
        const order = modes.map((_, k) => modes[(k + i + round) % modes.length]!);
        for (const mode of order) {
          let summary: UnderstandSummary | null = null;
          const ids: number[] = [];
          let firstStepTokens: number | undefined; // the first chunk's: time to first token covers them
          const eng = engineFor(mode);
          const w0 = await eng.workerStats();
          const t0 = performance.now();
          for await (const ev of eng.understand({ ...r, speculation: { mode } })) {
            if (ev.kind === 'chunk') {
              ids.push(...ev.tokenIds);
              // (a chunk of several steps folds textless ones into it: then only the first step is in the first token's time)
              if (firstStepTokens === undefined && ev.tokenIds.length) firstStepTokens = (ev.steps ?? 1) === 1 ? ev.tokenIds.length : 1;
            } else {
              summary = ev;
              ids.push(...(ev.trailing?.tokenIds ?? [])); // textless steps after the last chunk
            }
          }
          const ms = performance.now() - t0;
          const w1 = await eng.workerStats();
          const s = summary!;
          if (round > 0 || rounds === 1) {
            const st = stats[mode]!;
            st.tokens += s.usage.completionTokens;
            st.ms += ms;
            // tokens after the first step (drafts verified in the prefill forward come with the first token)
            st.decodeTokens += Math.max(0, s.usage.completionTokens - (firstStepTokens ?? 1));
            const decodeMs = s.timings.totalMs - s.timings.timeToFirstTokenMs;
            const firstMs = Math.max(0, ms - decodeMs); // the request's wall time up to its first token
            st.decodeMs += decodeMs;
            st.firstTokenMs += firstMs;
            st.drafts += s.speculation.drafts;
            st.accepted += s.speculation.acceptedTokens;
            const bk = ((byKind[kinds[i]!] ??= {})[mode] ??= { drafts: 0, accepted: 0, tokens: 0, ms: 0, firstMs: 0 });
            bk.drafts += s.speculation.drafts;
            bk.accepted += s.speculation.acceptedTokens;
            bk.tokens += s.usage.completionTokens;
            bk.ms += ms;
            bk.firstMs += firstMs;
            const g = (w: typeof w0, k: string) => w.byGraph[k]?.ms ?? 0;
            const run = w1.runMs - w0.runMs;
            const handle = w1.handleMs - w0.handleMs;
            st.split.decoder += g(w1, 'decoder') - g(w0, 'decoder');
            st.split.draft += g(w1, 'draft') - g(w0, 'draft');
            st.split.otherGraphs += run - (g(w1, 'decoder') - g(w0, 'decoder')) - (g(w1, 'draft') - g(w0, 'draft'));
            st.split.workerJs += handle - run;
            st.split.outsideWorker += ms - handle;
            st.split.requests++;
          }
          if (mode !== 'off' && s.speculation.proposer) proposers[mode]!.add(s.speculation.proposer);
          out[mode] = ids.join(' ');
          if (round === 0) stats[mode]!.outputs[i] = out[mode]!;
        }
        if (new Set(Object.values(out)).size !== 1) lossless = false;
      }
    }
    const tps = (m: string) => (stats[m]!.tokens * 1000) / stats[m]!.ms;
    const dtps = (m: string) => (stats[m]!.decodeMs > 0 ? (stats[m]!.decodeTokens * 1000) / stats[m]!.decodeMs : 0);
    const tau = (m: string) => (stats[m]!.drafts ? 1 + stats[m]!.accepted / stats[m]!.drafts : 1);
    const best = ['chain', 'tree', 'auto'].reduce((a, b) => (tps(b) > tps(a) ? b : a));
    // the same requests through the gateway, as a streaming client sees them
    const gateway = await compareUnderstandViaGateway(autoEngine, requests);
    // a chat's follow-ups: each image captioned in a session, then its questions asked there without the image
    const conversations = items.map((it) => ({ image: renderScene(it.scene, size), opening: captionPrompt(pack), questions: it.questions.slice(0, QUESTIONS_PER_IMAGE).map((q) => q.question) }));
    const sessionFollowup = await benchSessionFollowups(autoEngine, conversations, { maxTokens, temperature: 0, speculation: { mode: 'auto' } }, rounds);
    const result = {
      pack: engine.info.name,
      pack_dir: pack,
      // what drafted in each mode ('ngram' = prompt lookup, 'retrieval' = the pack's retrieval datastore,
      // 'draft-model' = draft.onnx; auto may mix)
      proposer: Object.fromEntries(Object.entries(proposers).map(([k, v]) => [k, [...v].sort().join('+') || 'none'])),
      draft_graph: engine.info.capabilities.draft,
      requests: requests.length,
      rounds,
      max_tokens: maxTokens,
      plain_tps: +tps('off').toFixed(1),
      chain_tps: +tps('chain').toFixed(1),
      tree_tps: +tps('tree').toFixed(1),
      auto_tps: +tps('auto').toFixed(1),
      speedup: +(tps(best) / tps('off')).toFixed(3),
      best_mode: best,
      tau: +tau(best).toFixed(3),
      tau_chain: +tau('chain').toFixed(3),
      tau_tree: +tau('tree').toFixed(3),
      decode_only_tps: { plain: +dtps('off').toFixed(1), chain: +dtps('chain').toFixed(1), tree: +dtps('tree').toFixed(1), auto: +dtps('auto').toFixed(1) },
      lossless,
      // the most any speculation could reach on this prompt set: plain's time if every token after the
      // first were free (prefill and the first step stay; questions answer in about one token)
      speedup_ceiling: stats['off']!.firstTokenMs > 0 ? +(stats['off']!.ms / stats['off']!.firstTokenMs).toFixed(3) : null,
      // every request once direct and once through the gateway over graphql-ws (auto speculation):
      // time to first token and total as a client sees them, and the same text both ways
      gateway,
      // follow-up questions in a session (no image sent again) against the same questions with their image:
      // medians of time to first token, total and prompt tokens, and whether the answers are the same
      session_followup: sessionFollowup,
      // by prompt type (caption prompt vs the questions): tau and tokens/s of every mode
      by_kind: Object.fromEntries(
        Object.entries(byKind).map(([k, ms]) => [
          k,
          Object.fromEntries(
            Object.entries(ms).map(([m, x]) => [m, { tau: +(x.drafts ? 1 + x.accepted / x.drafts : 1).toFixed(3), tps: +((x.tokens * 1000) / x.ms).toFixed(1), tokens_per_request: +(x.tokens / Math.max(1, kinds.filter((q) => q === k).length * Math.max(1, rounds - 1))).toFixed(2), ...(m === 'off' && x.firstMs > 0 ? { speedup_ceiling: +(x.ms / x.firstMs).toFixed(3) } : {}) }]),
          ),
        ]),
      ),
      completion_tokens: stats['off']!.tokens,
      // per request, by mode: ms inside decoder.onnx / draft.onnx / other graphs (vision, embed) runs,
      // the worker's own JS around them, and everything outside the worker (messages, main thread)
      time_split_ms: Object.fromEntries(
        modes.map((m) => {
          const x = stats[m]!.split;
          const n = Math.max(1, x.requests);
          const r = (v: number) => +(v / n).toFixed(3);
          return [m, { decoder: r(x.decoder), draft: r(x.draft), other_graphs: r(x.otherGraphs), worker_js: r(x.workerJs), outside_worker: r(x.outsideWorker) }];
        }),
      ),
      cost_curve_ms: engine.costCurve?.map(([t, c]) => [t, +c.toFixed(3)]),
      draft_cost_ms: engine.draftCost,
      // what auto would pick for the next step with the draft model (plain/chain/tree; draft cost included)
      auto_draft_shape:
        autoEngine.info.capabilities.draft && autoEngine.costCurve
          ? chooseShape(new CostCurve(autoEngine.costCurve), autoEngine.draftAcceptance.chain, autoEngine.draftAcceptance.tree, 8, autoEngine.draftCost ?? undefined)
          : null,
    };
    if (args.flags.has('json')) console.log(JSON.stringify(result));
    else console.log(JSON.stringify(result, null, 2));
    // speculation that changed an answer is a bug, not a number to read past
    if (!lossless) {
      console.error('hyperbagel bench understand: NOT LOSSLESS: a speculative mode answered differently from plain decoding');
      return 1;
    }
    return 0;
  } finally {
    await autoEngine.close();
    await engine.close();
  }
}
