import { monitorEventLoopDelay } from 'node:perf_hooks';

const LOOP_RESOLUTION_MS = 10;
const LOOP_WINDOW_MS = 15_000;

// A small Prometheus text-format registry (no extra dependency). Covers HTTP and graphql-ws alike,
// since everything is recorded by the gateway's own code rather than HTTP middleware.

type Labels = Record<string, string>;
const hasKeys = (l: Labels) => {
  for (const _ in l) return true;
  return false;
};
// hot path: counters bumped per token (no labels) skip the sort/escape/join
const labelKey = (l: Labels) =>
  !hasKeys(l)
    ? ''
    : Object.keys(l)
    .sort()
    .map((k) => `${k}="${String(l[k]).replace(/\\/g, '\\\\').replace(/"/g, '\\"').replace(/\n/g, '\\n')}"`)
    .join(',');

export class Counter {
  private readonly values = new Map<string, number>();
  /**
   * @param labelled  every series has labels: none is shown before the first event or declared label set (a
   *   label-less `name 0` would vanish at the first event, when the labelled series appears)
   */
  constructor(
    readonly name: string,
    readonly help: string,
    private readonly labelled = false,
  ) {}
  /** `labels` undefined: the label-less series (the per-token hot path skips key building) */
  inc(labels?: Labels, by = 1): void {
    const k = labels === undefined ? '' : labelKey(labels);
    this.values.set(k, (this.values.get(k) ?? 0) + by);
  }
  get(labels: Labels = {}): number {
    return this.values.get(labelKey(labels)) ?? 0;
  }
  render(): string {
    const lines = [`# HELP ${this.name} ${this.help}`, `# TYPE ${this.name} counter`];
    if (this.values.size === 0 && !this.labelled) lines.push(`${this.name} 0`);
    for (const [k, v] of this.values) lines.push(`${this.name}${k ? `{${k}}` : ''} ${v}`);
    return lines.join('\n');
  }
}

/** A value read at scrape time; `type` counter for one that only grows (process_cpu_seconds_total). */
export class Gauge {
  constructor(
    readonly name: string,
    readonly help: string,
    private readonly read: () => number | Array<[Labels, number]>,
    private readonly type: 'gauge' | 'counter' = 'gauge',
  ) {}
  render(): string {
    const lines = [`# HELP ${this.name} ${this.help}`, `# TYPE ${this.name} ${this.type}`];
    const v = this.read();
    if (typeof v === 'number') lines.push(`${this.name} ${v}`);
    else for (const [l, n] of v) lines.push(`${this.name}{${labelKey(l)}} ${n}`);
    return lines.join('\n');
  }
}

export class Histogram {
  /** per label set (labelKey; '' for none): bucket counts, sum, count */
  private readonly series = new Map<string, { counts: number[]; sum: number; count: number }>();
  /** @param declared  label sets shown (empty) from the start, as GatewayMetrics declares counters' */
  constructor(
    readonly name: string,
    readonly help: string,
    readonly buckets: number[],
    declared: Labels[] = [],
  ) {
    for (const l of declared) this.series.set(labelKey(l), { counts: buckets.map(() => 0), sum: 0, count: 0 });
  }
  observe(v: number, labels?: Labels): void {
    if (!Number.isFinite(v)) return;
    const k = labels === undefined ? '' : labelKey(labels);
    let s = this.series.get(k);
    if (!s) this.series.set(k, (s = { counts: this.buckets.map(() => 0), sum: 0, count: 0 }));
    s.sum += v;
    s.count++;
    for (let i = 0; i < this.buckets.length; i++) if (v <= this.buckets[i]!) s.counts[i]!++;
  }
  /** observations over every label set */
  get observations(): number {
    let n = 0;
    for (const s of this.series.values()) n += s.count;
    return n;
  }
  render(): string {
    const lines = [`# HELP ${this.name} ${this.help}`, `# TYPE ${this.name} histogram`];
    const all = this.series.size ? this.series : new Map([['', { counts: this.buckets.map(() => 0), sum: 0, count: 0 }]]);
    for (const [k, s] of all) {
      const l = (extra?: string) => (k || extra ? `{${[k, extra].filter(Boolean).join(',')}}` : '');
      this.buckets.forEach((b, i) => lines.push(`${this.name}_bucket${l(`le="${b}"`)} ${s.counts[i]}`));
      lines.push(`${this.name}_bucket${l('le="+Inf"')} ${s.count}`, `${this.name}_sum${l()} ${s.sum}`, `${this.name}_count${l()} ${s.count}`);
    }
    return lines.join('\n');
  }
}

export interface MetricsSources {
  /** 1 when the model is loaded and requests are served, else 0 (loading, failed, shutting down) */
  ready?: () => number;
  /** the package version and the model's name, for hyperbagel_build_info */
  build?: () => { version: string; model: string };
  /** configured limits, for saturation ratios (running_jobs / max_concurrent_jobs, ...) */
  limits?: () => Array<[Labels, number]>;
  activeStreams: () => Array<[Labels, number]>;
  queueDepth: () => number;
  runningJobs: () => number;
  wsConnections: () => number;
  sessions: () => number;
  /** bytes all sessions hold, as the engine reports them (KV cache + latest image) */
  sessionBytes?: () => number;
  imageStoreBytes: () => number;
  retainedJobs: () => number;
  /** bytes written to graphql-ws sockets that the kernel has not yet taken (ws's bufferedAmount, all sockets) */
  wsSendQueueBytes?: () => number;
}

export class GatewayMetrics {
  readonly operations = new Counter('hyperbagel_gateway_operations_total', 'GraphQL operations started, by root field', true);
  readonly errors = new Counter('hyperbagel_gateway_errors_total', 'Errors returned to clients, by code', true);
  readonly cancellations = new Counter('hyperbagel_gateway_cancellations_total', 'Model work cancelled, by reason and operation', true);
  readonly busy = new Counter('hyperbagel_gateway_busy_rejections_total', 'Requests rejected with BUSY');
  readonly droppedPreviews = new Counter('hyperbagel_gateway_dropped_previews_total', 'Preview frames superseded before a slow client took them');
  readonly coalescedChunks = new Counter('hyperbagel_gateway_coalesced_chunks_total', 'Token chunks merged into a previous event because the client was slow');
  readonly rateLimited = new Counter('hyperbagel_gateway_rate_limited_total', 'Operations rejected with RATE_LIMITED, by transport', true);
  readonly originRejected = new Counter('hyperbagel_gateway_origin_rejected_total', 'Requests and WebSocket upgrades refused for their Origin or Host header, by transport', true);
  readonly wsProtocolErrors = new Counter('hyperbagel_gateway_ws_protocol_errors_total', 'graphql-ws sockets that ws closed for a client protocol fault (oversized or malformed frame), by ws error code', true);
  readonly wsRefused = new Counter('hyperbagel_gateway_ws_connections_refused_total', 'graphql-ws upgrades refused with HTTP 429, by reason (total or per_client connection limit)', true);
  readonly heartbeatTimeouts = new Counter('hyperbagel_gateway_ws_heartbeat_timeouts_total', 'graphql-ws sockets the heartbeat terminated: no answer to its pings and no data taken for an interval, or no answer for 3');
  readonly slowSocketCloses = new Counter('hyperbagel_gateway_slow_socket_closes_total', 'graphql-ws sockets closed because the client stopped reading (code 4008)');
  readonly forwarded = new Counter('hyperbagel_gateway_forwarded_total', 'Operations forwarded to the replica that owns their job or session id, by root field and replica', true);
  readonly tokens = new Counter('hyperbagel_gateway_generated_tokens_total', 'Tokens the engine generated for understand streams');
  readonly ttft = new Histogram('hyperbagel_gateway_ttft_seconds', 'Time to first token (gateway receipt to first chunk)', [0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10]);
  readonly timePerOutputToken = new Histogram('hyperbagel_gateway_time_per_output_token_seconds', 'Decode time per token after the first (TPOT), per understand request of two or more tokens', [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1]);
  readonly tokensPerSecond = new Histogram('hyperbagel_gateway_tokens_per_second', 'Decode throughput per understand request', [1, 5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000, 10000]);
  readonly acceptanceLength = new Histogram('hyperbagel_gateway_acceptance_length', 'Tokens a streamed chunk with drafts yields per verification: its accepted drafts + 1 (a chunk that folds textless steps counts once; chunks without drafts and the steps after the last chunk are not observed)', [1, 2, 3, 4, 5, 6, 8, 12, 16]);
  readonly previewLatency = new Histogram('hyperbagel_gateway_preview_latency_seconds', 'Image job start to first preview frame', [0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10]);
  readonly thinkTime = new Histogram('hyperbagel_gateway_think_seconds', 'Think mode: time the model spent writing the scene description', [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1]);
  readonly jobDuration = new Histogram(
    'hyperbagel_gateway_image_job_seconds',
    'Image job start (slot taken) to terminal state, by mode and outcome (succeeded, failed, cancelled)',
    [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60],
    ['PROGRESSIVE', 'ONE_STEP', 'SIX_STEP', 'BASELINE'].flatMap((mode) => ['succeeded', 'failed', 'cancelled'].map((outcome) => ({ mode, outcome }))),
  );
  readonly queueWait = new Histogram('hyperbagel_gateway_queue_wait_seconds', 'Time spent waiting for a slot, by kind (understand, image_job)', [0.001, 0.01, 0.05, 0.1, 0.5, 1, 5, 10, 30], [{ kind: 'understand' }, { kind: 'image_job' }]);
  private readonly gauges: Gauge[];

  /** the event loop's delay, sampled by Node (perf_hooks) every LOOP_RESOLUTION_MS, in windows of LOOP_WINDOW_MS */
  private readonly loopDelay = monitorEventLoopDelay({ resolution: LOOP_RESOLUTION_MS });
  /** the last complete window's quantiles (seconds, the sampling interval taken off) */
  private loopWindow: Array<[Labels, number]> = [];
  private readonly loopTimer: NodeJS.Timeout;

  /**
   * @param declared  label sets shown at 0 before their first event (`inc(labels, 0)`), so a scraper sees every
   *   series from the start and rate()/increase() catch the first event after a restart
   */
  constructor(src: MetricsSources, declared: { errorCodes?: readonly string[]; fields?: readonly string[] } = {}) {
    this.loopDelay.enable();
    // a window of its own, not "since the last scrape": several scrapers (or a curl) must not take each other's
    this.loopTimer = setInterval(() => {
      const h = this.loopDelay;
      const s = (ns: number) => Math.max(0, ns / 1e9 - LOOP_RESOLUTION_MS / 1000); // Node counts the interval itself
      this.loopWindow = h.count ? [[{ quantile: '0.5' }, s(h.percentile(50))], [{ quantile: '0.99' }, s(h.percentile(99))], [{ quantile: '1' }, s(h.max)]] : [];
      h.reset();
    }, LOOP_WINDOW_MS);
    this.loopTimer.unref();
    for (const code of declared.errorCodes ?? []) this.errors.inc({ code }, 0);
    for (const field of declared.fields ?? []) this.operations.inc({ field }, 0);
    for (const transport of ['http', 'ws']) this.rateLimited.inc({ transport }, 0);
    for (const transport of ['http', 'ws']) this.originRejected.inc({ transport }, 0);
    for (const reason of ['total', 'per_client']) this.wsRefused.inc({ reason }, 0);
    // every way model work is cancelled: a client gone, cancelJob, nobody watching a detached job, shutdown
    this.cancellations.inc({ reason: 'client_gone', operation: 'understand' }, 0);
    for (const reason of ['client_gone', 'cancel_job', 'unwatched_timeout', 'shutdown']) this.cancellations.inc({ reason, operation: 'image_job' }, 0);
    const start = Date.now() / 1000 - process.uptime();
    this.gauges = [
      new Gauge('hyperbagel_build_info', 'Always 1: the package version and the model served, as labels', () => (src.build ? [[src.build(), 1]] : [])),
      new Gauge('hyperbagel_gateway_ready', '1 when the model is loaded and requests are served, else 0 (loading, failed to load, shutting down)', src.ready ?? (() => 1)),
      new Gauge('hyperbagel_gateway_limit', 'Configured limits, by name (max_concurrent_jobs, max_queued_jobs, max_ws_connections, ...): divide a gauge by its limit for saturation', src.limits ?? (() => [])),
      new Gauge('process_start_time_seconds', 'Start time of the process since the Unix epoch, in seconds', () => start),
      new Gauge('process_cpu_seconds_total', 'User and system CPU time the process has spent, in seconds', () => {
        const u = process.cpuUsage();
        return (u.user + u.system) / 1e6;
      }, 'counter'),
      new Gauge('process_resident_memory_bytes', 'Resident memory size, in bytes', () => process.memoryUsage.rss()),
      new Gauge('nodejs_heap_used_bytes', 'V8 heap in use, in bytes', () => process.memoryUsage().heapUsed),
      new Gauge('nodejs_eventloop_delay_seconds', `Event-loop delay over the last complete ${LOOP_WINDOW_MS / 1000} s window, by quantile (0.5, 0.99, 1 = max): how late a timer callback ran`, () => this.loopWindow),
      new Gauge('hyperbagel_gateway_active_streams', 'Open streaming operations, by kind; an understand stream from when it has an engine slot (before: queue_depth)', src.activeStreams),
      new Gauge('hyperbagel_gateway_queue_depth', 'Jobs waiting for a slot', src.queueDepth),
      new Gauge('hyperbagel_gateway_running_jobs', 'Jobs holding a slot', src.runningJobs),
      new Gauge('hyperbagel_gateway_ws_connections', 'Open graphql-ws connections', src.wsConnections),
      new Gauge('hyperbagel_gateway_ws_send_queue_bytes', 'Bytes written to graphql-ws sockets that the kernel has not taken yet (a slow reader, once its kernel buffers are full)', src.wsSendQueueBytes ?? (() => 0)),
      new Gauge('hyperbagel_gateway_sessions', 'Live sessions', src.sessions),
      new Gauge('hyperbagel_gateway_session_bytes', 'Bytes held by live sessions (engine KV cache + latest images)', src.sessionBytes ?? (() => 0)),
      new Gauge('hyperbagel_gateway_image_store_bytes', 'Bytes held for Image.url', src.imageStoreBytes),
      new Gauge('hyperbagel_gateway_retained_jobs', 'Image jobs held for resume', src.retainedJobs),
    ];
  }

  /** Stops sampling the event loop (the server's close). */
  close(): void {
    clearInterval(this.loopTimer);
    this.loopDelay.disable();
  }

  render(): string {
    const all = [
      ...this.gauges,
      this.operations,
      this.errors,
      this.cancellations,
      this.busy,
      this.droppedPreviews,
      this.coalescedChunks,
      this.rateLimited,
      this.originRejected,
      this.wsProtocolErrors,
      this.slowSocketCloses,
      this.heartbeatTimeouts,
      this.wsRefused,
      this.forwarded,
      this.tokens,
      this.ttft,
      this.timePerOutputToken,
      this.tokensPerSecond,
      this.acceptanceLength,
      this.previewLatency,
      this.thinkTime,
      this.jobDuration,
      this.queueWait,
    ];
    return all.map((m) => m.render()).join('\n') + '\n';
  }
}

/**
 * Time per output token after the first (vLLM's TPOT), in seconds, from an understand summary:
 * the decode time after the first token over the tokens after it. Undefined for answers of under two
 * tokens, which have no decode phase to measure.
 */
export function timePerOutputToken(s: { usage: { completionTokens: number }; timings: { timeToFirstTokenMs: number; totalMs: number } }): number | undefined {
  const n = s.usage.completionTokens;
  const decodeMs = s.timings.totalMs - s.timings.timeToFirstTokenMs;
  if (n < 2 || !(s.timings.timeToFirstTokenMs > 0) || !(decodeMs >= 0)) return undefined;
  return decodeMs / (n - 1) / 1000;
}
