// Origin policy for browsers (cross-site WebSocket hijacking, CORS). Non-browser clients send no
// Origin and are always accepted; a browser's Origin must match the server itself (the request's
// Host header, or `publicUrl`) or be listed in `allowedOrigins` ("*" allows every origin).
// Applied to the graphql-ws upgrade (HTTP 403 before the handshake) and to HTTP /graphql (403),
// and it decides yoga's CORS headers, so both transports follow one rule.
import { isIP } from 'node:net';

/** Normalises "https://App.Example.com:443/" to "https://app.example.com"; throws on garbage. */
export function normalizeOrigin(origin: string): string {
  if (origin === '*') return '*';
  const u = new URL(origin);
  if (u.protocol !== 'http:' && u.protocol !== 'https:') throw new Error(`origin must be http(s)://host[:port], got "${origin}"`);
  return u.origin;
}

/** Parses a comma-separated list (HYPERBAGEL_ALLOWED_ORIGINS) plus repeated flags; throws on an invalid entry. */
export function parseAllowedOrigins(...lists: Array<string | readonly string[] | undefined>): string[] {
  const out = new Set<string>();
  for (const l of lists) {
    if (l === undefined) continue;
    const items = typeof l === 'string' ? l.split(',') : l.flatMap((x) => x.split(','));
    for (const raw of items) {
      const s = raw.trim();
      if (!s) continue;
      out.add(normalizeOrigin(s));
    }
  }
  return [...out];
}

export class OriginPolicy {
  private readonly allowed: Set<string>;
  readonly allowAll: boolean;
  private readonly publicOrigin?: string;

  constructor(allowedOrigins: readonly string[] = [], publicUrl?: string) {
    this.allowed = new Set(parseAllowedOrigins(allowedOrigins));
    this.allowAll = this.allowed.has('*');
    if (publicUrl) {
      try {
        this.publicOrigin = new URL(publicUrl).origin;
      } catch {
        // a bad publicUrl simply grants nothing
      }
    }
  }

  /** `origin`: the request's Origin header (undefined when absent); `host`: its Host header. */
  allows(origin: string | null | undefined, host: string | null | undefined): boolean {
    if (origin === undefined || origin === null) return true; // not a browser (or a same-origin GET)
    if (this.allowAll) return true;
    const o = parse(origin);
    if (!o) return false; // "null" (sandboxed iframes, file://) and garbage are refused
    return sameOrigin(o, host) || this.publicOrigin === o.origin || this.allowed.has(o.origin);
  }

  /** True for an allowed *cross-origin* browser request, which needs CORS headers to read the response. */
  needsCors(origin: string | null | undefined, host: string | null | undefined): boolean {
    if (!origin || !this.allows(origin, host)) return false;
    const o = parse(origin);
    return !o || !sameOrigin(o, host);
  }
}

function parse(origin: string): URL | undefined {
  try {
    const o = new URL(origin);
    return o.protocol === 'http:' || o.protocol === 'https:' ? o : undefined;
  } catch {
    return undefined;
  }
}

/** The page was served by this host:port (compared with the default port stripped). */
function sameOrigin(o: URL, host: string | null | undefined): boolean {
  if (!host) return false;
  try {
    return new URL(`${o.protocol}//${host}`).host === o.host;
  } catch {
    return false; // malformed Host header
  }
}

// ---------------------------------------------------------------- Host allowlist (DNS rebinding)
// The Origin check above trusts the Host header to say which origin is "same". A DNS-rebinding
// page (evil.example resolving to 127.0.0.1) sends Host: evil.example:PORT and Origin
// http://evil.example:PORT, which match. So every request and WebSocket upgrade (except /health and
// /ready) must name this server in its Host header: localhost, 127.0.0.1 or [::1], the bound
// address, the publicUrl host, on the server's port, or an entry of `allowedHosts` ("name" = any
// port, "name:port" = that port; "*" turns the check off).

const LOOPBACK_NAMES = ['localhost', '127.0.0.1', '[::1]'];
const WILDCARD_BINDS = new Set(['0.0.0.0', '::', '[::]', '']);

/** Lower-cases and validates one allowed-host entry ("example.com", "example.com:8080", "[::1]", "*"). */
export function normalizeHost(entry: string): string {
  const s = entry.trim().toLowerCase();
  if (s === '*') return '*';
  let u: URL;
  try {
    u = new URL(`http://${s}`);
  } catch {
    throw new Error(`host must be a name or address with an optional :port, got "${entry}"`);
  }
  if (u.host !== s && `${u.hostname}:80` !== s) throw new Error(`host must be a name or address with an optional :port, got "${entry}"`);
  return s;
}

/** Parses a comma-separated list (HYPERBAGEL_ALLOWED_HOSTS) plus repeated flags; throws on an invalid entry. */
export function parseAllowedHosts(...lists: Array<string | readonly string[] | undefined>): string[] {
  const out = new Set<string>();
  for (const l of lists) {
    if (l === undefined) continue;
    const items = typeof l === 'string' ? l.split(',') : l.flatMap((x) => x.split(','));
    for (const raw of items) if (raw.trim()) out.add(normalizeHost(raw));
  }
  return [...out];
}

export class HostPolicy {
  /** hostnames accepted on the server's port */
  private readonly onPort = new Set<string>(LOOPBACK_NAMES);
  /** hostnames accepted on any port */
  private readonly anyPort = new Set<string>();
  /** exact host[:port] values */
  private readonly exact = new Set<string>();
  readonly allowAll: boolean;
  /** True when the check is off only because the server binds every interface and no hosts were configured. */
  readonly openBecauseWildcardBind: boolean;
  port = 0;

  constructor(allowedHosts: readonly string[] | undefined, bindHost: string, publicUrl?: string) {
    const configured = parseAllowedHosts(allowedHosts ?? []);
    const bind = bindHost.trim().toLowerCase();
    this.openBecauseWildcardBind = configured.length === 0 && WILDCARD_BINDS.has(bind);
    this.allowAll = configured.includes('*') || this.openBecauseWildcardBind;
    if (!WILDCARD_BINDS.has(bind)) this.onPort.add(bind.includes(':') && !bind.startsWith('[') ? `[${bind}]` : bind);
    if (publicUrl) {
      try {
        const u = new URL(publicUrl);
        this.onPort.add(u.hostname);
        this.exact.add(u.host);
      } catch {
        // a bad publicUrl grants nothing
      }
    }
    for (const h of configured) {
      if (h === '*') continue;
      const u = new URL(`http://${h}`);
      if (h.endsWith(']') || !/:\d+$/.test(h)) this.anyPort.add(u.hostname);
      else this.exact.add(u.host);
    }
  }

  /** `host`: the request's Host header. */
  allows(host: string | null | undefined): boolean {
    if (this.allowAll) return true;
    if (!host) return false;
    let u: URL;
    try {
      u = new URL(`http://${host.trim().toLowerCase()}`);
    } catch {
      return false;
    }
    if (u.username || u.password || u.pathname !== '/' || u.search || u.hash) return false;
    if (this.exact.has(u.host) || this.anyPort.has(u.hostname)) return true;
    // an address on the server's port (a scraper or probe that reaches it by IP, as Prometheus's service
    // discovery does): DNS rebinding always arrives with a name, never an address
    if (isIP(u.hostname.replace(/^\[|\]$/g, '')) && Number(u.port || 80) === this.port) return true;
    return this.onPort.has(u.hostname) && Number(u.port || 80) === this.port;
  }
}
