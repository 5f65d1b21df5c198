// The client side of forwarding (see replicas.ts): runs an operation on the replica that owns an id,
// over that replica's own GraphQL API (HTTP for queries and mutations, SSE for subscriptions), and
// turns whatever comes back into the owner's typed errors or UNAVAILABLE.
import { request as httpRequest, type IncomingMessage } from 'node:http';
import { request as httpsRequest } from 'node:https';
import { lookup } from 'node:dns/promises';
import { isIP } from 'node:net';
import { GatewayError, loggedElsewhere } from './errors.ts';
import { FORWARDED_FOR_HEADER, FORWARDED_HEADER, PEER_REJECTED_HEADER, PEER_SECRET_HEADER, type ReplicaConfig } from './replicas.ts';
import { ErrorCodeValues, type ErrorCode } from './schema-types.ts';
import { linkedSignal, sleep } from './signals.ts';

const CODES = new Set<string>(ErrorCodeValues);

/** An IPv4 address as IPv4 even when it arrives IPv4-mapped on an IPv6 socket. */
function normalizeAddress(address: string): string {
  return address.startsWith('::ffff:') && isIP(address.slice(7)) === 4 ? address.slice(7) : address;
}

/** `path` beside a peer's GraphQL endpoint (…/graphql -> …/health), so a peer behind a path prefix works too. */
function peerPath(endpoint: string, path: string): URL {
  return new URL(path, endpoint);
}

interface RemoteError {
  message?: unknown;
  extensions?: { code?: unknown; [k: string]: unknown };
}

/** The peer's typed error, re-raised here with its code and its client-facing details. */
function remoteError(e: RemoteError | undefined): GatewayError {
  const code = typeof e?.extensions?.code === 'string' && CODES.has(e.extensions.code) ? (e.extensions.code as ErrorCode) : 'INTERNAL';
  const message = typeof e?.message === 'string' ? e.message : 'The owning replica failed the request';
  const { code: _code, ...details } = e?.extensions ?? {};
  const g = new GatewayError(code, message, details);
  // the owner logged its INTERNAL error under this id; a second line here would hold only this stack
  return code === 'INTERNAL' && typeof details['errorId'] === 'string' ? loggedElsewhere(g) : g;
}

/** A lost or refused connection to a peer (not the peer's own answer): worth trying again. Not shown to clients. */
const TRANSIENT = Symbol('transient');

export function transient(e: GatewayError): GatewayError {
  Object.defineProperty(e, TRANSIENT, { value: true });
  return e;
}

/** True for a lost or refused connection to a peer (not the peer's own answer): worth trying again. */
export function isTransient(e: unknown): boolean {
  return e instanceof GatewayError && (e as unknown as Record<symbol, unknown>)[TRANSIENT] === true;
}

/**
 * A network error's reason, with its cause (undici's "fetch failed" hides ECONNREFUSED there). Clients
 * see it: node:http's own messages name the peer's address ("connect ECONNREFUSED 10.0.0.1:4000",
 * "getaddrinfo ENOTFOUND a.internal"), so an error with a code is reduced to that code.
 */
function reason(e: unknown): string {
  const err = e as Error & { code?: unknown; cause?: { code?: string; message?: string } };
  if (typeof err?.code === 'string') return err.code;
  const cause = err?.cause?.code ?? err?.cause?.message;
  return cause ? `${err.message}: ${cause}` : String(err?.message ?? e);
}

/** An HTTP redirect: fetch does not follow one to a peer (see redirect: 'manual'), and it is no gateway's answer. */
const isRedirect = (status: number) => status >= 300 && status < 400;

/** A peer's answer over this many bytes is none a gateway gives (see PeerClient.maxAnswerBytes): it is not read on. */
class TooLarge extends Error {}

/** A fetch response's body, at most `max` bytes of it (TooLarge past that; the rest is not read). */
async function readCapped(res: Response, max: number): Promise<Buffer> {
  if (Number(res.headers.get('content-length')) > max) {
    void res.body?.cancel().catch(() => undefined);
    throw new TooLarge();
  }
  if (!res.body) return Buffer.alloc(0);
  const reader = res.body.getReader();
  const chunks: Uint8Array[] = [];
  let n = 0;
  for (;;) {
    const { done, value } = await reader.read();
    if (done) return Buffer.concat(chunks);
    if ((n += value.byteLength) > max) {
      void reader.cancel().catch(() => undefined);
      throw new TooLarge();
    }
    chunks.push(value);
  }
}

/** How often one warning about a peer is logged again (one per forwarded request would flood the log). */
const WARN_EVERY_MS = 60_000;

export type Json = Record<string, unknown>;

/** Who asked for a forwarded operation: the key to present to the owner, and the identity its per-client limits count. */
export interface Caller {
  apiKey?: string;
  client?: string;
}

/** A URL's host, without the brackets of an IPv6 literal. */
const hostOf = (url: string) => new URL(url).hostname.replace(/^\[|\]$/g, '');

/** Forwards operations to the replica that owns an id. */
export class PeerClient {
  /** the addresses the peers' host names resolved to: requests from these (or from a peer's IP literal) may speak for a client */
  private readonly addresses = new Set<string>();

  /** a JSON answer (queries, mutations, a refusal) past this many bytes is not a gateway's: none is near it */
  maxAnswerBytes = 4 * 1024 * 1024;
  /** an SSE event past this many characters is not a gateway's (a relayed frame holds one image, as base64) */
  maxEventChars = 64 * 1024 * 1024;
  /** when each throttled warning (peer and what) was last logged */
  private readonly warned = new Map<string, number>();

  constructor(
    readonly config: ReplicaConfig,
    private readonly fetchImpl: typeof fetch = fetch,
    /** where peer problems are logged (checkPeers adopts the server's log) */
    public log: (line: string) => void = (line) => console.error(line),
  ) {}

  /** Logs a warning about peer `owner`, at most once every WARN_EVERY_MS per `what` (a problem every forwarded request meets). */
  private warnThrottled(owner: string, what: string, line: string): void {
    const key = `${owner}\n${what}`;
    const now = Date.now();
    if (now - (this.warned.get(key) ?? -Infinity) < WARN_EVERY_MS) return;
    this.warned.set(key, now);
    this.log(`hyperbagel: WARNING: peer ${owner} (${this.config.peers.get(owner) ?? 'no address'}) ${line}`);
  }

  /**
   * The owner took a request this replica forwarded as a client's own (PEER_REJECTED_HEADER): its
   * per-client limits count this replica as one client, and every relayed request is rate-limited
   * twice. Nothing fails, so only the log can say so.
   */
  private noticeRejected(owner: string, why: string | null | undefined): void {
    if (!why) return;
    const fix =
      this.config.secret !== undefined
        ? 'did not accept this replica\'s peer secret: give every replica the same --peer-secret / HYPERBAGEL_PEER_SECRET'
        : why === 'secret'
          ? 'expects a peer secret, and this replica has none: give every replica the same --peer-secret / HYPERBAGEL_PEER_SECRET'
          : 'does not see this replica\'s requests come from the address of its --peer entry for this replica: give the replicas a shared --peer-secret / HYPERBAGEL_PEER_SECRET';
    this.warnThrottled(owner, 'rejected', `${fix}. Until then it takes requests forwarded from here as this replica's own (its rate limit counts them again, as one client).`);
  }

  /** Resolves the peers' host names (IP literals are known from the start); failures are retried by the next call. */
  async resolveAddresses(): Promise<void> {
    await Promise.all(
      [...this.config.peers.values()].map(async (url) => {
        const host = hostOf(url);
        if (isIP(host)) return;
        try {
          for (const { address } of await lookup(host, { all: true })) this.addresses.add(normalizeAddress(address));
        } catch {
          // not resolvable yet
        }
      }),
    );
  }

  /** Is this socket address one of the peers'? (Without a shared secret, only such a request counts as forwarded.) */
  isPeerAddress(address: string | undefined): boolean {
    if (address === undefined) return false;
    const a = normalizeAddress(address);
    if (this.addresses.has(a)) return true;
    for (const url of this.config.peers.values()) if (normalizeAddress(hostOf(url)) === a) return true;
    return false;
  }

  /** The peer's endpoint for `owner`, or JOB_NOT_FOUND / SESSION_NOT_FOUND naming an unknown owner. */
  endpoint(owner: string, kind: 'job' | 'session', id: string): string {
    const url = this.config.peers.get(owner);
    if (url) return url;
    throw new GatewayError(kind === 'job' ? 'JOB_NOT_FOUND' : 'SESSION_NOT_FOUND', `No ${kind} ${JSON.stringify(id).slice(0, 80)}: it belongs to replica "${owner.slice(0, 32)}", which this replica has no address for`);
  }

  private headers(caller: Caller, accept: string): Record<string, string> {
    return {
      'content-type': 'application/json',
      accept,
      [FORWARDED_HEADER]: this.config.id,
      // only an address: with auth on the owner counts the client's key, which Authorization carries
      // (a `key:` identity here would be one more copy of the credential, in a header proxies log)
      ...(caller.client?.startsWith('ip:') ? { [FORWARDED_FOR_HEADER]: caller.client } : {}),
      ...(this.config.secret !== undefined ? { [PEER_SECRET_HEADER]: this.config.secret } : {}),
      ...(caller.apiKey ? { authorization: `Bearer ${caller.apiKey}` } : {}),
    };
  }

  /**
   * The owner's answer to a request it refused before running it. 401 / 403 there mean the replicas
   * disagree (API keys, Host check): the client's own request was fine here, so that is not its error.
   * The owner's words go to this replica's log only: its Host check quotes the peer URL's host.
   */
  private refused(owner: string, status: number, errors: RemoteError[] | undefined): GatewayError {
    if (isRedirect(status)) return this.wrongAnswer(owner, status);
    if (status === 401 || status === 403) {
      const why = typeof errors?.[0]?.message === 'string' ? `: ${JSON.stringify(errors[0].message.slice(0, 300))}` : '';
      this.warnThrottled(owner, `refused ${status}`, `refuses requests forwarded from this replica (HTTP ${status}${why}). Replicas must share their API keys (--api-key) and accept each other's Host (--allow-host).`);
      return new GatewayError('UNAVAILABLE', `Replica "${owner}" refused a request forwarded from this replica (HTTP ${status}); replicas must share their API keys and accept each other's Host (this replica's log says more)`, { replica: owner });
    }
    return errors?.length ? remoteError(errors[0]) : this.wrongAnswer(owner, status);
  }

  /** The owner could not be reached, or the connection was lost: transient (a relayed stream tries again). */
  private unreachable(owner: string, why: string): GatewayError {
    return transient(new GatewayError('UNAVAILABLE', `Replica "${owner}" did not answer (${why}); retry shortly`, { replica: owner }));
  }

  /** The peer answered, but not as a gateway would (a wrong --peer URL, a proxy's error page). 5xx may pass. */
  private wrongAnswer(owner: string, status: number): GatewayError {
    if (status >= 500) return this.unreachable(owner, `HTTP ${status}`);
    // (the peer's address is the operator's to know: clients see the error too)
    return new GatewayError('UNAVAILABLE', `Replica "${owner}" answered HTTP ${status}, not as a gateway: check the --peer URL given for it`, { replica: owner });
  }

  /** The peer answered more than a gateway would (TooLarge): not read on, and as wrong as any other answer. */
  private tooLarge(owner: string): GatewayError {
    return new GatewayError('UNAVAILABLE', `Replica "${owner}" answered more than a gateway would, not as one: check the --peer URL given for it`, { replica: owner });
  }

  /**
   * An image another replica stores (`Image.url` there): fetched from the owner's `/images/` with
   * this replica's forwarding mark. Undefined when the owner has no such image (expired) or is
   * unknown; UNAVAILABLE when it does not answer.
   */
  async image(owner: string, token: string): Promise<{ bytes: Buffer; mimeType: string; etag?: string } | undefined> {
    const endpoint = this.config.peers.get(owner);
    if (!endpoint) return undefined;
    // only the validated token travels: nothing of the client's path reaches the peer
    const url = peerPath(endpoint, `images/${token}`);
    let res: Response;
    let bytes: Buffer;
    try {
      // redirects not followed (here and for every request to a peer): they would carry this replica's requests elsewhere
      res = await this.fetchImpl(url, { headers: { [FORWARDED_HEADER]: this.config.id }, redirect: 'manual', signal: AbortSignal.timeout(this.config.requestTimeoutMs) });
      // an image no larger than a relayed frame's event could hold
      bytes = await readCapped(res, this.maxEventChars);
    } catch (e) {
      if (e instanceof TooLarge) throw this.tooLarge(owner);
      throw this.unreachable(owner, reason(e));
    }
    if (res.status === 404) return undefined;
    const mimeType = res.headers.get('content-type') ?? '';
    if (res.status !== 200 || !mimeType.startsWith('image/')) throw this.wrongAnswer(owner, res.status);
    return { bytes, mimeType, etag: res.headers.get('etag') ?? undefined };
  }

  /**
   * Asks each peer's /health which replica it is, until it answers (a peer may start later: it keeps
   * asking, less often), and logs a warning for one that answers as another replica, as something
   * else than a gateway, or refuses this replica's requests (its Host check); and once, for one that
   * has not answered after `quietMs`.
   */
  async checkPeers(log: (message: string) => void, signal: AbortSignal, everyMs = 2000, quietMs = 60_000): Promise<void> {
    this.log = log; // the server's: forwarding problems are logged with its other warnings
    await this.resolveAddresses();
    await Promise.all(
      [...this.config.peers].map(async ([id, endpoint]) => {
        const warn = (what: string) => log(`hyperbagel: WARNING: peer ${id} (${endpoint}) ${what}. Check --peer / HYPERBAGEL_PEERS.`);
        const started = Date.now();
        let toldQuiet = false;
        for (let wait = everyMs; !signal.aborted; wait = Math.min(wait * 2, 30_000)) {
          const text = await this.fetchText(peerPath(endpoint, 'health'), signal);
          if (text === undefined) {
            if (!toldQuiet && Date.now() - started >= quietMs) {
              toldQuiet = true;
              log(`hyperbagel: WARNING: peer ${id} (${endpoint}) has not answered in ${Math.round((Date.now() - started) / 1000)} s; operations on its jobs and sessions answer UNAVAILABLE until it does (still asking).`);
            }
            await sleep(wait, signal);
            continue;
          }
          void this.resolveAddresses(); // it answers now, so its name resolves (if it did not at start)
          let replica: unknown;
          try {
            replica = (JSON.parse(text) as { replica?: unknown }).replica;
          } catch {
            return warn(`answers, but not as a hyperbagel gateway: operations on ${id}'s jobs and sessions will fail`);
          }
          if (replica !== id)
            return warn(`answers as ${typeof replica === 'string' ? `replica "${replica.slice(0, 32)}"` : 'a server with no replica id'}: operations on ${id}'s jobs and sessions will fail`);
          // /health skips the Host check that forwarded operations meet: ask /graphql too (401 is fine: auth is on)
          const status = await this.postStatus(id, endpoint, signal);
          if (status === 403) warn(`refuses this replica's requests (HTTP 403: its Host check; allow this peer URL's host there with --allow-host)`);
          else if (status !== undefined && isRedirect(status)) warn(`answers this replica's requests with a redirect (HTTP ${status}), which is not followed: give the URL it redirects to`);
          return;
        }
      }),
    );
  }

  /** GET a URL's body as text, or undefined when it does not answer in time. */
  private async fetchText(url: URL, signal: AbortSignal): Promise<string | undefined> {
    const linked = linkedSignal(signal, this.config.requestTimeoutMs);
    try {
      return (await readCapped(await this.fetchImpl(url, { redirect: 'manual', signal: linked.signal }), this.maxAnswerBytes)).toString('utf8');
    } catch {
      return undefined;
    } finally {
      linked.dispose();
    }
  }

  /** The HTTP status a peer's /graphql gives this replica's forwarded requests (undefined: no answer). */
  private async postStatus(owner: string, endpoint: string, signal: AbortSignal): Promise<number | undefined> {
    const linked = linkedSignal(signal, this.config.requestTimeoutMs);
    try {
      const res = await this.fetchImpl(endpoint, { method: 'POST', headers: this.headers({}, 'application/json'), body: JSON.stringify({ query: '{ __typename }' }), redirect: 'manual', signal: linked.signal });
      this.noticeRejected(owner, res.headers.get(PEER_REJECTED_HEADER));
      await readCapped(res, this.maxAnswerBytes);
      return res.status;
    } catch {
      return undefined;
    } finally {
      linked.dispose();
    }
  }

  /** Runs a query or mutation on the owner; returns its `data`, or throws the owner's typed error. */
  async request(owner: string, url: string, query: string, variables: Json, caller: Caller, signal?: AbortSignal): Promise<Json> {
    const linked = linkedSignal(signal, this.config.requestTimeoutMs);
    let res: Response;
    let text: string;
    try {
      res = await this.fetchImpl(url, {
        method: 'POST',
        headers: this.headers(caller, 'application/graphql-response+json, application/json'),
        body: JSON.stringify({ query, variables }),
        redirect: 'manual', // a redirect would carry the peer secret and the client's key to another origin
        signal: linked.signal,
      });
      this.noticeRejected(owner, res.headers.get(PEER_REJECTED_HEADER));
      text = (await readCapped(res, this.maxAnswerBytes)).toString('utf8');
    } catch (e) {
      if (e instanceof TooLarge) throw this.tooLarge(owner);
      if (signal?.aborted) throw new GatewayError('CANCELLED', 'The request was cancelled');
      throw this.unreachable(owner, linked.timedOut() ? `no answer in ${this.config.requestTimeoutMs} ms` : reason(e));
    } finally {
      linked.dispose();
    }
    let body: { data?: Json | null; errors?: RemoteError[] } | undefined;
    try {
      body = JSON.parse(text) as typeof body;
    } catch {
      body = undefined; // not JSON (a proxy's error page): judged by the status below
    }
    if (res.status === 401 || res.status === 403 || isRedirect(res.status) || body?.errors?.length) throw this.refused(owner, res.status, body?.errors);
    if (!res.ok || !body?.data) throw this.wrongAnswer(owner, res.status);
    return body.data;
  }

  /**
   * Runs a subscription on the owner over SSE and yields each event's `data`. Ends when the owner
   * completes it; throws the owner's typed error, or UNAVAILABLE (transient) when the connection is
   * lost before the owner completed it. Aborting `signal` closes the connection, which the owner
   * sees as a client gone.
   *
   * `answersAtOnce`: the owner answers this subscription as soon as it looks it up (imageJob, a
   * mutation), so the wait for its response is timed like a request's. Without it (understand: an owner
   * of this version answers at once and sends its first event once the request has a job slot there, an
   * older one answered only then) only the connection is timed.
   */
  async *subscribe(owner: string, url: string, query: string, variables: Json, caller: Caller, signal: AbortSignal, answersAtOnce = true): AsyncGenerator<Json> {
    // node:http rather than fetch: a relayed stream carries every event of a job or an answer, and
    // undici's web-stream body costs several times more per event than a classic socket stream
    const target = new URL(url);
    const body = JSON.stringify({ query, variables });
    const req = (target.protocol === 'https:' ? httpsRequest : httpRequest)(target, {
      method: 'POST',
      headers: { ...this.headers(caller, 'text/event-stream'), 'content-length': Buffer.byteLength(body) },
      signal,
    });
    // Before the response: the request timeout, or for a subscription the owner may hold back (see
    // answersAtOnce) only the connection, as a client of the owner's own would wait as long. After it,
    // the idle bound, which the owner's keep-alives reset: a frozen owner must not hang streams here.
    const ms = this.config.requestTimeoutMs;
    const connectTimer = setTimeout(() => req.destroy(new Error(`no ${answersAtOnce ? 'answer' : 'connection'} in ${ms} ms`)), ms);
    if (!answersAtOnce)
      req.once('socket', (socket) => {
        if (socket.connecting) socket.once('connect', () => clearTimeout(connectTimer));
        else clearTimeout(connectTimer);
      });
    req.once('close', () => clearTimeout(connectTimer));
    req.end(body);
    let res: IncomingMessage;
    try {
      res = await new Promise<IncomingMessage>((resolve, reject) => {
        req.once('response', resolve);
        req.once('error', reject);
      });
    } catch (e) {
      if (signal.aborted) return;
      throw this.unreachable(owner, reason(e));
    }
    clearTimeout(connectTimer);
    const rejected = res.headers[PEER_REJECTED_HEADER];
    this.noticeRejected(owner, typeof rejected === 'string' ? rejected : undefined);
    const idleMs = this.config.streamIdleMs ?? 30_000;
    req.setTimeout(idleMs, () => req.destroy(new Error(`nothing received for ${idleMs} ms`)));
    // from here the request's errors surface as the response stream's
    req.on('error', () => undefined);
    try {
      if (res.statusCode !== 200 || !(res.headers['content-type'] ?? '').startsWith('text/event-stream')) {
        // the owner refused before streaming (auth, a malformed request): its JSON error, if any
        let errors: RemoteError[] | undefined;
        try {
          const chunks: Buffer[] = [];
          let n = 0;
          for await (const c of res) {
            if ((n += (c as Buffer).byteLength) > this.maxAnswerBytes) throw new TooLarge();
            chunks.push(c as Buffer);
          }
          errors = (JSON.parse(Buffer.concat(chunks).toString('utf8')) as { errors?: RemoteError[] })?.errors;
        } catch (e) {
          if (e instanceof TooLarge) throw this.tooLarge(owner);
          // not JSON: judged by the status
        }
        throw this.refused(owner, res.statusCode ?? 0, errors);
      }
      res.setEncoding('utf8'); // a multi-byte character split across chunks stays whole
      let buffered = '';
      let completed = false;
      try {
        for await (const chunk of res) {
          buffered += chunk as string;
          let end: number;
          while ((end = buffered.indexOf('\n\n')) >= 0) {
            const block = buffered.slice(0, end);
            buffered = buffered.slice(end + 2);
            const event = /^event: *(\S+)/m.exec(block)?.[1];
            if (event === 'complete') {
              completed = true;
              return;
            }
            if (event !== 'next') continue; // comments (keep-alive pings)
            const data = JSON.parse(block.split('\n').filter((l) => l.startsWith('data:')).map((l) => l.slice(5)).join('\n')) as { data?: Json; errors?: RemoteError[] };
            if (data.errors?.length) throw remoteError(data.errors[0]);
            if (data.data) yield data.data;
          }
          // what is left is one unfinished event: no gateway's is this large, and a peer that never ends
          // one must not grow this buffer without bound
          if (buffered.length > this.maxEventChars) throw this.tooLarge(owner);
        }
      } catch (e) {
        if (signal.aborted) return;
        if (e instanceof GatewayError) throw e;
        throw this.unreachable(owner, `connection lost: ${reason(e)}`);
      }
      if (!completed && !signal.aborted) throw this.unreachable(owner, 'connection closed before the stream completed');
    } finally {
      res.destroy();
    }
  }
}
