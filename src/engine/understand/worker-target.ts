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
  private generation: number;
  private closed = false;

  private constructor(
    private client: WorkerClient,
    readonly vocab: number,
    readonly featureDim: number,
  ) {
    this.generation = client.generation;
  }

  static async open(client: WorkerClient, vocab: number, capacity = 64, featureDim = 0): Promise<WorkerSequence> {
    await client.whenReady();
    const s = new WorkerSequence(client, vocab, featureDim);
    await client.call({ op: 'open', seq: s.id, capacity }, [], s.generation);
    return s;
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

  /** Prefill/extend with mixed segments (ids and precomputed embeddings). */
  async extend(segments: Segment[], positions: Int32Array, mask: Uint8Array, rows: 'all' | 'last', wantFeatures = false): Promise<Float32Array> {
    const transfer: ArrayBuffer[] = [positions.buffer as ArrayBuffer, mask.buffer as ArrayBuffer];
    // ids are fresh per call; embeddings may be shared by several contexts, so they are copied
    for (const s of segments) if (s.kind === 'ids') transfer.push(s.ids.buffer as ArrayBuffer);
    const compact = this.pending ?? undefined;
    if (compact) transfer.push(compact.keep.buffer as ArrayBuffer);
    this.pending = null;
    const T = positions.length;
    const r = await this.client.call<{ logits: Float32Array; features?: Float32Array }>(
      { op: 'decode', seq: this.id, segments, positions, mask, rows, compact, features: wantFeatures },
      uniq(transfer),
      this.generation,
    );
    this.len += T;
    this.peak = Math.max(this.peak, this.len);
    this.lastFeatures = r.features ?? null;
    return r.logits;
  }

  forward(tokens: Int32Array, positions: Int32Array, mask: Uint8Array, rows: 'all' | 'last', wantFeatures = false): Promise<Float32Array> {
    return this.extend([{ kind: 'ids', ids: Int32Array.from(tokens) }], Int32Array.from(positions), Uint8Array.from(mask), rows, wantFeatures);
  }

  compact(c: Compaction): void {
    if (this.pending) throw new Error('two compactions without a forward in between');
    this.pending = { keepFrom: c.keepFrom, keep: Int32Array.from(c.keep) };
    this.len = c.keepFrom + c.keep.length;
  }

  /** Flush a deferred compaction (before handing the KV to another user, e.g. a session). */
  async flush(): Promise<void> {
    if (!this.pending) return;
    const c = this.pending;
    this.pending = null;
    await this.client.call({ op: 'compact', seq: this.id, keepFrom: c.keepFrom, keep: c.keep }, [], this.generation);
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

function uniq(a: ArrayBuffer[]): ArrayBuffer[] {
  return [...new Set(a)];
}

/** Drop everything after the first `len` cached tokens (applies a deferred compaction first). */
export async function truncateSequence(seq: WorkerSequence, len: number): Promise<void> {
  await seq.flush();
  if (len < seq.length) seq.compact({ keepFrom: len, keep: new Int32Array(0) });
  await seq.flush();
}
