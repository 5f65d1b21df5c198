// Shared per-engine state and the prompt/sequence layout of docs/model-pack.md.
import type { WorkerClient } from '../runtime/client.ts';
import type { LoadedPack, Manifest } from '../runtime/manifest.ts';
import type { Segment } from '../runtime/protocol.ts';
import type { Limiter } from './limiter.ts';
import type { AcceptanceStats } from './speculative/metrics.ts';
import type { CostCurve, DraftCost } from './speculative/sizing.ts';
import type { PackTokenizer } from './tokenizer.ts';

export interface EngineOptions {
  /** intra-op threads per onnxruntime session (default 2; keep intra × workers ≤ cores) */
  intraOpThreads?: number;
  /**
   * intra-op threads of the latency-bound sessions (decoder, draft, embed, distilled denoisers; default 1): their
   * graphs are hundreds of tiny ops, where thread-pool dispatch costs more than it saves
   */
  decodeIntraOpThreads?: number;
  interOpThreads?: number;
  allowSpinning?: boolean;
  /** µs the model worker polls for the next request after a reply (default 0; see SessionTuning) */
  replySpinUs?: number;
  /** requests decoding at once (default 4) */
  maxConcurrent?: number;
  /** requests waiting for a slot (default 32); more → BUSY */
  maxQueue?: number;
  /** measure verification cost vs token count at start-up for `auto` sizing (default true) */
  calibrate?: boolean;
  /** use this cost curve (ms per forward of T tokens) instead of measuring */
  costCurve?: Array<[number, number]>;
  /** use these draft costs (ms) instead of measuring */
  draftCost?: DraftCost;
  /** longest accepted prompt in words (default: what fits the decoder's positions) */
  maxPromptWords?: number;
  /** default and maximum answer length */
  defaultMaxTokens?: number;
  /** upper bound for chain length in auto sizing (default 8) */
  maxChainLength?: number;
  /** run the CFG contexts of a step as one batched denoiser call (default true) */
  batchCfg?: boolean;
}

export interface EngineCtx {
  pack: LoadedPack;
  manifest: Manifest;
  client: WorkerClient;
  tokenizer: PackTokenizer;
  stats: AcceptanceStats;
  /** running acceptance of the draft model (separate from the n-gram drafter's) */
  draftStats: AcceptanceStats;
  /** running acceptance of the draft model's tree steps (auto chooses chain vs tree from both) */
  draftTreeStats: AcceptanceStats;
  curve: CostCurve | null;
  /** the target's input embedding table [V, D] on the main thread (for the draft's inputs) */
  embedTable: Float32Array | null;
  /** measured draft costs (ms): one draft step, and the catch-up forward per verification */
  draftCost: DraftCost | null;
  /** auto-mode requests seen (exploration schedule) */
  autoRequests?: number;
  limiter: Limiter;
  opts: Required<Omit<EngineOptions, 'costCurve' | 'draftCost' | 'maxPromptWords'>> & { maxPromptWords: number };
}

/** A piece of a context: text token ids, an image block of embeddings (ViT), or a VAE latent block. */
/** An image enters as its embeddings, or as pixels the worker runs through vision.onnx within the forward. */
export type Part = { kind: 'ids'; ids: number[] } | { kind: 'image'; embeds: Float32Array; count: number } | { kind: 'pixels'; pixels: Float32Array; count: number };

export interface Layout {
  segments: Segment[];
  positions: Int32Array;
  mask: Uint8Array;
  /** position id after the last part */
  nextPos: number;
  /** token ids for the n-gram drafter (image blocks left out) */
  ids: number[];
}

/**
 * Positions and local mask of parts appended at `startPos`: each text token takes the next position
 * id, an image block takes one id for all its tokens; causal between blocks, bidirectional inside.
 */
export function layout(parts: Part[], startPos: number): Layout {
  const blocks: number[] = [];
  const pos: number[] = [];
  const segments: Segment[] = [];
  const ids: number[] = [];
  let p = startPos;
  let b = 0;
  for (const part of parts) {
    if (part.kind === 'ids') {
      if (!part.ids.length) continue;
      segments.push({ kind: 'ids', ids: Int32Array.from(part.ids) });
      for (const id of part.ids) {
        blocks.push(b++);
        pos.push(p++);
        ids.push(id);
      }
    } else {
      segments.push(part.kind === 'image' ? { kind: 'embeds', data: part.embeds, count: part.count } : { kind: 'pixels', pixels: part.pixels, count: part.count });
      for (let i = 0; i < part.count; i++) {
        blocks.push(b);
        pos.push(p);
      }
      b++;
      p++;
    }
  }
  const T = pos.length;
  const mask = new Uint8Array(T * T);
  for (let i = 0; i < T; i++) for (let j = 0; j < T; j++) if (blocks[j]! <= blocks[i]!) mask[i * T + j] = 1;
  return { segments, positions: Int32Array.from(pos), mask, nextPos: p, ids };
}
