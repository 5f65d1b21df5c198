// Origin policy for browsers (cross-site WebSocket hijacking, CORS). Non-browser clients send no
// Origin and are always accepted; a browser's Origin must match the server itself (the request's
// Host header, or `publicUrl`) or be listed in `allowedOrigins` ("*" allows every origin).
// Applied to the graphql-ws upgrade (HTTP 403 before the handshake) and to HTTP /graphql (403),
// and it decides yoga's CORS headers, so both transports follow one rule.

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
