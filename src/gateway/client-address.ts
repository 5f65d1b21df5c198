// Who a request comes from, for per-client limits (rate, queue share, connections) when auth is off.
// Behind a reverse proxy or load balancer every request arrives from the proxy's address, so all
// clients would share one client's limits. For a request whose direct peer is a configured trusted
// proxy, the client is the nearest address in X-Forwarded-For that is not itself a trusted proxy
// (the rightmost untrusted hop: entries to its left are whatever the client chose to send).
import { BlockList, isIP } from 'node:net';
import type { IncomingMessage } from 'node:http';

/** `::ffff:10.0.0.1` and `10.0.0.1` are the same peer; Node reports either depending on the socket. */
export function normalizeAddress(address: string): string {
  const a = address.trim().toLowerCase();
  return a.startsWith('::ffff:') && isIP(a.slice(7)) === 4 ? a.slice(7) : a;
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
  if (isIP(address) !== 6) return address;
  const [head = '', tail = ''] = address.split('::');
  const left = head ? head.split(':') : [];
  const right = tail ? tail.split(':') : [];
  // an embedded IPv4 tail (::1.2.3.4 forms) counts as two groups
  const groups = (xs: string[]) => xs.reduce((n, x) => n + (x.includes('.') ? 2 : 1), 0);
  const full = address.includes('::') ? [...left, ...Array(8 - groups(left) - groups(right)).fill('0'), ...right] : left;
  return `${full.slice(0, 4).map((g) => parseInt(g, 16).toString(16)).join(':')}::/64`;
}
