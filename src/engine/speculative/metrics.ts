// Speculation statistics with vLLM/SGLang definitions: mean acceptance length = 1 + accepted/drafts
// (bonus token included; 1.0 when nothing was drafted), acceptance rate = accepted/drafted, per-position acceptance = accepted at
// draft depth i / steps that drafted depth i.

export class SpecMetrics {
  drafts = 0;
  draftedTokens = 0;
  acceptedTokens = 0;
  private reachedPerPos: number[] = [];
  private acceptedPerPos: number[] = [];

  /** One verification step: `drafted` nodes, a tree of depth `maxDepth`, `accepted` tokens accepted. */
  record(drafted: number, maxDepth: number, accepted: number): void {
    if (drafted <= 0) return;
    this.drafts++;
    this.draftedTokens += drafted;
    this.acceptedTokens += accepted;
    for (let i = 0; i < maxDepth; i++) {
      this.reachedPerPos[i] = (this.reachedPerPos[i] ?? 0) + 1;
      if (i < accepted) this.acceptedPerPos[i] = (this.acceptedPerPos[i] ?? 0) + 1;
    }
  }

  get meanAcceptedLength(): number {
    return this.drafts ? 1 + this.acceptedTokens / this.drafts : 1; // plain decoding: one token per step
  }

  get acceptanceRate(): number {
    return this.draftedTokens ? this.acceptedTokens / this.draftedTokens : 0;
  }

  get acceptancePerPosition(): number[] {
    return this.reachedPerPos.map((r, i) => (r ? (this.acceptedPerPos[i] ?? 0) / r : 0));
  }
}

/**
 * Running (exponentially weighted) conditional acceptance per draft depth, shared across requests of
 * an engine; feeds hardware-aware sizing and the n-gram prior.
 */
export class AcceptanceStats {
  private alpha: number[];
  /** verification steps recorded (steps that drafted something) */
  observations = 0;
  constructor(
    private prior = 0.5,
    private decay = 0.05,
    maxDepth = 16,
  ) {
    this.alpha = new Array(maxDepth).fill(prior);
  }

  /** Conditional probability that draft depth i (0-based) is accepted given depth i-1 was. */
  at(i: number): number {
    return this.alpha[Math.min(i, this.alpha.length - 1)]!;
  }

  /** Record a step that drafted a chain/tree of depth `depth` and accepted `accepted` tokens. */
  update(depth: number, accepted: number): void {
    if (depth > 0) this.observations++;
    for (let i = 0; i < Math.min(depth, this.alpha.length); i++) {
      if (i > accepted) break; // depth i was never tried (its parent was rejected)
      const hit = i < accepted ? 1 : 0;
      this.alpha[i] = (1 - this.decay) * this.alpha[i]! + this.decay * hit;
    }
  }

  /** Expected tokens emitted per step by a chain of length K (accepted + 1). */
  expectedTokens(K: number): number {
    let e = 1;
    let prod = 1;
    for (let i = 0; i < K; i++) {
      prod *= this.at(i);
      e += prod;
    }
    return e;
  }
}
