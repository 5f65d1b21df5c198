// Server-side conversation contexts. Bounded in count (LRU eviction of idle sessions), in memory
// (each session's accumulated tokens are capped, which bounds its KV cache; one remembered image),
// and in time (idle expiry). One request at a time per session.
import { randomUUID } from 'node:crypto';
import type { Engine, RgbImage, SessionHandle } from '../engine/types.ts';
import { GatewayError } from './errors.ts';

export interface SessionEntry {
  readonly id: string;
  readonly handle: SessionHandle;
  lastUsed: number;
  tokens: number;
  busy: boolean;
  /** The latest image seen or produced in this session, for edits without an explicit image. */
  lastImage?: RgbImage;
}

export interface SessionLimits {
  maxSessions: number;
  sessionTtlMs: number;
  maxSessionTokens: number;
}

export class SessionStore {
  private readonly sessions = new Map<string, SessionEntry>();
  private readonly timer: NodeJS.Timeout;
  evictions = 0;
  expirations = 0;

  constructor(
    private readonly engine: () => Engine,
    private readonly limits: SessionLimits,
    private readonly now: () => number = Date.now,
  ) {
    this.timer = setInterval(() => this.sweep(), Math.max(1000, Math.min(60_000, limits.sessionTtlMs / 4)));
    this.timer.unref();
  }

  get size(): number {
    return this.sessions.size;
  }

  /** Bytes held by remembered images (the KV cache itself lives in the engine, bounded via tokens). */
  get imageBytes(): number {
    let n = 0;
    for (const s of this.sessions.values()) n += s.lastImage?.data.byteLength ?? 0;
    return n;
  }

  create(): SessionEntry {
    this.sweep();
    if (this.sessions.size >= this.limits.maxSessions) {
      // evict the least recently used idle session
      let victim: SessionEntry | undefined;
      for (const s of this.sessions.values()) if (!s.busy && (!victim || s.lastUsed < victim.lastUsed)) victim = s;
      if (!victim) throw new GatewayError('BUSY', `All ${this.limits.maxSessions} sessions are in use; retry later`);
      this.close(victim.id);
      this.evictions++;
    }
    const handle = this.engine().createSession();
    const entry: SessionEntry = { id: randomUUID(), handle, lastUsed: this.now(), tokens: 0, busy: false };
    this.sessions.set(entry.id, entry);
    return entry;
  }

  get(id: string): SessionEntry {
    const s = this.sessions.get(id);
    if (!s || this.expired(s)) {
      if (s) this.expire(s);
      throw new GatewayError('SESSION_NOT_FOUND', `No session ${JSON.stringify(id).slice(0, 80)} (it may have expired)`);
    }
    return s;
  }

  /** Marks the session busy for one request; call the returned function when done. */
  lock(id: string): { entry: SessionEntry; unlock: () => void } {
    const entry = this.get(id);
    if (entry.busy) throw new GatewayError('SESSION_BUSY', 'Another request is using this session; wait for it to finish');
    if (entry.tokens >= this.limits.maxSessionTokens)
      throw new GatewayError('SESSION_FULL', `The session holds ${entry.tokens} tokens (limit ${this.limits.maxSessionTokens}); create a new session`);
    entry.busy = true;
    entry.lastUsed = this.now();
    let done = false;
    return {
      entry,
      unlock: () => {
        if (done) return;
        done = true;
        entry.busy = false;
        entry.lastUsed = this.now();
      },
    };
  }

  close(id: string): boolean {
    const s = this.sessions.get(id);
    if (!s) return false;
    this.sessions.delete(id);
    try {
      this.engine().closeSession(s.handle);
    } catch {
      // the engine may already have dropped it
    }
    return true;
  }

  private expired(s: SessionEntry): boolean {
    return !s.busy && this.now() - s.lastUsed > this.limits.sessionTtlMs;
  }

  private expire(s: SessionEntry): void {
    this.close(s.id);
    this.expirations++;
  }

  sweep(): void {
    for (const s of [...this.sessions.values()]) if (this.expired(s)) this.expire(s);
  }

  dispose(): void {
    clearInterval(this.timer);
    for (const id of [...this.sessions.keys()]) this.close(id);
  }
}
