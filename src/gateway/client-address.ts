// Who a request comes from, for per-client limits (rate, queue share, connections) when auth is off.
// Behind a reverse proxy or load balancer every request arrives from the proxy's address, so all
// clients would share one client's limits. For a request whose direct peer is a configured trusted
// proxy, the client is the nearest address in X-Forwarded-For that is not itself a trusted proxy
// (the rightmost untrusted hop: entries to its left are whatever the client chose to send).
import { BlockList, isIP } from 'node:net';
import type { IncomingMessage } from 'node:http';

/**
 * An IPv6 address's canonical form (the WHATWG URL parser's: any spelling, an embedded dotted IPv4
 * tail included) and its eight 16-bit groups; undefined for anything else, zone ids included
 * (`fe80::1%eth0`: never a client's address as a proxy forwards it).
 */
function parseIpv6(address: string): { canonical: string; groups: number[] } | undefined {
  if (isIP(address) !== 6 || address.includes('%')) return undefined;
  let host: string;
  try {
    host = new URL(`http://[${address}]`).hostname.slice(1, -1);
  } catch {
    return undefined;
  }
  const [head = '', tail] = host.split('::');
  const left = head ? head.split(':') : [];
  const right = tail ? tail.split(':') : [];
  const groups = [...left, ...Array<string>(tail === undefined ? 0 : 8 - left.length - right.length).fill('0'), ...right].map((g) => parseInt(g, 16));
  return groups.length === 8 && groups.every((g) => g >= 0 && g <= 0xffff) ? { canonical: host, groups } : undefined;
}

/**
 * One spelling per address: `::ffff:10.0.0.1` (however written) is `10.0.0.1`, since Node reports either
 * depending on the socket; other IPv6 addresses in canonical form. Anything else is returned trimmed.
 */
export function normalizeAddress(address: string): string {
  const a = address.trim().toLowerCase();
  const v6 = parseIpv6(a);
  if (!v6) return a;
  const g = v6.groups;
  if (g.slice(0, 5).every((x) => x === 0) && g[5] === 0xffff) return `${g[6]! >> 8}.${g[6]! & 255}.${g[7]! >> 8}.${g[7]! & 255}`;
  return v6.canonical;
}

/** The trusted proxies: addresses and CIDR ranges (a cloud load balancer's addresses change). */
export class TrustedProxies {
  private readonly list = new BlockList();
  private count = 0;
  get size(): number {
    return this.count;
  }
  add(entry: string): void {
    const [address, bits, extra] = entry.split('/');
    const family = isIP(address ?? '');
    if (!family || extra !== undefined || (bits !== undefined && !/^\d+$/.test(bits)) || Number(bits) > (family === 4 ? 32 : 128))
      throw new Error(`trusted proxy "${entry}" is not an IP address or CIDR range (e.g. 10.0.0.5, 10.0.0.0/8, fd00::/8; no ports)`);
    const type = family === 4 ? 'ipv4' : 'ipv6';
    if (bits === undefined) this.list.addAddress(address!, type);
    else this.list.addSubnet(address!, Number(bits), type);
    this.count++;
  }
  has(address: string): boolean {
    const family = isIP(address);
    return family !== 0 && this.count > 0 && this.list.check(address, family === 4 ? 'ipv4' : 'ipv6');
  }
}

/** Validates `--trust-proxy` entries (addresses or CIDR ranges); throws naming the first bad one. */
export function parseTrustedProxies(list: readonly string[]): TrustedProxies {
  const out = new TrustedProxies();
  for (const raw of list) {
    const entry = raw.trim();
    if (!entry) throw new Error('an empty trusted proxy (an unset variable?)');
    out.add(entry);
  }
  return out;
}

/** An X-Forwarded-For entry as an address: some proxies append a port ("1.2.3.4:5678", "[2001:db8::5]:443"). */
function hopAddress(hop: string): string | undefined {
  if (hop.includes('%')) return undefined; // a zone id is local to the proxy's host, never a client's
  const bracketed = /^\[([^\]]+)\](?::\d+)?$/.exec(hop);
  if (bracketed) return isIP(bracketed[1]!) === 6 ? bracketed[1] : undefined;
  if (isIP(hop)) return hop;
  const withPort = /^([\d.]+):\d+$/.exec(hop);
  return withPort && isIP(withPort[1]!) === 4 ? withPort[1] : undefined;
}

/** The client's address: the direct peer, or, when that is a trusted proxy, what it forwarded. */
export function clientAddress(req: IncomingMessage, trusted: TrustedProxies): string {
  const peer = normalizeAddress(req.socket.remoteAddress ?? 'unknown');
  if (!trusted.has(peer)) return peer;
  const header = req.headers['x-forwarded-for'];
  const hops = (Array.isArray(header) ? header.join(',') : (header ?? '')).split(',');
  for (let i = hops.length - 1; i >= 0; i--) {
    const hop = hops[i]!.trim();
    if (!hop) continue;
    const address = hopAddress(hop);
    // trusted proxies append addresses; anything else means the chain is not what it claims: the
    // request counts as the proxy's own (conservative: it shares the proxy's limits)
    if (address === undefined) return peer;
    const a = normalizeAddress(address);
    if (!trusted.has(a)) return a;
  }
  return peer;
}

/**
 * The key per-client limits count by: an IPv4 address, or an IPv6 address's /64 (one host is usually
 * given a whole /64, so counting single IPv6 addresses would give it 2^64 identities).
 */
export function clientIdentity(address: string): string {
  const g = parseIpv6(address)?.groups;
  return g ? `${g.slice(0, 4).map((x) => x.toString(16)).join(':')}::/64` : address;
}
