// End to end through real sockets: graphql-ws (the `graphql-ws` client) and HTTP (SSE and
// multipart/mixed incremental delivery), against an in-test engine.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { RunningServer } from '../../src/gateway/server.ts';
import { FakeEngine } from './fake-engine.ts';
import { gqlPost, httpStream, mergeIncremental, start, wsClient, wsRun, type Payload } from './helpers.ts';

const UNDERSTAND = `subscription U($input: UnderstandInput!) { understand(input: $input) {
  text tokenIds acceptedTokens draftedTokens steps done finishReason fullText
  usage { promptTokens completionTokens totalTokens }
  timings { queueMs timeToFirstTokenMs totalMs tokensPerSecond }
  speculation { mode drafts meanAcceptedLength acceptanceRate acceptancePerPosition } } }`;
const FRAME = 'stage nfe step seed elapsedMs image { mimeType width height byteLength base64 url sha256 }';
const GENERATE = `mutation G($input: GenerateImageInput!) { generateImage(input: $input) {
  id status mode seed previews @stream(initialCount: 0) { ${FRAME} } ... @defer(label: "final") { result { ${FRAME} } } } }`;

let engine: FakeEngine;
let server: RunningServer;
beforeAll(async () => {
  engine = new FakeEngine({ stepMs: 5, tokens: 6, nfeMs: 5 });
  server = await start({ engine });
});
afterAll(async () => {
  await server?.close();
});

function checkUnderstand(events: Array<Record<string, any>>) {
  const last = events.at(-1)!;
  expect(last.done).toBe(true);
  expect(last.finishReason).toBe('LENGTH');
  expect(last.usage).toEqual({ promptTokens: 3, completionTokens: 6, totalTokens: 9 });
  expect(last.speculation.meanAcceptedLength).toBe(2);
  expect(last.timings.timeToFirstTokenMs).toBeGreaterThan(0);
  const chunks = events.slice(0, -1);
  expect(chunks.every((e) => e.done === false)).toBe(true);
  // nothing lost, whether or not chunks were coalesced
  expect(chunks.map((c) => c.text).join('')).toBe('w0 w1 w2 w3 w4 w5 ');
  expect(chunks.flatMap((c) => c.tokenIds)).toEqual([0, 1, 2, 3, 4, 5]);
  expect(chunks.reduce((n, c) => n + c.steps, 0)).toBe(6);
  expect(chunks.reduce((n, c) => n + c.acceptedTokens, 0)).toBe(12);
  expect(last.fullText).toBe('w0 w1 w2 w3 w4 w5 ');
}

describe('understand subscription', () => {
  it('streams one event per step then a summary over graphql-ws', async () => {
    const client = wsClient(server);
    try {
      const out = await wsRun(client, UNDERSTAND, { input: { prompt: 'describe', speculation: { mode: 'CHAIN', chainLength: 3 } } });
      expect(out.every((p) => !p.errors)).toBe(true);
      checkUnderstand(out.map((p) => p.data!.understand as Record<string, any>));
      expect(engine.requests.understand.at(-1)!.speculation).toEqual({ mode: 'chain', chainLength: 3, treeBudget: undefined, treeTopK: undefined, treeDepth: undefined });
    } finally {
      await client.dispose();
    }
  });

  it('streams over SSE', async () => {
    const r = await httpStream(server, 'text/event-stream', { query: UNDERSTAND, variables: { input: { prompt: 'describe' } } });
    expect(r.status).toBe(200);
    expect(r.contentType).toContain('text/event-stream');
    checkUnderstand(r.payloads.map((p) => p.data!.understand as Record<string, any>));
  });

  it('returns typed, masked errors from the engine', async () => {
    const client = wsClient(server);
    try {
      // a mid-stream failure ends the operation with a graphql-ws `error` message
      const err = await wsRun(client, UNDERSTAND, { input: { prompt: 'explode please' } }).then(
        () => undefined,
        (e) => e.errors,
      );
      expect(err?.[0]?.extensions?.code).toBe('INTERNAL');
      expect(JSON.stringify(err)).not.toContain('/opt/model');
      const err2 = await wsRun(client, UNDERSTAND, { input: { prompt: 'an unknownword here' } }).then(
        () => undefined,
        (e) => e.errors,
      );
      expect(err2?.[0]?.extensions).toEqual({ code: 'UNKNOWN_WORDS', word: 'unknownword' });
      // and over SSE
      const r = await httpStream(server, 'text/event-stream', { query: UNDERSTAND, variables: { input: { prompt: 'explode please' } } });
      expect(JSON.stringify(r.payloads)).not.toContain('/opt/model');
      expect(r.payloads.at(-1)!.errors![0]!.extensions!.code).toBe('INTERNAL');
    } finally {
      await client.dispose();
    }
  });
});

function checkJob(data: Record<string, any>, previews = 1) {
  const job = data.generateImage;
  expect(job.id).toMatch(/[0-9a-f-]{36}/);
  expect(job.mode).toBe('PROGRESSIVE');
  expect(job.seed).toBe(7);
  expect(job.previews).toHaveLength(previews);
  expect(job.previews[0].stage).toBe('PREVIEW');
  expect(job.previews[0].nfe).toBe(1);
  expect(job.result.stage).toBe('FINAL');
  expect(job.result.nfe).toBe(6);
  expect(job.result.seed).toBe(7);
  const img = job.result.image;
  expect(img).toMatchObject({ mimeType: 'image/png', width: 8, height: 8 });
  expect(Buffer.from(img.base64, 'base64').byteLength).toBe(img.byteLength);
  return job;
}

describe('generateImage with @stream/@defer', () => {
  it('delivers the preview first and the final last over graphql-ws', async () => {
    const client = wsClient(server);
    try {
      const out = await wsRun(client, GENERATE, { input: { prompt: 'a red circle', seed: 7 } });
      expect(out.length).toBeGreaterThanOrEqual(3);
      expect(out[0]!.hasNext).toBe(true);
      expect(out.at(-1)!.hasNext).toBe(false);
      // the final arrives in the last payload, after every preview
      const finalIdx = out.findIndex((p) => p.incremental?.some((i) => i.data?.result));
      const previewIdx = out.findIndex((p) => p.incremental?.some((i) => i.items));
      expect(previewIdx).toBeGreaterThan(-1);
      expect(finalIdx).toBeGreaterThan(previewIdx);
      const job = checkJob(mergeIncremental(out));
      // the url is served by the gateway and holds the same bytes
      const res = await fetch(job.result.image.url);
      expect(res.status).toBe(200);
      expect(res.headers.get('content-type')).toBe('image/png');
      expect(Buffer.from(await res.arrayBuffer()).toString('base64')).toBe(job.result.image.base64);
    } finally {
      await client.dispose();
    }
  });

  it('works over multipart/mixed and SSE', async () => {
    for (const accept of ['multipart/mixed', 'text/event-stream'] as const) {
      const r = await httpStream(server, accept, { query: GENERATE, variables: { input: { prompt: 'a red circle', seed: 7 } } });
      expect(r.status).toBe(200);
      expect(r.contentType).toContain(accept);
      expect(r.payloads[0]!.hasNext).toBe(true);
      checkJob(mergeIncremental(r.payloads));
    }
  });

  it('streams intermediate previews and keeps the final', async () => {
    const client = wsClient(server);
    try {
      const out = await wsRun(client, GENERATE, { input: { prompt: 'x', seed: 7, intermediatePreviews: true } });
      const job = mergeIncremental(out).generateImage;
      expect(job.previews.length).toBeGreaterThanOrEqual(1);
      expect(job.previews.length).toBeLessThanOrEqual(5);
      expect(job.result.nfe).toBe(6);
    } finally {
      await client.dispose();
    }
  });

  it('returns the complete object when neither directive is used', async () => {
    const r = await gqlPost(server, { query: `mutation { generateImage(input: { prompt: "x", seed: 7, mode: ONE_STEP }) { id status previews { nfe } result { stage nfe image { sha256 } } } }` });
    expect(r.status).toBe(200);
    expect(r.json.errors).toBeUndefined();
    expect(r.json.data.generateImage.previews).toEqual([]);
    expect(r.json.data.generateImage.result).toMatchObject({ stage: 'FINAL', nfe: 1 });
    expect(engine.requests.generate.at(-1)!.mode).toBe('1nfe');
  });
});

describe('imageJob subscription (no incremental delivery, resume)', () => {
  it('follows a detached job and resumes after a given seq without gaps or duplicates', async () => {
    const r = await gqlPost(server, { query: `mutation { generateImage(input: { prompt: "x", seed: 3 }) { id status } }` });
    const id = r.json.data.generateImage.id as string;
    const client = wsClient(server);
    try {
      const q = `subscription J($id: ID!, $after: Int) { imageJob(id: $id, after: $after) { jobId seq status done error { code } frame { stage nfe image { sha256 } } } }`;
      const all = (await wsRun(client, q, { id })).map((p) => p.data!.imageJob as Record<string, any>);
      expect(all.at(-1)).toMatchObject({ done: true, status: 'SUCCEEDED' });
      expect(all.some((e) => e.frame?.stage === 'FINAL')).toBe(true);
      const seqs = all.map((e) => e.seq);
      expect(seqs).toEqual([...seqs].sort((a, b) => a - b));
      // resume from the middle: exactly the later events
      const after = seqs[1];
      const rest = (await wsRun(client, q, { id, after })).map((p) => p.data!.imageJob as Record<string, any>);
      expect(rest.map((e) => e.seq)).toEqual(seqs.filter((s) => s > after));
      // the job is still queryable
      const j = await gqlPost(server, { query: `query($id: ID!) { job(id: $id) { status result { nfe } } }`, variables: { id } });
      expect(j.json.data.job).toEqual({ status: 'SUCCEEDED', result: { nfe: 6 } });
    } finally {
      await client.dispose();
    }
  });

  it('types unknown job ids', async () => {
    const client = wsClient(server);
    try {
      const out = await wsRun(client, `subscription { imageJob(id: "nope") { seq } }`).catch((e) => e.errors as Payload[]);
      expect(JSON.stringify(out)).toContain('JOB_NOT_FOUND');
    } finally {
      await client.dispose();
    }
  });
});

describe('queries', () => {
  it('models and health', async () => {
    const r = await gqlPost(server, { query: '{ models { name capabilities { understand edit } imageSize { width } vocabularySize } health { status ready sessions } }' });
    expect(r.json.data.models[0]).toEqual({ name: 'fake', capabilities: { understand: true, edit: true }, imageSize: { width: 8 }, vocabularySize: 100 });
    expect(r.json.data.health).toMatchObject({ status: 'ok', ready: true });
  });

  it('serves /health, /ready and /metrics', async () => {
    const base = server.url.replace(/\/graphql$/, '');
    expect((await fetch(`${base}/health`)).status).toBe(200);
    expect((await fetch(`${base}/ready`)).status).toBe(200);
    const m = await (await fetch(`${base}/metrics`)).text();
    for (const name of [
      'hyperbagel_gateway_active_streams',
      'hyperbagel_gateway_queue_depth',
      'hyperbagel_gateway_ttft_seconds_count',
      'hyperbagel_gateway_tokens_per_second_bucket',
      'hyperbagel_gateway_acceptance_length_sum',
      'hyperbagel_gateway_preview_latency_seconds_count',
      'hyperbagel_gateway_dropped_previews_total',
    ])
      expect(m).toContain(name);
    // understand streams above were observed
    const ttft = /hyperbagel_gateway_ttft_seconds_count (\d+)/.exec(m);
    expect(Number(ttft![1])).toBeGreaterThan(0);
  });
});
