// Several gateway replicas behind one load balancer, with no shared store.
//
// A job or a session lives where its model work runs: on one replica, with its engine, its KV cache
// and its event log. So instead of copying that state into a shared store, every id a replica hands
// out names its owner (`<replica>.<uuid>`), and a replica asked about an id it does not own forwards
// the operation to the owner over the owner's own GraphQL API (HTTP for queries and mutations, SSE
// for subscriptions). A client may then reach any replica: a job started on A streams to a client
// connected to B, and `imageJob(id, after)` resumes on B by A's sequence numbers.
//
// Without a replica id (the default, one process) ids are plain UUIDs and nothing is forwarded.
import { createHash, randomUUID, timingSafeEqual } from 'node:crypto';

/** Replica ids: short, URL- and log-safe, and never containing the id separator. */
export const REPLICA_ID_RE = /^[a-z0-9][a-z0-9-]{0,31}$/;

export interface ReplicaConfig {
  /** This replica's id, the prefix of every job and session id it hands out. */
  readonly id: string;
  /** Other replicas: id -> base URL of their GraphQL endpoint (e.g. http://10.0.0.2:4000/graphql). */
  readonly peers: ReadonlyMap<string, string>;
  /** How long a forwarded query or mutation, or a relayed stream's response headers, may take before UNAVAILABLE. */
  readonly requestTimeoutMs: number;
  /**
   * A secret the replicas share: a forwarded request carries it, and only then does the owner take
   * it as forwarded (trusting the client identity it names). Without one, a request counts as
   * forwarded when it comes from a peer's address.
   */
  readonly secret?: string;
  /**
   * A relayed stream that receives nothing for this long (the owner sends a keep-alive every 12 s) is
   * treated as a lost connection: a frozen owner cannot hang its streams here. Default 30 s.
   */
  readonly streamIdleMs?: number;
}

export function checkReplicaId(id: string, what = 'replica id'): string {
  if (!REPLICA_ID_RE.test(id)) throw new Error(`${what} must be 1-32 characters of a-z, 0-9 and "-", starting with a letter or digit; got ${JSON.stringify(id)}`);
  return id;
}

/**
 * Parses peers given as "id=url" entries, comma-separated (HYPERBAGEL_PEERS) or repeated (--peer).
 * The URL is the peer's GraphQL endpoint; a bare origin gets `/graphql`. Throws on a malformed entry.
 */
export function parsePeers(self: string, ...lists: Array<string | readonly string[] | undefined>): Map<string, string> {
  const peers = new Map<string, string>();
  for (const list of lists) {
    const entries = typeof list === 'string' ? list.split(',') : (list ?? []);
    for (const raw of entries) {
      const entry = raw.trim();
      if (!entry) continue;
      const eq = entry.indexOf('=');
      if (eq <= 0) throw new Error(`peer must be "id=http://host:port", got ${JSON.stringify(entry)}`);
      const id = checkReplicaId(entry.slice(0, eq).trim(), 'peer id');
      let url: URL;
      try {
        url = new URL(entry.slice(eq + 1).trim());
      } catch {
        throw new Error(`peer ${id}: not a URL: ${JSON.stringify(entry.slice(eq + 1).trim())}`);
      }
      if (url.protocol !== 'http:' && url.protocol !== 'https:') throw new Error(`peer ${id}: the URL must be http(s), got ${url.protocol}`);
      if (url.pathname === '/' || url.pathname === '') url.pathname = '/graphql';
      if (id === self) throw new Error(`peer ${id} has this replica's own id`);
      if (peers.has(id) && peers.get(id) !== url.href) throw new Error(`peer ${id} is given twice, with different URLs`);
      peers.set(id, url.href);
    }
  }
  return peers;
}

/** A new job or session id owned by `replica` (a plain UUID when there is no replica id). */
export function newId(replica: string | undefined): string {
  return replica ? `${replica}.${randomUUID()}` : randomUUID();
}

/** The replica an id names as its owner, or undefined for a plain id. */
export function ownerOf(id: string): string | undefined {
  const dot = id.indexOf('.');
  return dot > 0 ? id.slice(0, dot) : undefined;
}

/**
 * Marks a forwarded request with the replica that sent it. A forwarded request is never forwarded
 * again: with peers whose addresses do not match their ids, it would otherwise go round in a loop.
 */
export const FORWARDED_HEADER = 'hyperbagel-forwarded-by';

/**
 * The client a forwarded operation is for (`ip:…`, as the forwarding replica counted it), sent only
 * with auth off: with auth on the owner counts the client's key, which the forwarded request's
 * Authorization carries (a copy of it here would be one more, in a header proxies log). The owner
 * counts its per-client limits by it instead of the forwarding replica's address, but only for a
 * request a peer proves it forwarded: a client cannot claim another identity with it.
 */
export const FORWARDED_FOR_HEADER = 'hyperbagel-forwarded-for';

/** Carries the replicas' shared secret (ReplicaConfig.secret) on a forwarded request. */
export const PEER_SECRET_HEADER = 'hyperbagel-peer-secret';

/**
 * The owner's answer to a request that names one of its peers (FORWARDED_HEADER) but does not prove
 * it: `secret` (the shared secret is missing or wrong) or `address` (no secret, and not from the
 * peer's address). The owner then takes it as a client's own, so the forwarding replica logs it.
 */
export const PEER_REJECTED_HEADER = 'hyperbagel-peer-rejected';

/** Constant-time comparison of a header value with the shared secret. */
export function secretMatches(value: string | string[] | undefined, secret: string): boolean {
  if (typeof value !== 'string') return false;
  const digest = (s: string) => createHash('sha256').update(s).digest();
  return timingSafeEqual(digest(value), digest(secret));
}
