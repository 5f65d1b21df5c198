// `bench gateway`'s transport floor (bench/bare-transport.ts) stands for the gateway minus the
// gateway: the comparison only means something if a client receives exactly the same messages from
// both. Raw sockets here, so the bytes themselves are compared.
import { afterEach, expect, test } from 'vitest';
import WebSocket from 'ws';
import { startBareTransport, type BareTransport } from '../../bench/bare-transport.ts';
import { SyntheticEngine, syntheticInfo } from '../../bench/synthetic-engine.ts';
import type { GenerateRequest, ImageFrame, UnderstandEvent, UnderstandRequest } from '../../src/engine/types.ts';
import { startServer, type RunningServer } from '../../src/gateway/server.ts';

/** Three chunks with JSON-escaped and non-ASCII text, 5 ms apart, then done. */
class FixedEngine extends SyntheticEngine {
  readonly info = syntheticInfo('fixed', 'three fixed chunks');
  readonly texts = ['a "red"', ' circle\n', ' é ✓'];
  async *understand(req: UnderstandRequest, signal?: AbortSignal): AsyncGenerator<UnderstandEvent> {
    const n = Math.min(req.maxTokens ?? 3, 3);
    for (let i = 0; i < n && !signal?.aborted; i++) {
      // a model step apart, as in the bench: chunks that arrive together would be coalesced by the gateway
      await new Promise((r) => setTimeout(r, 5));
      yield { kind: 'chunk', text: this.texts[i]!, tokenIds: [i], acceptedTokens: 1, draftedTokens: 1 };
    }
    yield {
      kind: 'done',
      finishReason: 'length',
      text: '',
      usage: { promptTokens: 1, completionTokens: n, totalTokens: n + 1 },
      timings: { queueMs: 0, timeToFirstTokenMs: 1, totalMs: 1, tokensPerSecond: 1 },
      speculation: { mode: 'off', drafts: 0, draftedTokens: 0, acceptedTokens: 0, meanAcceptedLength: 1, acceptanceRate: 0, acceptancePerPosition: [] },
    };
  }
  // eslint-disable-next-line require-yield
  async *generate(_req: GenerateRequest): AsyncGenerator<ImageFrame> {
    throw new Error('not used');
  }
}

const QUERY = 'subscription { understand(input: { prompt: "bench", maxTokens: 3 }) { text done } }';

/** Every message a graphql-transport-ws client receives for one subscription, as raw text. */
function wsMessages(url: string): Promise<string[]> {
  return new Promise((resolve, reject) => {
    const ws = new WebSocket(url.replace(/^http/, 'ws'), 'graphql-transport-ws');
    const got: string[] = [];
    ws.on('open', () => ws.send(JSON.stringify({ type: 'connection_init' })));
    ws.on('message', (raw) => {
      const text = String(raw);
      got.push(text);
      const m = JSON.parse(text) as { type: string };
      if (m.type === 'connection_ack') ws.send(JSON.stringify({ id: 'q1', type: 'subscribe', payload: { query: QUERY } }));
      if (m.type === 'complete' || m.type === 'error') ws.close();
    });
    ws.on('close', () => resolve(got));
    ws.on('error', reject);
  });
}

/** The `data:` of every `next` event of a GraphQL-over-SSE response. */
async function sseNexts(url: string): Promise<string[]> {
  const res = await fetch(url, { method: 'POST', headers: { 'content-type': 'application/json', accept: 'text/event-stream' }, body: JSON.stringify({ query: QUERY }) });
  const text = await res.text();
  return text
    .split('\n\n')
    .filter((b) => b.startsWith('event: next'))
    .map((b) => b.split('\n').find((l) => l.startsWith('data:'))!.slice(5).trim());
}

let gateway: RunningServer | undefined;
let bare: BareTransport | undefined;
afterEach(async () => {
  await gateway?.close();
  await bare?.close();
  gateway = bare = undefined;
});

test('the bare transport sends the same graphql-ws messages as the gateway, byte for byte', async () => {
  const engine = new FixedEngine();
  gateway = await startServer({ engine, port: 0, webDemo: false, log: () => {} });
  bare = await startBareTransport(engine, 3);
  const fromGateway = await wsMessages(gateway.url);
  const fromBare = await wsMessages(bare.url);
  expect(fromGateway.filter((m) => JSON.parse(m).type === 'next')).toHaveLength(4);
  expect(fromBare).toEqual(fromGateway);
}, 30_000);

test('... and the same SSE next events', async () => {
  const engine = new FixedEngine();
  gateway = await startServer({ engine, port: 0, webDemo: false, log: () => {} });
  bare = await startBareTransport(engine, 3);
  const fromGateway = await sseNexts(gateway.url);
  expect(fromGateway).toHaveLength(4);
  expect(await sseNexts(bare.url)).toEqual(fromGateway);
}, 30_000);

test('closing the bare transport ends its streams and connections', async () => {
  const engine = new FixedEngine();
  bare = await startBareTransport(engine, 3);
  const ws = new WebSocket(bare.url.replace(/^http/, 'ws'), 'graphql-transport-ws');
  await new Promise((resolve) => ws.once('open', resolve));
  const closed = new Promise((resolve) => ws.once('close', resolve));
  await bare.close();
  bare = undefined;
  await closed;
  expect(ws.readyState).toBe(WebSocket.CLOSED);
}, 30_000);
