// The gateway server: graphql-yoga on Node's http server, graphql-ws on the same port and path
// (/graphql), SSE and multipart incremental delivery from yoga, plus /health, /ready, /metrics and
// /images/<token>. Both transports run the same envelop pipeline (limits, masking, defer/stream).
import { createHash } from 'node:crypto';
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import { promisify } from 'node:util';
import { gzip as gzipBuffer } from 'node:zlib';
import type { AddressInfo, Socket } from 'node:net';
import type { Duplex } from 'node:stream';
import { useDeferStream } from '@graphql-yoga/plugin-defer-stream';
import { GraphQLError, Kind, Lexer, NoSchemaIntrospectionCustomRule, Source, TokenKind, defaultFieldResolver, getOperationAST, type DirectiveNode, type DocumentNode, type ExecutionArgs, type ExecutionResult, type GraphQLObjectType, type SelectionSetNode } from 'graphql/index.js'; // the CJS entry yoga uses: one graphql instance under tsx and vitest
import { createSchema, createYoga, isAsyncIterable, processRegularResult, type Plugin, type YogaServerInstance } from 'graphql-yoga';
import { useServer } from 'graphql-ws/use/ws';
import { WebSocketServer, type WebSocket } from 'ws';
import { createResolvers } from '../../resolvers/index.ts';
import type { Engine } from '../engine/types.ts';
import { handleDemoRequest, isDemoRender } from '../web/serve.ts';
import { readSchemaSdl } from './codegen.ts';
import { GatewayError, logInternal, maskError } from './errors.ts';
import type { ErrorCode } from './schema-types.ts';
import { fastSubscribe, setEventMask } from './fast-subscribe.ts';
import { directNextStream } from './ws-direct.ts';
import { HostPolicy, OriginPolicy } from './origin.ts';
import { RateLimiter, rateLimitedError } from './rate-limit.ts';
import { queryShapeRule, type GatewayLimits } from './limits.ts';
import { FORWARDED_FOR_HEADER, FORWARDED_HEADER, PEER_REJECTED_HEADER, PEER_SECRET_HEADER, secretMatches, type ReplicaConfig } from './replicas.ts';
import { extensionFits, parseImageToken } from './images.ts';
import { guardedParser, jsonDeeperThan, MAX_JSON_DEPTH } from './request-body.ts';
import { imageJobKey, lastEventId, withEventIds } from './sse-ids.ts';
import { OpenCounter } from './open-counter.ts';
import { clientAddress, clientIdentity, parseTrustedProxies } from './client-address.ts';
import { tookData, writeProgress, type WriteProgress } from './heartbeat.ts';
import { GatewayRuntime, type GatewayContext } from './runtime.ts';

/** How long a shutdown waits for graphql-ws clients to answer its close (1001) before cutting them off. */
const WS_CLOSE_GRACE_MS = 1000;

export interface ServerOptions {
  /** 0 picks a free port. Default: PORT or 4000. */
  port?: number;
  /** Default 127.0.0.1. */
  host?: string;
  /** Use this engine (tests, benchmarks). Otherwise the pack at `packDir` is loaded. */
  engine?: Engine;
  packDir?: string;
  engineOptions?: Record<string, unknown>;
  /** When non-empty, every request needs one of these keys. */
  apiKeys?: string[];
  /**
   * Browser origins (e.g. "https://app.example.com") allowed besides the server's own; "*" allows
   * any. Requests and WebSocket upgrades from other origins get HTTP 403; clients that send no
   * Origin (non-browser) are always accepted.
   */
  allowedOrigins?: string[];
  /**
   * Host header values accepted besides localhost, 127.0.0.1, [::1], the bound address and the
   * publicUrl host (those on the server's port): "name" (any port) or "name:port"; "*" turns the
   * check off. Other Host headers get HTTP 403 (DNS rebinding). /health and /ready are exempt.
   * Binding 0.0.0.0 / :: with none configured logs a warning and accepts any Host.
   */
  allowedHosts?: string[];
  /**
   * Addresses of reverse proxies / load balancers in front of this server. A request from one of them
   * counts as coming from the client its X-Forwarded-For names (per-client rate, queue and connection
   * limits when auth is off); from anywhere else the header is ignored. Default: none.
   */
  trustedProxies?: string[];
  limits?: Partial<GatewayLimits>;
  /** GraphiQL and introspection. Default: NODE_ENV !== 'production'. */
  dev?: boolean;
  /** Base of absolute image URLs; default http://<Host header>. */
  publicUrl?: string;
  /** Resolve only once the engine is loaded (default true). With false, /ready says 503 until then. */
  waitForEngine?: boolean;
  /** Close the engine on close() (default: true when the server loaded it). */
  closeEngine?: boolean;
  /**
   * Several replicas behind one load balancer: this one's id (the prefix of the job and session ids
   * it hands out) and the other replicas' GraphQL endpoints; operations on another replica's jobs
   * and sessions are forwarded to it (replicas.ts). Default: one replica, plain ids.
   */
  replica?: ReplicaConfig;
  /** Serve the web demo at / (default true). */
  webDemo?: boolean;
  log?: (msg: string) => void;
}

/** Close code for a graphql-ws socket whose client stopped reading (send buffer over the bound too long). */
export const SLOW_CONSUMER_CLOSE_CODE = 4008;
/** The heartbeat spares a socket that does not answer but still takes data for at most this many intervals. */
const MAX_SPARED_INTERVALS = 3;
/** After the slow-consumer close frame, the socket is destroyed this long later if the client never reads it. */
const SLOW_CONSUMER_TERMINATE_MS = 5000;

export interface RunningServer {
  url: string;
  port: number;
  runtime: GatewayRuntime;
  /** Settles when the engine is loaded; rejects with the load error (serve ends on it). */
  engineReady: Promise<void>;
  close(): Promise<void>;
  /**
   * Diagnostics, one entry per open graphql-ws socket: its operations in flight, the listeners
   * attached to it and to its TCP socket, and its unsent bytes (`bench gateway --churn` and
   * `--slow-consumers`, and their tests).
   */
  wsSocketStats(): WsSocketStats[];
}

export interface WsSocketStats {
  operations: number;
  listeners: number;
  /** bytes written to the socket that the kernel has not taken yet (ws's bufferedAmount) */
  bufferedBytes: number;
}

const listenerTotal = (e: { eventNames(): Array<string | symbol>; listenerCount(name: string | symbol): number } | undefined): number =>
  e ? e.eventNames().reduce((n, name) => n + e.listenerCount(name), 0) : 0;

/** Loaded lazily so servers given an engine (tests, benchmarks) never load the model runtime. */
async function loadEngineFactory(): Promise<(packDir: string, options?: Record<string, unknown>) => Promise<Engine>> {
  return (await import('../engine/index.ts')).createEngine;
}

export function extractApiKey(value: unknown): string | undefined {
  if (typeof value !== 'string') return undefined;
  const v = value.trim();
  const m = /^Bearer\s+(.+)$/i.exec(v);
  return (m ? m[1]! : v) || undefined;
}

/** GraphQL-over-HTTP GET parameters: any of them makes a GET an operation, not the GraphiQL page. */
const OPERATION_PARAMS = ['query', 'variables', 'operationName', 'extensions'];

/**
 * Is this request for GraphiQL's page itself (served without a key and without a rate-limit token)?
 * Only with GraphiQL on, and only a GET that carries no operation: an Accept header naming
 * text/html next to application/json or text/event-stream must not turn an operation into "the page".
 */
export function isGraphiqlPage(dev: boolean, method: string | undefined, accept: string | null | undefined, url: string): boolean {
  if (!dev || method !== 'GET' || !(accept ?? '').includes('text/html')) return false;
  const q = url.indexOf('?');
  if (q < 0) return true;
  const params = new URLSearchParams(url.slice(q + 1));
  return !OPERATION_PARAMS.some((k) => params.has(k));
}

/** The largest graphql-ws message read before connection_ack: a connection_init with its payload. */
const PRE_ACK_MAX_BYTES = 64 * 1024;
/** A least-recently-used cache of at most `max` entries whose keys (GraphQL documents) are at most `maxKeyChars` long. */
export class BoundedCache<T> {
  private readonly m = new Map<string, T>();
  constructor(
    private readonly max: number,
    private readonly maxKeyChars: number,
  ) {}
  get(key: string): T | undefined {
    const v = this.m.get(key);
    if (v !== undefined) {
      this.m.delete(key);
      this.m.set(key, v);
    }
    return v;
  }
  set(key: string, value: T): void {
    if (key.length > this.maxKeyChars) return;
    this.m.delete(key);
    this.m.set(key, value);
    if (this.m.size > this.max) this.m.delete(this.m.keys().next().value!);
  }
  get size(): number {
    return this.m.size;
  }
}

/** Membership check in constant time per key, whatever the lengths (digests compared, as secretMatches). */
function keyAllowed(keys: readonly string[], key: string | undefined): boolean {
  if (!key) return false;
  let ok = false;
  for (const k of keys) if (secretMatches(key, k)) ok = true;
  return ok;
}

/** Does the document use @defer or @stream anywhere (operations and fragments)? */
const incrementalCache = new WeakMap<DocumentNode, boolean>();
export function usesIncrementalDelivery(doc: DocumentNode): boolean {
  let v = incrementalCache.get(doc);
  if (v !== undefined) return v;
  const visit = (set: SelectionSetNode | undefined): boolean => {
    if (!set) return false;
    for (const sel of set.selections) {
      if (sel.directives?.some((d) => d.name.value === 'defer' || d.name.value === 'stream')) return true;
      if (sel.kind !== Kind.FRAGMENT_SPREAD && visit(sel.selectionSet)) return true;
    }
    return false;
  };
  v = doc.definitions.some((d) => (d.kind === Kind.OPERATION_DEFINITION || d.kind === Kind.FRAGMENT_DEFINITION) && visit(d.selectionSet));
  incrementalCache.set(doc, v);
  return v;
}

/**
 * Can this operation's response be a stream of @defer/@stream payloads? Unlike usesIncrementalDelivery
 * (a cheap superset), this looks only at the operation that runs and the fragments it spreads, and
 * leaves out a directive whose `if` is false (a literal, or a variable given or defaulting to false),
 * since such a request is answered with a single result.
 */
export function deliversIncrementally(args: Pick<ExecutionArgs, 'document' | 'operationName' | 'variableValues'>): boolean {
  const op = getOperationAST(args.document, args.operationName);
  if (!op) return false;
  const fragments = new Map<string, SelectionSetNode>();
  for (const d of args.document.definitions) if (d.kind === Kind.FRAGMENT_DEFINITION) fragments.set(d.name.value, d.selectionSet);
  const vars = args.variableValues ?? {};
  const enabled = (d: DirectiveNode): boolean => {
    let cond = d.arguments?.find((a) => a.name.value === 'if')?.value;
    if (cond?.kind === Kind.VARIABLE) {
      const name = cond.name.value;
      if (Object.hasOwn(vars, name)) return vars[name] !== false;
      cond = op.variableDefinitions?.find((v) => v.variable.name.value === name)?.defaultValue;
    }
    return !(cond?.kind === Kind.BOOLEAN && !cond.value);
  };
  const seen = new Set<string>();
  const visit = (set: SelectionSetNode | undefined): boolean => {
    for (const sel of set?.selections ?? []) {
      if (sel.directives?.some((d) => (d.name.value === 'defer' || d.name.value === 'stream') && enabled(d))) return true;
      if (sel.kind !== Kind.FRAGMENT_SPREAD) {
        if (visit(sel.selectionSet)) return true;
      } else if (!seen.has(sel.name.value)) {
        seen.add(sel.name.value);
        if (visit(fragments.get(sel.name.value))) return true;
      }
    }
    return false;
  };
  return visit(op.selectionSet);
}

/** The media types yoga answers a single result in, and a stream in (a subscription's stream: SSE only). */
const SINGLE_RESULT_TYPES = ['application/json', 'application/graphql-response+json', 'text/event-stream', 'multipart/mixed'] as const;
const STREAM_TYPES = ['text/event-stream', 'multipart/mixed'] as const;
const SUBSCRIPTION_TYPES = ['text/event-stream'] as const;

/**
 * Does this Accept header admit one of `offered`? Read the way yoga's result processors read it
 * (graphql-yoga result-processor/accept.js), so that a request is refused exactly when yoga would
 * find no format: no header means any type, q-values are ignored, an entry with a charset other
 * than utf-8 is skipped, and wildcards match.
 */
export function acceptsAny(accept: string | null | undefined, offered: readonly string[]): boolean {
  for (const entry of (accept || '*/*').replace(/\s/g, '').toLowerCase().split(',')) {
    const [type = '', ...params] = entry.split(';');
    const charset = params.find((p) => p.includes('charset='));
    if (charset !== undefined && charset !== 'charset=utf-8') continue;
    const [pre, suf] = type.split('/');
    for (const o of offered) {
      const [p, s] = o.split('/');
      if ((pre === '*' || pre === p) && (suf === '*' || suf === s)) return true;
    }
  }
  return false;
}

/** graphql-ws results carry no HTTP internals: yoga's `extensions.http` (status, headers) is for its own HTTP responses. */
function withoutHttp(e: GraphQLError): GraphQLError {
  if (!e.extensions || !('http' in e.extensions)) return e;
  const { http: _http, ...extensions } = e.extensions;
  return new GraphQLError(e.message, { nodes: e.nodes, source: e.source, positions: e.positions, path: e.path, extensions });
}
function wsResult<T>(result: T): T {
  const r = result as ExecutionResult | null;
  if (!r || typeof r !== 'object' || isAsyncIterable(r) || !r.errors?.length) return result;
  return { ...r, errors: r.errors.map(withoutHttp) } as T;
}

interface WsOp {
  controller: AbortController;
}

export async function startServer(options: ServerOptions = {}): Promise<RunningServer> {
  const log = options.log ?? ((m: string) => console.error(m));
  const dev = options.dev ?? process.env.NODE_ENV !== 'production';
  const apiKeys = (options.apiKeys ?? []).filter((k) => k.length > 0);
  const authOn = apiKeys.length > 0;
  const rt = new GatewayRuntime(options.limits, options.replica, (line) => log(line));
  const L = rt.limits;
  // image URLs are `${publicUrl}/images/...`: without its trailing slash, or they would hold "//"
  const publicUrl = options.publicUrl?.replace(/\/+$/, '');
  const origins = new OriginPolicy(options.allowedOrigins ?? [], publicUrl);
  const bindHost = options.host ?? '127.0.0.1';
  const hosts = new HostPolicy(options.allowedHosts, bindHost, publicUrl);
  const hostRejection = (host: string | undefined) =>
    `Host header "${host ?? ''}" is not allowed (DNS rebinding protection); allow it with --allow-host / HYPERBAGEL_ALLOWED_HOSTS`;
  const countCode = (code: string) => rt.metrics.errors.inc({ code }); // errors_total (see errorCountPlugin)
  const limiter = new RateLimiter({ ratePerSecond: L.rateLimitPerSecond, burst: L.rateLimitBurst });
  /** The rate-limit identity: a valid API key when auth is on, else the client's IP address. */
  const trustedProxies = parseTrustedProxies(options.trustedProxies ?? []);
  const rateClient = (key: string | undefined, req: IncomingMessage): string => {
    if (authOn && key && keyAllowed(apiKeys, key)) return `key:${key}`;
    try {
      return `ip:${clientIdentity(clientAddress(req, trustedProxies))}`;
    } catch {
      // whatever a header holds, a request always has a client (its direct peer)
      return `ip:${req.socket.remoteAddress ?? 'unknown'}`;
    }
  };
  /**
   * Did a peer forward this request? It names a configured peer, and proves it: with the replicas'
   * shared secret when one is configured, else by coming from that peer's address (then a proxy on
   * a replica's host must strip the hyperbagel-forwarded-* headers from clients' requests).
   */
  const fromPeer = (req: IncomingMessage): boolean => {
    const by = req.headers[FORWARDED_HEADER];
    const config = rt.relay?.peers.config;
    if (!config || typeof by !== 'string' || !config.peers.has(by)) return false;
    if (config.secret !== undefined) return secretMatches(req.headers[PEER_SECRET_HEADER], config.secret);
    return rt.relay!.peers.isPeerAddress(req.socket.remoteAddress);
  };
  const httpStreams = new OpenCounter();
  /**
   * A streamed HTTP response (SSE, multipart/mixed) may stay open for minutes: counted per client, as
   * graphql-ws connections are, until it closes. Over a limit: the RATE_LIMITED error to answer instead.
   */
  const admitStream = (req: IncomingMessage, res: ServerResponse): GatewayError | undefined => {
    if (fromPeer(req)) return undefined; // counted where the client is
    const client = rateClient(extractApiKey(req.headers.authorization), req);
    const mine = httpStreams.of(client);
    const over =
      L.maxHttpStreams > 0 && httpStreams.total >= L.maxHttpStreams
        ? 'Too many streamed responses open'
        : L.maxHttpStreamsPerClient > 0 && mine >= L.maxHttpStreamsPerClient
          ? `Too many streamed responses open from this client (at most ${L.maxHttpStreamsPerClient}); close one, or use one graphql-ws connection for many operations`
          : undefined;
    if (over) {
      rt.metrics.rateLimited.inc({ transport: 'http' }); // errors_total: errorCountPlugin counts the refusal's error
      return new GatewayError('RATE_LIMITED', over, { retryAfterSeconds: 5, http: { status: 429, headers: { 'retry-after': '5' } } });
    }
    httpStreams.hold(client, res, req.socket); // a pipelined response never gets the socket, so never emits close
    return undefined;
  };
  /** when an unproven request naming each peer was last logged (one line per request would flood the log) */
  const unprovenLogged = new Map<string, number>();
  /**
   * A request that names a configured peer but does not prove it (not fromPeer): most likely that peer
   * with another --peer-secret, or none. It is taken as a client's own (rate-limited again here), and
   * nothing fails, so the answer says so (PEER_REJECTED_HEADER: the forwarding replica logs it), and so
   * does this log, at most once a minute per peer.
   */
  const unprovenPeer = (req: IncomingMessage, res: ServerResponse): void => {
    const by = req.headers[FORWARDED_HEADER];
    const config = rt.relay?.peers.config;
    if (!config || typeof by !== 'string' || !config.peers.has(by)) return;
    const why = config.secret !== undefined ? 'secret' : 'address';
    res.setHeader(PEER_REJECTED_HEADER, why);
    const now = Date.now();
    if (now - (unprovenLogged.get(by) ?? -Infinity) < 60_000) return;
    unprovenLogged.set(by, now);
    const how = why === 'secret' ? `${req.headers[PEER_SECRET_HEADER] === undefined ? 'without the' : 'with a wrong'} peer secret` : `from ${req.socket.remoteAddress ?? 'an unknown address'}, not from that peer's address`;
    log(`hyperbagel: WARNING: a request marked as forwarded by peer ${by} came ${how}: taken as a client's own (rate-limited here). If replica ${by} sent it, give every replica the same --peer-secret / HYPERBAGEL_PEER_SECRET.`);
  };
  /**
   * The client a peer forwarded this request for, which the owner's per-client queue share counts
   * (the peer already rate-limited it). With auth on, the client's own key, forwarded with it, says who.
   */
  const forwardedFor = (req: IncomingMessage): string | undefined => {
    const v = req.headers[FORWARDED_FOR_HEADER];
    if (authOn || typeof v !== 'string' || !/^ip:.{1,300}$/.test(v) || !fromPeer(req)) return undefined;
    return v;
  };

  const schema = createSchema<GatewayContext>({
    typeDefs: readSchemaSdl(),
    // The generated Resolvers type is stricter than graphql-tools' IResolvers; the shapes match at run time.
    resolvers: createResolvers(rt) as unknown as Record<string, never>,
  });

  const limitsPlugin: Plugin = {
    onParse({ params }) {
      // Count lexical tokens before parsing (yoga's parser cache supplies its own parse function).
      const source = typeof params.source === 'string' ? params.source : params.source.body;
      if (source.length > L.maxQueryChars)
        throw new GraphQLError(`Query is ${source.length} characters; the limit is ${L.maxQueryChars} (send large values such as images as variables)`, {
          extensions: { code: 'QUERY_TOO_COMPLEX' },
        });
      const lexer = new Lexer(new Source(source));
      let n = 0;
      try {
        while (lexer.advance().kind !== TokenKind.EOF) {
          if (++n > L.maxTokens) throw new GraphQLError(`Query exceeds the limit of ${L.maxTokens} tokens`, { extensions: { code: 'QUERY_TOO_COMPLEX' } });
        }
      } catch (e) {
        if (n > L.maxTokens) throw e;
        // syntax errors are reported by the parser itself
      }
    },
    onValidate({ addValidationRule }) {
      addValidationRule(queryShapeRule(L));
      if (!dev) addValidationRule(NoSchemaIntrospectionCustomRule);
    },
  };

  const authPlugin: Plugin = {
    onRequest({ request, endResponse, fetchAPI }) {
      if (!authOn) return;
      if (keyAllowed(apiKeys, extractApiKey(request.headers.get('authorization')))) return;
      // GraphiQL's page itself is public (dev only); its requests still need the key.
      if (isGraphiqlPage(dev, request.method, request.headers.get('accept'), request.url)) return;
      countCode('UNAUTHENTICATED');
      endResponse(
        new fetchAPI.Response(JSON.stringify({ errors: [{ message: 'Missing or invalid API key', extensions: { code: 'UNAUTHENTICATED' } }] }), {
          status: 401,
          headers: { 'content-type': 'application/json', 'www-authenticate': 'Bearer' },
        }),
      );
    },
  };

  // multipart/form-data, x-www-form-urlencoded and text/plain are CORS "simple" content types: a page on
  // any site may POST them without asking. Require a header such a form cannot send.
  const csrfPlugin: Plugin = {
    onRequest({ request, endResponse, fetchAPI }) {
      // a GET operation from another site's <script> or <img> carries no Origin, but browsers say where it
      // came from: such a request could start model work (a subscription over SSE) with auth off
      if (request.method === 'GET' && request.headers.get('sec-fetch-site') === 'cross-site' && new URL(request.url).searchParams.has('query')) {
        countCode('FORBIDDEN');
        endResponse(new fetchAPI.Response(JSON.stringify({ errors: [{ message: 'A GraphQL operation over GET from another site is refused; send it as a POST (CORS applies)', extensions: { code: 'FORBIDDEN' } }] }), { status: 403, headers: { 'content-type': 'application/json' } }));
        return;
      }
      const ct = request.headers.get('content-type') ?? '';
      const simple = /multipart\/form-data|application\/x-www-form-urlencoded|text\/plain/i.exec(ct)?.[0]?.toLowerCase();
      if (request.method !== 'POST' || !simple) return;
      if (request.headers.get('graphql-require-preflight') || request.headers.get('apollo-require-preflight') || request.headers.get('authorization')) return;
      countCode('INVALID_INPUT');
      const message =
        simple === 'multipart/form-data'
          ? 'A multipart request (a file upload) needs the header "GraphQL-Require-Preflight: 1": without it, a page on any site could send one'
          : `${simple === 'text/plain' ? 'A' : 'An'} ${simple} request needs the header "GraphQL-Require-Preflight: 1" (a page on any site could send one); send GraphQL requests as application/json`;
      endResponse(new fetchAPI.Response(JSON.stringify({ errors: [{ message, extensions: { code: 'INVALID_INPUT' } }] }), { status: 400, headers: { 'content-type': 'application/json' } }));
    },
    // yoga answers a body it has no parser for with a bare 415; say what it accepts instead
    onRequestParse({ request, requestParser, setRequestParser, endResponse, fetchAPI }) {
      if (requestParser) {
        const guarded = guardedParser(request, requestParser as never, fetchAPI, { maxFieldBytes: L.maxBodyBytes, maxFileBytes: L.maxImageBytes });
        if (guarded) setRequestParser(guarded as never);
        return;
      }
      if (request.method !== 'POST') return;
      const ct = (request.headers.get('content-type') ?? '').split(';')[0]!.trim();
      // yoga matches media types as written; MIME types are case-insensitive, so say what differs
      const lower = ct.toLowerCase();
      const known = ['application/json', 'application/graphql+json', 'application/graphql', 'multipart/form-data', 'application/x-www-form-urlencoded'].includes(lower);
      countCode('INVALID_INPUT');
      endResponse(
        new fetchAPI.Response(
          JSON.stringify({
            errors: [
              {
                message: known
                  ? `Content-Type ${ct.slice(0, 100)} must be written in lower case: ${lower}`
                  : `${ct ? `Content-Type ${ct.slice(0, 100)}` : 'A body without a Content-Type'} is not a GraphQL request; send application/json (multipart/form-data for uploads)`,
                extensions: { code: 'INVALID_INPUT' },
              },
            ],
          }),
          { status: 415, headers: { 'content-type': 'application/json' } },
        ),
      );
    },
  };

  // Per-event hot path: @graphql-tools/executor runs every subscription event through
  // flattenAsyncIterable + ensureAsyncIterable (several promises and async-iterator hops per event,
  // there for @defer/@stream in events). Subscriptions that use neither directive take graphql-js's
  // own createSourceEventStream, and each event is completed from a plan made once per
  // subscription (fast-subscribe.ts; graphql-js execute() wherever the plan cannot be exact);
  // envelop's hooks (masking) still apply. Over graphql-ws the events then skip envelop's per-event
  // wrappers (see the `subscribe` option of useServer below).
  const eventStreams = new WeakMap<object, AsyncGenerator<ExecutionResult>>();
  const subscribeFastPath: Plugin = {
    onSubscribe({ args, setSubscribeFn }) {
      if (usesIncrementalDelivery(args.document)) return;
      setSubscribeFn(((a: ExecutionArgs) =>
        fastSubscribe(a, (stream) => {
          if (a.contextValue && typeof a.contextValue === 'object') eventStreams.set(a.contextValue, stream);
        })) as never);
    },
  };

  // errors_total: every error a client gets is counted once, where it arises. Here: execution results
  // and their events (queries, mutations, subscription starts and events, on both transports; the
  // graphql-ws fast path counts its events in its mask below), request-level errors that never reach
  // execution (onResultProcess for HTTP, onSubscribe for graphql-ws) and the refusals answered before
  // yoga (401, 403, 429, CSRF). Not here: an error that ends an understand stream mid-way (the
  // resolvers count it in the stream's `end`), and a failed image job (jobs.ts counts it when the job
  // fails; ImageJob.result reporting it to a client is the same error).
  const failedJobErrors = new WeakSet<object>();
  const countError = (e: unknown) => {
    const orig = e instanceof GraphQLError ? (e.originalError ?? e) : e;
    if (typeof orig === 'object' && orig !== null && failedJobErrors.has(orig)) return;
    countCode(String((maskError(e) as GraphQLError).extensions?.code ?? 'INTERNAL'));
  };
  /** the errors of a result, or of an incremental (@defer/@stream) payload */
  const countResult = (result: unknown) => {
    const r = result as { errors?: readonly unknown[]; incremental?: ReadonlyArray<{ errors?: readonly unknown[] }> } | null;
    for (const e of r?.errors ?? []) countError(e);
    for (const inc of r?.incremental ?? []) for (const e of inc.errors ?? []) countError(e);
  };
  const jobResult = (schema.getType('ImageJob') as GraphQLObjectType).getFields()['result']!;
  const resolveJobResult = jobResult.resolve ?? defaultFieldResolver;
  jobResult.resolve = async (source, args, ctx, info) => {
    try {
      return await resolveJobResult(source, args, ctx, info);
    } catch (e) {
      const job = rt.jobs.find((source as { id: string }).id);
      if (job?.status === 'FAILED' && job.error && job.error === e) failedJobErrors.add(job.error);
      throw e;
    }
  };
  /** HTTP requests whose errors were counted at execution (the others are counted in onResultProcess) */
  const countedRequests = new WeakSet<object>();
  const counted = (args: ExecutionArgs, result: unknown) => {
    const request = (args.contextValue as { request?: object } | undefined)?.request;
    if (request) countedRequests.add(request);
    if (!isAsyncIterable(result)) return void countResult(result);
    return { onNext: ({ result: event }: { result: unknown }) => countResult(event) };
  };
  // Registered before yoga's masking: these hooks see errors as thrown (a failed job's own error).
  const errorCountPlugin: Plugin = {
    onExecute: ({ args }) => ({ onExecuteDone: ({ result }) => counted(args, result) }),
    onSubscribe: ({ args }) => ({ onSubscribeResult: ({ result }) => counted(args, result) }),
    onResultProcess({ request, result, setResult }) {
      // Request-level errors (syntax, validation, a bad body, no single operation...) never reach
      // execution; yoga gives them its own codes, and validation errors skip maskedErrors: type them
      // here (the masked ones are unchanged by a second maskError), and count those not counted yet.
      if (Array.isArray(result) || isAsyncIterable(result) || !result.errors?.length) return;
      const errors = result.errors.map((e) => maskError(e) as GraphQLError);
      if (!countedRequests.has(request)) for (const e of errors) countError(e);
      setResult({ ...result, errors });
    },
  };

  // yoga picks the response format after execution, and answers 406 with an empty body when the
  // Accept header admits none: the model has run by then and the client never learns a job id.
  // Decide before executing, as yoga would decide (acceptsAny), and refuse with a typed JSON error.
  const notAcceptable = new WeakSet<object>();
  const acceptGuard = (args: ExecutionArgs, types: readonly string[], message: string, refuse: (r: ExecutionResult) => void) => {
    const request = (args.contextValue as { request?: Request } | undefined)?.request; // none over graphql-ws
    if (!request || acceptsAny(request.headers.get('accept'), types)) return false;
    notAcceptable.add(request);
    refuse({ errors: [new GatewayError('INVALID_INPUT', message, { http: { status: 406 } })] });
    return true;
  };
  const streamRefused = new WeakSet<Request>();
  /** imageJob subscriptions over HTTP, by request: the response key of the field (for sse-ids.ts) */
  const imageJobKeys = new WeakMap<Request, string>();
  /** An operation whose HTTP response will be a stream: counted while it is open, refused (429) before any work beyond the limit. */
  const streamGuard = (args: ExecutionArgs, refuse: (r: ExecutionResult) => void) => {
    const c = args.contextValue as { request?: Request; req?: IncomingMessage; res?: ServerResponse } | undefined; // none over graphql-ws
    const refusal = c?.request && c.req && c.res ? admitStream(c.req, c.res) : undefined;
    if (!refusal) return;
    streamRefused.add(c!.request!); // answered as JSON, with its status, not as an event stream
    refuse({ errors: [refusal] });
  };
  const acceptPlugin: Plugin = {
    onExecute({ args, setResultAndStopExecution }) {
      if (deliversIncrementally(args)) {
        if (!acceptGuard(args, STREAM_TYPES, 'An operation with @defer or @stream is streamed as text/event-stream or multipart/mixed, which the Accept header does not allow; send Accept: text/event-stream or multipart/mixed', setResultAndStopExecution))
          streamGuard(args, setResultAndStopExecution);
      } else acceptGuard(args, SINGLE_RESULT_TYPES, 'The Accept header allows no format a result is sent in; send Accept: application/json (or application/graphql-response+json, text/event-stream, multipart/mixed)', setResultAndStopExecution);
    },
    onSubscribe({ args, setResultAndStopExecution }) {
      // an imageJob subscription over HTTP: the response key its events carry (the field's alias, if any)
      const request = (args.contextValue as { request?: Request } | undefined)?.request;
      const key = request && imageJobKey(args.document, args.operationName);
      if (key) imageJobKeys.set(request, key);
      if (!acceptGuard(args, SUBSCRIPTION_TYPES, 'A subscription is streamed over HTTP as text/event-stream, which the Accept header does not allow; send Accept: text/event-stream (or subscribe over graphql-ws)', setResultAndStopExecution))
        streamGuard(args, setResultAndStopExecution);
    },
    onResultProcess({ request, result, resultProcessor, setResultProcessor }) {
      // the refusals are JSON even when the Accept header admits no JSON type
      if ((notAcceptable.has(request) && !resultProcessor) || streamRefused.has(request)) return setResultProcessor(processRegularResult, 'application/json');
      // imageJob over SSE: `id:` lines, so an EventSource resumes where it was (sse-ids.ts; it changes only
      // a response yoga sends as text/event-stream: with multipart/mixed also accepted, yoga may pick that)
      const key = imageJobKeys.get(request);
      if (key && resultProcessor && isAsyncIterable(result) && (request.headers.get('accept') ?? '').includes('text/event-stream')) {
        const original = resultProcessor;
        setResultProcessor(
          (result, api, mediaType) => {
            const res = original(result, api, mediaType);
            return res instanceof Promise ? res.then((r) => withEventIds(r, api, key)) : withEventIds(res as Response, api, key);
          },
          'text/event-stream',
        );
      }
    },
  };

  // GraphiQL's page, rendered once and kept as bytes (and gzipped): 9 MB of HTML that every request rendered and
  // copied afresh, so clients that requested it and read slowly held 9 MB each (60 of them: 1.7 GB)
  let page: Promise<{ html: string; raw: Buffer; gzip: Buffer; etag: string }> | undefined;
  const graphiqlPage = () =>
    (page ??= (async () => {
      const html = (await import('@graphql-yoga/render-graphiql')).renderGraphiQL({ subscriptionsProtocol: 'WS', title: 'hyperbagel', endpoint: '/graphql' });
      const raw = Buffer.from(html);
      const gzip = await promisify(gzipBuffer)(raw);
      return { html, raw, gzip, etag: `"${createHash('sha256').update(raw).digest('base64url').slice(0, 22)}"` };
    })());
  const servePage = (req: IncomingMessage, res: ServerResponse) =>
    graphiqlPage().then(
      (p) => {
        const headers = { 'content-type': 'text/html; charset=utf-8', 'cache-control': 'no-cache', etag: p.etag, vary: 'Accept-Encoding' };
        if (req.headers['if-none-match']?.split(',').some((t) => t.trim() === p.etag)) {
          res.writeHead(304, headers);
          return void res.end();
        }
        const gz = /\bgzip\b/.test(req.headers['accept-encoding'] ?? '');
        const body = gz ? p.gzip : p.raw;
        res.writeHead(200, { ...headers, 'content-length': String(body.length), ...(gz ? { 'content-encoding': 'gzip' } : {}) });
        res.end(body);
      },
      (e: unknown) => {
        logInternal(log, e, 'graphiql');
        sendJson(res, 500, { error: 'the GraphiQL page could not be rendered' });
      },
    );

  const yoga: YogaServerInstance<Record<string, unknown>, GatewayContext> = createYoga<Record<string, unknown>, GatewayContext>({
    schema: schema as never,
    graphqlEndpoint: '/graphql',
    // parsed documents are cached by their text: only short ones, and a bounded number of them (yoga's
    // default keeps 1,024 of any size for an hour, so distinct large queries could fill the heap)
    parserAndValidationCache: { documentCache: new BoundedCache(512, 8 * 1024), errorCache: new BoundedCache(512, 8 * 1024), validationCache: true },
    graphiql: dev ? { subscriptionsProtocol: 'WS', title: 'hyperbagel' } : false,
    // GraphiQL's page with its assets inlined: yoga's default loads them from a CDN, which leaves the
    // page blank offline and would make the gateway depend on the network at run time. Imported on the
    // first page request only: the bundle is 9 MB of JavaScript (about 0.5 s and 50 MB to load).
    renderGraphiQL: async () => (await graphiqlPage()).html,
    landingPage: false,
    batching: false,
    maskedErrors: {
      maskError: (error) => {
        const masked = maskError(error);
        // internals stay in the server log, never in the response; the error id ties the two together
        const ext = (masked as GraphQLError).extensions;
        if (ext?.code === 'INTERNAL') logInternal(log, error, ext['errorId']);
        return masked;
      },
    },
    maxRequestBodySize: L.maxBodyBytes,
    // yoga's default CORS reflects any Origin (with credentials). Here: CORS headers only for
    // origins the policy allows (others never reach yoga: 403 in the handler below).
    cors: (request) => {
      const origin = request.headers.get('origin');
      if (!origins.needsCors(origin, request.headers.get('host'))) return false as never;
      return { origin: [origin!], credentials: false, exposedHeaders: ['Retry-After'] };
    },
    multipart: true,
    logging: false,
    context: (initial): GatewayContext => {
      const init = initial as unknown as { request?: Request; req?: IncomingMessage; opSignal?: AbortSignal; baseUrl?: string; client?: string; apiKey?: string };
      const httpKey = init.request ? extractApiKey(init.request.headers.get('authorization')) : undefined;
      const host = init.request?.headers.get('host');
      return {
        signal: init.opSignal ?? init.request?.signal ?? new AbortController().signal,
        baseUrl: init.baseUrl ?? publicUrl ?? (host ? `http://${host}` : ''),
        // graphql-ws passes its own; over HTTP, the API key or the address of the node request
        client: init.client ?? (init.req ? (forwardedFor(init.req) ?? rateClient(httpKey, init.req)) : undefined),
        apiKey: init.apiKey ?? (authOn && httpKey && keyAllowed(apiKeys, httpKey) ? httpKey : undefined),
        forwardedBy: init.request?.headers.get(FORWARDED_HEADER)?.slice(0, 64) ?? undefined,
        lastEventId: lastEventId(init.request?.headers.get('last-event-id')),
      };
    },
    // errorCountPlugin before acceptPlugin: its hooks also see acceptPlugin's refusals
    plugins: [authPlugin, csrfPlugin, limitsPlugin, useDeferStream(), subscribeFastPath, errorCountPlugin, acceptPlugin],
  });

  const sendJson = (res: ServerResponse, status: number, body: unknown, headers: Record<string, string> = {}) => {
    res.writeHead(status, { 'content-type': 'application/json', 'cache-control': 'no-store', ...headers });
    res.end(JSON.stringify(body));
  };
  /** a refusal answered before yoga, counted in errors_total like every other error */
  const sendError = (res: ServerResponse, status: number, message: string, extensions: Record<string, unknown> & { code: ErrorCode }, headers: Record<string, string> = {}) => {
    countCode(extensions.code);
    sendJson(res, status, { errors: [{ message, extensions }] }, headers);
  };

  /** Takes one operation from the client's rate limit; over it, answers 429 (typed, Retry-After) and says so. */
  const rateLimited = (req: IncomingMessage, res: ServerResponse): boolean => {
    if (!limiter.enabled) return false;
    const wait = limiter.take(rateClient(extractApiKey(req.headers.authorization), req));
    if (wait <= 0) return false;
    rt.metrics.rateLimited.inc({ transport: 'http' });
    const err = rateLimitedError(wait);
    const headers: Record<string, string> = { 'retry-after': String(err.extensions.retryAfterSeconds) };
    // an allowed cross-origin page must be able to read the 429 (yoga's CORS headers are not applied here)
    if (origins.needsCors(req.headers.origin, req.headers.host))
      Object.assign(headers, { 'access-control-allow-origin': req.headers.origin!, 'access-control-expose-headers': 'Retry-After', vary: 'Origin' });
    sendError(res, 429, err.message, { ...err.extensions, code: err.code }, headers);
    return true;
  };

  const handler = (req: IncomingMessage, res: ServerResponse) => {
    const path = (req.url ?? '/').split('?')[0]!;
    if (path === '/health') return sendJson(res, 200, { status: 'ok', engine: rt.state, ...(rt.relay ? { replica: rt.relay.selfId } : {}) });
    if (path === '/ready') return sendJson(res, rt.ready ? 200 : 503, { ready: rt.ready, engine: rt.state });
    if (!hosts.allows(req.headers.host)) {
      rt.metrics.originRejected.inc({ transport: 'http' });
      return sendError(res, 403, hostRejection(req.headers.host), { code: 'FORBIDDEN' });
    }
    if ((path === '/metrics' || path.startsWith('/images/')) && !origins.allows(req.headers.origin, req.headers.host)) {
      rt.metrics.originRejected.inc({ transport: 'http' });
      return sendError(res, 403, 'This Origin is not allowed (see --allow-origin)', { code: 'FORBIDDEN' });
    }
    if (path === '/metrics') {
      if (authOn && !keyAllowed(apiKeys, extractApiKey(req.headers.authorization))) {
        countCode('UNAUTHENTICATED');
        return sendJson(res, 401, { error: 'Missing or invalid API key' });
      }
      res.writeHead(200, { 'content-type': 'text/plain; version=0.0.4; charset=utf-8', 'cache-control': 'no-store' });
      return res.end(rt.metrics.render());
    }
    if (path.startsWith('/images/')) {
      // Capability URLs (unguessable tokens): usable from <img> without the API key.
      const parsed = parseImageToken(path.slice('/images/'.length));
      // an allowed cross-origin page may fetch() the bytes
      const cors: Record<string, string> = origins.needsCors(req.headers.origin, req.headers.host) ? { 'access-control-allow-origin': req.headers.origin!, vary: 'Origin' } : {};
      // read-only: an image is fetched, never posted to or deleted
      if (req.method !== 'GET' && req.method !== 'HEAD') return sendJson(res, 405, { error: `${req.method} is not allowed on an image; use GET` }, { ...cors, allow: 'GET, HEAD' });
      const send = (bytes: Uint8Array, mimeType: string, etag: string) => {
        // the URL's extension names the type it was given out with: an image under another is not that file
        if (!extensionFits(parsed?.ext, mimeType)) return notFound();
        // a client revalidating a copy it holds (If-None-Match with this ETag; weak tags compare equal)
        const held = etag && req.headers['if-none-match']?.split(',').some((t) => ['*', etag].includes(t.trim().replace(/^W\//, '')));
        if (held) {
          res.writeHead(304, { ...cors, 'cache-control': 'private, max-age=600', etag });
          return void res.end();
        }
        res.writeHead(200, { ...cors, 'content-type': mimeType, 'content-length': String(bytes.byteLength), 'cache-control': 'private, max-age=600', etag, 'x-content-type-options': 'nosniff' });
        res.end(Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength));
      };
      const notFound = () => sendJson(res, 404, { error: 'image not found or expired' }, cors);
      const owner = parsed?.owner;
      if (owner && rt.relay && owner !== rt.relay.selfId && rt.relay.peers.config.peers.has(owner) && !req.headers[FORWARDED_HEADER]) {
        // another replica's image (a client sent here by the load balancer): fetched from its owner
        rt.metrics.forwarded.inc({ field: 'image', replica: owner });
        rt.relay.peers
          .image(owner, parsed.name)
          .then((img) => (img ? send(img.bytes, img.mimeType, img.etag ?? '') : notFound()))
          .catch((e: unknown) => sendJson(res, 502, { error: e instanceof Error ? e.message : 'the owning replica did not answer' }, cors));
        return;
      }
      const img = parsed ? rt.images.get(parsed.token) : undefined;
      if (!img) return notFound();
      return send(img.bytes, img.mimeType, `"${img.sha256}"`);
    }
    // the demo's caption renderer does work per request (a render and a PNG encode): it counts as an operation
    if (options.webDemo !== false && isDemoRender(req) && rateLimited(req, res)) return;
    if (options.webDemo !== false && path !== '/graphql' && handleDemoRequest(req, res)) return;
    if (path === '/graphql') {
      if (!origins.allows(req.headers.origin, req.headers.host)) {
        rt.metrics.originRejected.inc({ transport: 'http' });
        return sendError(res, 403, 'This Origin is not allowed (see --allow-origin)', { code: 'FORBIDDEN' });
      }
      // every operation counts, and so does the GraphiQL page (9 MB); CORS preflights do not; nor does
      // one a peer forwarded (the forwarding replica counted it)
      const forwarded = fromPeer(req);
      if (!forwarded) unprovenPeer(req, res);
      if (req.method !== 'OPTIONS' && !forwarded && rateLimited(req, res)) return;
      // yoga renders GraphiQL for any GET asking for HTML (prefilled from the query string): the same bytes
      if (dev && req.method === 'GET' && (req.headers.accept ?? '').includes('text/html')) return void servePage(req, res);
    }
    // yoga answers any path that ends in /graphql: the Origin check and the rate limit above are for exactly
    // this one, so every other path is not found
    if (path !== '/graphql') return sendJson(res, 404, { error: 'not found: the GraphQL endpoint is /graphql' });
    // proxies that buffer (nginx) would hold a stream's previews and chunks back
    if (/text\/event-stream|multipart\/mixed/.test(req.headers.accept ?? '')) res.setHeader('X-Accel-Buffering', 'no');
    // a request pipelined behind another on this connection has no socket yet: if the client drops the
    // connection first, Node never closes its response, so its operation would run on for no one. Closing
    // the response then aborts it (the request's signal follows the response's close)
    if (!res.socket) {
      const dropped = () => {
        if (!res.socket) res.emit('close');
      };
      req.socket.once('close', dropped);
      res.once('socket', () => req.socket.off('close', dropped));
    }
    return yoga(req, res);
  };

  // Node's defaults let a client take 60 s to send its headers and 5 minutes its body, checked every 30 s:
  // slow clients held sockets for up to 81 s and 321 s
  const server: Server = createServer({ headersTimeout: 20_000, requestTimeout: 120_000, connectionsCheckingInterval: 5_000 }, handler);
  const sockets = new Set<Socket>();
  server.on('connection', (s) => {
    sockets.add(s);
    s.once('close', () => sockets.delete(s));
  });

  // ---------------------------------------------------------------- graphql-ws
  // noServer: upgrades are routed below rather than by ws attaching itself to `server` (which would
  // also re-emit the http server's errors, a failed listen included, on the WebSocketServer, and
  // graphql-ws logs any such error as an internal error). handleUpgrade applies verifyClient and
  // maxPayload exactly as the attached mode does.
  const wss = new WebSocketServer({
    noServer: true,
    maxPayload: L.maxBodyBytes,
    // Cross-site WebSocket hijacking: browsers always send Origin on a WebSocket handshake.
    verifyClient: (info: { origin?: string; req: IncomingMessage }, done: (ok: boolean, code?: number, message?: string) => void) => {
      if (!hosts.allows(info.req.headers.host)) {
        rt.metrics.originRejected.inc({ transport: 'ws' });
        return done(false, 403, 'Host not allowed');
      }
      if (origins.allows(info.req.headers.origin, info.req.headers.host)) return done(true);
      rt.metrics.originRejected.inc({ transport: 'ws' });
      done(false, 403, 'Origin not allowed');
    },
  });
  const wsConnections = new OpenCounter();
  /** clients the per-client connection limit has been logged for (once each; bounded) */
  const warnedClients = new Set<string>();
  /** each graphql-ws socket's TCP socket (the heartbeat reads its write progress) */
  const tcpOf = new WeakMap<WebSocket, Socket>();
  server.on('upgrade', (req: IncomingMessage, socket: Duplex, head: Buffer) => {
    const url = req.url ?? '/';
    const q = url.indexOf('?');
    if ((q < 0 ? url : url.slice(0, q)) === '/graphql') {
      // connection limits, counted from the upgrade (the API key in connection_init comes later: a
      // browser client counts by its address here, as it does for the rate limit until then)
      const client = rateClient(extractApiKey(req.headers.authorization), req);
      const mine = wsConnections.of(client);
      const refuse = L.maxWsConnections > 0 && wsConnections.total >= L.maxWsConnections ? 'total' : L.maxWsConnectionsPerClient > 0 && mine >= L.maxWsConnectionsPerClient ? 'per_client' : undefined;
      if (refuse) {
        rt.metrics.wsRefused.inc({ reason: refuse });
        // an operator behind a proxy without --trust-proxy sees every user as one client: say so once per client
        if (refuse === 'per_client' && !warnedClients.has(client) && warnedClients.size < 100) {
          warnedClients.add(client);
          log(
            `hyperbagel: WARNING: refusing WebSocket connections from ${client.replace(/^key:.*/, 'an API key')}: ${L.maxWsConnectionsPerClient} already open (--max-ws-per-client). Behind a proxy, name it with --trust-proxy so each user counts on its own.`,
          );
        }
        const body = refuse === 'total' ? 'Too many WebSocket connections' : 'Too many WebSocket connections from this client';
        socket.on('error', () => socket.destroy());
        socket.once('finish', () => socket.destroy());
        socket.end(`HTTP/1.1 429 Too Many Requests\r\nConnection: close\r\nRetry-After: 5\r\nContent-Type: text/plain\r\nContent-Length: ${body.length}\r\n\r\n${body}`);
        return;
      }
      // counted until the TCP socket closes, whether or not the handshake succeeds
      wsConnections.hold(client, socket);
      wss.handleUpgrade(req, socket, head, (ws) => {
        tcpOf.set(ws, socket as Socket);
        wss.emit('connection', ws, req);
      });
      return;
    }
    // what ws does for a path it does not serve
    socket.on('error', () => socket.destroy());
    socket.once('finish', () => socket.destroy());
    socket.end('HTTP/1.1 400 Bad Request\r\nConnection: close\r\nContent-Type: text/html\r\nContent-Length: 11\r\n\r\nBad Request');
  });
  // A client's protocol fault (a frame over maxPayload, bad UTF-8, an unmasked frame...) makes ws emit
  // 'error' on the socket after it has already closed it with the right code (1009, 1007, 1002).
  // graphql-ws logs every socket error with its stack as an internal error, so any client could fill
  // the server's log: these are counted instead. Registered before useServer's own listener.
  wss.on('connection', (socket: WebSocket) => {
    const emit = socket.emit.bind(socket);
    socket.emit = ((event: string | symbol, ...args: unknown[]) => {
      // graphql-ws JSON.parses every message, the first (connection_init) before the API key is checked: a
      // large one, or one nested thousands deep, would hold the event loop for seconds. Before the
      // connection is acknowledged only small messages are read; a large one later must not be deeply nested.
      // (small messages, every ordinary one, are passed on without a copy or a scan)
      const data = event === 'message' ? (args[0] as Buffer | ArrayBuffer | Buffer[]) : undefined;
      const size = data === undefined ? 0 : Array.isArray(data) ? data.reduce((n, b) => n + b.length, 0) : data.byteLength;
      if (size > PRE_ACK_MAX_BYTES) {
        if (!wsAcked.has(socket)) {
          socket.close(1009, `a message before connection_ack may be at most ${PRE_ACK_MAX_BYTES} bytes`);
          return true;
        }
        const bytes = Array.isArray(data) ? Buffer.concat(data) : Buffer.isBuffer(data) ? data : Buffer.from(data!);
        if (jsonDeeperThan(bytes, MAX_JSON_DEPTH)) {
          socket.close(4400, `JSON nested deeper than ${MAX_JSON_DEPTH} levels`);
          return true;
        }
      }
      const code = event === 'error' ? (args[0] as { code?: unknown } | undefined)?.code : undefined;
      if (typeof code === 'string' && code.startsWith('WS_ERR_')) {
        rt.metrics.wsProtocolErrors.inc({ code });
        return true;
      }
      return emit(event, ...args);
    }) as typeof socket.emit;
  });
  const wsOps = new WeakMap<WebSocket, Map<string, WsOp>>();
  /** sockets whose connection_init was accepted: past it, messages up to maxBodyBytes are read */
  const wsAcked = new WeakSet<WebSocket>();
  const opsOf = (socket: WebSocket) => {
    let m = wsOps.get(socket);
    if (!m) wsOps.set(socket, (m = new Map()));
    return m;
  };
  type WsExtra = { socket: WebSocket; request: IncomingMessage };
  /** rootValue of a graphql-ws operation: envelop's execute/subscribe, and where its events go */
  type Roots = { execute: (args: ExecutionArgs) => unknown; subscribe: (args: ExecutionArgs) => unknown; socket: WebSocket; id: string };

  const abortSocketOps = (socket: WebSocket) => {
    const ops = wsOps.get(socket);
    if (ops) for (const op of ops.values()) op.controller.abort();
  };

  // Slow consumers: graphql-ws waits for each write per operation, but a client that stops reading
  // still pins up to one (possibly large) message per operation plus the socket. A send buffer above
  // the bound for longer than the grace period closes the socket with SLOW_CONSUMER_CLOSE_CODE (close()
  // aborts its operations); if the client never reads the close frame, the socket is destroyed.
  const overSince = new WeakMap<WebSocket, number>();
  const closeSlow = (socket: WebSocket) => {
    rt.metrics.slowSocketCloses.inc();
    const mib = Math.round((L.maxSocketBufferedBytes / 1048576) * 10) / 10;
    socket.close(SLOW_CONSUMER_CLOSE_CODE, `Slow consumer: over ${mib} MiB unread for ${Math.round(L.slowSocketGraceMs / 100) / 10} s`);
    setTimeout(() => socket.terminate(), SLOW_CONSUMER_TERMINATE_MS).unref();
  };
  const slowTimer =
    L.maxSocketBufferedBytes > 0 && Number.isFinite(L.maxSocketBufferedBytes)
      ? setInterval(
          () => {
            const now = performance.now();
            for (const socket of wss.clients) {
              if (socket.readyState !== socket.OPEN) continue;
              if (socket.bufferedAmount <= L.maxSocketBufferedBytes) {
                overSince.delete(socket);
                continue;
              }
              const since = overSince.get(socket);
              if (since === undefined) overSince.set(socket, now);
              else if (now - since >= L.slowSocketGraceMs) closeSlow(socket);
            }
          },
          Math.max(20, Math.min(1000, Math.floor(L.slowSocketGraceMs / 4))),
        )
      : undefined;
  slowTimer?.unref();

  // Heartbeat (ws's recommended pattern): a client that vanished without closing would otherwise hold
  // its socket, its streams and their model work until TCP gives up, hours later. A socket that neither
  // answered the last ping nor let the kernel take any of its data during an interval is terminated
  // (heartbeat.ts: a slow reader still reading is spared, though its pong waits behind its backlog),
  // and so is one that has not answered for MAX_SPARED_INTERVALS intervals in a row.
  /** per socket: a pong since the last ping; consecutive intervals without one (the kernel also takes
   * data for a peer that is gone, into its send buffer, so taking data buys at most
   * MAX_SPARED_INTERVALS); the write progress at the last tick */
  const liveness = new WeakMap<WebSocket, { answered: boolean; missed: number; progress?: WriteProgress }>();
  const heartbeat =
    L.wsPingIntervalMs > 0
      ? setInterval(() => {
          for (const socket of wss.clients) {
            const state = liveness.get(socket);
            if (socket.readyState !== socket.OPEN || !state) continue;
            const tcp = tcpOf.get(socket);
            const progress = tcp ? writeProgress(tcp) : undefined;
            const drained = progress !== undefined && tookData(state.progress, progress);
            state.progress = progress;
            state.missed = state.answered ? 0 : state.missed + 1;
            if (state.missed > 0 && (!drained || state.missed >= MAX_SPARED_INTERVALS)) {
              rt.metrics.heartbeatTimeouts.inc();
              socket.terminate();
              continue;
            }
            state.answered = false;
            socket.ping();
          }
        }, L.wsPingIntervalMs)
      : undefined;
  heartbeat?.unref();

  rt.wsSendQueueBytes = () => {
    let bytes = 0;
    for (const socket of wss.clients) bytes += socket.bufferedAmount;
    return bytes;
  };
  wss.on('connection', (socket: WebSocket) => {
    rt.wsConnections++;
    const state = { answered: true, missed: 0 };
    liveness.set(socket, state);
    socket.on('pong', () => (state.answered = true));
    // graphql-ws only returns() a streaming operation on `complete`; a still-running single-result
    // operation would keep going. Abort the operation's signal ourselves on `complete` or close.
    socket.on('message', (data) => {
      const s = String(data);
      if (!s.includes('"complete"')) return;
      try {
        const msg = JSON.parse(s) as { type?: string; id?: string };
        if (msg.type === 'complete' && typeof msg.id === 'string') {
          const op = wsOps.get(socket)?.get(msg.id);
          // (model work it stops is counted by the operation itself, as client_gone)
          if (op) op.controller.abort();
        }
      } catch {
        // graphql-ws closes the socket for invalid messages
      }
    });
    // A client's close frame makes ws answer with close() at once, but 'close' fires only after the
    // TCP close handshake (a round trip more, several ms under load): stop the model work at close(),
    // whoever calls it (ws for the client's close frame, graphql-ws for a protocol fault, the slow-
    // consumer guard). Writers check readyState, so nothing is sent after the close frame.
    const close = socket.close.bind(socket);
    socket.close = ((code?: number, reason?: string | Buffer) => {
      abortSocketOps(socket);
      close(code, reason);
    }) as typeof socket.close;
    socket.once('close', () => {
      rt.wsConnections--;
      abortSocketOps(socket);
      wsOps.delete(socket);
    });
  });

  /** The API key a graphql-ws client presented: connection_init payload first, then the upgrade header. */
  const wsKey = (ctx: { connectionParams?: Record<string, unknown> | undefined; extra: WsExtra }): string | undefined => {
    const p = ctx.connectionParams ?? {};
    const fromPayload = extractApiKey(p.authorization) ?? extractApiKey(p.Authorization) ?? extractApiKey(p.apiKey);
    if (fromPayload && keyAllowed(apiKeys, fromPayload)) return fromPayload;
    return extractApiKey(ctx.extra.request.headers.authorization) ?? fromPayload;
  };

  const wsServer = useServer<Record<string, unknown> | undefined, WsExtra>(
    {
      connectionInitWaitTimeout: 3000,
      onConnect: (ctx) => {
        if (!authOn || keyAllowed(apiKeys, wsKey(ctx))) {
          wsAcked.add(ctx.extra.socket);
          return true;
        }
        countCode('UNAUTHENTICATED'); // as an HTTP 401 is
        return false; // -> close 4403 Forbidden
      },
      execute: async (args) => wsResult(await (args.rootValue as Roots).execute(args)) as never,
      // The subscribe goes through envelop (plugins, masking of subscribe-time errors). Each event
      // of a fast-path stream then gets the same masking inside its own promise reaction (setEventMask)
      // instead of envelop's mapAsyncIterator/iterateAsync/errorAsyncIterator chain per event.
      // This relies on masking (yoga's maskedErrors and its AbortError pass-through) and error
      // counting (errorCountPlugin's onNext, done in the mask below) being the only per-event
      // subscription hooks in this server: a plugin added with onSubscribeResult onNext/onEnd hooks
      // would be skipped here for graphql-ws (fold it into EventStream or drop this).
      // Such a stream's `next` messages are then written by directNextStream (ws-direct.ts) rather
      // than by graphql-ws's per-event loop; this options object has no onNext hook, which that needs.
      subscribe: async (args) => {
        const roots = args.rootValue as Roots;
        const result = await roots.subscribe(args);
        const raw = eventStreams.get(args.contextValue as object);
        eventStreams.delete(args.contextValue as object);
        const m = (yoga as unknown as { maskedErrorsOpts?: { maskError: (e: unknown, message: string) => unknown; errorMessage: string } | null }).maskedErrorsOpts;
        if (raw && m && result && typeof result === 'object' && Symbol.asyncIterator in result) {
          // The mask sees an event's errors (field errors: they have a path) and the error ending the
          // stream (no path; an understand stream's, counted by the resolvers): count the former only.
          const mask = (e: unknown) => {
            if ((e as GraphQLError | null)?.path) countError(e);
            return m.maskError(e, m.errorMessage);
          };
          if (setEventMask(raw, mask)) return directNextStream(raw, roots.socket, roots.id) as never;
        }
        return wsResult(result) as never;
      },
      onSubscribe: async (ctx, id, params) => {
        /** an operation refused before execution: typed, counted, without HTTP internals */
        const refuse = (errors: readonly unknown[]) =>
          errors.map((e) => {
            const typed = withoutHttp(maskError(e) as GraphQLError);
            countError(typed);
            return typed;
          });
        const socket = ctx.extra.socket;
        const ops = opsOf(socket);
        if (ops.size >= L.maxSubscriptionsPerSocket)
          return refuse([new GatewayError('TOO_MANY_SUBSCRIPTIONS', `At most ${L.maxSubscriptionsPerSocket} concurrent operations per connection`)]);
        const key = wsKey(ctx);
        const client = rateClient(key, ctx.extra.request);
        if (limiter.enabled) {
          const wait = limiter.take(client);
          if (wait > 0) {
            rt.metrics.rateLimited.inc({ transport: 'ws' });
            return refuse([rateLimitedError(wait)]);
          }
        }
        const controller = new AbortController();
        const host = ctx.extra.request.headers.host;
        const { schema: s, execute, subscribe, contextFactory, parse: yParse, validate } = yoga.getEnveloped({
          ...ctx,
          req: ctx.extra.request,
          socket,
          params,
          opSignal: controller.signal,
          baseUrl: publicUrl ?? (host ? `http://${host}` : ''),
          client,
          apiKey: authOn ? key : undefined,
        });
        let document;
        try {
          document = yParse(params.query);
        } catch (e) {
          return refuse([e]);
        }
        const errors = validate(s, document);
        if (errors.length) return refuse(errors);
        // graphql-ws would answer this itself, with no code ("Unable to identify operation")
        if (!getOperationAST(document, params.operationName)) return refuse([new GatewayError('INVALID_INPUT', 'Could not determine what operation to execute.')]);
        ops.set(id, { controller });
        const args: ExecutionArgs = {
          schema: s,
          operationName: params.operationName,
          document,
          variableValues: params.variables,
          contextValue: await contextFactory(),
          rootValue: { execute, subscribe, socket, id } satisfies Roots,
        };
        return args;
      },
      onComplete: (ctx, id) => {
        wsOps.get(ctx.extra.socket)?.delete(id);
      },
      onError: (ctx, id) => {
        wsOps.get(ctx.extra.socket)?.delete(id);
      },
    },
    wss,
    // graphql-ws's own keep-alive (12 s pings, terminate without a pong) is off: the heartbeat above
    // is the one liveness check, with its own interval, metric, and patience for slow readers
    0,
  );

  // ---------------------------------------------------------------- engine + listen
  let ownEngine = false;
  const engineReady = (async () => {
    if (options.engine) return rt.setEngine(options.engine);
    const packDir = options.packDir ?? 'models/shapes-mot';
    try {
      const createEngine = await loadEngineFactory();
      const engine = await createEngine(packDir, options.engineOptions);
      ownEngine = true;
      if (rt.state === 'shutting-down') return void (await engine.close());
      rt.setEngine(engine);
      log(`hyperbagel: engine ready (${engine.info.name}, pack ${packDir})`);
    } catch (e) {
      if (rt.state === 'shutting-down') return; // closed (or failed to listen) while loading: nothing to report
      rt.state = 'failed';
      log(`hyperbagel: engine failed to load from ${packDir}: ${(e instanceof Error ? e.message : String(e)).replace(/\s*\n\s*/g, ' ')}`); // one line
      throw e;
    }
  })();
  engineReady.catch(() => undefined);

  const port = options.port ?? (process.env.PORT ? Number(process.env.PORT) : 4000);
  const host = bindHost;
  if (hosts.openBecauseWildcardBind)
    log(`hyperbagel: WARNING: listening on ${host} with no allowed hosts configured: any Host header is accepted, so DNS rebinding is not stopped. Name this server's hostnames with --allow-host / HYPERBAGEL_ALLOWED_HOSTS (or "*" to silence this).`);

  let closing: Promise<void> | undefined;
  const close = () =>
    (closing ??= (async () => {
      // state 'shutting-down': an engine still loading is closed as soon as its load finishes
      rt.dispose();
      if (slowTimer) clearInterval(slowTimer);
      if (heartbeat) clearInterval(heartbeat);
      // the jobs just cancelled end (their CANCELLED event) before the sockets close, so a graphql-ws subscriber
      // learns its job's fate rather than only the 1001 close; then a turn for those events to be written
      await rt.jobs.ended(WS_CLOSE_GRACE_MS);
      await new Promise((r) => setImmediate(r));
      // graphql-ws closes every socket with 1001 and waits for each close handshake; a client that does not
      // answer (not reading, gone without a FIN) would hold the shutdown for ws's 30 s close timeout: after
      // WS_CLOSE_GRACE_MS the rest are terminated
      const disposed = Promise.resolve(wsServer.dispose()).catch(() => undefined);
      let graceTimer: NodeJS.Timeout | undefined;
      await Promise.race([disposed, new Promise<void>((r) => (graceTimer = setTimeout(r, WS_CLOSE_GRACE_MS)))]);
      clearTimeout(graceTimer);
      for (const c of wss.clients) c.terminate();
      await disposed;
      for (const s of sockets) s.destroy();
      // (a server that never listened calls back at once)
      await new Promise<void>((r) => server.close(() => r()));
      if (ownEngine || options.closeEngine) {
        try {
          const engine = (rt as unknown as { engineRef?: Engine }).engineRef;
          await engine?.close();
        } catch {
          // already closed
        }
      }
    })());

  try {
    await new Promise<void>((resolve, reject) => {
      server.once('error', reject);
      server.listen(port, host, () => {
        server.off('error', reject);
        resolve();
      });
    });
  } catch (e) {
    // EADDRINUSE and the like: release what was started (graphql-ws, timers, the engine load) so
    // the caller can report it and return, rather than exit with a worker thread still loading
    await close();
    throw e;
  }
  const addr = server.address() as AddressInfo;
  hosts.port = addr.port;
  const url = `http://${host.includes(':') ? `[${host}]` : host}:${addr.port}/graphql`;

  // each peer should answer as the replica its --peer entry names: a mismatch sends that replica's
  // requests to the wrong server, so say so once the peer answers (it may still be starting)
  if (rt.relay) void rt.relay.peers.checkPeers(log, rt.relay.closing);

  if (options.waitForEngine !== false) {
    try {
      await engineReady;
    } catch (e) {
      await close();
      throw e;
    }
  }
  const wsSocketStats = (): WsSocketStats[] =>
    [...wss.clients].map((socket) => ({
      operations: wsOps.get(socket)?.size ?? 0,
      listeners: listenerTotal(socket) + listenerTotal(tcpOf.get(socket)),
      bufferedBytes: socket.bufferedAmount,
    }));
  return { url, port: addr.port, runtime: rt, engineReady, close, wsSocketStats };
}
