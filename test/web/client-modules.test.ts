// The page's plain ES modules: type-checked against the DOM, and the incremental-delivery merger
// (both @stream/@defer wire formats) exercised directly.
import { execFileSync } from 'node:child_process';
import { createServer, type AddressInfo } from 'node:net';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { describe, expect, it } from 'vitest';
import { WebSocket as NodeWebSocket, WebSocketServer } from 'ws';

const root = fileURLToPath(new URL('../../', import.meta.url));

interface IncrementalResultLike {
  data: any;
  errors: { message: string }[];
  hasNext: boolean;
  apply(payload: unknown): string[];
}
const { IncrementalResult } = (await import(pathToFileURL(`${root}web/incremental.js`).href)) as {
  IncrementalResult: new () => IncrementalResultLike;
};

describe('close codes', () => {
  it('the page has words for the close code of its own the gateway sends (4008, slow consumer)', async () => {
    const { CLOSE_REASONS } = (await import(pathToFileURL(`${root}web/gql-ws.js`).href)) as { CLOSE_REASONS: Record<number, string> };
    const { SLOW_CONSUMER_CLOSE_CODE } = await import('../../src/gateway/server.ts');
    expect(CLOSE_REASONS[SLOW_CONSUMER_CLOSE_CODE]).toMatch(/not reading/);
  });
});

describe('web/*.js', () => {
  it('type-checks with tsc (checkJs, strict, DOM)', () => {
    // Throws (and prints the diagnostics) on any type error.
    execFileSync(process.execPath, [`${root}node_modules/typescript/bin/tsc`, '-p', `${root}web/tsconfig.json`], { stdio: 'pipe' });
  });
});

// gql-ws.js uses the browser's WebSocket; Node 20 has none, `ws` stands in (same onopen/onmessage/onclose
// API). Unlike a browser's, a `ws` socket throws an 'error' event nobody listens to.
class BrowserLikeWebSocket extends NodeWebSocket {
  constructor(url: string, protocols?: string | string[]) {
    super(url, protocols);
    this.on('error', () => undefined);
  }
}
(globalThis as { WebSocket?: unknown }).WebSocket ??= BrowserLikeWebSocket;
interface ErrorLike { message: string; extensions?: Record<string, unknown> }
const { GraphQLWsClient, CLOSE_REASONS } = (await import(pathToFileURL(`${root}web/gql-ws.js`).href)) as {
  GraphQLWsClient: new (url: string) => { subscribe(p: { query: string; variables?: Record<string, unknown> }, sink: { next(p: unknown): void; error(e: ErrorLike[]): void; complete(): void }): () => void; close(): void };
  CLOSE_REASONS: Record<number, string>;
};

/** The errors the client reports for one operation. */
function errorsOf(client: InstanceType<typeof GraphQLWsClient>, variables?: Record<string, unknown>): Promise<ErrorLike[]> {
  return new Promise((resolve, reject) => {
    client.subscribe({ query: '{ __typename }', variables }, { next: () => undefined, error: resolve, complete: () => reject(new Error('completed')) });
  });
}

describe('GraphQLWsClient', () => {
  it('reports CONNECTION_FAILED (not CONNECTION_CLOSED) when the server cannot be reached: nothing was sent', async () => {
    // a port that was free a moment ago
    const probe = createServer();
    await new Promise<void>((r) => probe.listen(0, '127.0.0.1', r));
    const { port } = probe.address() as AddressInfo;
    await new Promise<void>((r) => probe.close(() => r()));
    const errors = await errorsOf(new GraphQLWsClient(`ws://127.0.0.1:${port}/graphql`));
    expect(errors[0]?.extensions?.code).toBe('CONNECTION_FAILED');
    expect(errors[0]?.message).toMatch(/could not connect to the server/);
  });

  it('says in words when the server closes the socket because a message was too large (1009)', async () => {
    expect(CLOSE_REASONS[1009]).toMatch(/larger than the server accepts/);
    const wss = new WebSocketServer({ port: 0, host: '127.0.0.1', maxPayload: 1024, handleProtocols: () => 'graphql-transport-ws' });
    wss.on('connection', (socket) => {
      socket.on('error', () => undefined); // ws reports the oversized message here, then closes with 1009
      socket.on('message', (m) => {
        if (JSON.parse(String(m)).type === 'connection_init') socket.send(JSON.stringify({ type: 'connection_ack' }));
      });
    });
    try {
      await new Promise((r) => wss.once('listening', r));
      const client = new GraphQLWsClient(`ws://127.0.0.1:${(wss.address() as AddressInfo).port}/graphql`);
      const errors = await errorsOf(client, { big: 'x'.repeat(4096) });
      expect(errors[0]?.extensions).toMatchObject({ code: 'CONNECTION_CLOSED', closeCode: 1009 });
      expect(errors[0]?.message).toContain('larger than the server accepts');
    } finally {
      for (const c of wss.clients) c.terminate();
      await new Promise((r) => wss.close(r));
    }
  });
});

const frame = (stage: string, nfe: number) => ({ stage, nfe, image: { base64: `${stage}${nfe}` } });

describe('IncrementalResult', () => {
  it('assembles the graphql-tools / Yoga 5 format', () => {
    const r = new IncrementalResult();
    expect(r.apply({ data: { generateImage: { id: 'j1', previews: [] } }, hasNext: true })).toEqual(['']);
    expect(r.apply({ incremental: [{ items: [frame('PREVIEW', 1)], path: ['generateImage', 'previews', 0] }], hasNext: true })).toEqual(['generateImage.previews']);
    expect(r.apply({ incremental: [{ items: [frame('PREVIEW', 3)], path: ['generateImage', 'previews', 1] }], hasNext: true })).toEqual(['generateImage.previews']);
    expect(r.apply({ incremental: [{ data: { result: frame('FINAL', 6) }, path: ['generateImage'], label: 'final' }], hasNext: true })).toEqual(['generateImage.result']);
    r.apply({ hasNext: false });
    expect(r.hasNext).toBe(false);
    expect(r.data.generateImage.previews.map((f: { nfe: number }) => f.nfe)).toEqual([1, 3]);
    expect(r.data.generateImage.result.nfe).toBe(6);
    expect(r.data.generateImage.id).toBe('j1');
  });

  it('assembles the graphql-js 17 format (pending ids, subPath, completed)', () => {
    const r = new IncrementalResult();
    r.apply({ data: { editImage: { id: 'j2', previews: [] } }, pending: [{ id: '0', path: ['editImage', 'previews'] }, { id: '1', path: [], label: 'final' }], hasNext: true });
    r.apply({ incremental: [{ id: '0', items: [frame('PREVIEW', 1)] }], hasNext: true });
    r.apply({ incremental: [{ id: '1', data: { result: frame('FINAL', 6) }, subPath: ['editImage'] }], completed: [{ id: '1' }, { id: '0' }], hasNext: false });
    expect(r.data.editImage.previews).toEqual([frame('PREVIEW', 1)]);
    expect(r.data.editImage.result).toEqual(frame('FINAL', 6));
    expect(r.hasNext).toBe(false);
  });

  it('a response cannot reach Object.prototype through __proto__, constructor or prototype', () => {
    const r = new IncrementalResult();
    r.apply({ data: { generateImage: { id: 'j', previews: [] } }, hasNext: true });
    r.apply(JSON.parse('{"incremental":[{"data":{"__proto__":{"polluted":"yes"},"result":{"nfe":6}},"path":["generateImage"]}],"hasNext":true}'));
    r.apply({ incremental: [{ items: ['x'], path: ['__proto__', 'x'] }, { data: { y: 1 }, path: ['constructor', 'prototype'] }], hasNext: true });
    r.apply({ incremental: [{ data: { z: 1 }, path: ['generateImage', 'toString'] }], hasNext: false });
    const probe = {} as Record<string, unknown>;
    expect([probe['polluted'], probe['x'], probe['y'], probe['z']]).toEqual([undefined, undefined, undefined, undefined]);
    expect(r.data.generateImage.result).toEqual({ nfe: 6 }); // the rest of the payload is kept
  });

  it('keeps errors from every level', () => {
    const r = new IncrementalResult();
    r.apply({ data: null, errors: [{ message: 'busy', extensions: { code: 'BUSY' } }] });
    expect(r.errors.map((e) => e.message)).toEqual(['busy']);
    expect(r.hasNext).toBe(false);
    const s = new IncrementalResult();
    s.apply({ data: { generateImage: { id: 'j', previews: [] } }, hasNext: true });
    s.apply({ incremental: [{ items: [null], path: ['generateImage', 'previews', 0], errors: [{ message: 'cancelled' }] }], hasNext: false });
    expect(s.errors.map((e) => e.message)).toEqual(['cancelled']);
  });
});
