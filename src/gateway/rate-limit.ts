// Token-bucket rate limiting of GraphQL operations, per API key (auth on) or per client IP (auth
// off). Each bucket holds up to `burst` tokens and refills at `ratePerSecond`; an operation takes
// one. Buckets are created lazily and the map is bounded: full (idle) buckets are dropped first,
// then the least recently created ones.
import { GatewayError } from './errors.ts';

export interface RateLimitConfig {
  /** Sustained operations per second per client; 0 turns rate limiting off. */
  ratePerSecond: number;
  /** Operations a client may start at once before the sustained rate applies. */
  burst: number;
  /** Buckets kept at most (default 10 000). */
  maxClients?: number;
}

interface Bucket {
  tokens: number;
  at: number;
}

export class RateLimiter {
  private readonly buckets = new Map<string, Bucket>();
  private readonly maxClients: number;
  readonly enabled: boolean;

  constructor(
    private readonly config: RateLimitConfig,
    private readonly clock: () => number = () => performance.now(),
  ) {
    this.enabled = config.ratePerSecond > 0 && config.burst > 0 && Number.isFinite(config.ratePerSecond);
    this.maxClients = config.maxClients ?? 10_000;
  }

  get size(): number {
    return this.buckets.size;
  }

  /** Takes one token for `client`. Returns 0 when allowed, else the milliseconds until a token is available. */
  take(client: string): number {
    if (!this.enabled) return 0;
    const now = this.clock();
    const { ratePerSecond: rate, burst } = this.config;
    let b = this.buckets.get(client);
    if (!b) {
      if (this.buckets.size >= this.maxClients) this.evict(now);
      b = { tokens: burst, at: now };
      this.buckets.set(client, b);
    } else {
      b.tokens = Math.min(burst, b.tokens + ((now - b.at) / 1000) * rate);
      b.at = now;
    }
    if (b.tokens >= 1) {
      b.tokens -= 1;
      return 0;
    }
    return Math.max(1, Math.ceil(((1 - b.tokens) / rate) * 1000));
  }

  private evict(now: number): void {
    const { ratePerSecond: rate, burst } = this.config;
    for (const [k, b] of this.buckets) if (b.tokens + ((now - b.at) / 1000) * rate >= burst) this.buckets.delete(k);
    // still full: drop the oldest quarter (Map iterates in insertion order)
    if (this.buckets.size >= this.maxClients) {
      let n = Math.ceil(this.maxClients / 4);
      for (const k of this.buckets.keys()) {
        if (n-- <= 0) break;
        this.buckets.delete(k);
      }
    }
  }
}

export function rateLimitedError(retryAfterMs: number): GatewayError {
  const retryAfterSeconds = Math.max(1, Math.ceil(retryAfterMs / 1000));
  return new GatewayError('RATE_LIMITED', `Too many operations; retry in ${retryAfterSeconds} s`, { retryAfterMs, retryAfterSeconds });
}
