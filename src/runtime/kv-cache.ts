// Per-sequence KV cache for a decoder whose graph takes `past_key_values.{i}.{key,value}` [1,H,P,Dh]
// and returns `present.*` [1,H,P+T,Dh].
//
// Storage: for every layer and for K and V, two ping-pong ArrayBuffers with a capacity in tokens.
// The past is a view of the current buffer; the graph writes `present` straight into a view of the
// other buffer (onnxruntime-node fills preallocated outputs), and the buffers swap. Capacity doubles
// when a step would not fit, so growth allocates O(log n) times and the engine itself copies
// nothing per step (the only per-step copy is the graph's own concat).
//
// After speculative verification, `compact` keeps the committed prefix plus the accepted tree slots
// and moves them into place in the same buffer (layout changes from [H, len, Dh] to [H, newLen, Dh],
// a forward memmove since every destination precedes its source).

export interface KvShape {
  layers: number;
  heads: number;
  headDim: number;
}

export class KvCache {
  length = 0;
  private cur: Float32Array[]; // per (layer, kv): current buffer (capacity)
  private next: Float32Array[];
  private capacity: number;
  allocations = 0;

  constructor(
    readonly shape: KvShape,
    initialCapacity = 64,
  ) {
    this.capacity = Math.max(1, initialCapacity);
    const n = shape.layers * 2;
    this.cur = Array.from({ length: n }, () => this.alloc(this.capacity));
    this.next = Array.from({ length: n }, () => this.alloc(this.capacity));
  }

  private alloc(cap: number): Float32Array {
    this.allocations++;
    return new Float32Array(this.shape.heads * cap * this.shape.headDim);
  }

  get tokenCapacity(): number {
    return this.capacity;
  }

  private rowFloats(): number {
    return this.shape.heads * this.shape.headDim;
  }

  /** Views over the current past for input slot j = 2·layer + (0 key | 1 value), length H·len·Dh. */
  past(j: number): Float32Array {
    const b = this.cur[j]!;
    return new Float32Array(b.buffer, b.byteOffset, this.length * this.rowFloats());
  }

  /**
   * Views the graph should write `present` into for a step adding T tokens. Grows (doubling) the
   * spare buffers when needed; the past buffers are left intact until `commit`.
   */
  presentTargets(T: number): Float32Array[] {
    const need = this.length + T;
    if (need > this.capacity) {
      let cap = this.capacity;
      while (cap < need) cap *= 2;
      this.capacity = cap;
      this.next = this.next.map(() => this.alloc(cap));
    }
    return this.next.map((b) => new Float32Array(b.buffer, b.byteOffset, need * this.rowFloats()));
  }

  /** The graph wrote `present` (length + T tokens): make it the past. */
  commit(T: number): void {
    const tmp = this.cur;
    this.cur = this.next;
    this.next = tmp;
    this.length += T;
    // the (now spare) old buffers may be smaller than the capacity after a growth step
    const want = this.shape.heads * this.capacity * this.shape.headDim;
    this.next = this.next.map((b) => (b.length >= want ? b : this.alloc(this.capacity)));
  }

  /** Adopt outputs the graph allocated itself (fallback when preallocation is not used). */
  adopt(present: Float32Array[], T: number): void {
    const need = this.length + T;
    if (need > this.capacity) {
      let cap = this.capacity;
      while (cap < need) cap *= 2;
      this.capacity = cap;
      this.cur = this.cur.map(() => this.alloc(cap));
      this.next = this.next.map(() => this.alloc(cap));
    }
    present.forEach((p, j) => this.cur[j]!.set(p));
    this.length = need;
  }

  /** Empty the cache, keeping its buffers (a closed sequence's cache reused by the next one). */
  reset(): void {
    this.length = 0;
  }

  /** Drop everything after `len` tokens (layout-preserving only if len = length, so re-lay rows). */
  truncate(len: number): void {
    if (len >= this.length) return;
    this.compact(len, new Int32Array(0));
  }

  /**
   * Keep tokens [0, keepFrom) and, from the tokens after keepFrom, the local indices `keep`
   * (strictly increasing); everything else is discarded.
   */
  compact(keepFrom: number, keep: Int32Array | number[]): void {
    const len = this.length;
    const H = this.shape.heads;
    const Dh = this.shape.headDim;
    if (!Number.isInteger(keepFrom) || keepFrom < 0 || keepFrom > len) throw new Error(`compact: keepFrom ${keepFrom} outside [0, ${len}]`);
    if (keep.length && !(Number.isInteger(keep[0]) && keep[0]! >= 0)) throw new Error(`compact: keep index ${keep[0]} is negative`);
    for (let i = 1; i < keep.length; i++) if (keep[i]! <= keep[i - 1]!) throw new Error('compact: keep must increase');
    if (keep.length && keepFrom + keep[keep.length - 1]! >= len) throw new Error('compact: index out of range');
    const newLen = keepFrom + keep.length;
    let identity = newLen === len;
    for (let i = 0; identity && i < keep.length; i++) identity = keep[i] === i;
    if (identity) return;
    for (const b of this.cur) {
      for (let h = 0; h < H; h++) {
        const srcHead = h * len * Dh;
        const dstHead = h * newLen * Dh;
        if (h > 0) b.copyWithin(dstHead, srcHead, srcHead + keepFrom * Dh);
        for (let r = 0; r < keep.length; r++) {
          const s = srcHead + (keepFrom + keep[r]!) * Dh;
          const d = dstHead + (keepFrom + r) * Dh;
          if (s !== d) b.copyWithin(d, s, s + Dh);
        }
      }
    }
    this.length = newLen;
  }

  /** Row `t` of head `h` for slot j (tests/debugging). */
  row(j: number, h: number, t: number): Float32Array {
    const Dh = this.shape.headDim;
    const off = (h * this.length + t) * Dh;
    return this.cur[j]!.slice(off, off + Dh);
  }
}
