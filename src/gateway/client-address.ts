// Who a request comes from, for per-client limits (rate, queue share, connections) when auth is off.
// Behind a reverse proxy or load balancer every request arrives from the proxy's address, so all
// clients would share one client's limits. For a request whose direct peer is a configured trusted
// proxy, the client is the nearest address in X-Forwarded-For that is not itself a trusted proxy
// (the rightmost untrusted hop: entries to its left are whatever the client chose to send).
import { isIP } from 'node:net';
import type { IncomingMessage } from 'node:http';

/** `::ffff:10.0.0.1` and `10.0.0.1` are the same peer; Node reports either depending on the socket. */
export function normalizeAddress(address: string): string {
  const a = address.trim().toLowerCase();
  return a.startsWith('::ffff:') && isIP(a.slice(7)) === 4 ? a.slice(7) : a;
}

/** Validates and normalizes `--trust-proxy` addresses; throws naming the first bad one. */
export function parseTrustedProxies(list: readonly string[]): ReadonlySet<string> {
  const out = new Set<string>();
  for (const raw of list) {
    const a = raw.trim();
    if (!a) continue;
    if (!isIP(a)) throw new Error(`trusted proxy "${raw}" is not an IP address (IPv4 or IPv6, no ports or ranges)`);
    out.add(normalizeAddress(a));
  }
  return out;
}

/** The client's address: the direct peer, or, when that is a trusted proxy, what it forwarded. */
export function clientAddress(req: IncomingMessage, trusted: ReadonlySet<string>): string {
  const peer = normalizeAddress(req.socket.remoteAddress ?? 'unknown');
  if (!trusted.size || !trusted.has(peer)) return peer;
  const header = req.headers['x-forwarded-for'];
  const hops = (Array.isArray(header) ? header.join(',') : (header ?? '')).split(',');
  for (let i = hops.length - 1; i >= 0; i--) {
    const hop = hops[i]!.trim();
    if (!hop) continue;
    // trusted proxies append addresses; anything else means the chain is not what it claims: the
    // request counts as the proxy's own (conservative: it shares the proxy's limits)
    if (!isIP(hop)) return peer;
    const a = normalizeAddress(hop);
    if (!trusted.has(a)) return a;
  }
  return peer;
}
