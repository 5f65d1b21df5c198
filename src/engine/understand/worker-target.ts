// TargetSequence backed by a sequence (KV cache) inside the model worker. Compactions are deferred
// and sent with the next forward, so a speculative step costs one round trip.
import type { WorkerClient } from '../../runtime/client.ts';
import type { Segment } from '../../runtime/protocol.ts';
import type { Compaction, TargetSequence } from './target.ts';

let nextSeqId = 1;

/** A verification forward the worker ran inside a fused draft request (draft_chain / draft_tree). */
export interface PrefetchedVerify {
  tokens: Int32Array;
  positions: Int32Array;
  mask: Uint8Array;
  logits: Float32Array;
  features?: Float32Array;
}

/**
 * Posts `msg` at once (the worker handles requests in order, so it runs after the sequence's 'open'),
 * then waits for the open's answer first: if the open failed, its error wins and this reply is dropped.
 * Shared by WorkerSequence and the worker-backed draft model.
 */
export async function callAfterOpen<R>(
  client: WorkerClient,
  opened: Promise<unknown>,
  generation: number,
  msg: Parameters<WorkerClient['call']>[0],
  transfer: ArrayBuffer[] = [],
): Promise<R> {
  const r = client.call<R>(msg, transfer, generation);
  try {
    await opened;
  } catch (e) {
    r.catch(() => {});
    throw e;
  }
  return r;
}

export class WorkerSequence implements TargetSequence {
  readonly id = nextSeqId++;

  /** ids are shared by every kind of worker-side cache (target sequences, draft caches) */
  static allocateId(): number {
    return nextSeqId++;
  }
  private len = 0;
  private peak = 0;
  private pending: Compaction | null = null;
  lastFeatures: Float32Array | null = null;
  readonly generation: number;
  /** a chain verification that ran with the draft request (rows already in the worker's cache) */
  private pre: { base: number; v: PrefetchedVerify; wantFeatures: boolean } | null = null;
  /** forwards answered by a fused request's verification / prefetched rows dropped unused */
  prefetchHits = 0;
  prefetchMisses = 0;
  private closed = false;

  private constructor(
    private client: WorkerClient,
    readonly vocab: number,
    readonly featureDim: number,
  ) {
    this.generation = client.generation;
  }

  /**
   * Resolves as soon as the 'open' request is posted: the worker handles requests in order, so the
   * first forward can follow at once; its reply (or the open's error) is awaited with the forward.
   */
  static async open(client: WorkerClient, vocab: number, capacity = 64, featureDim = 0): Promise<WorkerSequence> {
    await client.whenReady();
    const s = new WorkerSequence(client, vocab, featureDim);
    s.opened = client.call<null>({ op: 'open', seq: s.id, capacity }, [], s.generation);
    s.opened.catch(() => {}); // reported by the next request that waits for it
    return s;
  }

  /** the worker's answer to this sequence's 'open' */
  private opened: Promise<null> = Promise.resolve(null);

  /** a request on this sequence, after its 'open' (posted in order; the open's error wins) */
  private request<R>(msg: Parameters<WorkerClient['call']>[0], transfer: ArrayBuffer[] = []): Promise<R> {
    return callAfterOpen<R>(this.client, this.opened, this.generation, msg, transfer);
  }

  get length(): number {
    return this.len;
  }

  /** most rows this sequence ever held (incl. verified draft trees): the worker's KV capacity follows it */
  get peakLength(): number {
    return this.peak;
  }

  /** false once the worker that held this sequence has died */
  get alive(): boolean {
    return this.client.generation === this.generation;
  }

  /**
   * The verify part of a fused draft request (worker-draft.ts chain): the compaction it applies
   * first, and whether it returns features. The sequence then holds the result (prefetched).
   */
  prefetchRequest(root: number): { seq: number; root: number; compact?: Compaction; features: boolean } {
    const compact = this.pending ?? undefined;
    this.pending = null;
    this.pre = null;
    return { seq: this.id, root, compact, features: this.featureDim > 0 };
  }

  /** A fused draft request appended and verified these rows: the next forward asking exactly for them returns it. */
  prefetched(v: PrefetchedVerify): void {
    // `length` counts these rows only once the forward that asks for them returns them
    this.pre = { base: this.len, v, wantFeatures: !!v.features };
  }

  /** Prefill/extend with mixed segments (ids and precomputed embeddings). */
  async extend(segments: Segment[], positions: Int32Array, mask: Uint8Array, rows: 'all' | 'last', wantFeatures = false): Promise<Float32Array> {
    const transfer: ArrayBuffer[] = [positions.buffer as ArrayBuffer, mask.buffer as ArrayBuffer];
    // ids and pixels are fresh per call; embeddings may be shared by several contexts, so they are copied
    for (const s of segments) if (s.kind === 'ids') transfer.push(s.ids.buffer as ArrayBuffer);
    else if (s.kind === 'pixels') transfer.push(s.pixels.buffer as ArrayBuffer);
    const compact = this.pending ?? undefined;
    if (compact) transfer.push(compact.keep.buffer as ArrayBuffer);
    this.pending = null;
    const T = positions.length;
    const r = await this.request<{ logits: Float32Array; features?: Float32Array }>(
      { op: 'decode', seq: this.id, segments, positions, mask, rows, compact, features: wantFeatures },
      uniq(transfer),
    );
    this.len += T;
    this.peak = Math.max(this.peak, this.len);
    this.lastFeatures = r.features ?? null;
    return r.logits;
  }

  forward(tokens: Int32Array, positions: Int32Array, mask: Uint8Array, rows: 'all' | 'last', wantFeatures = false): Promise<Float32Array> {
    const p = this.pre;
    if (p) {
      this.pre = null;
      if (rows === 'all' && p.wantFeatures === wantFeatures && p.base === this.len && !this.pending && same(p.v.tokens, tokens) && same(p.v.positions, positions) && same(p.v.mask, mask)) {
        this.len += tokens.length;
        this.peak = Math.max(this.peak, this.len);
        this.prefetchHits++;
        this.lastFeatures = p.v.features ?? null;
        return Promise.resolve(p.v.logits);
      }
      // asked for something else (e.g. the chain was pruned): drop the prefetched rows first
      this.prefetchMisses++;
      if (!this.pending) this.compact({ keepFrom: this.len, keep: new Int32Array(0) });
    }
    return this.extend([{ kind: 'ids', ids: Int32Array.from(tokens) }], Int32Array.from(positions), Uint8Array.from(mask), rows, wantFeatures);
  }

  compact(c: Compaction): void {
    // prefetched rows (beyond `length`) are dropped by any compaction, which keeps rows < length only
    this.pre = null;
    if (this.pending) throw new Error('two compactions without a forward in between');
    this.pending = { keepFrom: c.keepFrom, keep: Int32Array.from(c.keep) };
    this.len = c.keepFrom + c.keep.length;
  }

  /** Flush a deferred compaction (before handing the KV to another user, e.g. a session). */
  async flush(): Promise<void> {
    if (this.pre) {
      // a prefetched verification nobody asked for: drop its rows from the worker's cache
      this.pre = null;
      if (!this.pending) this.pending = { keepFrom: this.len, keep: new Int32Array(0) };
    }
    if (!this.pending) return;
    const c = this.pending;
    this.pending = null;
    await this.request({ op: 'compact', seq: this.id, keepFrom: c.keepFrom, keep: c.keep });
  }

  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    if (this.client.generation !== this.generation) return; // died with its worker
    try {
      await this.client.call({ op: 'close', seq: this.id }, [], this.generation);
    } catch {
      /* worker gone or engine closed: nothing to free */
    }
  }
}

function same(a: ArrayLike<number>, b: ArrayLike<number>): boolean {
  if (a.length !== b.length) return false;
  for (let i = 0; i < a.length; i++) if (a[i] !== b[i]) return false;
  return true;
}

function uniq(a: ArrayBuffer[]): ArrayBuffer[] {
  return [...new Set(a)];
}

/** Drop everything after the first `len` cached tokens (applies a deferred compaction first). */
export async function truncateSequence(seq: WorkerSequence, len: number): Promise<void> {
  await seq.flush();
  if (len < seq.length) seq.compact({ keepFrom: len, keep: new Int32Array(0) });
  await seq.flush();
}
