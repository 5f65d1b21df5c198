// `bench generate`'s gateway section: the same progressive request through the GraphQL gateway over
// graphql-ws (`previews @stream`, `@defer { result }`), on the same engine, so what the gateway adds to
// an image preview shows beside the engine's own times (the gateway reference's target G3: the first
// preview on the wire within the 1-step latency + 30 ms, previews under 60 KB).
import type { Engine } from '../src/engine/types.ts';
import { startServer } from '../src/gateway/server.ts';
import { connectGraphqlWs, type BenchWsClient } from './graphql-ws-client.ts';
import { median } from './stats.ts';

export interface GatewayImageTimes {
  /** request sent -> first preview frame received, and -> final frame received (client side, ms) */
  preview_ms: number;
  final_ms: number;
  /** the frames' own elapsedMs: the engine's time from starting the request to each frame */
  engine_preview_ms: number;
  engine_final_ms: number;
  /** what the gateway and the wire add: client receipt minus the engine's time */
  preview_overhead_ms: number;
  final_overhead_ms: number;
  /** bytes of the frames' base64 image data as sent */
  preview_base64_bytes: number;
  final_base64_bytes: number;
  preview_mime: string;
  final_mime: string;
  runs: number;
}

interface Frame {
  nfe: number;
  elapsedMs: number;
  image: { mimeType: string; base64: string };
}

const QUERY = `mutation G($input: GenerateImageInput!) { generateImage(input: $input) {
  id previews @stream(initialCount: 0) { nfe elapsedMs image { mimeType base64 } }
  ... @defer { result { nfe elapsedMs image { mimeType base64 } } } } }`;

/** One progressive request over the connection: when its preview and its final arrived. */
async function request(client: BenchWsClient, id: string, prompt: string, seed: number): Promise<{ previewAt: number; finalAt: number; preview: Frame; final: Frame }> {
  const t0 = performance.now();
  let preview: { at: number; frame: Frame } | undefined;
  return client.operation(id, { query: QUERY, variables: { input: { prompt, mode: 'PROGRESSIVE', seed } } }, (m) => {
    if (m.type !== 'next') return undefined;
    const at = performance.now() - t0;
    if (m.payload.errors) throw new Error(`gateway error: ${JSON.stringify(m.payload.errors)}`);
    for (const inc of m.payload.incremental ?? []) {
      if (inc.items?.length && !preview) preview = { at, frame: inc.items[0] };
      if (inc.data?.result) {
        if (!preview) throw new Error('the final arrived before any preview');
        return { previewAt: preview.at, finalAt: at, preview: preview.frame, final: inc.data.result as Frame };
      }
    }
    return undefined;
  });
}

/** `runs` progressive requests (after 3 warm-ups) through a gateway on `engine`; medians. */
export async function timeViaGateway(engine: Engine, prompt: string, runs: number): Promise<GatewayImageTimes> {
  const server = await startServer({ engine, port: 0, webDemo: false, log: () => {} });
  let client: BenchWsClient | undefined;
  try {
    client = await connectGraphqlWs(server.url);
    for (let w = 0; w < 3; w++) await request(client, `w${w}`, prompt, 900 + w);
    const rs = [];
    for (let i = 0; i < runs; i++) rs.push(await request(client, `r${i}`, prompt, 1000 + i));
    const last = rs.at(-1)!;
    const r2 = (x: number) => +x.toFixed(2);
    return {
      preview_ms: r2(median(rs.map((r) => r.previewAt))),
      final_ms: r2(median(rs.map((r) => r.finalAt))),
      engine_preview_ms: r2(median(rs.map((r) => r.preview.elapsedMs))),
      engine_final_ms: r2(median(rs.map((r) => r.final.elapsedMs))),
      preview_overhead_ms: r2(median(rs.map((r) => r.previewAt - r.preview.elapsedMs))),
      final_overhead_ms: r2(median(rs.map((r) => r.finalAt - r.final.elapsedMs))),
      preview_base64_bytes: last.preview.image.base64.length,
      final_base64_bytes: last.final.image.base64.length,
      preview_mime: last.preview.image.mimeType,
      final_mime: last.final.image.mimeType,
      runs,
    };
  } finally {
    client?.close();
    await server.close();
  }
}
