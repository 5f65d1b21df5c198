// Shared gateway state handed to resolvers and transports.
import type { Engine } from '../engine/types.ts';
import { GatewayError } from './errors.ts';
import { ImageStore } from './images.ts';
import { JobManager } from './jobs.ts';
import { DEFAULT_LIMITS, defaultShare, type GatewayLimits } from './limits.ts';
import { GatewayMetrics } from './metrics.ts';
import { Relay } from './relay.ts';
import { PeerClient } from './peer-client.ts';
import type { ReplicaConfig } from './replicas.ts';
import { Scheduler } from './scheduler.ts';
import { SessionStore } from './sessions.ts';
import { ErrorCodeValues } from './schema-types.ts';
import { packageVersion } from '../version.ts';

/** Every root field of the schema: operations_total shows each from the start (test/gateway/metrics-format.test.ts checks the list). */
export const ROOT_FIELDS = ['models', 'health', 'job', 'generateImage', 'editImage', 'cancelJob', 'createSession', 'closeSession', 'understand', 'imageJob'] as const;

/** Per-operation GraphQL context (HTTP and graphql-ws). */
export interface GatewayContext {
  /** Aborted when the client stops this operation or disconnects. */
  signal: AbortSignal;
  /** e.g. http://127.0.0.1:4000, for absolute image URLs */
  baseUrl: string;
  /** who the per-client limits count: `key:<API key>` when auth is on, else `ip:<address>` */
  client?: string;
  /** the client's API key (auth on), which an operation forwarded to another replica presents there */
  apiKey?: string;
  /** the replica that forwarded this request here (replicas.ts FORWARDED_HEADER), if one did */
  forwardedBy?: string;
  /** SSE over HTTP: the `Last-Event-ID` a reconnecting EventSource sent (imageJob resumes after it) */
  lastEventId?: number;
}

export type EngineState = 'loading' | 'ok' | 'failed' | 'shutting-down';
export type StreamKind = 'understand' | 'image_job' | 'image_mutation';

export class GatewayRuntime {
  readonly limits: GatewayLimits;
  readonly scheduler: Scheduler;
  readonly sessions: SessionStore;
  readonly jobs: JobManager;
  readonly images: ImageStore;
  readonly metrics: GatewayMetrics;
  /** forwards operations on other replicas' jobs and sessions; undefined without a replica id */
  readonly relay?: Relay;
  readonly startedAt = Date.now();
  state: EngineState = 'loading';
  wsConnections = 0;
  /** set by the server that owns the graphql-ws sockets: their summed bufferedAmount */
  wsSendQueueBytes: () => number = () => 0;
  private engineRef?: Engine;
  private readonly active = new Map<StreamKind, number>();

  /** @param log  where a job's INTERNAL failure is written (with its error id), as the server logs its own */
  constructor(limits: Partial<GatewayLimits> = {}, replica?: ReplicaConfig, log: (line: string) => void = (line) => console.error(line)) {
    this.limits = { ...DEFAULT_LIMITS, ...limits };
    const L = this.limits;
    this.scheduler = new Scheduler(L.maxConcurrentJobs, L.maxQueuedJobs, L.maxQueuedPerClient ?? defaultShare(L.maxQueuedJobs));
    this.images = new ImageStore(L.imageStoreBytes, L.imageStoreTtlMs, Date.now, replica?.id);
    this.metrics = new GatewayMetrics({
      activeStreams: () => (['understand', 'image_job', 'image_mutation'] as const).map((k) => [{ kind: k }, this.active.get(k) ?? 0]),
      queueDepth: () => this.scheduler.queuedCount,
      runningJobs: () => this.scheduler.runningCount,
      wsConnections: () => this.wsConnections,
      wsSendQueueBytes: () => this.wsSendQueueBytes(),
      sessions: () => this.sessions.size,
      sessionBytes: () => this.sessions.bytes,
      imageStoreBytes: () => this.images.bytes,
      retainedJobs: () => this.jobs.size,
      ready: () => (this.ready ? 1 : 0),
      build: () => ({ version: packageVersion(), model: this.engineRef?.info.name ?? '' }),
      limits: () => [
        [{ name: 'max_concurrent_jobs' }, L.maxConcurrentJobs],
        [{ name: 'max_queued_jobs' }, L.maxQueuedJobs],
        [{ name: 'max_sessions' }, L.maxSessions],
        // (0 turns this one off: no series then, rather than a limit of 0)
        ...(L.maxWsConnections > 0 ? [[{ name: 'max_ws_connections' }, L.maxWsConnections] as [Record<string, string>, number]] : []),
      ],
    }, { errorCodes: ErrorCodeValues, fields: ROOT_FIELDS });
    this.sessions = new SessionStore(() => this.engine, L, Date.now, replica?.id);
    if (replica) this.relay = new Relay(new PeerClient(replica), this.metrics);
    this.jobs = new JobManager({
      engine: () => this.engine,
      scheduler: this.scheduler,
      metrics: this.metrics,
      jobRetentionMs: L.jobRetentionMs,
      maxRetainedJobs: L.maxRetainedJobs,
      unwatchedJobTimeoutMs: L.unwatchedJobTimeoutMs,
      engineStallTimeoutMs: L.engineStallTimeoutMs,
      replicaId: replica?.id,
      log,
    });
  }

  setEngine(engine: Engine): void {
    this.engineRef = engine;
    this.state = 'ok';
  }

  get ready(): boolean {
    return this.state === 'ok' && !!this.engineRef;
  }

  /** The engine, or UNAVAILABLE while loading / after a failed load / during shutdown. */
  get engine(): Engine {
    if (this.state === 'ok' && this.engineRef) return this.engineRef;
    if (this.state === 'failed') throw new GatewayError('MODEL_LOAD_FAILED', 'The model failed to load');
    throw new GatewayError('UNAVAILABLE', this.state === 'loading' ? 'The model is still loading; retry shortly' : 'The server is shutting down');
  }

  get activeStreamCount(): number {
    let n = 0;
    for (const v of this.active.values()) n += v;
    return n;
  }

  /** Counts an open stream; the returned function closes it (idempotent). */
  openStream(kind: StreamKind): () => void {
    this.active.set(kind, (this.active.get(kind) ?? 0) + 1);
    let open = true;
    return () => {
      if (!open) return;
      open = false;
      this.active.set(kind, (this.active.get(kind) ?? 1) - 1);
    };
  }

  dispose(): void {
    this.state = 'shutting-down';
    this.metrics.close();
    this.relay?.dispose();
    this.jobs.dispose();
    this.scheduler.drain(new GatewayError('UNAVAILABLE', 'The server is shutting down'));
    try {
      this.sessions.dispose();
    } catch {
      // engine may be gone
    }
  }
}
