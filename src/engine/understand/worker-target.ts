// TargetSequence backed by a sequence (KV cache) inside the model worker. Compactions are deferred
// and sent with the next forward, so a speculative step costs one round trip.
import type { WorkerClient } from '../../runtime/client.ts';
import type { Segment } from '../../runtime/protocol.ts';
import type { Compaction, TargetSequence } from './target.ts';

let nextSeqId = 1;

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
  private pre: { base: number; ids: Int32Array; pos: number; logits: Float32Array; features: Float32Array | null; wantFeatures: boolean } | null = null;
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
  private async request<R>(msg: Parameters<WorkerClient['call']>[0], transfer: ArrayBuffer[] = []): Promise<R> {
    const r = this.client.call<R>(msg, transfer, this.generation);
    try {
      await this.opened;
    } catch (e) {
      r.catch(() => {});
      throw e;
    }
    return r;
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

  /** The fused request appended [root, chain] at positions pos…: the next matching forward returns it. */
  prefetched(ids: Int32Array, pos: number, logits: Float32Array, features: Float32Array | null): void {
    // `length` counts these rows only once the forward that asks for them returns them
    this.pre = { base: this.len, ids, pos, logits, features, wantFeatures: features !== null };
  }

  /** Prefill/extend with mixed segments (ids and precomputed embeddings). */
  async extend(segments: Segment[], positions: Int32Array, mask: Uint8Array, rows: 'all' | 'last', wantFeatures = false): Promise<Float32Array> {
    const transfer: ArrayBuffer[] = [positions.buffer as ArrayBuffer, mask.buffer as ArrayBuffer];
    // ids are fresh per call; embeddings may be shared by several contexts, so they are copied
    for (const s of segments) if (s.kind === 'ids') transfer.push(s.ids.buffer as ArrayBuffer);
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
      if (rows === 'all' && p.wantFeatures === wantFeatures && p.base === this.len && !this.pending && sameChain(p.ids, p.pos, tokens, positions, mask)) {
        this.len += p.ids.length;
        this.peak = Math.max(this.peak, this.len);
        this.lastFeatures = p.features;
        return Promise.resolve(p.logits);
      }
      // asked for something else (e.g. the chain was pruned): drop the prefetched rows first
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

/** tokens/positions/mask are exactly the chain [ids] at pos, pos+1, … with a causal mask */
function sameChain(ids: Int32Array, pos: number, tokens: Int32Array, positions: Int32Array, mask: Uint8Array): boolean {
  const T = ids.length;
  if (tokens.length !== T || positions.length !== T || mask.length !== T * T) return false;
  for (let i = 0; i < T; i++) {
    if (tokens[i] !== ids[i] || positions[i] !== pos + i) return false;
    for (let j = 0; j < T; j++) if (mask[i * T + j] !== (j <= i ? 1 : 0)) return false;
  }
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
