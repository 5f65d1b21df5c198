// The transport floor of `bench gateway`: the same synthetic engine, the same clients, the same
// sockets and the same bytes per event, with no gateway in between. It speaks just enough of
// graphql-transport-ws (connection_init -> ack, subscribe -> next... complete) and of GraphQL over
// SSE (POST -> `event: next` blocks) for the bench's clients, sends each engine chunk as the `next`
// message the gateway would send for `understand { text done }`, and runs no GraphQL at all: no
// parse, validation, execution, limits, auth, metrics or scheduling. Client receipt latency through
// it is what loopback TCP, the kernel, both threads' scheduling and the client's own parsing cost on
// this machine; the gateway's added latency is what it measures above that.
//
// To keep the floor low (and so the gateway's share over it conservative), frames go out the way the
// gateway's fastest path sends them (writeTextFrame: one buffer, one socket write), and the next
// chunk is pulled only once the previous write is flushed, as the gateway does.
import { createServer, type IncomingMessage, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { WebSocketServer, type WebSocket } from 'ws';
import type { Engine, UnderstandEvent } from '../src/engine/types.ts';
import { writeTextFrame } from '../src/gateway/ws-direct.ts';

export interface BareTransport {
  readonly url: string;
  readonly port: number;
  close(): Promise<void>;
}

/** The `payload` of a `next` message for `understand { text done }`. */
function payload(e: UnderstandEvent): string {
  return JSON.stringify({ data: { understand: { text: e.text, done: e.kind === 'done' } } });
}

/** Serves each subscription as `tokens` engine chunks (the query itself is not read: there is no GraphQL here). */
export async function startBareTransport(engine: Engine, tokens: number): Promise<BareTransport> {
  const streams = new Set<AbortController>();
  const run = async (write: (body: string) => Promise<void>, signal: AbortSignal) => {
    for await (const e of engine.understand({ prompt: 'bench', maxTokens: tokens }, signal)) {
      if (signal.aborted) return;
      await write(payload(e));
    }
  };
  const http = createServer((req, res) => void sse(req, res));
  async function sse(req: IncomingMessage, res: ServerResponse) {
    for await (const _ of req); // the body is the query, which is not read
    const ac = new AbortController();
    streams.add(ac);
    res.on('close', () => ac.abort());
    // the headers go out at once, as the gateway sends them, so the client's response is set up before the first event
    res.writeHead(200, { 'content-type': 'text/event-stream', 'cache-control': 'no-cache', connection: 'keep-alive' });
    res.flushHeaders();
    try {
      await run((body) => new Promise<void>((resolve, reject) => res.write(`event: next\ndata: ${body}\n\n`, (err) => (err ? reject(err) : resolve()))), ac.signal);
      res.end('event: complete\ndata:\n\n');
    } catch {
      res.destroy();
    } finally {
      streams.delete(ac);
    }
  }
  const wss = new WebSocketServer({ server: http, path: '/graphql' });
  wss.on('connection', (ws: WebSocket) => {
    const ac = new AbortController();
    streams.add(ac);
    ws.on('close', () => {
      ac.abort();
      streams.delete(ac);
    });
    ws.on('message', (raw) => {
      const m = JSON.parse(String(raw)) as { type?: string; id?: string };
      if (m.type === 'connection_init') ws.send('{"type":"connection_ack"}');
      else if (m.type === 'subscribe' && typeof m.id === 'string') {
        const head = `{"id":${JSON.stringify(m.id)},"type":"next","payload":`;
        const send = (body: string) =>
          new Promise<void>((resolve, reject) => {
            const done = (err?: Error | null) => (err ? reject(err) : resolve());
            if (!writeTextFrame(ws, head, Buffer.byteLength(head), body, done)) ws.send(head + body + '}', done);
          });
        run(send, ac.signal).then(
          () => ws.readyState === ws.OPEN && ws.send(JSON.stringify({ id: m.id, type: 'complete' })),
          () => ws.terminate(),
        );
      }
    });
  });
  await new Promise<void>((resolve) => http.listen(0, '127.0.0.1', resolve));
  const { port } = http.address() as AddressInfo;
  return {
    url: `http://127.0.0.1:${port}/graphql`,
    port,
    async close() {
      for (const ac of streams) ac.abort();
      for (const ws of wss.clients) ws.terminate();
      await new Promise<void>((resolve) => wss.close(() => resolve()));
      http.closeAllConnections();
      await new Promise<void>((resolve) => http.close(() => resolve()));
    },
  };
}
