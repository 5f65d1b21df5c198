// `hyperbagel serve`: the GraphQL gateway (HTTP + SSE + graphql-ws on one port, path /graphql).
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { flag, intFlag, parseArgs, threadsFlag, UsageError, type ParsedArgs } from '../args.ts';
import { DEFAULT_PACK, FIXTURE_PACK, packChoice, packOrigin } from '../../engine/pack-location.ts';
import { parseTrustedProxies } from '../../gateway/client-address.ts';
import { parseAllowedHosts, parseAllowedOrigins } from '../../gateway/origin.ts';
import { checkReplicaId, parsePeers, type ReplicaConfig } from '../../gateway/replicas.ts';
import { startServer, type ServerOptions } from '../../gateway/server.ts';

export { DEFAULT_PACK };
export const FALLBACK_PACK = FIXTURE_PACK;

export const HELP = `Usage: hyperbagel serve [--port N] [--host ADDR] [--pack DIR] [--threads N] [--api-key KEY ...] [--allow-origin ORIGIN ...]
                       [--replica-id ID --peer ID=URL ... [--peer-secret S]]

Serves the GraphQL gateway at http://HOST:PORT/graphql: queries and mutations over HTTP,
subscriptions over SSE and graphql-ws (same path), @stream/@defer as multipart/mixed or SSE.
Also /health, /ready (503 until the model is loaded), /metrics (Prometheus) and the web demo at /.
  --port N          listen port (default: $PORT, else 4000; 0 picks a free one)
  --host ADDR       listen address (default 127.0.0.1; 0.0.0.0 to expose)
  --pack DIR        model pack (default $HYPERBAGEL_PACK, else ${DEFAULT_PACK}; when neither is
                    given and the default is missing, falls back to ${FALLBACK_PACK}, a
                    random-weight test pack, with a warning). A pack that fails to load ends the
                    server with the error (exit 1); /health answers while it loads.
  --threads N       onnxruntime intra-op threads per graph (a positive integer; default 2, or the
                    number of cores if fewer)
  --api-key KEY     require this API key (repeatable; also $HYPERBAGEL_API_KEYS, comma-separated).
                    Clients send "Authorization: Bearer KEY" over HTTP, or {"authorization":"Bearer KEY"}
                    in the graphql-ws connection_init payload; others get 401 / close code 4403.
                    Without keys, auth is off (local use).
  --allow-origin ORIGIN  let browser pages from ORIGIN (e.g. https://app.example.com) use the API
                    (repeatable; also $HYPERBAGEL_ALLOWED_ORIGINS, comma-separated; "*" = any).
                    By default only same-origin pages and non-browser clients (no Origin header)
                    are accepted; other Origins get HTTP 403 on /graphql, the WebSocket upgrade,
                    /metrics and /images/.
  --allow-host HOST  accept this Host header (e.g. api.example.com, or api.example.com:8080 for one
                    port) besides localhost, 127.0.0.1, [::1], the --host address and the
                    --public-url host on the server's port (repeatable; also $HYPERBAGEL_ALLOWED_HOSTS,
                    comma-separated; "*" = any). Other Hosts get HTTP 403 (DNS rebinding protection);
                    /health and /ready are exempt. With --host 0.0.0.0 and no allowed hosts, any Host
                    is accepted and a warning is printed: name your hostnames to turn the check on.
  --rate-limit N    operations per second per API key, or per client IP when auth is off
                    (default 50; 0 turns it off); --rate-burst N  burst allowance (default 200).
                    Over the limit: RATE_LIMITED with extensions.retryAfterMs (HTTP 429 + Retry-After).
  --max-concurrent N  jobs running at once (default 4); --max-queue N  jobs waiting (default 32;
                    one API key, or one client IP when auth is off, may hold at most 3/4 of them)
  --trust-proxy ADDR  the address of a reverse proxy or load balancer in front of this server, or a
                    CIDR range (repeatable; also $HYPERBAGEL_TRUST_PROXY, comma-separated). Requests
                    from it count as coming from the client its X-Forwarded-For names, so per-client
                    limits (rate, queue share, WebSocket connections) apply per client, not to the proxy
                    as one client. From any other address X-Forwarded-For is ignored. The proxy must
                    append the client's address to X-Forwarded-For (nginx: $proxy_add_x_forwarded_for).
  --max-ws-connections N  open graphql-ws connections in all (default 10000); --max-ws-per-client N
                    per client: API key in the upgrade's Authorization header, else client address
                    (IPv6: its /64) (default 256). 0 = no limit. Beyond them upgrades get HTTP 429.
                    Behind a proxy, without --trust-proxy every user counts as the proxy: one client.
  --max-streams-per-client N  open streamed HTTP responses (SSE, multipart/mixed) per client, counted
                    as WebSocket connections are (default 64; 10000 in all); 0 = no limit. Beyond it: 429.
  --ws-ping-interval MS  ping graphql-ws sockets this often (default 30000, at least 1000; 0 = off); one
                    that neither answers nor takes any data for a whole interval is dropped, and so is
                    one that has not answered for 3 intervals
  --public-url URL  base for absolute image URLs (default: the request's Host)
  --replica-id ID   run as one of several replicas behind a load balancer (also $HYPERBAGEL_REPLICA_ID;
                    a-z, 0-9, "-"). Job and session ids then start with "ID.", and an operation on
                    another replica's job or session is forwarded to it: a job started on one replica
                    streams, resumes and cancels through any other.
  --peer ID=URL     another replica and its GraphQL endpoint, e.g. b=http://10.0.0.2:4000/graphql
                    (repeatable; also $HYPERBAGEL_PEERS, comma-separated; needs --replica-id).
                    Replicas must share their API keys: a forwarded operation presents the client's.
  --peer-secret S   a secret the replicas share (at least 16 characters; also $HYPERBAGEL_PEER_SECRET):
                    only requests carrying it count as forwarded by a peer (which already rate-limited
                    the client). Without it, requests from a peer's address count as forwarded, so a
                    proxy on a replica's host must strip hyperbagel-forwarded-* headers from clients.
  --production      no GraphiQL, no introspection (default when NODE_ENV=production)`;

const VALUES = ['port', 'host', 'pack', 'threads', 'api-key', 'allow-origin', 'allow-host', 'trust-proxy', 'max-ws-connections', 'max-ws-per-client', 'max-streams-per-client', 'ws-ping-interval', 'rate-limit', 'rate-burst', 'max-concurrent', 'max-queue', 'public-url', 'replica-id', 'peer', 'peer-secret'];

export async function run(argv: string[]): Promise<number> {
  const args = parseServeArgs(argv);
  if (args.flags.has('help')) {
    console.log(HELP);
    return 0;
  }
  const o = serveOptions(args);
  let server: Awaited<ReturnType<typeof startServer>> | undefined;
  try {
    server = await startServer(o);
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code;
    const reasons: Record<string, string> = { EADDRINUSE: 'the port is in use', EACCES: 'permission denied', EADDRNOTAVAIL: 'no such local address', ENOTFOUND: 'no such host name', EAI_AGAIN: 'the host name could not be resolved' };
    const why = code ? reasons[code] : undefined;
    if (!why) throw e;
    console.error(`hyperbagel serve: cannot listen on ${o.host}:${o.port}: ${why} (${code}); choose another with --port N (0 picks a free one) or --host ADDR`);
    // startServer released what it started (the engine load is closed once it finishes)
    return 1;
  }
  console.error(`hyperbagel serve: listening on ${server.url} (pack ${o.packDir}; auth ${o.apiKeys.length ? `on, ${o.apiKeys.length} key(s)` : 'off'}; origins: same-origin${o.allowedOrigins.length ? ` + ${o.allowedOrigins.join(' ')}` : ''}${o.trustedProxies?.length ? `; trusted proxies: ${o.trustedProxies.join(' ')}` : ''}${o.replica ? `; replica ${o.replica.id}, peers: ${[...o.replica.peers.keys()].join(' ') || 'none'}` : ''}${o.dev ? '; GraphiQL at ' + server.url : ''})`);

  const running = server;
  const code = await new Promise<number>((resolve) => {
    const stop = (sig: string) => {
      console.error(`hyperbagel serve: ${sig}, shutting down`);
      resolve(0);
    };
    process.once('SIGINT', () => stop('SIGINT'));
    process.once('SIGTERM', () => stop('SIGTERM'));
    // the engine loads after the server listens (/health answers meanwhile); a pack that fails to
    // load ends serve with its error rather than leaving it listening with no model
    running.engineReady.catch((e: unknown) => {
      const message = (e instanceof Error ? e.message : String(e)).replace(/\s*\n\s*/g, ' ');
      console.error(`hyperbagel serve: error MODEL_LOAD_FAILED: ${message}`);
      resolve(1);
    });
  });
  await server.close();
  return code;
}

/** A client must answer a ping within one interval: under a second would drop healthy distant clients. */
function pingInterval(ms: number): number {
  if (ms !== 0 && ms < 1000) throw new UsageError(`--ws-ping-interval must be 0 (off) or at least 1000 ms, got ${ms}`);
  return ms;
}

/** --trust-proxy flags and $HYPERBAGEL_TRUST_PROXY: IP addresses, checked here so a typo is a usage error. */
export function trustedProxiesFrom(flags: string[] | undefined, env: string | undefined): string[] {
  const fromFlags = (flags ?? []).map((a) => a.trim());
  // a trailing comma in the variable is harmless; an empty flag value is an unset variable upstream
  const fromEnv = (env ?? '').split(',').map((a) => a.trim()).filter(Boolean);
  for (const [source, list] of [['--trust-proxy', fromFlags], ['HYPERBAGEL_TRUST_PROXY', fromEnv]] as const) {
    try {
      parseTrustedProxies(list);
    } catch (e) {
      throw new UsageError(`${source}: ${(e as Error).message}`);
    }
  }
  return [...fromFlags, ...fromEnv];
}

/** The gateway's options from serve's arguments and the environment; a bad value is a UsageError. */
export function serveOptions(args: ParsedArgs, env: NodeJS.ProcessEnv = process.env): ServerOptions & { packDir: string; apiKeys: string[]; allowedOrigins: string[]; dev: boolean } {
  if (args.positionals.length) throw new UsageError(`unexpected argument "${args.positionals[0]}"`);
  const port = flag(args, 'port') !== undefined ? intFlag(args, 'port', 4000, 0, 65535) : envPortOr(env.PORT, 4000);
  const threads = threadsFlag(args);
  // the same choice as every other command: --pack, else $HYPERBAGEL_PACK, else the default pack
  const choice = packChoice(flag(args, 'pack'), env);
  let pack = choice.dir;
  if (choice.source === 'default' && !existsSync(join(pack, 'manifest.json'))) {
    console.error(`hyperbagel serve: WARNING: the default pack ${DEFAULT_PACK} does not exist yet; serving the random-weight test pack ${FALLBACK_PACK} (outputs are meaningless). Pass --pack DIR to choose.`);
    pack = FALLBACK_PACK;
  }
  if (!existsSync(pack)) throw new UsageError(`${packOrigin(choice.source)} ${pack}: no such directory`);
  // an empty --api-key (an unset shell variable) must not turn off the auth it was given to turn on
  const keyFlags = args.flags.get('api-key') ?? [];
  if (keyFlags.some((k) => k.trim() === '')) throw new UsageError('--api-key is empty (an unset variable?): give the key, or leave --api-key out to serve without auth');
  const apiKeys = [...keyFlags, ...(env.HYPERBAGEL_API_KEYS ?? '').split(',').map((k) => k.trim())].filter(Boolean);
  const host = flag(args, 'host') ?? '127.0.0.1';
  if (host.trim() === '') throw new UsageError('--host is empty (an unset variable?): give an address, e.g. 127.0.0.1 (the default) or 0.0.0.0 for every interface');
  const production = args.flags.has('production') || env.NODE_ENV === 'production';
  return {
    port,
    host,
    packDir: pack,
    // as understand / generate pass it: onnxruntime intra-op threads; without --threads, the engine's default
    ...(threads !== undefined ? { engineOptions: { intraOpThreads: threads } } : {}),
    apiKeys,
    allowedOrigins: allowedOriginsFrom(args.flags.get('allow-origin'), env.HYPERBAGEL_ALLOWED_ORIGINS),
    allowedHosts: allowedHostsFrom(args.flags.get('allow-host'), env.HYPERBAGEL_ALLOWED_HOSTS),
    trustedProxies: trustedProxiesFrom(args.flags.get('trust-proxy'), env.HYPERBAGEL_TRUST_PROXY),
    dev: !production,
    publicUrl: publicUrlFrom(flag(args, 'public-url')),
    replica: replicaFrom(flag(args, 'replica-id') ?? env.HYPERBAGEL_REPLICA_ID, args.flags.get('peer'), env.HYPERBAGEL_PEERS, flag(args, 'peer-secret') ?? env.HYPERBAGEL_PEER_SECRET),
    limits: {
      maxConcurrentJobs: intFlag(args, 'max-concurrent', 4, 1, 1024),
      maxQueuedJobs: intFlag(args, 'max-queue', 32, 0, 100_000),
      rateLimitPerSecond: intFlag(args, 'rate-limit', 50, 0, 1_000_000),
      rateLimitBurst: intFlag(args, 'rate-burst', 200, 1, 1_000_000),
      maxWsConnections: intFlag(args, 'max-ws-connections', 10_000, 0, 10_000_000),
      maxWsConnectionsPerClient: intFlag(args, 'max-ws-per-client', 256, 0, 10_000_000),
      maxHttpStreamsPerClient: intFlag(args, 'max-streams-per-client', 64, 0, 10_000_000),
      wsPingIntervalMs: pingInterval(intFlag(args, 'ws-ping-interval', 30_000, 0, 86_400_000)),
    },
    // listen at once; /ready reports 503 until the model is loaded
    waitForEngine: false,
  };
}

/** $PORT as the default port: empty is unset, anything else must be a port number. */
function envPortOr(v: string | undefined, fallback: number): number {
  if (v === undefined || v.trim() === '') return fallback;
  const n = /^\d+$/.test(v.trim()) ? Number(v) : NaN;
  if (!(n >= 0 && n <= 65535)) throw new UsageError(`PORT must be an integer in [0, 65535], got "${v}"`);
  return n;
}

/** --public-url: an absolute http(s) URL, without a trailing slash (image URLs are `${base}/images/...`). */
export function publicUrlFrom(v: string | undefined): string | undefined {
  if (v === undefined) return undefined;
  let u: URL;
  try {
    u = new URL(v);
  } catch {
    throw new UsageError(`--public-url must be an absolute http(s) URL such as https://api.example.com, got "${v}"`);
  }
  if (u.protocol !== 'http:' && u.protocol !== 'https:') throw new UsageError(`--public-url must be an http(s) URL, got "${v}"`);
  if (u.search || u.hash) throw new UsageError(`--public-url takes no query or fragment, got "${v}"`);
  return (u.origin + u.pathname).replace(/\/+$/, '');
}

/** --replica-id / --peer (and their environment variables) as the gateway's replica config; a bad value is a usage error. */
export function replicaFrom(id: string | undefined, peerFlags: readonly string[] | undefined, peerEnv: string | undefined, secret?: string): ReplicaConfig | undefined {
  if (secret === '') secret = undefined; // an empty environment variable is an unset one (parseArgs refuses an empty flag)
  if (id === undefined || id === '') {
    if (peerFlags?.length || peerEnv?.trim()) throw new UsageError('--peer / HYPERBAGEL_PEERS need --replica-id (or HYPERBAGEL_REPLICA_ID): peers route by the replica id in each job and session id');
    if (secret) throw new UsageError('--peer-secret / HYPERBAGEL_PEER_SECRET needs --replica-id (or HYPERBAGEL_REPLICA_ID)');
    return undefined;
  }
  if (secret !== undefined && secret.length < 16) throw new UsageError(`--peer-secret / HYPERBAGEL_PEER_SECRET must have at least 16 characters, got ${secret.length}`);
  try {
    const self = checkReplicaId(id, '--replica-id');
    return { id: self, peers: parsePeers(self, peerFlags, peerEnv), requestTimeoutMs: 10_000, ...(secret !== undefined ? { secret } : {}) };
  } catch (e) {
    throw new UsageError(e instanceof Error ? e.message : String(e));
  }
}

/** serve's arguments parsed (for tests). */
export function parseServeArgs(argv: string[]): ParsedArgs {
  return parseArgs(argv, { values: VALUES, booleans: ['production'], repeatable: ['api-key', 'allow-origin', 'allow-host', 'trust-proxy', 'peer'] });
}

/** --allow-origin values (repeatable, comma-separated) plus $HYPERBAGEL_ALLOWED_ORIGINS; a malformed entry is a usage error. */
export function allowedOriginsFrom(flags: readonly string[] | undefined, env: string | undefined): string[] {
  try {
    return parseAllowedOrigins(flags, env);
  } catch (e) {
    throw new UsageError(`--allow-origin / HYPERBAGEL_ALLOWED_ORIGINS: ${e instanceof Error ? e.message : String(e)}`);
  }
}

/** --allow-host values (repeatable, comma-separated) plus $HYPERBAGEL_ALLOWED_HOSTS; a malformed entry is a usage error. */
export function allowedHostsFrom(flags: readonly string[] | undefined, env: string | undefined): string[] {
  try {
    return parseAllowedHosts(flags, env);
  } catch (e) {
    throw new UsageError(`--allow-host / HYPERBAGEL_ALLOWED_HOSTS: ${e instanceof Error ? e.message : String(e)}`);
  }
}
