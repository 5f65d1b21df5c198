// `hyperbagel serve` as a user runs it (node bin/hyperbagel.js serve) on the tiny fixture pack: it
// listens where PORT / --port say (--port wins), answers /health, takes --threads, and refuses bad
// values with one clear line.
import { createServer, type Server } from 'node:net';
import type { AddressInfo } from 'node:net';
import { afterAll, describe, expect, it } from 'vitest';
import { parseServeArgs, serveOptions } from '../../src/cli/commands/serve.ts';
import { UsageError } from '../../src/cli/args.ts';
import { cli, oneLineError, startCli, stop, stopAll, TINY } from './helpers.ts';

afterAll(stopAll);

/** Holds a local port for the test (so a server told to use it would fail). */
async function occupyPort(): Promise<{ port: number; close: () => Promise<void> }> {
  const s: Server = createServer();
  await new Promise<void>((r) => s.listen(0, '127.0.0.1', r));
  return { port: (s.address() as AddressInfo).port, close: () => new Promise((r) => s.close(() => r())) };
}

async function health(base: string): Promise<{ status: number; body: { status?: string } }> {
  const res = await fetch(`${base}/health`);
  return { status: res.status, body: (await res.json()) as { status?: string } };
}

/** `n` distinct local ports nothing listens on right now (held together, so no two are the same). */
async function freePorts(n: number): Promise<number[]> {
  const held = await Promise.all(Array.from({ length: n }, () => occupyPort()));
  await Promise.all(held.map((h) => h.close()));
  return held.map((h) => h.port);
}

type Started = Awaited<ReturnType<typeof startCli>>;

/**
 * Starts servers on ports from freePorts(n), each by `starter(ports, i)`. A port is free only until it is
 * released here: when another process takes one before a server listens (EADDRINUSE), those started are
 * stopped and it tries again on other ports.
 */
async function startOnFreePorts(n: number, starter: (ports: number[], i: number) => Promise<Started>): Promise<{ ports: number[]; servers: Started[] }> {
  for (let attempt = 1; ; attempt++) {
    const ports = await freePorts(n);
    const servers: Started[] = [];
    try {
      for (let i = 0; i < n; i++) servers.push(await starter(ports, i));
      return { ports, servers };
    } catch (e) {
      for (const s of servers) await stop(s.child);
      if (attempt < 3 && /EADDRINUSE/.test(String(e))) continue;
      throw e;
    }
  }
}

async function post(base: string, query: string, variables: Record<string, unknown> = {}): Promise<any> {
  const res = await fetch(`${base}/graphql`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ query, variables }) });
  return res.json();
}

async function ready(base: string): Promise<void> {
  for (let i = 0; i < 600; i++) {
    if ((await fetch(`${base}/ready`)).status === 200) return;
    await new Promise((r) => setTimeout(r, 100));
  }
  throw new Error(`${base} not ready in 60 s`);
}

describe('serve', () => {
  it('--replica-id / --peer: two replicas on the tiny pack; a job generated on one is served, byte for byte, by the other', async () => {
    const common = ['serve', '--pack', TINY, '--threads', '1'];
    const { servers } = await startOnFreePorts(2, ([pa, pb], i) =>
      i === 0
        ? startCli([...common, '--port', String(pa), '--replica-id', 'a', '--peer', `b=http://127.0.0.1:${pb}`])
        : startCli([...common, '--port', String(pb)], { HYPERBAGEL_REPLICA_ID: 'b', HYPERBAGEL_PEERS: `a=http://127.0.0.1:${pa}/graphql` }),
    );
    const [a, b] = [servers[0]!, servers[1]!];
    expect(a.stderr()).toMatch(/replica a, peers: b\b/);
    await Promise.all([ready(a.url), ready(b.url)]);
    const started = await post(a.url, 'mutation { generateImage(input: { prompt: "a red circle", seed: 5, mode: BASELINE, steps: 4 }) { id } }');
    const id = started.data.generateImage.id as string;
    expect(id.startsWith('a.')).toBe(true);
    const q = 'query($id: ID!) { job(id: $id) { status result { nfe image { sha256 byteLength } } } }';
    const viaB = await post(b.url, q, { id });
    const onA = await post(a.url, q, { id });
    expect(viaB.errors).toBeUndefined();
    // (status is read when the query starts, before result waits for the end, on either replica)
    expect(viaB.data.job.result).toEqual(onA.data.job.result);
    expect((await post(b.url, 'query($id: ID!) { job(id: $id) { status } }', { id })).data.job.status).toBe('SUCCEEDED');
    expect(viaB.data.job.result.image.byteLength).toBeGreaterThan(0);
    expect(await stop(a.child)).toBe(0);
    expect(await stop(b.child)).toBe(0);
  }, 120_000);

  it('PORT=0 picks a free port: it prints the URL and answers /health; SIGTERM shuts it down', async () => {
    const { child, url, stderr } = await startCli(['serve', '--pack', TINY, '--threads', '1'], { PORT: '0' });
    const port = Number(new URL(url).port);
    expect(port).toBeGreaterThan(0);
    const h = await health(url);
    expect(h.status).toBe(200);
    expect(h.body.status).toBe('ok');
    expect(await stop(child)).toBe(0);
    expect(stderr()).toMatch(/SIGTERM, shutting down/);
  }, 90_000);

  it('--port wins over PORT', async () => {
    // PORT names a port that is taken: serving there would fail; --port 0 must be used instead
    const held = await occupyPort();
    try {
      const { child, url } = await startCli(['serve', '--pack', TINY, '--port', '0'], { PORT: String(held.port) });
      expect(Number(new URL(url).port)).not.toBe(held.port);
      expect((await health(url)).status).toBe(200);
      await stop(child);
      // and PORT alone is honoured: the taken port is refused with one clear line
      const r = await cli(['serve', '--pack', TINY], { PORT: String(held.port) });
      expect(r.code).toBe(1);
      expect(r.stderr).toContain(`hyperbagel serve: cannot listen on 127.0.0.1:${held.port}: the port is in use (EADDRINUSE)`);
    } finally {
      await held.close();
    }
  }, 90_000);

  it('a taken port: exit 1 within seconds, one line on stderr, no graphql-ws "Internal error" trace', async () => {
    const held = await occupyPort();
    try {
      // exits on its own (no process.exit): the engine load it had started is closed once loaded. A process
      // that stays up fails the test at its timeout, before cli()'s 60 s kill could end it some other way
      const r = await cli(['serve', '--pack', TINY, '--port', String(held.port), '--threads', '1']);
      expect(r.code, r.stderr).toBe(1);
      expect(r.stderr).not.toMatch(/Internal error/);
      expect(r.stderr.trim().split('\n')).toEqual([
        `hyperbagel serve: cannot listen on 127.0.0.1:${held.port}: the port is in use (EADDRINUSE); choose another with --port N (0 picks a free one) or --host ADDR`,
      ]);
      expect(r.stdout).toBe('');
    } finally {
      await held.close();
    }
  }, 45_000);

  it('--threads must be a positive integer', async () => {
    for (const t of ['0', 'many']) {
      const r = await cli(['serve', '--pack', TINY, '--port', '0', '--threads', t]);
      expect(oneLineError(r)).toContain(`--threads must be a positive integer (1 to 256), got "${t}"`);
      expect(r.code).toBe(2);
    }
    expect(oneLineError(await cli(['serve', '--pack', TINY, '--port', 'x']))).toMatch(/--port must be an integer/);
    expect(oneLineError(await cli(['serve', '--pack', TINY], { PORT: 'eighty' }))).toMatch(/PORT must be an integer in \[0, 65535\], got "eighty"/);
  }, 90_000);

  it('--help documents --threads', async () => {
    const r = await cli(['serve', '--help']);
    expect(r.code).toBe(0);
    expect(r.stdout).toMatch(/\[--threads N\]/);
    expect(r.stdout).toMatch(/--threads N\s+onnxruntime intra-op threads/);
  }, 60_000);

  it('--threads reaches the engine options the way understand / generate pass it; PORT / --port precedence', () => {
    const o = (argv: string[], env: Record<string, string> = {}) => serveOptions(parseServeArgs(['--pack', TINY, ...argv]), env);
    expect(o(['--threads', '3']).engineOptions).toEqual({ intraOpThreads: 3 });
    expect(o([]).engineOptions).toBeUndefined(); // the engine's own default
    for (const t of ['0', '-2', '1.5', '', '1e1', '300']) expect(() => o(['--threads', t]), t).toThrow(UsageError);
    expect(o(['--threads', '256']).engineOptions).toEqual({ intraOpThreads: 256 });
    expect(o([]).port).toBe(4000);
    expect(o([], { PORT: '5001' }).port).toBe(5001);
    expect(o(['--port', '5002'], { PORT: '5001' }).port).toBe(5002);
    expect(o(['--port', '0'], { PORT: '5001' }).port).toBe(0);
    // PORT: empty is unset; out of range or not a number is a usage error, unless --port wins anyway
    expect(o([], { PORT: '' }).port).toBe(4000);
    expect(o(['--port', '4601'], { PORT: '' }).port).toBe(4601);
    for (const bad of ['99999', '65536', '-1', 'abc', '80x']) expect(() => o([], { PORT: bad }), bad).toThrow(/^PORT must be an integer in \[0, 65535\], got /);
    expect(o(['--port', '4600'], { PORT: '70000' }).port).toBe(4600);
  });

  it('--public-url is an absolute http(s) URL, kept without a trailing slash; an empty --api-key or --host is refused', () => {
    const o = (argv: string[]) => serveOptions(parseServeArgs(['--pack', TINY, ...argv]), {});
    expect(o(['--public-url', 'http://127.0.0.1:4625/']).publicUrl).toBe('http://127.0.0.1:4625');
    expect(o(['--public-url', 'https://api.example.com/hb//']).publicUrl).toBe('https://api.example.com/hb');
    expect(o(['--public-url', 'https://api.example.com']).publicUrl).toBe('https://api.example.com');
    for (const bad of ['api.example.com', 'notaurl', 'ftp://x.example', 'https://x.example/?a=1'])
      expect(() => o(['--public-url', bad]), bad).toThrow(/^--public-url /);
    expect(() => o(['--api-key', ''])).toThrow(/option --api-key needs a value, got an empty one/);
    expect(() => o(['--api-key', 'k1', '--api-key', ' '])).toThrow(/^--api-key is empty/);
    expect(o(['--api-key', 'k1']).apiKeys).toEqual(['k1']);
    expect(() => o(['--host', ''])).toThrow(/option --host needs a value, got an empty one/);
  });

  it('a host name that does not resolve: one line, exit 1, no stack trace', async () => {
    const r = await cli(['serve', '--pack', TINY, '--port', '0', '--host', 'no-such-host.invalid']);
    expect(r.code).toBe(1);
    expect(oneLineError(r)).toMatch(/^hyperbagel serve: cannot listen on no-such-host\.invalid:0: (no such host name|the host name could not be resolved) \((ENOTFOUND|EAI_AGAIN)\)/);
  }, 60_000);
});
