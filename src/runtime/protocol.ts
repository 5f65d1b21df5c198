// Messages between the engine (main thread) and a model worker. Typed arrays travel in transfer lists.
import type { GraphName, Manifest } from './manifest.ts';

export interface SessionTuning {
  /** intra-op threads per session (keep intra × workers ≤ cores) */
  intraOpThreads: number;
  /**
   * intra-op threads of the latency-bound graphs (decoder, draft, embed, denoise_6nfe, denoise_1nfe); default intraOpThreads.
   * Their ops are tiny (one token, hidden 128): 1 avoids thread-pool dispatch on every node.
   */
  decodeIntraOpThreads?: number;
  interOpThreads: number;
  /** spin-wait between ops (faster, burns idle CPU); default false on shared hosts */
  allowSpinning: boolean;
  /**
   * µs the worker keeps polling for the next request after each reply (0 = sleep at once): saves
   * a thread wake-up per decode step on busy hosts, at the cost of that much CPU per reply
   */
  replySpinUs?: number;
}

/**
 * Rows of a decoder forward: token ids, precomputed embeddings, or an image's pixels [3, S, S] that the
 * worker runs through vision.onnx itself (its `count` image_embeds rows), saving the round trip of a
 * separate 'vision' request.
 */
export type Segment = { kind: 'ids'; ids: Int32Array } | { kind: 'embeds'; data: Float32Array; count: number } | { kind: 'pixels'; pixels: Float32Array; count: number };

export type WorkerRequest =
  | { op: 'init'; files: Partial<Record<GraphName, string>>; manifest: Manifest; tuning: SessionTuning }
  | { op: 'open'; seq: number; capacity: number; kind?: 'target' | 'draft' }
  | { op: 'close'; seq: number }
  | { op: 'vision'; pixels: Float32Array; batch: number }
  | {
      op: 'decode';
      seq: number;
      segments: Segment[];
      positions: Int32Array;
      /** T×T local mask over the new tokens, 1 = attend; the whole past is always visible */
      mask: Uint8Array;
      /** which logits rows to return */
      rows: 'all' | 'last';
      /** applied before the forward: keep [0,keepFrom) + keepFrom+keep[i] */
      compact?: { keepFrom: number; keep: Int32Array };
      /** also return every layer's hidden state of the new tokens, [T, L, D] (the draft's input) */
      features?: boolean;
    }
  | { op: 'compact'; seq: number; keepFrom: number; keep: Int32Array }
  | {
      op: 'draft';
      seq: number;
      embeds: Float32Array;
      /** target hidden states of all layers [T, L·D] (feature_select 0) … */
      hidden?: Float32Array;
      /** … or the draft's previous features [T, D] (feature_select 1) */
      prev?: Float32Array;
      positions: Int32Array;
      /** T×T local mask */
      mask: Uint8Array;
      /** visibility of cached entries from `from` on (T × (P − from)); earlier entries always visible */
      past?: { from: number; mask: Uint8Array };
      compact?: { keepFrom: number; keep: Int32Array };
    }
  | {
      op: 'draft_chain';
      seq: number;
      /** committed rows fed first (as in 'draft' with hidden); the chain starts at their last row */
      commit: { embeds: Float32Array; hidden: Float32Array; positions: Int32Array; mask: Uint8Array };
      /** target position of the chain's root (the first drafted token's row is run there) */
      rootPos: number;
      /** tokens to draft (steps − 1 draft forwards after the commit) */
      steps: number;
      compact?: { keepFrom: number; keep: Int32Array };
      /**
       * then verify [root, chain] on target sequence `seq` (positions rootPos…, causal, all rows,
       * `compact` applied first), as the next 'decode' request would: one request per step
       */
      verify?: { seq: number; root: number; compact?: { keepFrom: number; keep: Int32Array }; features: boolean };
      // (the chain is verified as [root, chain] at rootPos…, causal)
    }
  | {
      op: 'draft_tree';
      seq: number;
      /** committed rows fed first; the tree's root is their last row */
      commit: { embeds: Float32Array; hidden: Float32Array; positions: Int32Array; mask: Uint8Array };
      rootPos: number;
      /** EAGLE-2 expansion: children per node and nodes expanded per level; levels */
      topK: number;
      depth: number;
      compact?: { keepFrom: number; keep: Int32Array };
      /**
       * then build the tree as the engine does (buildDynamicTree over the expansion, `budget`,
       * chooseTreeSize with `choose`) and verify it on target sequence `seq` (positions rootPos +
       * depth, tree mask, all rows, `compact` applied first): one request per step
       */
      verify?: {
        seq: number;
        root: number;
        budget: number;
        choose?: { points: Array<[number, number]>; fixed: number };
        compact?: { keepFrom: number; keep: Int32Array };
        features: boolean;
      };
    }
  | { op: 'embed_table' }
  | {
      op: 'denoise';
      graph: 'denoiser' | 'denoise_6nfe' | 'denoise_1nfe';
      /** one context sequence per CFG branch; the latent block is run against each */
      seqs: number[];
      /** position id of the latent block, per sequence */
      positions: number[];
      latent: Float32Array;
      t: number;
      /** write the block into the (single) sequence's KV (source image at t = 0) */
      append: boolean;
      /** run the contexts as one batch (padded past, masked) instead of one call each */
      batch?: boolean;
      cfgText?: number;
      cfgImage?: number;
    }
  | { op: 'vae_encode'; pixels: Float32Array }
  | { op: 'vae_decode'; latent: Float32Array }
  | { op: 'stats' }
  | { op: '__crash' }
  | { op: '__sleep'; ms: number };

export interface WorkerStats {
  modelCalls: number;
  decodeCalls: number;
  openSequences: number;
  kvAllocations: number;
  embedTable: boolean;
  /** total ms inside onnxruntime run() calls */
  runMs: number;
  /** total ms handling requests (run() plus the worker's own tensor preparation) */
  handleMs: number;
  /** requests picked up while spinning after a reply (SessionTuning.replySpinUs) */
  spinHits: number;
  /** run() calls and ms per graph */
  byGraph: Partial<Record<string, { calls: number; ms: number }>>;
}

export interface InitResult {
  inputNames: Record<string, string[]>;
  outputNames: Record<string, string[]>;
  embedTable: boolean;
}

export type WorkerMessage = WorkerRequest & { id: number };

export type WorkerReply =
  | { id: number; ok: true; result: unknown }
  | { id: number; ok: false; error: { code: string; message: string; details?: Record<string, unknown> } };
