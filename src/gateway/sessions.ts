// Server-side conversation contexts. Bounded in count (LRU eviction of idle sessions; with auth on, per
// API key, the key's own first), in memory (per session and in total, in bytes as the engine reports them via
// `Engine.sessionInfo`: the KV cache buffers plus the session's latest image; and in tokens, which bounds
// the context length), and in time (idle expiry). One request at a time per session. With auth on, a
// session belongs to the API key that created it: to any other key it does not exist. The session's
// latest image (for edits without an image, and understand turns about a just-generated image) is the
// engine's bookkeeping: the gateway only passes the session handle along.
import { EngineError, type Engine, type SessionHandle, type SessionInfo } from '../engine/types.ts';
import { GatewayError } from './errors.ts';
import { defaultShare } from './limits.ts';
import { hiddenFrom, isKeyClient } from './owner.ts';
import { newId } from './replicas.ts';

export interface SessionEntry {
  readonly id: string;
  readonly handle: SessionHandle;
  /** the client that created it (GatewayContext.client: `key:<API key>` with auth on, else `ip:<address>`) */
  readonly client?: string;
  lastUsed: number;
  /**
   * Set while a request the client stopped still holds the session (its model step in progress ends
   * first): settles when the session is free, within CANCEL_SETTLE_MS. A close or a next request waits
   * for it rather than meeting SESSION_BUSY.
   */
  stopping?: Promise<void>;
  /** Tokens counted by the gateway from usage (a fallback for engines without sessionInfo). */
  tokens: number;
  busy: boolean;
}

export interface SessionLimits {
  maxSessions: number;
  /** sessions one client may hold (default 3/4 of maxSessions) */
  maxSessionsPerClient?: number;
  sessionTtlMs: number;
  maxSessionTokens: number;
  /** Bytes one session may hold (engine-reported KV cache + latest image) before it is full. */
  maxSessionBytes: number;
  /** Bytes all sessions together may hold; beyond it the least recently used idle sessions are evicted. */
  maxTotalSessionBytes: number;
}

type Removal = 'expired' | 'evicted' | 'evicted_memory' | 'closed';
const WHY: Record<Removal, string> = {
  expired: 'it expired: idle too long',
  evicted: 'it was closed to make room for a newer session',
  evicted_memory: 'it was closed to keep the sessions within their memory limit',
  closed: 'it was closed',
};
/** How many removed session ids are remembered, so a client asking for one learns why it is gone. */
const REMEMBERED = 1024;

export class SessionStore {
  private readonly sessions = new Map<string, SessionEntry>();
  /** recently removed sessions: why, and whose (only its own client is told) */
  private readonly removed = new Map<string, { why: Removal; client?: string }>();
  private readonly timer: NodeJS.Timeout;
  evictions = 0;
  expirations = 0;
  /** sessions evicted to keep the total bytes under maxTotalSessionBytes */
  memoryEvictions = 0;

  constructor(
    private readonly engine: () => Engine,
    private readonly limits: SessionLimits,
    private readonly now: () => number = Date.now,
    /** this replica's id, the prefix of its session ids (see replicas.ts); none: plain UUIDs */
    private readonly replicaId?: string,
  ) {
    this.timer = setInterval(() => this.sweep(), Math.max(1000, Math.min(60_000, limits.sessionTtlMs / 4)));
    this.timer.unref();
  }

  /** Live sessions: an expired one not swept yet counts as gone (it is swept now). */
  get size(): number {
    this.sweep();
    return this.sessions.size;
  }

  /**
   * What the engine reports the session holds; undefined when the engine cannot say (no
   * sessionInfo, or not loaded). Throws SESSION_NOT_FOUND (and forgets the entry) when the engine
   * no longer knows the session.
   */
  info(entry: SessionEntry): SessionInfo | undefined {
    let engine: Engine;
    try {
      engine = this.engine();
    } catch {
      return undefined;
    }
    if (!engine.sessionInfo) return undefined;
    try {
      return engine.sessionInfo(entry.handle);
    } catch (e) {
      if (e instanceof EngineError && e.code === 'INVALID_INPUT') {
        this.sessions.delete(entry.id);
        throw this.notFound(entry.id, entry.client);
      }
      throw e;
    }
  }

  /** Tokens in the session's context: the engine's count when it reports one, else the gateway's. */
  tokensOf(entry: SessionEntry, info = this.info(entry)): number {
    return info ? info.tokens : entry.tokens;
  }

  /** Bytes held by all sessions, as the engine reports them (0 for engines without sessionInfo). */
  get bytes(): number {
    this.sweep();
    let n = 0;
    for (const s of [...this.sessions.values()]) {
      try {
        n += this.info(s)?.bytes ?? 0;
      } catch {
        // a session the engine forgot holds nothing
      }
    }
    return n;
  }

  /** Sessions one client may hold. */
  get perClient(): number {
    return Math.max(1, Math.min(this.limits.maxSessions, this.limits.maxSessionsPerClient ?? defaultShare(this.limits.maxSessions)));
  }

  /** @param client  who creates it (GatewayContext.client); with an API key, only that key may use it */
  create(client?: string): SessionEntry {
    this.sweep();
    // (a share per API key only: without auth, one address may be a whole NAT, proxy or this machine)
    const keyed = isKeyClient(client);
    const mine = keyed ? [...this.sessions.values()].filter((s) => s.client === client).length : 0;
    if (keyed && mine >= this.perClient) {
      // this client's own least recently used idle session makes room, never another client's
      const victim = this.lruIdle(undefined, client);
      if (!victim)
        throw new GatewayError('BUSY', `This client has ${mine} sessions in use (at most ${this.perClient} of the ${this.limits.maxSessions}); close one or retry later`, {
          sessions: mine,
          clientLimit: this.perClient,
          limit: this.limits.maxSessions,
        });
      this.remove(victim, 'evicted');
      this.evictions++;
    } else if (this.sessions.size >= this.limits.maxSessions) {
      // evict the least recently used idle session
      const victim = this.lruIdle();
      if (!victim) throw new GatewayError('BUSY', `All ${this.limits.maxSessions} sessions are in use; retry later`, { limit: this.limits.maxSessions });
      this.remove(victim, 'evicted');
      this.evictions++;
    }
    const handle = this.engine().createSession();
    const entry: SessionEntry = { id: newId(this.replicaId), handle, ...(client !== undefined ? { client } : {}), lastUsed: this.now(), tokens: 0, busy: false };
    this.sessions.set(entry.id, entry);
    return entry;
  }

  /** @param client  who asks (GatewayContext.client): another API key's session is not found */
  get(id: string, client?: string): SessionEntry {
    const s = this.sessions.get(id);
    if (!s || hiddenFrom(s.client, client) || this.expired(s)) {
      if (s && !hiddenFrom(s.client, client)) this.expire(s);
      throw this.notFound(id, client);
    }
    return s;
  }

  /** SESSION_NOT_FOUND, saying why when this client's session was removed recently. */
  private notFound(id: string, client: string | undefined): GatewayError {
    const r = this.removed.get(id);
    const why = r && !hiddenFrom(r.client, client) ? WHY[r.why] : 'it may have expired';
    return new GatewayError('SESSION_NOT_FOUND', `No session ${JSON.stringify(id).slice(0, 80)} (${why})`);
  }

  /**
   * Resolves once a request that was stopped no longer holds the session (at once when none is
   * stopping): a client that stopped a stream, or cancelled a job, and goes on with the session right
   * away finds it free.
   */
  async settled(id: string, client?: string): Promise<void> {
    const s = this.sessions.get(id);
    if (s?.busy && s.stopping && !hiddenFrom(s.client, client)) await s.stopping;
  }

  /** Marks the session busy for one request; call the returned function when done. */
  lock(id: string, client?: string): { entry: SessionEntry; info?: SessionInfo; unlock: () => void } {
    const entry = this.get(id, client);
    if (entry.busy) throw new GatewayError('SESSION_BUSY', 'Another request is using this session; wait for it to finish');
    const info = this.info(entry);
    const tokens = this.tokensOf(entry, info);
    if (tokens >= this.limits.maxSessionTokens)
      throw new GatewayError('SESSION_FULL', `The session holds ${tokens} tokens (limit ${this.limits.maxSessionTokens}); create a new session`, {
        tokens,
        limit: this.limits.maxSessionTokens,
      });
    if (info && info.bytes >= this.limits.maxSessionBytes)
      throw new GatewayError('SESSION_FULL', `The session holds ${info.bytes} bytes (limit ${this.limits.maxSessionBytes}); create a new session`, {
        bytes: info.bytes,
        limit: this.limits.maxSessionBytes,
      });
    entry.busy = true;
    entry.lastUsed = this.now();
    let done = false;
    return {
      entry,
      info,
      unlock: () => {
        if (done) return;
        done = true;
        entry.busy = false;
        delete entry.stopping;
        entry.lastUsed = this.now();
        this.enforceTotalBytes(entry);
      },
    };
  }

  /**
   * Evicts least recently used idle sessions (never `keep`) while all sessions together hold more
   * than maxTotalSessionBytes. Run after each request, when a session may have grown.
   */
  enforceTotalBytes(keep?: SessionEntry): void {
    if (!Number.isFinite(this.limits.maxTotalSessionBytes)) return;
    this.sweep(); // expired sessions are gone, not idle ones to evict
    const sizes = new Map<SessionEntry, number>();
    let total = 0;
    for (const s of [...this.sessions.values()]) {
      let b = 0;
      try {
        b = this.info(s)?.bytes ?? 0;
      } catch {
        continue;
      }
      sizes.set(s, b);
      total += b;
    }
    while (total > this.limits.maxTotalSessionBytes) {
      const victim = this.lruIdle(keep);
      if (!victim) return;
      total -= sizes.get(victim) ?? 0;
      this.remove(victim, 'evicted_memory');
      this.memoryEvictions++;
    }
  }

  /** The least recently used idle session (of `client` only, when given), never `keep`. */
  private lruIdle(keep?: SessionEntry, client?: string): SessionEntry | undefined {
    let victim: SessionEntry | undefined;
    for (const s of this.sessions.values())
      if (s !== keep && !s.busy && (client === undefined || s.client === client) && (!victim || s.lastUsed < victim.lastUsed)) victim = s;
    return victim;
  }

  /**
   * A client's closeSession. Refused with SESSION_BUSY while a request (understand stream, or image
   * job queued or running) uses the session: closing would pull the engine's context from under it
   * and that request would fail with an internal error. An expired session (not swept yet) is a
   * missing one: it is expired now and the answer is false.
   */
  closeIdle(id: string, client?: string): boolean {
    const s = this.sessions.get(id);
    if (!s || hiddenFrom(s.client, client)) return false;
    if (this.expired(s)) {
      this.expire(s);
      return false;
    }
    if (s.busy) throw new GatewayError('SESSION_BUSY', 'A request is using this session; let it finish or cancel it, then close the session');
    return this.remove(s, 'closed');
  }

  private remove(s: SessionEntry, why: Removal): boolean {
    const closed = this.close(s.id);
    this.removed.delete(s.id);
    this.removed.set(s.id, { why, ...(s.client !== undefined ? { client: s.client } : {}) });
    if (this.removed.size > REMEMBERED) this.removed.delete(this.removed.keys().next().value!);
    return closed;
  }

  /** Closes now, busy or not (eviction of idle sessions, expiry, shutdown). */
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
    this.remove(s, 'expired');
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
