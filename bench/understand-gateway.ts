// `bench understand`'s gateway section: each request once straight to the engine and once through the
// GraphQL gateway over graphql-ws (the image sent as base64 PNG, as a client sends it), interleaved,
// so what the gateway adds to time to first token shows against the model's own TTFT on the same
// request (the gateway reference's target G2: first chunk within the model's TTFT + 15 ms), and the
// text must be the same both ways.
import { encodePng } from '../src/engine/image/png.ts';
import type { Engine, UnderstandRequest } from '../src/engine/types.ts';
import { startServer } from '../src/gateway/server.ts';
import { connectGraphqlWs, type BenchWsClient } from './graphql-ws-client.ts';
import { median } from './stats.ts';

export interface GatewayUnderstandTimes {
  requests: number;
  /** medians over requests (ms): the engine called directly, and a graphql-ws client of the gateway */
  direct_ttft_ms: number;
  gateway_ttft_ms: number;
  direct_total_ms: number;
  gateway_total_ms: number;
  /** medians of the per-request differences (gateway − direct): what the gateway and the wire add */
  ttft_overhead_ms: number;
  total_overhead_ms: number;
  /** the answer's text was identical both ways, for every request */
  same_text: boolean;
  /** token chunks the gateway merged because this (single, fast) client was slow: 0 expected */
  coalesced_chunks: number;
}

interface Measured {
  ttft: number;
  total: number;
  text: string;
}

const QUERY = `subscription U($input: UnderstandInput!) { understand(input: $input) { text tokenIds done fullText } }`;

async function direct(engine: Engine, req: UnderstandRequest): Promise<Measured> {
  const t0 = performance.now();
  let ttft = NaN;
  let text = '';
  for await (const ev of engine.understand(req)) {
    if (ev.kind === 'chunk') {
      if (Number.isNaN(ttft) && ev.tokenIds.length) ttft = performance.now() - t0;
      text += ev.text;
    } else text = ev.text;
  }
  return { ttft, total: performance.now() - t0, text };
}

async function viaGateway(client: BenchWsClient, id: string, input: Record<string, unknown>): Promise<Measured> {
  const t0 = performance.now();
  let ttft = NaN;
  return client.operation(id, { query: QUERY, variables: { input } }, (m) => {
    if (m.type !== 'next') return undefined;
    const u = m.payload.data?.understand;
    if (!u) throw new Error(`gateway error: ${JSON.stringify(m.payload.errors ?? m.payload)}`);
    if (Number.isNaN(ttft) && u.tokenIds.length) ttft = performance.now() - t0;
    return u.done ? { ttft, total: performance.now() - t0, text: u.fullText as string } : undefined;
  });
}

/** Each request direct, then through a gateway on the same engine (after one warm-up of each). */
export async function compareUnderstandViaGateway(engine: Engine, requests: UnderstandRequest[]): Promise<GatewayUnderstandTimes> {
  const server = await startServer({ engine, port: 0, webDemo: false, log: () => {} });
  let client: BenchWsClient | undefined;
  try {
    client = await connectGraphqlWs(server.url);
    const inputOf = (r: UnderstandRequest) => ({
      prompt: r.prompt,
      ...(r.image ? { image: { base64: Buffer.from(encodePng(r.image)).toString('base64') } } : {}),
      ...(r.maxTokens !== undefined ? { maxTokens: r.maxTokens } : {}),
      temperature: r.temperature ?? 0,
    });
    const inputs = requests.map(inputOf);
    await direct(engine, requests[0]!);
    await viaGateway(client, 'warm', inputs[0]!);
    const d: Measured[] = [];
    const g: Measured[] = [];
    const coalesced0 = server.runtime.metrics.coalescedChunks.get();
    for (const [i, r] of requests.entries()) {
      d.push(await direct(engine, r));
      g.push(await viaGateway(client, `r${i}`, inputs[i]!));
    }
    const r2 = (x: number) => +x.toFixed(2);
    return {
      requests: requests.length,
      direct_ttft_ms: r2(median(d.map((x) => x.ttft))),
      gateway_ttft_ms: r2(median(g.map((x) => x.ttft))),
      direct_total_ms: r2(median(d.map((x) => x.total))),
      gateway_total_ms: r2(median(g.map((x) => x.total))),
      ttft_overhead_ms: r2(median(g.map((x, i) => x.ttft - d[i]!.ttft))),
      total_overhead_ms: r2(median(g.map((x, i) => x.total - d[i]!.total))),
      same_text: g.every((x, i) => x.text === d[i]!.text),
      coalesced_chunks: server.runtime.metrics.coalescedChunks.get() - coalesced0,
    };
  } finally {
    client?.close();
    await server.close();
  }
}
