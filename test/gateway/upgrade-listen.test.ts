// The WebSocketServer runs in noServer mode: the gateway routes HTTP upgrades itself (only /graphql,
// query string or not; other paths get 400 as ws answers them), with verifyClient and maxPayload as
// before. A failed listen (port taken) rejects with the listen error after releasing what startServer
// started, and nothing is logged by graphql-ws.
import { createServer, type AddressInfo, type Server } from 'node:net';
import { connect } from 'node:net';
import WebSocket from 'ws';
import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest';
import type { RunningServer } from '../../src/gateway/server.ts';
import { FakeEngine } from './fake-engine.ts';
import { start, wsUrl } from './helpers.ts';

/** The status line the server answers a raw upgrade request with. */
function rawUpgrade(s: RunningServer, path: string, upgrade = 'websocket'): Promise<string> {
  return new Promise((resolve, reject) => {
    const sock = connect(s.port, '127.0.0.1');
    let data = '';
    sock.on('data', (b) => {
      data += b.toString();
      if (!data.includes('\r\n')) return;
      resolve(data.split('\r\n')[0]!);
      sock.destroy();
    });
    sock.on('error', reject);
    sock.on('close', () => resolve(data.split('\r\n')[0]!));
    sock.write(
      `GET ${path} HTTP/1.1\r\nHost: 127.0.0.1:${s.port}\r\nConnection: Upgrade\r\nUpgrade: ${upgrade}\r\n` +
        `Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Protocol: graphql-transport-ws\r\n\r\n`,
    );
    setTimeout(() => {
      sock.destroy();
      resolve(data.split('\r\n')[0]!);
    }, 2000).unref();
  });
}

describe('upgrade routing (noServer)', () => {
  let server: RunningServer;
  beforeAll(async () => {
    server = await start({ engine: new FakeEngine(), limits: { maxBodyBytes: 4096 } });
  });
  afterAll(async () => {
    await server?.close();
  });

  it('/graphql upgrades, with or without a query string; other paths and a non-WebSocket upgrade get 400', async () => {
    expect(await rawUpgrade(server, '/graphql')).toBe('HTTP/1.1 101 Switching Protocols');
    expect(await rawUpgrade(server, '/graphql?token=x')).toBe('HTTP/1.1 101 Switching Protocols');
    for (const path of ['/', '/graphqlx', '/graphql/', '/metrics', '/x?/graphql']) expect(await rawUpgrade(server, path), path).toBe('HTTP/1.1 400 Bad Request');
    expect(await rawUpgrade(server, '/graphql', 'h2c')).toBe('HTTP/1.1 400 Bad Request');
    expect(server.runtime.metrics.originRejected.get({ transport: 'ws' })).toBe(0);
  });

  it('verifyClient still runs: a foreign Origin is 403 and counted', async () => {
    const status = await new Promise<number>((resolve, reject) => {
      const ws = new WebSocket(wsUrl(server), 'graphql-transport-ws', { origin: 'http://evil.example' });
      ws.once('open', () => resolve(101));
      ws.once('unexpected-response', (req, res) => {
        resolve(res.statusCode ?? 0);
        req.destroy();
      });
      ws.once('error', (e) => (e.message.includes('Unexpected server response') ? undefined : reject(e)));
    });
    expect(status).toBe(403);
    expect(server.runtime.metrics.originRejected.get({ transport: 'ws' })).toBe(1);
  });

  it('maxPayload still applies: a message over maxBodyBytes closes the socket with 1009, counted, not logged', async () => {
    const errors = vi.spyOn(console, 'error').mockImplementation(() => undefined);
    try {
      const ws = new WebSocket(wsUrl(server), 'graphql-transport-ws');
      await new Promise((r, j) => ws.once('open', r).once('error', j));
      const code = await new Promise<number>((resolve) => {
        ws.once('close', (c) => resolve(c));
        ws.send(JSON.stringify({ type: 'connection_init', payload: { pad: 'x'.repeat(8000) } }));
      });
      expect(code).toBe(1009);
      await new Promise((r) => setTimeout(r, 50));
      expect(errors).not.toHaveBeenCalled(); // graphql-ws would log the RangeError's stack
      expect(server.runtime.metrics.wsProtocolErrors.get({ code: 'WS_ERR_UNSUPPORTED_MESSAGE_LENGTH' })).toBe(1);
      // the server goes on serving
      const again = new WebSocket(wsUrl(server), 'graphql-transport-ws');
      await new Promise((r, j) => again.once('open', r).once('error', j));
      again.close();
    } finally {
      errors.mockRestore();
    }
  });
});

describe('failed listen', () => {
  let held: Server;
  let port: number;
  beforeAll(async () => {
    held = createServer();
    await new Promise<void>((r) => held.listen(0, '127.0.0.1', r));
    port = (held.address() as AddressInfo).port;
  });
  afterAll(async () => {
    await new Promise((r) => held.close(r));
  });

  it('rejects with EADDRINUSE; graphql-ws logs nothing; a caller-owned engine is left open unless closeEngine', async () => {
    const errors = vi.spyOn(console, 'error').mockImplementation(() => undefined);
    try {
      for (const closeEngine of [undefined, true]) {
        const engine = new FakeEngine();
        const close = vi.spyOn(engine, 'close');
        const logs: string[] = [];
        const err = await start({ engine, port, closeEngine, log: (m) => logs.push(m) }).then(
          () => undefined,
          (e: NodeJS.ErrnoException) => e,
        );
        expect(err?.code).toBe('EADDRINUSE');
        expect(close).toHaveBeenCalledTimes(closeEngine ? 1 : 0);
        expect(logs).toEqual([]);
      }
      expect(errors.mock.calls.flat().join(' ')).not.toMatch(/Internal error/);
      expect(errors).not.toHaveBeenCalled();
    } finally {
      errors.mockRestore();
    }
  });
});
