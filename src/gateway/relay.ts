// Operations on jobs and sessions another replica owns (see replicas.ts), forwarded to that owner.
//
// A relayed image job is an ImageJobRecord whose log is filled from the owner's `imageJob`
// subscription, so the resolvers serve it exactly as a local job (`previews`, `result`,
// `imageJob(id, after)`), numbered with the owner's sequence numbers. Its connection to the owner
// is open while someone here watches it; a lost connection is resumed from the last event
// received, and after RETRIES failed tries the record breaks with UNAVAILABLE.
import type { InputImageInfo as EngineInputImageInfo } from '../engine/types.ts';
import { GatewayError, loggedElsewhere, toGatewayError } from './errors.ts';
import { afterPastEnd, ImageJobRecord, jobNotFound, TERMINAL, type FrameRecord, type JobEvent, type JobFrame } from './jobs.ts';
import type { GatewayMetrics } from './metrics.ts';
import { isTransient, PeerClient, type Caller, type Json } from './peer-client.ts';
import { ownerOf } from './replicas.ts';
import { linkedSignal, sleep } from './signals.ts';
import type { ErrorCode, GenerationMode, JobStatus } from './schema-types.ts';

/** Everything a client can select on an ImageFrame, images as base64 (the owner's URLs may not be reachable from the client). */
const FRAME = `stage nfe step elapsedMs seed thought sampler
  image { mimeType width height base64 sha256 }
  sourceImage { originalWidth originalHeight width height resized cropped source }`;
const IMAGE_JOB = `subscription RelayImageJob($id: ID!, $after: Int) {
  imageJob(id: $id, after: $after) { seq status done error { code message errorId } frame { ${FRAME} } }
}`;
const JOB = `query RelayJob($id: ID!) { job(id: $id) { id status mode seed lastSeq } }`;
const CANCEL_JOB = `mutation RelayCancelJob($id: ID!) { cancelJob(id: $id) }`;
const PING = `query RelayPing { __typename }`;
/**
 * An attached job (its mutation here selects previews or result) is started attached on its owner
 * too: the deferred result keeps this request open for the job's life, and the owner cancels the job
 * when the request goes, exactly as for a client of its own (this replica closing it, or failing).
 */
const ATTACHED = (field: 'generateImage' | 'editImage') =>
  `mutation RelayAttached($input: ${field === 'generateImage' ? 'GenerateImageInput' : 'EditImageInput'}!) { job: ${field}(input: $input) { id status mode seed lastSeq ... @defer { result { stage } } } }`;
const CLOSE_SESSION = `mutation RelayCloseSession($id: ID!) { closeSession(id: $id) }`;
const GENERATE = `mutation RelayGenerateImage($input: GenerateImageInput!) { job: generateImage(input: $input) { id status mode seed lastSeq } }`;
const EDIT = `mutation RelayEditImage($input: EditImageInput!) { job: editImage(input: $input) { id status mode seed lastSeq } }`;
const UNDERSTAND = `subscription RelayUnderstand($input: UnderstandInput!) {
  understand(input: $input) {
    text tokenIds acceptedTokens draftedTokens steps done finishReason fullText
    usage { promptTokens completionTokens totalTokens }
    timings { queueMs timeToFirstTokenMs totalMs tokensPerSecond }
    seed
    speculation { mode proposer drafts draftedTokens acceptedTokens meanAcceptedLength acceptanceRate acceptancePerPosition }
    inputImage { originalWidth originalHeight width height resized cropped source }
  }
}`;

/** The subscriptions whose events a relay passes on: they select every field (the schema test checks). */
export const RELAYED_SUBSCRIPTIONS = { imageJob: IMAGE_JOB, understand: UNDERSTAND };

/** Reconnects to the owner before a relayed job breaks, and the wait before each (ms). */
const RETRY_DELAYS_MS = [100, 400, 1600];
/**
 * A relayed job nobody here watches closes its connection to the owner after this long (another
 * field of the same operation may be about to watch it). An attached one at once: the owner cancels
 * the job then, as it would a local client's.
 */
const UNWATCHED_GRACE_MS = 250;

export interface RemoteJobSummary {
  id: string;
  status: JobStatus;
  mode: GenerationMode;
  seed: number;
  /** the owner's latest event when it answered: a consumer here replays up to it whole, as the owner would */
  lastSeq: number;
}

interface RemoteFrame {
  stage: 'PREVIEW' | 'FINAL';
  nfe: number;
  step: number;
  elapsedMs: number;
  seed: number;
  thought: string | null;
  sampler: string | null;
  image: { mimeType: JobFrame['image']['mimeType']; width: number; height: number; base64: string; sha256: string };
  sourceImage: (Omit<EngineInputImageInfo, 'source'> & { source: 'SESSION' | 'REQUEST' }) | null;
}

interface RemoteEvent {
  seq: number;
  status: JobStatus;
  done: boolean;
  error: { code: ErrorCode; message: string; errorId?: string | null } | null;
  frame: RemoteFrame | null;
}

function frameIn(f: RemoteFrame): JobFrame {
  const bytes = Buffer.from(f.image.base64, 'base64');
  return {
    stage: f.stage === 'PREVIEW' ? 'preview' : 'final',
    nfe: f.nfe,
    step: f.step,
    elapsedMs: f.elapsedMs,
    seed: f.seed,
    image: { mimeType: f.image.mimeType, width: f.image.width, height: f.image.height, bytes: new Uint8Array(bytes.buffer, bytes.byteOffset, bytes.byteLength), sha256: f.image.sha256 },
    sourceImage: f.sourceImage ? { ...f.sourceImage, source: f.sourceImage.source === 'SESSION' ? 'session' : 'request' } : undefined,
    thought: f.thought ?? undefined,
    sampler: f.sampler ?? undefined,
  };
}

/** Where a relayed job's events come from. */
export interface RelaySource {
  peers: PeerClient;
  owner: string;
  /** the owner's GraphQL endpoint */
  url: string;
  /** who asked here (their API key and rate identity), presented to the owner in turn */
  caller: Caller;
  /** aborted when this replica shuts down: every connection to an owner closes */
  closing?: AbortSignal;
}

/** An image job another replica runs, mirrored from that replica's event log. */
export class RelayedJob extends ImageJobRecord {
  private upstream?: ReturnType<typeof linkedSignal>;

  constructor(
    summary: Pick<RemoteJobSummary, 'id' | 'mode' | 'seed'>,
    private readonly source: RelaySource,
    private readonly opts: {
      /** the first event wanted is the one after this (the client's `after`; default 0) */
      from?: number;
      /** an attached job's open request to its owner (ATTACHED): closing it cancels the job there */
      attachment?: AbortController;
    } = {},
  ) {
    super(summary.id, summary.mode, summary.seed, false, opts.attachment ? 0 : UNWATCHED_GRACE_MS, () => undefined);
  }

  /**
   * Everything relayed is delivered: the owner already let previews slide for this replica's reading
   * speed, and relayed events arrive in bursts, so two queued previews here do not mean the client
   * fell behind (sliding on them would drop previews a direct client gets).
   */
  override historySeq(): number {
    return Infinity;
  }

  override watch(): () => void {
    const release = super.watch();
    if (!this.upstream && !this.terminal && !this.broken && !this.source.closing?.aborted) {
      const upstream = (this.upstream = linkedSignal(this.source.closing));
      void this.pump(upstream.signal).finally(upstream.dispose);
    }
    return release;
  }

  /** Nobody here watches any more: this mirror (one per operation) ends, and an attached job is cancelled at its owner. */
  protected override whenUnwatched(): void {
    this.fail(new GatewayError('CANCELLED', 'Nobody on this replica watches the job any more'));
  }

  /** Ends this mirror: its connection to the owner closes, and an attached job's request too (the owner cancels the job). */
  override fail(error: GatewayError): void {
    super.fail(error);
    this.upstream?.abort();
    this.upstream = undefined;
    if (!this.terminal) this.opts.attachment?.abort();
  }

  /** Follows the owner's log from the last event received, reconnecting after a lost connection. */
  private async pump(signal: AbortSignal): Promise<void> {
    let failures = 0;
    while (!signal.aborted && !this.terminal) {
      // from one event before the client's `after`: the owner answers a finished job with at least its
      // terminal event, so this record learns the job ended (the local consumer skips that event)
      const after = this.events.at(-1)?.seq ?? Math.max(0, (this.opts.from ?? 0) - 1);
      const { peers, owner, url, caller } = this.source;
      try {
        for await (const data of peers.subscribe(owner, url, IMAGE_JOB, { id: this.id, after }, caller, signal)) {
          failures = 0;
          this.relay(data['imageJob'] as RemoteEvent);
        }
        if (signal.aborted || this.terminal) return;
        // the owner completed the stream with nothing after `after`: the job has ended there, and the
        // client asked to start past its last event; learn how it ended
        const summary = (await peers.request(owner, url, JOB, { id: this.id }, caller, signal))['job'] as RemoteJobSummary | null;
        if (!summary) throw jobNotFound(this.id);
        if (!TERMINAL.has(summary.status)) throw new GatewayError('INTERNAL', `Replica "${owner}" ended job ${this.id}'s stream while the job is ${summary.status}`);
        this.endWithoutEvent(summary.status);
        return;
      } catch (e) {
        if (signal.aborted) return;
        if (!isTransient(e) || failures >= RETRY_DELAYS_MS.length) {
          this.fail(toGatewayError(e));
          return;
        }
        await sleep(RETRY_DELAYS_MS[failures++]!, signal);
      }
    }
  }

  private relay(ev: RemoteEvent): void {
    if (ev.seq <= (this.events.at(-1)?.seq ?? 0)) return; // already relayed (a resumed connection)
    const frame: FrameRecord | undefined = ev.frame ? { frame: frameIn(ev.frame) } : undefined;
    if (frame?.frame.stage === 'final') this.finalFrame = frame;
    // an owner's INTERNAL error keeps its id, and its log line stays the owner's
    const errorId = typeof ev.error?.errorId === 'string' ? ev.error.errorId : undefined;
    if (ev.done && ev.error) this.error = errorId ? loggedElsewhere(new GatewayError(ev.error.code, ev.error.message, { errorId })) : new GatewayError(ev.error.code, ev.error.message);
    const error = ev.error ? { code: ev.error.code, message: ev.error.message, ...(errorId ? { errorId } : {}) } : undefined;
    const event: Omit<JobEvent, 'seq'> & { seq: number } = { seq: ev.seq, status: ev.status, done: ev.done, frame, error };
    this.push(event);
  }
}

/** The forwarding side of each operation the resolvers may have to send to another replica. */
export class Relay {
  private readonly closer = new AbortController();
  /** aborted when this replica shuts down */
  readonly closing = this.closer.signal;

  constructor(
    readonly peers: PeerClient,
    private readonly metrics: GatewayMetrics,
  ) {}

  private source(owner: string, url: string, caller: Caller): RelaySource {
    return { peers: this.peers, owner, url, caller, closing: this.closing };
  }

  /** Closes every connection to an owner (shutdown). */
  dispose(): void {
    this.closer.abort();
  }

  get selfId(): string {
    return this.peers.config.id;
  }

  /**
   * The owner of `id` when that is another replica, else undefined (a plain id, or this replica's).
   * A request another replica forwarded here is answered here or not at all (`forwardedBy`).
   */
  remoteOwner(id: string, kind: 'job' | 'session', forwardedBy: string | undefined): string | undefined {
    const owner = ownerOf(id);
    if (owner === undefined || owner === this.selfId) return undefined;
    if (forwardedBy !== undefined)
      throw new GatewayError(kind === 'job' ? 'JOB_NOT_FOUND' : 'SESSION_NOT_FOUND', `No ${kind} ${JSON.stringify(id).slice(0, 80)} here: the request came forwarded (marked as from replica "${forwardedBy.slice(0, 32)}") to this replica ("${this.selfId}"), but the ${kind} belongs to "${owner.slice(0, 32)}", and a forwarded request is not forwarded again. If a replica sent it, its --peer URL for "${owner.slice(0, 32)}" points here`);
    return owner;
  }

  /** Counts a forwarded operation: only to a known peer (ids are client input; their prefixes must not become metric labels). */
  private count(field: string, owner: string): void {
    if (this.peers.config.peers.has(owner)) this.metrics.forwarded.inc({ field, replica: owner });
  }

  /** The owner's summary of a job (null when it has none), and a log mirror for its frames. */
  async job(owner: string, id: string, caller: Caller, signal?: AbortSignal): Promise<{ summary: RemoteJobSummary; mirror: () => RelayedJob } | null> {
    if (!this.peers.config.peers.has(owner)) return null; // as for any job this system does not have
    this.count('job', owner);
    const url = this.peers.endpoint(owner, 'job', id);
    const data = await this.peers.request(owner, url, JOB, { id }, caller, signal);
    const summary = data['job'] as RemoteJobSummary | null;
    if (!summary) return null;
    let mirror: RelayedJob | undefined;
    return { summary, mirror: () => (mirror ??= new RelayedJob(summary, this.source(owner, url, caller))) };
  }

  /** A mirror of the owner's job from event `after` on; JOB_NOT_FOUND when the owner has no such job. */
  async imageJob(owner: string, id: string, after: number, caller: Caller, signal?: AbortSignal): Promise<RelayedJob> {
    this.count('imageJob', owner);
    const url = this.peers.endpoint(owner, 'job', id);
    // ask first, so a missing job fails the subscribe itself, as a local one does
    const data = await this.peers.request(owner, url, JOB, { id }, caller, signal);
    const summary = data['job'] as RemoteJobSummary | null;
    if (!summary) throw jobNotFound(id);
    if (after > summary.lastSeq) throw afterPastEnd(after, summary.lastSeq);
    return new RelayedJob(summary, this.source(owner, url, caller), { from: after });
  }

  async cancelJob(owner: string, id: string, caller: Caller): Promise<boolean> {
    this.count('cancelJob', owner);
    const data = await this.peers.request(owner, this.peers.endpoint(owner, 'job', id), CANCEL_JOB, { id }, caller);
    return data['cancelJob'] === true;
  }

  async closeSession(owner: string, id: string, caller: Caller): Promise<boolean> {
    this.count('closeSession', owner);
    const data = await this.peers.request(owner, this.peers.endpoint(owner, 'session', id), CLOSE_SESSION, { id }, caller);
    return data['closeSession'] === true;
  }

  /**
   * Starts the image job on the owner of the input's session; returns its mirror. An attached one
   * stays attached there (ATTACHED): a client leaving before the owner answers cancels it too.
   */
  async startImageJob(field: 'generateImage' | 'editImage', owner: string, input: Json, attached: boolean, caller: Caller, signal?: AbortSignal): Promise<{ job: RelayedJob; summary: RemoteJobSummary }> {
    this.count(field, owner);
    const url = this.peers.endpoint(owner, 'session', String(input['sessionId']));
    if (!attached) {
      const summary = (await this.peers.request(owner, url, field === 'generateImage' ? GENERATE : EDIT, { input }, caller, signal))['job'] as RemoteJobSummary;
      return { job: new RelayedJob(summary, this.source(owner, url, caller)), summary };
    }
    const attachment = new AbortController();
    const onAbort = () => attachment.abort();
    // the client leaving before the answer ends the request (and so the job)
    if (signal?.aborted) attachment.abort();
    signal?.addEventListener('abort', onAbort, { once: true });
    this.closing.addEventListener('abort', onAbort, { once: true });
    const stream = this.peers.subscribe(owner, url, ATTACHED(field), { input }, caller, attachment.signal);
    let first: IteratorResult<Json>;
    try {
      first = await stream.next();
      if (attachment.signal.aborted) throw new GatewayError('CANCELLED', 'The request was cancelled');
      if (first.done) throw new GatewayError('INTERNAL', `Replica "${owner}" started no job`);
    } catch (e) {
      attachment.abort();
      this.closing.removeEventListener('abort', onAbort);
      throw e;
    } finally {
      signal?.removeEventListener('abort', onAbort);
    }
    // the rest of the response (the deferred result) only keeps the request open until the job ends
    void (async () => {
      try {
        while (!(await stream.next()).done);
      } catch {
        // the job's own events say how it ended
      } finally {
        this.closing.removeEventListener('abort', onAbort);
      }
    })();
    const summary = first.value['job'] as RemoteJobSummary;
    return { job: new RelayedJob(summary, this.source(owner, url, caller), { attachment }), summary };
  }

  /** The owner's understand stream for the input's session, event by event (the schema's UnderstandEvent). */
  async *understand(owner: string, input: Json, caller: Caller, signal: AbortSignal): AsyncGenerator<Json> {
    this.count('understand', owner);
    const url = this.peers.endpoint(owner, 'session', String(input['sessionId']));
    // the owner answers only once the request has a job slot there, so its stream is not timed until
    // then; ask first whether it answers at all (a frozen owner would otherwise hold this client)
    await this.peers.request(owner, url, PING, {}, caller, signal);
    for await (const data of this.peers.subscribe(owner, url, UNDERSTAND, { input }, caller, signal, false)) yield data['understand'] as Json;
  }
}
