// `hyperbagel bench gateway`: the latency the gateway adds per understanding event, and the
// gateway's event-loop lag, at N concurrent understanding streams over graphql-ws (or SSE).
//
// The gateway runs here, on a synthetic engine that emits one chunk per model step and stamps each
// chunk's text with the wall-clock time (performance.timeOrigin + now(), sub-ms) at the engine
// boundary, i.e. the instant the chunk is handed to the gateway. The clients run in a worker
// thread (own event loop, same clock) and compute, per token, client receipt time minus engine
// boundary time. That is everything between the engine and the client: GraphQL execution,
// coalescing, JSON, the socket and the client's own parse, so it is an upper bound of what the
// gateway adds. Coalesced events carry several stamps; each token's latency is counted.
// Event-loop lag is sampled on the gateway's thread with monitorEventLoopDelay.
// The synthetic engine runs on the gateway's thread, so a busy gateway also delays the engine
// boundary stamp itself (its step timers fire late) and that wait is not in added_latency. Each chunk
// therefore also carries the time its step was due; step_due_latency_* is receipt minus that, and
// step_due_over_floor_* the gateway's over the bare transport's. The real engine's decode loop also runs
// on the gateway's thread, so that wait is one its clients would meet too.
// frame_written_latency_* stops at the gateway instead: engine boundary -> the frame's bytes handed to
// the kernel (Socket#write on the clients' connections), the reference's G1 definition, without the
// client thread's own delays.
import { readFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { Socket } from 'node:net';
import { constants as perfConstants, monitorEventLoopDelay, performance as nodePerformance, PerformanceObserver, type PerformanceEntry } from 'node:perf_hooks';
import { fileURLToPath } from 'node:url';
import { Worker } from 'node:worker_threads';
import type { GenerateRequest, ImageFrame, UnderstandEvent, UnderstandRequest } from '../src/engine/types.ts';
import { SLOW_CONSUMER_CLOSE_CODE, startServer } from '../src/gateway/server.ts';
import { flag, intFlag, parseArgs, UsageError, type ParsedArgs } from '../src/cli/args.ts';
import { median, percentile, round3 } from './stats.ts';
import { SyntheticEngine, syntheticInfo, syntheticSummary } from './synthetic-engine.ts';
import { startBareTransport } from './bare-transport.ts';
import { forceGc } from './gc.ts';

/** Each slow consumer: one graphql-ws socket with this many streams (the bench's per-socket limit) ... */
const SLOW_SUBSCRIPTIONS = 4;
/** ... each sending this much text per model step: far more than the consumer reads */
const SLOW_CHUNK_BYTES = 8192;
/** how long slow consumers may take to fill the kernel's socket buffers before the round starts */
const SLOW_PREFILL_LIMIT_MS = 30_000;

export const HELP = `Usage: hyperbagel bench gateway [--streams N] [--tokens N] [--step-ms MS] [--transport ws|sse] [--rounds R] [--no-floor] [--via-replica] [--json]
       hyperbagel bench gateway --slow-consumers K [--slow-rate B] [--rounds R] [--streams N] [--tokens N] [--step-ms MS] [--json]
       hyperbagel bench gateway --churn N [--concurrency C] [--step-ms MS] [--json]

Measures the latency the gateway adds per understanding event (engine boundary -> client) and the
gateway's event-loop lag, at N concurrent understanding streams on a synthetic engine.
  --streams N      concurrent streams (default 200)
  --tokens N       chunks per stream (default 50)
  --step-ms MS     synthetic model step time (default 20)
  --transport T    ws (graphql-ws, default) or sse
  --rounds R       rounds through the gateway (default 3), each followed by a round through a bare
                   transport: the same engine schedule, clients and bytes per event with no gateway
                   (no GraphQL at all), i.e. what this machine's loopback, threads and client cost.
                   Figures are medians over rounds; "transport_floor" holds the bare rounds' and
                   added_over_floor_p99_ms the gateway's p99 over them
  --no-floor       skip the bare-transport rounds
  --via-replica    clients connect to a second replica, which forwards each stream to the engine's
                   replica (each stream on its own session there): the cost of one forwarding hop.
                   Both replicas share this process's thread, so lag covers both
  --json           print only the JSON result
Prints one JSON object: {streams, added_latency_p50_ms, added_latency_p99_ms, event_loop_lag_p99_ms,
transport_floor, added_over_floor_p99_ms, ...}.

--slow-consumers K adds K graphql-ws clients that each read at --slow-rate bytes/s (default 10240),
each with ${SLOW_SUBSCRIPTIONS} streams of ${SLOW_CHUNK_BYTES} bytes per step, and runs --rounds R (default 3) rounds
without and with them, alternating. It prints the other streams' p99 and lag without and with them
(medians and their ratio), and the most unsent bytes the gateway held per slow consumer.

--churn N runs N subscribe -> cancel cycles instead (C at a time, default 20), through every way a
client stops a stream (graphql-ws complete, socket close and teardown, SSE abort, @stream complete,
cancelJob), and prints how soon model work stopped (stop_latency_ms, in steps too) and what was left
behind: engine requests, streams, jobs, listeners on long-lived sockets, heap growth per cycle.
It exits 1 on client errors or anything left behind.`;

const now = () => performance.timeOrigin + performance.now();

/** The frames captured by captureWrites: frame i is bytes[starts[i], ends[i]), handed to the kernel at times[i]. */
interface CapturedWrites {
  count: number;
  times: Float64Array;
  starts: Uint32Array;
  ends: Uint32Array;
  bytes: Buffer;
}

/**
 * Records when the gateway hands each frame to the kernel: every Socket#write on the sockets of the
 * server the clients connect to, with the written bytes (parsed after the round). This is the
 * reference's G1 definition of the gateway's latency: engine emits -> frame written. The
 * client-receipt figures add the client thread's own delays.
 * The bytes are copied into one growing buffer rather than kept as the written objects: holding on to
 * every frame would make each young-generation collection of the measured thread copy them all.
 */
function captureWrites(port: number): { captured(): CapturedWrites; stop(): void } {
  const c: CapturedWrites = { count: 0, times: new Float64Array(1 << 14), starts: new Uint32Array(1 << 14), ends: new Uint32Array(1 << 14), bytes: Buffer.allocUnsafe(1 << 21) };
  let used = 0;
  const original = Socket.prototype.write;
  const facing = new WeakMap<Socket, boolean>();
  const grow = <T extends Float64Array | Uint32Array>(a: T): T => {
    const b = new (a.constructor as new (n: number) => T)(a.length * 2);
    b.set(a);
    return b;
  };
  Socket.prototype.write = function (this: Socket, chunk: unknown, ...rest: unknown[]) {
    let mine = facing.get(this);
    if (mine === undefined) facing.set(this, (mine = this.localPort === port));
    const len = (chunk as { length?: number }).length;
    // stamped frames are small; big ones (slow consumers' merged text) carry no stamps
    if (mine && len !== undefined && len <= 4096 && (typeof chunk === 'string' || chunk instanceof Uint8Array)) {
      if (c.count === c.times.length) [c.times, c.starts, c.ends] = [grow(c.times), grow(c.starts), grow(c.ends)];
      if (used + len > c.bytes.length) {
        const b = Buffer.allocUnsafe(c.bytes.length * 2);
        c.bytes.copy(b, 0, 0, used);
        c.bytes = b;
      }
      c.times[c.count] = now();
      c.starts[c.count] = used;
      // a string's stamps are ASCII: one byte per character
      used += typeof chunk === 'string' ? c.bytes.write(chunk, used, 'latin1') : (c.bytes.set(chunk, used), chunk.length);
      c.ends[c.count++] = used;
    }
    return (original as (...a: unknown[]) => boolean).call(this, chunk, ...rest);
  } as typeof Socket.prototype.write;
  return { captured: () => c, stop: () => void (Socket.prototype.write = original) };
}

/** per token in each captured frame: write time - engine-boundary stamp, and write time - step due */
function writeLatencies(c: CapturedWrites): { boundary: number[]; due: number[] } {
  const boundary: number[] = [];
  const due: number[] = [];
  const stamp = /(\d{10,}\.\d{3})\/(\d{10,}\.\d{3})\|/g;
  for (let i = 0; i < c.count; i++) {
    const t = c.times[i]!;
    for (const m of c.bytes.toString('latin1', c.starts[i], c.ends[i]).matchAll(stamp)) {
      boundary.push(t - Number(m[1]));
      due.push(t - Number(m[2]));
    }
  }
  const sort = (xs: number[]) => Array.from(Float64Array.from(xs).sort());
  return { boundary: sort(boundary), due: sort(due) };
}
/** the pause before each latency round, after a forced GC */
const SETTLE_MS = 250;
/** the after_warmup_* figures skip this much of the steady state */
const WARMUP_MS = 500;

/** CPU time of the calling thread in ns (Linux schedstat), or undefined where unavailable. */
function threadCpuNs(): number | undefined {
  try {
    return Number(readFileSync('/proc/thread-self/schedstat', 'utf8').split(' ')[0]);
  } catch {
    return undefined;
  }
}

/** Emits `tokens` chunks, one per step, each stamped with the engine-boundary time. */
class StampingEngine extends SyntheticEngine {
  readonly info = syntheticInfo('bench-synthetic', 'synthetic engine for gateway benchmarks');
  private started = 0;
  private release!: () => void;
  /** resolves once every stream has been subscribed (the connection storm is over) */
  readonly allStarted = new Promise<void>((r) => (this.release = r));
  constructor(
    private readonly tokens: number,
    private readonly stepMs: number,
    private readonly streams: number,
  ) {
    super();
  }
  async *understand(req: UnderstandRequest, signal?: AbortSignal): AsyncGenerator<UnderstandEvent> {
    if (req.prompt === 'slow') return yield* this.heavy(req.maxTokens ?? 1024, signal);
    const n = req.maxTokens ?? this.tokens;
    if (++this.started === this.streams) this.release();
    await this.allStarted;
    // random phase so streams do not all step on the same tick
    await new Promise((r) => setTimeout(r, Math.random() * this.stepMs));
    const t0 = performance.now();
    for (let i = 0; i < n; i++) {
      const due = t0 + (i + 1) * this.stepMs;
      await new Promise((r) => setTimeout(r, Math.max(0, due - performance.now())));
      if (signal?.aborted) return;
      // "<handed to the gateway>/<step due>|": the second stamp is when this synthetic step was due,
      // i.e. when an engine on its own thread would have produced the chunk (libuv's millisecond
      // clock can fire a timer slightly early: then the chunk was there at the first stamp)
      const at = now();
      yield { kind: 'chunk', text: `${at.toFixed(3)}/${Math.min(at, performance.timeOrigin + due).toFixed(3)}|`, tokenIds: [i], acceptedTokens: 1, draftedTokens: 1 };
    }
    yield syntheticSummary(n, this.stepMs);
  }
  /** a slow consumer's stream: SLOW_CHUNK_BYTES per step until the client goes or maxTokens (outside the measured set) */
  private async *heavy(maxTokens: number, signal?: AbortSignal): AsyncGenerator<UnderstandEvent> {
    const text = 'x'.repeat(SLOW_CHUNK_BYTES);
    for (let i = 0; i < maxTokens && !signal?.aborted; i++) {
      await new Promise((r) => setTimeout(r, this.stepMs));
      if (signal?.aborted) return;
      yield { kind: 'chunk', text, tokenIds: [i], acceptedTokens: 1, draftedTokens: 1 };
    }
  }
  // eslint-disable-next-line require-yield
  async *generate(_req: GenerateRequest): AsyncGenerator<ImageFrame> {
    throw new Error('not used');
  }
}

// The clients: plain CommonJS run with eval so the worker needs no TypeScript loader.
const CLIENT_SOURCE = `
const { parentPort, workerData } = require('node:worker_threads');
const WebSocket = require(workerData.wsPath);
const { url, streams, transport, query, queries } = workerData;
const now = () => performance.timeOrigin + performance.now();
const latencies = [], scheduled = [], received = [];
// the client thread's own event-loop delay: where a receipt waits on the client, not on the gateway
const clientLag = require('node:perf_hooks').monitorEventLoopDelay({ resolution: 1 });
clientLag.enable();
let events = 0, done = 0, errors = 0;
function record(text) {
  const t = now();
  for (const s of text.split('|')) {
    if (!s) continue;
    const i = s.indexOf('/');
    received.push(t);
    latencies.push(t - Number(s.slice(0, i)));
    scheduled.push(t - Number(s.slice(i + 1)));
  }
}
function finish() { if (++done === streams) { clientLag.disable(); parentPort.postMessage({ latencies, scheduled, received, events, errors, clientLagP99: clientLag.percentile(99) / 1e6 }); } }
function wsStream(query) {
  const ws = new WebSocket(url.replace(/^http/, 'ws'), 'graphql-transport-ws');
  ws.on('open', () => ws.send(JSON.stringify({ type: 'connection_init' })));
  ws.on('message', (raw) => {
    const m = JSON.parse(String(raw));
    if (m.type === 'connection_ack') ws.send(JSON.stringify({ id: '1', type: 'subscribe', payload: { query } }));
    else if (m.type === 'next') { events++; const u = m.payload.data && m.payload.data.understand; if (u) record(u.text); else errors++; }
    else if (m.type === 'error') { errors++; ws.close(); }
    else if (m.type === 'complete') ws.close();
  });
  ws.on('close', finish);
  ws.on('error', () => { errors++; });
}
async function sseStream(query) {
  try {
    const res = await fetch(url, { method: 'POST', headers: { 'content-type': 'application/json', accept: 'text/event-stream' }, body: JSON.stringify({ query }) });
    const dec = new TextDecoder();
    let buf = '';
    for await (const chunk of res.body) {
      buf += dec.decode(chunk, { stream: true });
      let i;
      while ((i = buf.indexOf('\\n\\n')) >= 0) {
        const block = buf.slice(0, i); buf = buf.slice(i + 2);
        const data = block.split('\\n').filter((l) => l.startsWith('data:')).map((l) => l.slice(5)).join('');
        if (block.includes('event: next') && data) { events++; const p = JSON.parse(data); if (p.data && p.data.understand) record(p.data.understand.text); else errors++; }
      }
    }
  } catch { errors++; }
  finish();
}
for (let i = 0; i < streams; i++) { const q = queries ? queries[i] : query; transport === 'sse' ? sseStream(q) : wsStream(q); }
`;

// Slow consumers: graphql-ws clients that read their socket at `rate` bytes/s (the TCP socket is paused
// whenever the bytes read run ahead of the rate), in a worker of their own.
const SLOW_CLIENT_SOURCE = `
const { parentPort, workerData } = require('node:worker_threads');
const WebSocket = require(workerData.wsPath);
const { url, consumers, subscriptions, rate } = workerData;
const query = 'subscription { understand(input: { prompt: "slow", maxTokens: 512 }) { text } }'; // 512 x 8 KB stays under maxStreamBacklogChars
let bytes = 0, errors = 0, slowCloses = 0, opened = 0, stopping = false;
const t0 = performance.now();
const sockets = [];
for (let c = 0; c < consumers; c++) {
  const ws = new WebSocket(url.replace(/^http/, 'ws'), 'graphql-transport-ws');
  sockets.push(ws);
  ws.on('open', () => {
    const sock = ws._socket;
    sock.on('data', (d) => { bytes += d.length; });
    ws.send(JSON.stringify({ type: 'connection_init' }));
  });
  ws.on('message', (raw) => {
    const m = JSON.parse(String(raw));
    if (m.type === 'connection_ack') {
      for (let i = 0; i < subscriptions; i++) ws.send(JSON.stringify({ id: String(i), type: 'subscribe', payload: { query } }));
      if (++opened === consumers) parentPort.postMessage({ type: 'ready' });
    } else if (m.type === 'error' || (m.type === 'next' && m.payload.errors)) errors++;
  });
  ws.on('close', (code) => { if (!stopping && code === ${SLOW_CONSUMER_CLOSE_CODE}) slowCloses++; else if (!stopping) errors++; });
  ws.on('error', () => { errors++; });
}
// the reading rate, per consumer: each tick, pause every socket whose reads are ahead of rate * elapsed,
// resume the rest
const tick = setInterval(() => {
  const allowed = (rate * (performance.now() - t0)) / 1000;
  for (const ws of sockets) {
    const sock = ws._socket;
    if (!sock) continue;
    const mine = sock.bytesRead;
    if (mine > allowed) sock.pause(); else sock.resume();
  }
}, 10);
parentPort.on('message', () => {
  stopping = true;
  clearInterval(tick);
  const seconds = (performance.now() - t0) / 1000;
  for (const ws of sockets) ws.terminate();
  parentPort.postMessage({ type: 'done', bytes, seconds, errors, slowCloses });
});
`;

export async function run(argv: string[]): Promise<number> {
  const args = parseArgs(argv, { values: ['streams', 'tokens', 'step-ms', 'transport', 'churn', 'concurrency', 'slow-consumers', 'slow-rate', 'rounds'], booleans: ['json', 'via-replica', 'no-floor'] });
  if (args.flags.has('help')) {
    console.log(HELP);
    return 0;
  }
  if (args.positionals.length) throw new UsageError(`unexpected argument "${args.positionals[0]}"`);
  if (flag(args, 'churn') !== undefined) return churn(args);
  if (flag(args, 'concurrency') !== undefined) throw new UsageError('--concurrency applies to --churn only');
  const cfg: RoundConfig = {
    streams: intFlag(args, 'streams', 200, 1, 100_000),
    tokens: intFlag(args, 'tokens', 50, 1, 1_000_000),
    stepMs: intFlag(args, 'step-ms', 20, 1, 60_000),
    transport: (flag(args, 'transport') ?? 'ws') as 'ws' | 'sse',
    viaReplica: args.flags.has('via-replica'),
    slowConsumers: 0,
    slowRate: 0,
  };
  if (cfg.transport !== 'ws' && cfg.transport !== 'sse') throw new UsageError(`--transport must be ws or sse, got "${cfg.transport}"`);
  const json = args.flags.has('json');
  if (flag(args, 'slow-consumers') !== undefined) return slowConsumers(args, cfg, json);
  if (args.flags.has('slow-rate')) throw new UsageError('--slow-rate applies to --slow-consumers only');
  const floor = !args.flags.has('no-floor');
  const out = await latencyRounds(cfg, intFlag(args, 'rounds', 3, 1, 50), floor);
  console.log(JSON.stringify(out));
  if (!json)
    console.error(
      `gateway bench: ${cfg.streams} ${cfg.transport} streams, ${out.rounds} round(s): p50 ${out.added_latency_p50_ms} ms, p99 ${out.added_latency_p99_ms} ms added per event; event-loop lag p99 ${out.event_loop_lag_p99_ms} ms (goal: p99 <= 2 ms, lag <= 10 ms)` +
        (out.transport_floor ? `; the bare transport's p99 ${out.transport_floor.added_latency_p99_ms} ms, the gateway's p99 over it ${out.added_over_floor_p99_ms} ms (from when steps were due: ${out.step_due_over_floor_p99_ms} ms)` : ''),
    );
  const floorOk = !out.transport_floor || (out.transport_floor.errors === 0 && out.transport_floor.tokens_measured === out.transport_floor.tokens_expected);
  return out.errors === 0 && out.tokens_measured === out.tokens_expected && floorOk ? 0 : 1;
}

/** Round figures that add up over rounds; maxima take the largest; every other number takes the median. */
const SUMMED = new Set(['tokens_measured', 'tokens_expected', 'frame_written_tokens', 'events', 'errors', 'after_warmup_tokens', 'coalesced_chunks']);
const MAXED = new Set(['added_latency_max_ms', 'max_send_queue_bytes', 'gc_max_pause_ms']);

function combineRounds(rs: RoundResult[]): RoundResult {
  const out: Record<string, unknown> = { ...rs[0]! };
  for (const [k, v] of Object.entries(rs[0]!)) {
    if (typeof v !== 'number') continue;
    const xs = rs.map((r) => (r as unknown as Record<string, number>)[k]!);
    out[k] = SUMMED.has(k) ? xs.reduce((a, b) => a + b, 0) : MAXED.has(k) ? Math.max(...xs) : round3(median(xs));
  }
  return out as RoundResult;
}

/**
 * The plain bench: `rounds` rounds through the gateway, each followed by one through the bare
 * transport (bench/bare-transport.ts) with the same engine schedule, clients and bytes. Every figure
 * is the median over rounds (counts are summed), because this shared machine moves a single round's
 * p99 by milliseconds; the floor rounds give, in the same run, what the machine itself costs.
 */
async function latencyRounds(cfg: RoundConfig, rounds: number, floor: boolean) {
  const through: RoundResult[] = [];
  const bare: RoundResult[] = [];
  // each round starts on a collected heap and a quiet machine: the previous round's garbage and
  // worker teardown would otherwise land in it
  const settled = async <T>(round: () => Promise<T>): Promise<T> => {
    forceGc();
    await new Promise((r) => setTimeout(r, SETTLE_MS));
    return round();
  };
  for (let r = 0; r < rounds; r++) {
    through.push(await settled(() => measureRound(cfg)));
    // the floor has no gateway, so no replica either: with --via-replica, the figure over it is both hops'
    if (floor) bare.push(await settled(() => measureRound({ ...cfg, floor: true, viaReplica: false })));
  }
  const p99 = (rs: RoundResult[]) => rs.map((r) => r.added_latency_p99_ms);
  const f = floor ? combineRounds(bare) : undefined;
  return {
    ...combineRounds(through),
    rounds,
    // each gateway round's p99, then the floor's
    round_added_latency_p99_ms: p99(through),
    transport_floor: f
      ? {
          added_latency_p50_ms: f.added_latency_p50_ms,
          added_latency_p99_ms: f.added_latency_p99_ms,
          added_latency_max_ms: f.added_latency_max_ms,
          frame_written_latency_p99_ms: f.frame_written_latency_p99_ms,
          step_due_latency_p50_ms: f.step_due_latency_p50_ms,
          step_due_latency_p99_ms: f.step_due_latency_p99_ms,
          frame_written_step_due_latency_p99_ms: f.frame_written_step_due_latency_p99_ms,
          event_loop_lag_p99_ms: f.event_loop_lag_p99_ms,
          client_event_loop_lag_p99_ms: f.client_event_loop_lag_p99_ms,
          after_warmup_added_latency_p99_ms: f.after_warmup_added_latency_p99_ms,
          gateway_thread_cpu_us_per_event: f.gateway_thread_cpu_us_per_event,
          gc_scavenges: f.gc_scavenges,
          gc_pause_ms: f.gc_pause_ms,
          round_added_latency_p99_ms: p99(bare),
          tokens_measured: f.tokens_measured,
          tokens_expected: f.tokens_expected,
          errors: f.errors,
        }
      : null,
    // what the gateway adds over the bare transport: the median, over rounds, of each round's
    // difference from the floor round that followed it
    added_over_floor_p50_ms: f ? round3(median(through.map((r, i) => r.added_latency_p50_ms - bare[i]!.added_latency_p50_ms))) : null,
    added_over_floor_p99_ms: f ? round3(median(through.map((r, i) => r.added_latency_p99_ms - bare[i]!.added_latency_p99_ms))) : null,
    // the same from when each step was due: the synthetic engine steps on the gateway's thread, as the real
    // engine's decode loop does (only its graphs run in a worker), so a busy gateway delays the chunks
    // themselves; added_over_floor leaves that wait out, this counts it
    step_due_over_floor_p50_ms: f ? round3(median(through.map((r, i) => r.step_due_latency_p50_ms - bare[i]!.step_due_latency_p50_ms))) : null,
    step_due_over_floor_p99_ms: f ? round3(median(through.map((r, i) => r.step_due_latency_p99_ms - bare[i]!.step_due_latency_p99_ms))) : null,
  };
}

interface RoundConfig {
  streams: number;
  tokens: number;
  stepMs: number;
  transport: 'ws' | 'sse';
  viaReplica: boolean;
  /** graphql-ws clients that each read at slowRate bytes/s, each with SLOW_SUBSCRIPTIONS heavy streams */
  slowConsumers: number;
  slowRate: number;
  /** the clients talk to a bare transport instead of the gateway (bench/bare-transport.ts): the floor */
  floor?: boolean;
}

type RoundResult = Awaited<ReturnType<typeof measureRound>>;

/** One measured round: a fresh gateway on a fresh synthetic engine, N client streams, optional slow consumers. */
async function measureRound(cfg: RoundConfig) {
  const { streams, tokens, stepMs, transport, viaReplica } = cfg;
  const engine = new StampingEngine(tokens, stepMs, streams);
  const slowStreams = cfg.slowConsumers * SLOW_SUBSCRIPTIONS;
  // one client IP opens every stream
  const sockets = streams + cfg.slowConsumers + 16;
  const limits = { maxConcurrentJobs: streams + slowStreams, maxQueuedJobs: streams + slowStreams, maxSubscriptionsPerSocket: SLOW_SUBSCRIPTIONS, rateLimitPerSecond: 0, maxSessions: streams + 1, maxWsConnections: sockets, maxWsConnectionsPerClient: sockets };
  const peers = new Map<string, string>();
  if (cfg.floor && (viaReplica || cfg.slowConsumers)) throw new Error('the transport floor is measured without replicas or slow consumers');
  const bare = cfg.floor ? await startBareTransport(engine, tokens) : undefined;
  const server = bare ? undefined : await startServer({ engine, port: 0, webDemo: false, log: () => {}, limits, ...(viaReplica ? { replica: { id: 'a', peers: new Map(), requestTimeoutMs: 30_000 } } : {}) });
  // --via-replica: the clients' replica, which forwards every stream to `server`
  const front = server && viaReplica ? await startServer({ engine, port: 0, webDemo: false, log: () => {}, limits, replica: { id: 'b', peers, requestTimeoutMs: 30_000 } }) : undefined;
  if (server) peers.set('a', server.url);
  // what the clients connect to, and the gateway figures read from it (none for the bare transport)
  const target = { url: (front ?? server ?? bare)!.url, port: (front ?? server ?? bare)!.port };
  const gateway = front ?? server;
  const sendQueueBytes = () => gateway?.runtime.wsSendQueueBytes() ?? 0;
  const coalescedChunks = () => gateway?.runtime.metrics.coalescedChunks.get() ?? 0;
  const lag = monitorEventLoopDelay({ resolution: 1 });
  // the gateway thread's garbage-collection pauses (entries arrive a little after each pause, so they
  // are kept by start time and cut to the steady state at the end)
  const gcEntries: PerformanceEntry[] = [];
  const gcWatch = new PerformanceObserver((list) => void gcEntries.push(...list.getEntries()));
  gcWatch.observe({ entryTypes: ['gc'] });
  const lagWarm = monitorEventLoopDelay({ resolution: 1 });
  let warmTimer: NodeJS.Timeout | undefined;
  let sampler: NodeJS.Timeout | undefined;
  let capture: ReturnType<typeof captureWrites> | undefined;
  let slow: Worker | undefined;
  let slowMessages: ReturnType<typeof workerMessages> | undefined;
  try {
    const query = `subscription { understand(input: { prompt: "bench", maxTokens: ${tokens} }) { text done } }`;
    // forwarded streams each run on a session of the engine's replica (one request at a time per session)
    const queries = front
      ? Array.from({ length: streams }, () => `subscription { understand(input: { prompt: "bench", maxTokens: ${tokens}, sessionId: "${server!.runtime.sessions.create().id}" }) { text done } }`)
      : undefined;
    const wsPath = createRequire(import.meta.url).resolve('ws');
    // slow consumers connect first, so their sockets are backed up before the measured streams start
    if (cfg.slowConsumers > 0) {
      slow = new Worker(SLOW_CLIENT_SOURCE, { eval: true, workerData: { url: target.url, consumers: cfg.slowConsumers, subscriptions: SLOW_SUBSCRIPTIONS, rate: cfg.slowRate, wsPath } });
      slowMessages = workerMessages(slow);
      await withTimeout(slowMessages.next(), 30_000, 'the slow consumers to subscribe');
    }
    // ... and until the kernel's buffers for them are full, so the gateway itself holds unsent bytes
    const prefill0 = performance.now();
    if (slow)
      while (sendQueueBytes() === 0 && performance.now() - prefill0 < SLOW_PREFILL_LIMIT_MS)
        await new Promise((r) => setTimeout(r, 20));
    const prefillMs = performance.now() - prefill0;
    // unsent bytes over all graphql-ws sockets, sampled through every round (base rounds too, so both
    // kinds pay the same sampling cost): the most the gateway held at once
    let maxQueued = 0;
    sampler = setInterval(() => {
      const q = sendQueueBytes();
      if (q > maxQueued) maxQueued = q;
    }, 10);
    const coalesced0 = coalescedChunks();
    const tStart = performance.now();
    let setupMs = 0;
    let t0 = 0;
    // CPU cost is less sensitive to other load on the machine than latency percentiles
    let elu0 = nodePerformance.eventLoopUtilization();
    let cpu0 = process.cpuUsage();
    let thread0 = threadCpuNs();
    // measure the steady state: from the moment every stream is subscribed
    void engine.allStarted.then(() => {
      t0 = performance.now();
      setupMs = t0 - tStart;
      elu0 = nodePerformance.eventLoopUtilization();
      cpu0 = process.cpuUsage();
      thread0 = threadCpuNs();
      lag.enable();
      warmTimer = setTimeout(() => lagWarm.enable(), WARMUP_MS);
    });
    capture = captureWrites(target.port);
    const clients = new Worker(CLIENT_SOURCE, { eval: true, workerData: { url: target.url, streams, transport, query, queries, wsPath } });
    const result = await new Promise<{ latencies: number[]; scheduled: number[]; received: number[]; events: number; errors: number; clientLagP99: number }>((resolve, reject) => {
      clients.once('message', resolve);
      clients.once('error', reject);
      clients.once('exit', (code) => reject(new Error(`the bench's client worker exited (${code}) before reporting`)));
    }).finally(() => void clients.terminate());
    // the round's wall time and CPU end here: parsing the captured frames and stopping the slow
    // consumers below are the bench's own work
    const wallMs = performance.now() - t0;
    const elu = nodePerformance.eventLoopUtilization(elu0);
    const cpu = process.cpuUsage(cpu0);
    const thread1 = threadCpuNs();
    capture.stop();
    const written = writeLatencies(capture.captured());
    lag.disable();
    lagWarm.disable();
    gcEntries.push(...gcWatch.takeRecords());
    const pauses = gcEntries.filter((e) => e.startTime >= t0 && e.startTime <= t0 + wallMs).map((e) => [(e as PerformanceEntry & { detail?: { kind?: number } }).detail?.kind ?? 0, e.duration] as const);
    clearTimeout(warmTimer);
    clearInterval(sampler);
    let slowDone: { bytes: number; seconds: number; errors: number; slowCloses: number } | undefined;
    if (slow && slowMessages) {
      slow.postMessage('stop');
      slowDone = (await withTimeout(slowMessages.next(), 30_000, 'the slow consumers to stop')) as never;
    }
    const sorted = Float64Array.from(result.latencies).sort();
    const arr = Array.from(sorted);
    const sched = Array.from(Float64Array.from(result.scheduled).sort());
    // the same, for tokens received after the first WARMUP_MS of the steady state (JIT warm-up)
    const warmFrom = performance.timeOrigin + t0 + WARMUP_MS;
    const warmIdx = result.received.flatMap((t, k) => (t >= warmFrom ? [k] : []));
    const warmAdded = Array.from(Float64Array.from(warmIdx.map((k) => result.latencies[k]!)).sort());
    const warmDue = Array.from(Float64Array.from(warmIdx.map((k) => result.scheduled[k]!)).sort());
    const out = {
      streams,
      transport,
      via_replica: viaReplica,
      tokens_per_stream: tokens,
      step_ms: stepMs,
      added_latency_p50_ms: round3(percentile(arr, 50)),
      added_latency_p99_ms: round3(percentile(arr, 99)),
      added_latency_max_ms: round3(arr.at(-1) ?? NaN),
      // the gateway's own part: engine boundary -> the frame handed to the kernel (G1's definition);
      // added_latency_* above runs on to the client's receipt
      frame_written_latency_p50_ms: round3(percentile(written.boundary, 50)),
      frame_written_latency_p99_ms: round3(percentile(written.boundary, 99)),
      // the same from when the step was due: also counts the wait for the gateway's busy thread
      // before the synthetic engine (on that thread) could emit
      frame_written_step_due_latency_p99_ms: round3(percentile(written.due, 99)),
      frame_written_tokens: written.boundary.length,
      // from when each synthetic step was due to client receipt: also counts the time the chunk waited
      // for the gateway's busy event loop before it reached the engine boundary above (the synthetic
      // engine shares the gateway's thread; a real engine on its own thread would not wait for it)
      step_due_latency_p50_ms: round3(percentile(sched, 50)),
      step_due_latency_p99_ms: round3(percentile(sched, 99)),
      event_loop_lag_p99_ms: round3(lag.percentile(99) / 1e6),
      // the clients' worker thread (connection storm included): its stalls delay receipt, not the gateway
      client_event_loop_lag_p99_ms: round3(result.clientLagP99),
      // the gateway thread's GC pauses in the steady state: young-generation collections (scavenges),
      // and the total and longest pause of every kind (scavenges, mark-compact, incremental steps)
      gc_scavenges: pauses.filter(([kind]) => kind === perfConstants.NODE_PERFORMANCE_GC_MINOR).length,
      gc_pause_ms: round3(pauses.reduce((t, [, ms]) => t + ms, 0)),
      gc_max_pause_ms: round3(Math.max(0, ...pauses.map(([, ms]) => ms))),
      // everything above covers the whole steady state, including its first WARMUP_MS in which the
      // per-event code is still being optimized; these cover only what comes after (null for shorter runs)
      after_warmup_added_latency_p50_ms: round3(percentile(warmAdded, 50)),
      after_warmup_added_latency_p99_ms: round3(percentile(warmAdded, 99)),
      after_warmup_step_due_latency_p99_ms: round3(percentile(warmDue, 99)),
      after_warmup_event_loop_lag_p99_ms: warmAdded.length ? round3(lagWarm.percentile(99) / 1e6) : NaN,
      after_warmup_tokens: warmAdded.length,
      // steady state: share of wall time the gateway's event loop was busy, and CPU per delivered
      // event of the whole process (gateway thread + the client worker, which is the same code before/after)
      gateway_loop_utilization: round3(elu.utilization),
      process_cpu_us_per_event: round3((cpu.user + cpu.system) / Math.max(1, result.events)),
      process_cpu_system_share: round3(cpu.system / Math.max(1, cpu.user + cpu.system)),
      // the gateway thread alone (JS, its GC pauses and its syscalls; not the client worker); null off Linux
      gateway_thread_cpu_us_per_event:
        thread0 !== undefined && thread1 !== undefined ? round3((thread1 - thread0) / 1000 / Math.max(1, result.events)) : null,
      tokens_measured: arr.length,
      tokens_expected: streams * tokens,
      events: result.events,
      errors: result.errors,
      setup_s: round3(setupMs / 1000),
      wall_s: round3(wallMs / 1000),
      // the most unsent bytes the gateway held in its graphql-ws sockets at once (all sockets), and the
      // token chunks it merged for clients that were behind
      max_send_queue_bytes: maxQueued,
      coalesced_chunks: coalescedChunks() - coalesced0,
      ...(slowDone
        ? {
            slow_consumers: cfg.slowConsumers,
            // from the slow consumers' subscriptions to the gateway holding unsent bytes for them
            slow_prefill_s: round3(prefillMs / 1000),
            // what each slow consumer read, on average
            slow_read_bytes_per_s: round3(slowDone.bytes / slowDone.seconds / cfg.slowConsumers),
            // sockets the gateway closed as slow consumers (4008)
            slow_socket_closes: slowDone.slowCloses,
            slow_errors: slowDone.errors,
          }
        : {}),
    };
    return out;
  } finally {
    // on every path, errors included: nothing of the round may outlive it
    capture?.stop();
    clearInterval(sampler);
    clearTimeout(warmTimer);
    lag.disable();
    lagWarm.disable();
    gcWatch.disconnect();
    await slow?.terminate();
    await front?.close();
    await server?.close();
    await bare?.close();
  }
}

/** A worker's messages in order; a worker error or exit rejects the pending and every later next(). */
function workerMessages(w: Worker): { next(): Promise<unknown> } {
  const queued: unknown[] = [];
  const waiting: Array<{ resolve(v: unknown): void; reject(e: Error): void }> = [];
  let failure: Error | undefined;
  w.on('message', (m) => (waiting.length ? waiting.shift()!.resolve(m) : queued.push(m)));
  const fail = (e: Error) => {
    failure ??= e;
    for (const p of waiting.splice(0)) p.reject(failure);
  };
  w.on('error', fail);
  w.on('exit', (code) => fail(new Error(`worker exited (${code})`)));
  return {
    next: () =>
      queued.length ? Promise.resolve(queued.shift()) : failure ? Promise.reject(failure) : new Promise((resolve, reject) => waiting.push({ resolve, reject })),
  };
}

async function withTimeout<T>(p: Promise<T>, ms: number, what: string): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  try {
    return await Promise.race([p, new Promise<never>((_, reject) => (timer = setTimeout(() => reject(new Error(`timed out waiting for ${what}`)), ms)))]);
  } finally {
    clearTimeout(timer);
  }
}

/**
 * --slow-consumers K: rounds without and with K slow consumers, alternating (this machine's noise moves
 * p99 between runs far more than 5 %, so one pair would say little), and the ratio of their medians.
 */
async function slowConsumers(args: ParsedArgs, cfg: RoundConfig, json: boolean): Promise<number> {
  if (cfg.viaReplica) throw new UsageError('--via-replica does not apply to --slow-consumers');
  if (cfg.transport !== 'ws') throw new UsageError('--slow-consumers measures graphql-ws streams (--transport ws)');
  if (args.flags.has('no-floor')) throw new UsageError('--no-floor does not apply to --slow-consumers (it runs no floor rounds)');
  const k = intFlag(args, 'slow-consumers', 1, 1, 64);
  const slowRate = intFlag(args, 'slow-rate', 10_240, 1, 1 << 30);
  const rounds = intFlag(args, 'rounds', 3, 1, 50);
  const base: RoundResult[] = [];
  const slow: RoundResult[] = [];
  for (let r = 0; r < rounds; r++) {
    base.push(await measureRound({ ...cfg, slowConsumers: 0, slowRate: 0 }));
    slow.push(await measureRound({ ...cfg, slowConsumers: k, slowRate }));
  }
  const pick = (rs: RoundResult[], key: 'added_latency_p99_ms' | 'after_warmup_added_latency_p99_ms' | 'event_loop_lag_p99_ms' | 'gateway_thread_cpu_us_per_event') =>
    rs.map((r) => r[key] ?? NaN);
  const summary = (key: Parameters<typeof pick>[1]) => {
    const b = median(pick(base, key));
    const s = median(pick(slow, key));
    return { base_median: round3(b), slow_median: round3(s), ratio: round3(s / b), base: pick(base, key), slow: pick(slow, key) };
  };
  const out = {
    streams: cfg.streams,
    slow_consumers: k,
    slow_subscriptions_each: SLOW_SUBSCRIPTIONS,
    slow_rate_bytes_per_s: slowRate,
    rounds,
    added_latency_p99_ms: summary('added_latency_p99_ms'),
    after_warmup_added_latency_p99_ms: summary('after_warmup_added_latency_p99_ms'),
    event_loop_lag_p99_ms: summary('event_loop_lag_p99_ms'),
    gateway_thread_cpu_us_per_event: summary('gateway_thread_cpu_us_per_event'),
    slow_prefill_s: slow.map((r) => r.slow_prefill_s),
    slow_read_bytes_per_s: slow.map((r) => r.slow_read_bytes_per_s),
    // the most unsent bytes the gateway held at once over all sockets, per slow consumer (the other
    // clients read as fast as they are sent to: compare max_send_queue_bytes_base)
    max_send_queue_bytes_per_slow_consumer: Math.round(Math.max(...slow.map((r) => r.max_send_queue_bytes)) / k),
    max_send_queue_bytes_base: Math.max(...base.map((r) => r.max_send_queue_bytes)),
    coalesced_chunks: slow.map((r) => r.coalesced_chunks),
    slow_socket_closes: slow.reduce((n, r) => n + (r.slow_socket_closes ?? 0), 0),
    errors: [...base, ...slow].reduce((n, r) => n + r.errors + (r.slow_errors ?? 0), 0),
    tokens_missing: [...base, ...slow].reduce((n, r) => n + r.tokens_expected - r.tokens_measured, 0),
  };
  console.log(JSON.stringify(out));
  if (!json)
    console.error(
      `gateway bench: ${cfg.streams} streams, ${k} consumer(s) reading ${slowRate} B/s: added p99 ${out.added_latency_p99_ms.base_median} -> ${out.added_latency_p99_ms.slow_median} ms (x${out.added_latency_p99_ms.ratio}), ` +
        `unsent bytes held per slow consumer ${out.max_send_queue_bytes_per_slow_consumer} B (goal: p99 moved <= 5 %, <= 1 MiB per slow socket)`,
    );
  return out.errors === 0 && out.tokens_missing === 0 ? 0 : 1;
}

/** --churn: subscribe -> cancel cycles, and what they leave behind (bench/gateway-churn.ts). */
async function churn(args: ParsedArgs): Promise<number> {
  for (const f of ['streams', 'tokens', 'transport', 'via-replica', 'slow-consumers', 'slow-rate', 'rounds', 'no-floor'])
    if (args.flags.has(f)) throw new UsageError(`--${f} does not apply to --churn`);
  const { runChurn, churnLeftSomething } = await import('./gateway-churn.ts');
  const r = await runChurn({
    cycles: intFlag(args, 'churn', 10_000, 1, 10_000_000),
    concurrency: intFlag(args, 'concurrency', 20, 1, 1000),
    stepMs: intFlag(args, 'step-ms', 20, 1, 60_000),
  });
  console.log(JSON.stringify(r));
  const leaks = churnLeftSomething(r);
  if (!args.flags.has('json'))
    console.error(
      `gateway churn: ${r.cycles} cycles, stop latency p99 ${r.stop_latency_ms.all?.p99} ms (${r.stop_latency_p99_steps} steps), heap ${r.heap_growth_bytes_per_cycle} B/cycle, ` +
        (leaks.length ? `LEFT BEHIND: ${leaks.join(', ')}` : 'nothing left behind') + (r.errors ? `, ${r.errors} client errors` : ''),
    );
  return r.errors === 0 && leaks.length === 0 ? 0 : 1;
}

if (process.argv[1] && fileURLToPath(import.meta.url) === process.argv[1]) {
  process.exitCode = await run(process.argv.slice(2));
}
