// DraftModel backed by draft.onnx in the model worker (its own KV cache there). Crops are deferred
// and travel with the next forward.
import type { WorkerClient } from '../../runtime/client.ts';
import { callAfterOpen, WorkerSequence, type PrefetchedVerify } from '../understand/worker-target.ts';

function uniq(a: ArrayBuffer[]): ArrayBuffer[] {
  return [...new Set(a)];
}
import type { DraftChain, DraftForward, DraftModel, DraftRows, DraftTreeRecord, TreeVerify } from './eagle.ts';

export class WorkerDraftModel implements DraftModel {
  private len = 0;
  private pendingTruncate: number | null = null;
  private constructor(
    private client: WorkerClient,
    readonly id: number,
    readonly vocab: number,
    readonly featureDim: number,
    private generation: number,
  ) {}

  /** the worker's answer to this cache's 'open' (awaited with the first request that uses it) */
  private opened: Promise<null> = Promise.resolve(null);

  /** Resolves once the 'open' request is posted (requests are handled in order; see WorkerSequence.open). */
  static async open(client: WorkerClient, vocab: number, hidden: number, capacity = 128): Promise<WorkerDraftModel> {
    await client.whenReady();
    const id = WorkerSequence.allocateId();
    const gen = client.generation;
    const d = new WorkerDraftModel(client, id, vocab, hidden, gen);
    d.opened = client.call<null>({ op: 'open', seq: id, capacity, kind: 'draft' }, [], gen);
    d.opened.catch(() => {});
    return d;
  }

  private request<R>(msg: Parameters<WorkerClient['call']>[0], transfer: ArrayBuffer[]): Promise<R> {
    return callAfterOpen<R>(this.client, this.opened, this.generation, msg, transfer);
  }

  get length(): number {
    return this.len;
  }

  truncate(n: number): void {
    if (n >= this.len) return;
    this.pendingTruncate = Math.min(n, this.pendingTruncate ?? n);
    this.len = n;
  }

  /** The deferred crop, to travel with the next request (and be forgotten here). */
  private takeCompact(): { keepFrom: number; keep: Int32Array } | undefined {
    const compact = this.pendingTruncate !== null ? { keepFrom: this.pendingTruncate, keep: new Int32Array(0) } : undefined;
    this.pendingTruncate = null;
    return compact;
  }

  /** Committed rows of a fused chain/tree request, copied into buffers that are transferred, plus the deferred crop. */
  private fusedPayload(rows: DraftRows, what: string) {
    if (!rows.hidden) throw new Error(`draft ${what}: committed rows need target hidden states`);
    const compact = this.takeCompact();
    const commit = {
      embeds: Float32Array.from(rows.embeds),
      hidden: Float32Array.from(rows.hidden),
      positions: Int32Array.from(rows.positions),
      mask: Uint8Array.from(rows.mask),
    };
    const transfer = [commit.embeds.buffer, commit.hidden.buffer, commit.positions.buffer, commit.mask.buffer, ...(compact ? [compact.keep.buffer] : [])] as ArrayBuffer[];
    return { commit, compact, transfer };
  }

  async forward(r: DraftRows): Promise<DraftForward> {
    const compact = this.takeCompact();
    // fresh copies, transferred (the caller keeps its arrays)
    const msg = {
      op: 'draft' as const,
      seq: this.id,
      embeds: Float32Array.from(r.embeds),
      hidden: r.hidden ? Float32Array.from(r.hidden) : undefined,
      prev: r.prev ? Float32Array.from(r.prev) : undefined,
      positions: Int32Array.from(r.positions),
      mask: Uint8Array.from(r.mask),
      past: r.past ? { from: r.past.from, mask: Uint8Array.from(r.past.mask) } : undefined,
      compact,
    };
    const transfer = [msg.embeds, msg.hidden, msg.prev, msg.positions, msg.mask, msg.past?.mask, compact?.keep]
      .filter((a): a is NonNullable<typeof a> => !!a)
      .map((a) => a.buffer as ArrayBuffer);
    const out = await this.request<DraftForward>(msg, transfer);
    this.len += r.positions.length;
    return out;
  }

  /** Committed rows, then a greedy chain of `steps` tokens, in one worker request (eagle.ts DraftModel.chain). */
  /** target sequence whose verification of each chain travels with the chain request (verifyOn) */
  private target: WorkerSequence | null = null;

  /** Verify every chain on `seq` in the same worker request (the result waits in `seq`, see WorkerSequence.prefetch). */
  verifyOn(seq: WorkerSequence | null): void {
    this.target = seq;
  }

  async chain(rows: DraftRows, rootPos: number, steps: number, root?: number): Promise<DraftChain> {
    const { commit, compact, transfer } = this.fusedPayload(rows, 'chain');
    const target = root !== undefined && this.target?.alive && this.target.generation === this.generation ? this.target : null;
    const verify = target ? target.prefetchRequest(root!) : undefined;
    if (verify?.compact) transfer.push(verify.compact.keep.buffer as ArrayBuffer);
    const out = await this.request<DraftChain & { verify?: PrefetchedVerify }>(
      { op: 'draft_chain', seq: this.id, commit, rootPos, steps, compact, verify },
      uniq(transfer),
    );
    this.len += rows.positions.length + Math.max(0, steps - 1);
    if (target && out.verify) target.prefetched(out.verify);
    return { tokens: out.tokens, logprobs: out.logprobs };
  }

  /** Committed rows, then an EAGLE-2 expansion of `depth` levels, in one worker request (eagle.ts DraftModel.tree). */
  async tree(rows: DraftRows, rootPos: number, topK: number, depth: number, tv?: TreeVerify): Promise<DraftTreeRecord> {
    const { commit, compact, transfer } = this.fusedPayload(rows, 'tree');
    const target = tv && this.target?.alive && this.target.generation === this.generation ? this.target : null;
    const verify = target ? { ...target.prefetchRequest(tv!.root), budget: tv!.budget, choose: tv!.choose } : undefined;
    if (verify?.compact) transfer.push(verify.compact.keep.buffer as ArrayBuffer);
    const out = await this.request<DraftTreeRecord & { verify?: PrefetchedVerify }>({ op: 'draft_tree', seq: this.id, commit, rootPos, topK, depth, compact, verify }, uniq(transfer));
    if (target && out.verify) target.prefetched(out.verify);
    this.len += rows.positions.length;
    for (let l = 1; l < out.frontier.length; l++) this.len += out.frontier[l]!;
    return out;
  }

  async close(): Promise<void> {
    if (this.client.generation !== this.generation) return;
    try {
      await this.client.call({ op: 'close', seq: this.id }, [], this.generation);
    } catch {
      /* worker gone */
    }
  }
}
