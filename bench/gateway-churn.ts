// `hyperbagel bench gateway --churn N`: N subscribe → cancel cycles against the gateway, every way a
// client can stop a stream, then what is left behind. The gateway reference's target G4: model work
// stops within one step after the client leaves, and nothing leaks (listeners, iterators, heap).
//
// Cycle kinds, round robin over `concurrency` lanes (each lane keeps one graphql-ws socket open for
// the whole run, so anything an operation leaves on its socket accumulates where it can be counted):
//   ws-complete      understand over the lane's socket; `complete` after the first event
//   ws-close         understand on a new socket; the socket closed (or, every other cycle, torn down
//                    without a close frame) after the first event
//   sse-abort        understand over SSE; the HTTP request aborted after the first event
//   stream-complete  generateImage with `previews @stream` and `@defer { result }` over the lane's
//                    socket; `complete` after the first preview
//   job-cancel       a detached generateImage over HTTP, then cancelJob(id)
// The synthetic engine runs each request's steps on timers and records when each request's work
// ended; the client records when it cancelled. Stop latency is the difference (one clock, two
// threads). The heap is the gateway thread's (the clients run in a worker), measured after forced
// GCs once the warm-up cycles are done and again at the end: growth per cycle between the two is what
// the run leaves behind. Finished image jobs are retained for resume up to `maxRetainedJobs` (256): from
// about 3,200 cycles on (2 of 5 kinds are image jobs, 20 % before the first checkpoint) retention is
// full by then; shorter runs show it as growth.
import { createRequire } from 'node:module';
import { performance } from 'node:perf_hooks';
import { Worker } from 'node:worker_threads';
import { forceGc } from './gc.ts';
import { SyntheticEngine, syntheticInfo, syntheticSummary } from './synthetic-engine.ts';
import { encodePng } from '../src/engine/image/png.ts';
import type { GenerateRequest, ImageFrame, UnderstandEvent, UnderstandRequest } from '../src/engine/types.ts';
import { startServer, type RunningServer } from '../src/gateway/server.ts';
import { percentile, round3 } from './stats.ts';

export const CHURN_KINDS = ['ws-complete', 'ws-close', 'sse-abort', 'stream-complete', 'job-cancel'] as const;
export type ChurnKind = (typeof CHURN_KINDS)[number];

export interface ChurnOptions {
  cycles: number;
  /** cycles in flight at once (one lane each) */
  concurrency: number;
  /** the synthetic model's step time */
  stepMs: number;
  kinds?: readonly ChurnKind[];
}

const now = () => performance.timeOrigin + performance.now();
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
const cycleOf = (prompt: string) => Number(/churn (\d+)/.exec(prompt)?.[1] ?? -1);

/** A model that runs until it is stopped: one chunk (or, for images, one NFE) per step. */
class ChurnEngine extends SyntheticEngine {
  readonly info = syntheticInfo('bench-churn', 'synthetic engine for the gateway churn benchmark', {
    capabilities: { generate: true, sixStep: true, oneStep: true },
    imageSize: { width: 8, height: 8 },
  });
  /** requests whose work has not ended */
  live = 0;
  /** times the gateway asked a request for its next event after aborting its signal (it should
   * return() or stop pulling instead: each such pull would start another model step) */
  pullsAfterAbort = 0;
  /** requests that ran to their natural end (the cancel came too late) */
  finished = 0;
  /** per cycle: when its model work ended, and when its signal was aborted (epoch ms, sub-ms; NaN
   * for not yet). Allocated up front, so the bench's own bookkeeping does not grow the heap it measures. */
  readonly endedAt: Float64Array;
  readonly abortedAt: Float64Array;
  private readonly rgb = { width: 8, height: 8, data: new Uint8Array(8 * 8 * 3).fill(90) };
  private readonly png = encodePng(this.rgb);
  constructor(
    private readonly stepMs: number,
    cycles: number,
  ) {
    super();
    this.endedAt = new Float64Array(cycles).fill(NaN);
    this.abortedAt = new Float64Array(cycles).fill(NaN);
  }

  private async *work<T>(prompt: string, steps: number, signal: AbortSignal | undefined, emit: (step: number) => T | undefined, last: () => T): AsyncGenerator<T> {
    this.live++;
    const cycle = cycleOf(prompt);
    const onAbort = () => (this.abortedAt[cycle] = now());
    signal?.addEventListener('abort', onAbort, { once: true });
    try {
      for (let i = 0; i < steps; i++) {
        await sleep(this.stepMs); // a model call: not interruptible, as onnxruntime's run() is not
        if (signal?.aborted) return;
        const out = emit(i);
        if (out !== undefined) {
          yield out;
          // resumed by next(): a pull after the abort would have the engine start another step
          if (signal?.aborted) {
            this.pullsAfterAbort++;
            return;
          }
        }
      }
      this.finished++;
      yield last();
    } finally {
      this.live--;
      signal?.removeEventListener('abort', onAbort);
      this.endedAt[cycle] = now();
    }
  }

  understand(req: UnderstandRequest, signal?: AbortSignal): AsyncGenerator<UnderstandEvent> {
    const n = req.maxTokens ?? 1000;
    return this.work<UnderstandEvent>(req.prompt, n, signal, (i) => ({ kind: 'chunk', text: 'x', tokenIds: [i], acceptedTokens: 1, draftedTokens: 1 }), () => syntheticSummary(n, this.stepMs));
  }

  generate(req: GenerateRequest, signal?: AbortSignal): AsyncGenerator<ImageFrame> {
    const t0 = performance.now();
    const frame = (stage: 'preview' | 'final', nfe: number): ImageFrame => ({
      stage,
      nfe,
      step: stage === 'preview' ? 0 : 1,
      elapsedMs: performance.now() - t0,
      seed: req.seed ?? 0,
      image: { mimeType: 'image/png', width: 8, height: 8, bytes: this.png, sha256: 'churn' },
      rgb: this.rgb,
    });
    // progressive: the 1-NFE preview after one step, the 6-NFE final after six more; baseline: its steps
    // (the detached jobs cancelJob stops: long enough that the cancel always finds them running)
    const steps = req.mode === 'baseline' ? (req.steps ?? 50) : 7;
    return this.work<ImageFrame>(req.prompt, steps, signal, (i) => (i === 0 ? frame('preview', 1) : undefined), () => frame('final', 6));
  }

}

// The clients: plain CommonJS run with eval so the worker needs no TypeScript loader.
const CLIENT_SOURCE = `
const { parentPort, workerData } = require('node:worker_threads');
const WebSocket = require(workerData.wsPath);
const { url, cycles, concurrency, marks, kinds } = workerData;
const wsUrl = url.replace(/^http/, 'ws');
const now = () => performance.timeOrigin + performance.now();
const cancelledAt = {}; // cycle -> when the client stopped it
const byKind = {}; let errors = 0; const errorSamples = [];
const fail = (kind, e) => { errors++; if (errorSamples.length < 5) errorSamples.push(kind + ': ' + (e && e.message || String(e))); };
const understand = (i) => 'subscription { understand(input: { prompt: "churn ' + i + '", maxTokens: 1000 }) { text done } }';
const generate = (i) => 'mutation { generateImage(input: { prompt: "churn ' + i + '" }) { id previews @stream(initialCount: 0) { nfe } ... @defer { result { nfe } } } }';
const timeout = (ms, what) => new Promise((_, rej) => setTimeout(() => rej(new Error('timed out: ' + what)), ms).unref());

function openSocket() {
  return new Promise((resolve, reject) => {
    const ws = new WebSocket(wsUrl, 'graphql-transport-ws');
    const handlers = new Map();
    ws.on('open', () => ws.send(JSON.stringify({ type: 'connection_init' })));
    ws.on('message', (raw) => {
      const m = JSON.parse(String(raw));
      if (m.type === 'connection_ack') return resolve({ ws, handlers });
      const h = m.id && handlers.get(m.id);
      if (h) h(m);
    });
    ws.on('error', reject);
    ws.on('close', (code) => { for (const h of handlers.values()) h({ type: 'closed', code }); reject(new Error('closed ' + code)); });
  });
}
/** subscribe on a lane socket; resolves on the first next (then sends complete) */
function firstThenComplete(lane, i, query, isFirst) {
  return new Promise((resolve, reject) => {
    const id = 'c' + i;
    lane.handlers.set(id, (m) => {
      if (m.type === 'next' && isFirst(m.payload)) {
        lane.handlers.delete(id);
        cancelledAt[i] = now();
        lane.ws.send(JSON.stringify({ id, type: 'complete' }));
        resolve();
      } else if (m.type === 'next') return;
      else { lane.handlers.delete(id); reject(new Error(m.type + ' ' + JSON.stringify(m.payload || m.code))); }
    });
    lane.ws.send(JSON.stringify({ id, type: 'subscribe', payload: { query } }));
  });
}
async function wsClose(i) {
  const lane = await openSocket();
  await new Promise((resolve, reject) => {
    lane.handlers.set('1', (m) => {
      if (m.type !== 'next') return reject(new Error(m.type));
      lane.handlers.clear();
      cancelledAt[i] = now();
      const closed = () => resolve();
      lane.ws.removeAllListeners('close'); lane.ws.on('close', closed);
      if (i % 2) lane.ws.terminate(); else lane.ws.close(1000);
    });
    lane.ws.send(JSON.stringify({ id: '1', type: 'subscribe', payload: { query: understand(i) } }));
  });
}
async function post(body, signal) {
  const res = await fetch(url, { method: 'POST', headers: { 'content-type': 'application/json', accept: 'application/graphql-response+json' }, body: JSON.stringify(body), signal });
  const j = await res.json();
  if (j.errors) throw new Error(JSON.stringify(j.errors));
  return j.data;
}
async function sseAbort(i) {
  const ac = new AbortController();
  const res = await fetch(url, { method: 'POST', headers: { 'content-type': 'application/json', accept: 'text/event-stream' }, body: JSON.stringify({ query: understand(i) }), signal: ac.signal });
  const dec = new TextDecoder(); let buf = '';
  try {
    for await (const chunk of res.body) {
      buf += dec.decode(chunk, { stream: true });
      if (buf.includes('event: next')) { cancelledAt[i] = now(); ac.abort(); break; }
    }
  } catch (e) { if (!ac.signal.aborted) throw e; }
  if (cancelledAt[i] === undefined) throw new Error('SSE stream ended without an event');
}
async function jobCancel(i) {
  // a baseline job of 250 steps: a 7-step job could finish before the cancel arrives on a busy machine
  const d = await post({ query: 'mutation { generateImage(input: { prompt: "churn ' + i + '", mode: BASELINE, steps: 250 }) { id } }' });
  cancelledAt[i] = now();
  const c = await post({ query: 'mutation($id: ID!) { cancelJob(id: $id) }', variables: { id: d.generateImage.id } });
  if (c.cancelJob !== true) throw new Error('cancelJob answered ' + c.cancelJob);
}
const isUnderstand = (p) => !!(p.data && p.data.understand);
const isPreview = (p) => !!(p.incremental && p.incremental.some((x) => x.items && x.items.length));
// every lane stops at each mark (a cycle index); when all are idle there, the gateway's thread measures
let next = 0, lanesActive = concurrency, markIdx = 0, arrived = 0, gate = null, openGate = null, posted = false;
function checkBarrier() {
  if (!gate || posted || arrived < lanesActive) return;
  posted = true;
  parentPort.once('message', () => { const open = openGate; markIdx++; arrived = 0; gate = null; posted = false; open(); });
  parentPort.postMessage({ type: 'checkpoint', cycle: next, lanes: lanesActive });
}
async function lane() {
  let sock;
  try { sock = await openSocket(); } catch (e) { fail('connect', e); lanesActive--; checkBarrier(); return null; }
  for (;;) {
    // a lane socket the server closed: count it and open another, rather than time out every cycle on it
    if (sock.ws.readyState !== WebSocket.OPEN) {
      fail('lane', new Error('lane socket closed by the server'));
      try { sock = await openSocket(); } catch (e) { fail('connect', e); lanesActive--; checkBarrier(); return null; }
    }
    if (markIdx < marks.length && next >= marks[markIdx]) {
      const g = gate || (gate = new Promise((r) => (openGate = r)));
      arrived++; checkBarrier(); await g; continue;
    }
    const i = next++;
    if (i >= cycles) break;
    const kind = kinds[i % kinds.length];
    try {
      await Promise.race([timeout(10000, kind + ' cycle ' + i), (async () => {
        if (kind === 'ws-complete') await firstThenComplete(sock, i, understand(i), isUnderstand);
        else if (kind === 'ws-close') await wsClose(i);
        else if (kind === 'sse-abort') await sseAbort(i);
        else if (kind === 'stream-complete') await firstThenComplete(sock, i, generate(i), isPreview);
        else await jobCancel(i);
      })()]);
      byKind[kind] = (byKind[kind] || 0) + 1;
    } catch (e) { fail(kind, e); }
  }
  return sock;
}
(async () => {
  const socks = await Promise.all(Array.from({ length: concurrency }, () => lane()));
  await new Promise((resolve) => { parentPort.once('message', resolve); parentPort.postMessage({ type: 'checkpoint', cycle: cycles, lanes: socks.filter(Boolean).length }); });
  for (const s of socks) if (s) s.ws.close(1000);
  parentPort.postMessage({ type: 'done', cancelledAt, byKind, errors, errorSamples });
})().catch((e) => parentPort.postMessage({ type: 'done', cancelledAt, byKind, errors: errors + 1, errorSamples: errorSamples.concat(String(e)) }));
`;

export interface ChurnResult {
  cycles: number;
  concurrency: number;
  step_ms: number;
  kinds: readonly ChurnKind[];
  cycles_ok: Record<string, number>;
  errors: number;
  error_samples: string[];
  /** client cancel → the request's model work ended, per kind and over all (ms) */
  stop_latency_ms: Record<string, { p50: number; p99: number; max: number }>;
  /** client cancel → the request's AbortSignal fired: the gateway's part of the stop latency (ms) */
  cancel_to_abort_ms: Record<string, { p50: number; p99: number; max: number }>;
  /** per kind: cancelled cycles whose request's AbortSignal fired (the rest stopped only as an abandoned iterator, or never) */
  aborted: Record<string, number>;
  /** stop latency p99 over all kinds, in model steps */
  stop_latency_p99_steps: number;
  /** next() calls the gateway made on a request after aborting it (each would cost a model step) */
  pulls_after_abort: number;
  /** requests that ran to their end because the cancel came late */
  ran_to_end: number;
  /** cancelled cycles whose model work never ended (leaked iterators) */
  work_never_stopped: number;
  /** after the run, with every client gone */
  left_over: { engine_requests: number; active_streams: number; running_jobs: number; queued_jobs: number; ws_connections: number; ws_send_queue_bytes: number; retained_jobs: number; max_retained_jobs: number };
  /** measurements taken with every lane idle: after 20 % of the cycles (warm-up), after 60 %, at the end */
  checkpoints: Array<{ after_cycles: number; heap_used_mb: number; lane_socket_listeners: number; lane_socket_operations: number }>;
  /** heap growth from the warm-up checkpoint to the end, and over the last 40 % alone */
  heap_growth_bytes_per_cycle: number;
  heap_growth_late_bytes_per_cycle: number;
  /** share of the run the gateway's event loop was busy (its checkpoints' forced GCs included) */
  gateway_loop_utilization: number;
  wall_s: number;
}

/** p50 / p99 / max per kind, and over all kinds as `all` (ms) */
function latencyStats(byKind: Map<string, number[]>): Record<string, { p50: number; p99: number; max: number }> {
  const out: Record<string, { p50: number; p99: number; max: number }> = {};
  const stats = (xs: number[]) => {
    xs.sort((a, b) => a - b);
    return { p50: round3(percentile(xs, 50)), p99: round3(percentile(xs, 99)), max: round3(xs.at(-1) ?? NaN) };
  };
  for (const [kind, xs] of byKind) out[kind] = stats(xs);
  out.all = stats([...byKind.values()].flat());
  return out;
}

/** The gateway thread's heap after full collections (the flag must be set before the first call). */
function heapAfterGc(): number {
  forceGc();
  return process.memoryUsage().heapUsed;
}

export async function runChurn(o: ChurnOptions): Promise<ChurnResult> {
  const kinds = o.kinds ?? CHURN_KINDS;
  const engine = new ChurnEngine(o.stepMs, o.cycles);
  // one client address opens every lane's socket and the ws-close cycles' own
  const limits = { maxConcurrentJobs: 2 * o.concurrency, maxQueuedJobs: 2 * o.concurrency, rateLimitPerSecond: 0, maxWsConnectionsPerClient: 2 * o.concurrency + 16 };
  const server: RunningServer = await startServer({ engine, port: 0, webDemo: false, log: () => {}, limits });
  const rt = server.runtime;
  // every lane pauses at these cycle indexes (and at the end) while the gateway's thread is measured
  const marks = [...new Set([0.2, 0.6].map((f) => Math.min(o.cycles, Math.max(kinds.length, Math.ceil(o.cycles * f)))))];
  const listeners = () => server.wsSocketStats().reduce((n, s) => n + s.listeners, 0);
  const t0 = performance.now();
  const elu0 = performance.eventLoopUtilization();
  const checkpoints: ChurnResult['checkpoints'] = [];
  /** after cycles: wait until the engine has stopped everything and the gateway has seen every
   * closed socket go (only the lanes' `lanes` sockets stay open), bounded, so left-overs are leaks */
  const settle = async (lanes: number) => {
    for (let i = 0; i < 300 && (engine.live > 0 || rt.scheduler.runningCount > 0 || rt.wsConnections > lanes); i++) await sleep(10);
  };
  try {
    const done = await new Promise<{ cancelledAt: Record<string, number>; byKind: Record<string, number>; errors: number; errorSamples: string[] }>((resolve, reject) => {
      const w = new Worker(CLIENT_SOURCE, {
        eval: true,
        workerData: { url: server.url, cycles: o.cycles, concurrency: o.concurrency, marks, kinds, wsPath: createRequire(import.meta.url).resolve('ws') },
      });
      w.on('message', (m: { type: string; cycle: number; lanes: number }) => {
        if (m.type === 'checkpoint') {
          void (async () => {
            await settle(m.lanes);
            checkpoints.push({
              after_cycles: m.cycle,
              heap_used_mb: round3(heapAfterGc() / 1048576),
              lane_socket_listeners: listeners(),
              lane_socket_operations: server.wsSocketStats().reduce((n, s) => n + s.operations, 0),
            });
            w.postMessage('continue');
          })().catch(reject);
        } else if (m.type === 'done') {
          resolve(m as never);
          void w.terminate();
        }
      });
      w.once('error', reject);
      w.once('exit', (code) => reject(new Error(`the churn client worker exited (${code}) before reporting`)));
    });
    const wallS = (performance.now() - t0) / 1000;
    const elu = performance.eventLoopUtilization(elu0).utilization;
    // the lanes' sockets are closing: wait for the gateway to see it
    await settle(0);

    // per kind: client cancel -> model work ended, and client cancel -> the request's signal aborted
    const stopByKind = new Map<string, number[]>();
    const abortByKind = new Map<string, number[]>();
    const push = (m: Map<string, number[]>, kind: string, ms: number) => (m.get(kind) ?? m.set(kind, []).get(kind)!).push(ms);
    let neverStopped = 0;
    for (const [key, at] of Object.entries(done.cancelledAt)) {
      const cycle = Number(key);
      const kind = kinds[cycle % kinds.length]!;
      const ended = engine.endedAt[cycle]!;
      if (Number.isNaN(ended)) {
        neverStopped++;
        continue;
      }
      // work that ended before the client's cancel reached it (a stream that failed) counts 0
      push(stopByKind, kind, Math.max(0, ended - at));
      const aborted = engine.abortedAt[cycle]!;
      if (!Number.isNaN(aborted)) push(abortByKind, kind, Math.max(0, aborted - at));
    }
    const growth = (from: ChurnResult['checkpoints'][number] | undefined, to: ChurnResult['checkpoints'][number] | undefined) =>
      from && to && to.after_cycles > from.after_cycles ? round3(((to.heap_used_mb - from.heap_used_mb) * 1048576) / (to.after_cycles - from.after_cycles)) : NaN;
    const metricsText = rt.metrics.render();
    const gauge = (name: string) =>
      [...metricsText.matchAll(new RegExp(`^${name}(?:\\{[^}]*\\})? (\\S+)$`, 'gm'))].reduce((n, m) => n + Number(m[1]), 0);
    const stop = latencyStats(stopByKind);
    return {
      cycles: o.cycles,
      concurrency: o.concurrency,
      step_ms: o.stepMs,
      kinds,
      cycles_ok: done.byKind,
      errors: done.errors,
      error_samples: done.errorSamples,
      stop_latency_ms: stop,
      cancel_to_abort_ms: latencyStats(abortByKind),
      aborted: Object.fromEntries([...abortByKind].map(([kind, xs]) => [kind, xs.length])),
      stop_latency_p99_steps: round3(stop.all!.p99 / o.stepMs),
      pulls_after_abort: engine.pullsAfterAbort,
      ran_to_end: engine.finished,
      work_never_stopped: neverStopped,
      left_over: {
        engine_requests: engine.live,
        active_streams: gauge('hyperbagel_gateway_active_streams'),
        running_jobs: rt.scheduler.runningCount,
        queued_jobs: rt.scheduler.queuedCount,
        ws_connections: rt.wsConnections,
        ws_send_queue_bytes: gauge('hyperbagel_gateway_ws_send_queue_bytes'),
        retained_jobs: rt.jobs.size,
        max_retained_jobs: rt.limits.maxRetainedJobs,
      },
      checkpoints,
      heap_growth_bytes_per_cycle: growth(checkpoints[0], checkpoints.at(-1)),
      heap_growth_late_bytes_per_cycle: growth(checkpoints.at(-2), checkpoints.at(-1)),
      wall_s: round3(wallS),
      gateway_loop_utilization: round3(elu),
    };
  } finally {
    await server.close();
  }
}

/** What a churn run left behind that it should not have (job retention within its bound is by design). */
export function churnLeftSomething(r: ChurnResult): string[] {
  const out: string[] = [];
  const l = r.left_over;
  for (const [k, v] of Object.entries(l)) if (k !== 'retained_jobs' && k !== 'max_retained_jobs' && v !== 0) out.push(`${k} ${v}`);
  if (l.retained_jobs > l.max_retained_jobs) out.push(`retained_jobs ${l.retained_jobs} > ${l.max_retained_jobs}`);
  if (r.work_never_stopped) out.push(`${r.work_never_stopped} requests never stopped`);
  const first = r.checkpoints[0];
  const last = r.checkpoints.at(-1);
  if (!first || !last) out.push('no checkpoints');
  else {
    if (!(last.lane_socket_listeners <= first.lane_socket_listeners)) out.push(`socket listeners ${first.lane_socket_listeners} -> ${last.lane_socket_listeners}`);
    if (last.lane_socket_operations !== 0) out.push(`${last.lane_socket_operations} operations still on open sockets`);
  }
  return out;
}
