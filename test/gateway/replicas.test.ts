// Several replicas behind one load balancer: ids name their owner, and any replica serves any job
// or session by forwarding to the owner (src/gateway/replicas.ts, relay.ts). Two real gateways in
// this process, each with its own engine, talking over HTTP/SSE as separate machines would.
import type { Client } from 'graphql-ws';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { UsageError } from '../../src/cli/args.ts';
import { parseServeArgs, replicaFrom, serveOptions } from '../../src/cli/commands/serve.ts';
import { GatewayError } from '../../src/gateway/errors.ts';
import { iterateJob } from '../../src/gateway/jobs.ts';
import { RELAYED_SUBSCRIPTIONS, RelayedJob } from '../../src/gateway/relay.ts';
import { PeerClient, transient, type Json } from '../../src/gateway/peer-client.ts';
import { ownerOf, parsePeers } from '../../src/gateway/replicas.ts';
import type { RunningServer } from '../../src/gateway/server.ts';
import { FakeEngine } from './fake-engine.ts';
import { gqlPost, httpStream, start, waitFor, wsClient, wsRun, type Payload } from './helpers.ts';

const FRAME = 'frame { stage nfe image { sha256 base64 } }';
const EVENTS = `subscription($id: ID!, $after: Int) { imageJob(id: $id, after: $after) { jobId seq status done error { code } ${FRAME} } }`;
const events = (ps: Payload[]) => ps.map((p) => (p.data as any).imageJob);
const errorOf = (r: { json: any }) => r.json.errors?.[0]?.extensions?.code;
/** the code of the first error a streamed operation got (graphql-ws sends a refused subscribe as a `next` with errors) */
const codeOf = (out: Payload[]) => (out.find((p) => p.errors)?.errors?.[0] as any)?.extensions?.code;
const clients: Client[] = [];
/** a graphql-ws client, disposed after the tests */
function ws(s: RunningServer, params?: Record<string, unknown>): Client {
  const c = wsClient(s, params);
  clients.push(c);
  return c;
}
afterAll(async () => {
  await Promise.all(clients.map((c) => c.dispose()));
});

/** Two replicas, a and b, each knowing the other; `keys` turns auth on for both. */
async function pair(keys?: string[]) {
  const peersA = new Map<string, string>();
  const peersB = new Map<string, string>();
  const engineA = new FakeEngine({ nfeMs: 15 });
  const engineB = new FakeEngine({ nfeMs: 15 });
  const a = await start({ engine: engineA, apiKeys: keys, replica: { id: 'a', peers: peersA, requestTimeoutMs: 2000 } });
  const b = await start({ engine: engineB, apiKeys: keys, replica: { id: 'b', peers: peersB, requestTimeoutMs: 2000 } });
  peersA.set('b', b.url);
  peersB.set('a', a.url);
  return { a, b, engineA, engineB, peersB };
}

describe('replicas', () => {
  let r: Awaited<ReturnType<typeof pair>>;
  beforeAll(async () => {
    r = await pair();
  });
  afterAll(async () => {
    await r.a.close();
    await r.b.close();
  });

  /** A detached job started on replica a (its mutation selects no frames). */
  async function jobOnA(input: Record<string, unknown> = {}): Promise<string> {
    const res = await gqlPost(r.a, { query: 'mutation($i: GenerateImageInput!) { generateImage(input: $i) { id } }', variables: { i: { prompt: 'a red circle', seed: 7, intermediatePreviews: true, ...input } } });
    return res.json.data.generateImage.id;
  }

  it('hands out job and session ids that name the replica', async () => {
    const id = await jobOnA();
    expect(ownerOf(id)).toBe('a');
    expect(id).toMatch(/^a\.[0-9a-f-]{36}$/);
    const s = await gqlPost(r.b, { query: 'mutation { createSession }' });
    expect(s.json.data.createSession).toMatch(/^b\./);
  });

  it('streams a job started on one replica to a client of another, with the owner\'s numbering, bytes and end', async () => {
    const id = await jobOnA();
    const viaB = events(await wsRun(ws(r.b), EVENTS, { id }));
    const onA = events(await wsRun(ws(r.a), EVENTS, { id }));
    expect(viaB.map((e: any) => e.seq)).toEqual(onA.map((e: any) => e.seq));
    expect(viaB.map((e: any) => e.seq)).toEqual(viaB.map((_: unknown, i: number) => i + 1)); // no gaps, no duplicates
    expect(viaB).toEqual(onA); // the same events, frames byte for byte
    expect(viaB.at(-1)).toMatchObject({ jobId: id, status: 'SUCCEEDED', done: true });
    expect(viaB.filter((e: any) => e.frame?.stage === 'PREVIEW')).toHaveLength(5);
    expect(r.engineB.stats.generateStarted).toBe(0); // b ran no model work
  });

  it('resumes on another replica from any sequence number, without duplicates or gaps', async () => {
    const id = await jobOnA();
    const all = events(await wsRun(ws(r.a), EVENTS, { id }));
    for (const after of [0, 1, 3, all.length - 1, all.length]) {
      const rest = events((await httpStream(r.b, 'text/event-stream', { query: EVENTS, variables: { id, after } })).payloads);
      expect(rest.map((e: any) => e.seq)).toEqual(all.slice(after).map((e: any) => e.seq));
    }
  });

  it('resumes mid-job: the first connection drops, the second (to the other replica) continues after the last seq seen', async () => {
    const id = await jobOnA({ intermediatePreviews: true });
    const first = events(await wsRun(ws(r.a), EVENTS, { id }, (_p, got) => (got.length >= 2 ? 'stop' : undefined)));
    const last = first.at(-1).seq;
    const rest = events(await wsRun(ws(r.b), EVENTS, { id, after: last }));
    const seqs = [...first, ...rest].map((e: any) => e.seq);
    expect(seqs).toEqual(seqs.map((_, i) => i + 1));
    expect(rest.at(-1)).toMatchObject({ status: 'SUCCEEDED', done: true });
  });

  it('tells where a job\'s log ends (lastSeq), the same through either replica; resuming from it gives nothing more', async () => {
    const id = await jobOnA({ mode: 'ONE_STEP' });
    const all = events(await wsRun(ws(r.a), EVENTS, { id }));
    const q = { query: 'query($id: ID!) { job(id: $id) { lastSeq } }', variables: { id } };
    expect((await gqlPost(r.a, q)).json.data.job.lastSeq).toBe(all.at(-1).seq);
    expect((await gqlPost(r.b, q)).json.data.job.lastSeq).toBe(all.at(-1).seq);
    expect(await wsRun(ws(r.b), EVENTS, { id, after: all.at(-1).seq })).toEqual([]);
  });

  it('answers job(id) through another replica: status, mode, seed and the final frame', async () => {
    const id = await jobOnA({ mode: 'SIX_STEP' });
    const q = { query: 'query($id: ID!) { job(id: $id) { id status mode seed result { stage nfe image { sha256 } } } }', variables: { id } };
    const viaB = await gqlPost(r.b, q);
    expect(viaB.json.errors).toBeUndefined();
    const onA = await gqlPost(r.a, q);
    expect(viaB.json.data.job).toMatchObject({ id, mode: 'SIX_STEP', seed: 7, result: { stage: 'FINAL', nfe: 6, image: { sha256: onA.json.data.job.result.image.sha256 } } });
    const status = await gqlPost(r.b, { query: 'query($id: ID!) { job(id: $id) { status } }', variables: { id } });
    expect(status.json.data.job.status).toBe('SUCCEEDED');
  });

  it('serves Image.url for a relayed frame from the replica the client asked', async () => {
    const id = await jobOnA({ mode: 'ONE_STEP' });
    const res = await gqlPost(r.b, { query: 'query($id: ID!) { job(id: $id) { result { image { url sha256 } } } }', variables: { id } });
    const { url } = res.json.data.job.result.image;
    expect(url.startsWith(r.b.url.replace('/graphql', ''))).toBe(true);
    const img = await fetch(url);
    expect(img.status).toBe(200);
    expect(img.headers.get('content-type')).toBe('image/png');
    expect(new URL(url).pathname).toMatch(/^\/images\/b_[0-9a-f]{32}\.png$/);
  });

  it('serves an image URL any replica minted from any replica (the load balancer may send the fetch elsewhere)', async () => {
    const id = await jobOnA({ mode: 'ONE_STEP' });
    const res = await gqlPost(r.a, { query: 'query($id: ID!) { job(id: $id) { result { image { url sha256 } } } }', variables: { id } });
    const { url, sha256 } = res.json.data.job.result.image;
    const path = new URL(url).pathname;
    expect(path).toMatch(/^\/images\/a_[0-9a-f]{32}\.png$/);
    const direct = Buffer.from(await (await fetch(url)).arrayBuffer());
    const viaB = await fetch(r.b.url.replace('/graphql', path));
    expect(viaB.status).toBe(200);
    expect(viaB.headers.get('content-type')).toBe('image/png');
    expect(viaB.headers.get('etag')).toBe(`"${sha256}"`);
    expect(Buffer.from(await viaB.arrayBuffer()).equals(direct)).toBe(true);
    // tokens nobody has: 404 from either, including one naming a replica b has no address for
    expect((await fetch(r.b.url.replace('/graphql', '/images/a_' + '0'.repeat(32) + '.png'))).status).toBe(404);
    expect((await fetch(r.b.url.replace('/graphql', '/images/zz_' + '0'.repeat(32) + '.png'))).status).toBe(404);
    expect((await fetch(r.b.url.replace('/graphql', '/images/a_xyz.png'))).status).toBe(404);
  });

  it('cancels a job on its owner through another replica', async () => {
    const id = await jobOnA({ mode: 'BASELINE', steps: 100 });
    await waitFor(() => r.engineA.stats.active > 0, 'job running on a');
    const aborted = r.engineA.stats.generateAborted;
    const res = await gqlPost(r.b, { query: 'mutation($id: ID!) { cancelJob(id: $id) }', variables: { id } });
    expect(res.json.data.cancelJob).toBe(true);
    await waitFor(() => r.engineA.stats.generateAborted === aborted + 1, 'model work stopped on a');
    const again = await gqlPost(r.b, { query: 'mutation($id: ID!) { cancelJob(id: $id) }', variables: { id } });
    expect(again.json.data.cancelJob).toBe(false);
  });

  it('refuses unknown ids with JOB_NOT_FOUND / SESSION_NOT_FOUND, naming a replica it has no address for', async () => {
    const missing = 'a.00000000-0000-0000-0000-000000000000';
    expect((await gqlPost(r.b, { query: `{ job(id: "${missing}") { id } }` })).json.data.job).toBeNull();
    expect(errorOf(await gqlPost(r.b, { query: `mutation { cancelJob(id: "${missing}") }` }))).toBe('JOB_NOT_FOUND');
    expect(codeOf(await wsRun(ws(r.b), EVENTS, { id: missing }))).toBe('JOB_NOT_FOUND');
    // job(id) answers null for any job this system does not have, whichever replica the id names
    expect((await gqlPost(r.b, { query: '{ job(id: "zz.1") { id } }' })).json).toEqual({ data: { job: null } });
    const stranger = await gqlPost(r.b, { query: 'mutation { cancelJob(id: "zz.1") }' });
    expect(errorOf(stranger)).toBe('JOB_NOT_FOUND');
    expect(stranger.json.errors[0].message).toMatch(/replica "zz"/);
    expect(codeOf(await wsRun(ws(r.b), EVENTS, { id: 'zz.1' }))).toBe('JOB_NOT_FOUND');
    // ids are client input: only real peers become metric labels
    for (let i = 0; i < 20; i++) await gqlPost(r.b, { query: `{ job(id: "junk${i}.x") { id } }` });
    await fetch(r.b.url.replace('/graphql', `/images/junk_${'0'.repeat(32)}.png`));
    expect(r.b.runtime.metrics.render()).not.toMatch(/replica="(junk|zz)/);
    expect(errorOf(await gqlPost(r.b, { query: 'mutation { closeSession(id: "zz.1") }' }))).toBe('SESSION_NOT_FOUND');
    expect(codeOf(await wsRun(ws(r.b), 'subscription { understand(input: { prompt: "hi", sessionId: "zz.1" }) { text } }'))).toBe('SESSION_NOT_FOUND');
  });

  it('runs understand turns of a session another replica owns there, and closes it from anywhere', async () => {
    const sid = (await gqlPost(r.a, { query: 'mutation { createSession }' })).json.data.createSession;
    const q = 'subscription($i: UnderstandInput!) { understand(input: $i) { text done finishReason usage { totalTokens } inputImage { source } } }';
    const startedA = r.engineA.stats.understandStarted;
    const startedB = r.engineB.stats.understandStarted;
    const out = await wsRun(ws(r.b), q, { i: { prompt: 'what is this', sessionId: sid, maxTokens: 3 } });
    const evs = out.map((p) => (p.data as any).understand);
    expect(evs.map((e: any) => e.text).join('')).toBe('w0 w1 w2 ');
    expect(evs.at(-1)).toMatchObject({ done: true, finishReason: 'LENGTH', usage: { totalTokens: 6 } });
    expect(r.engineA.stats.understandStarted).toBe(startedA + 1);
    expect(r.engineB.stats.understandStarted).toBe(startedB);
    // the session on a kept the turn (its context grew), and a closes it when b is asked to
    expect(r.engineA.requests.understand.at(-1)!.session).toBeDefined();
    const closed = await gqlPost(r.b, { query: 'mutation($id: ID!) { closeSession(id: $id) }', variables: { id: sid } });
    expect(closed.json.data.closeSession).toBe(true);
    expect(codeOf(await wsRun(ws(r.b), q, { i: { prompt: 'and now', sessionId: sid } }))).toBe('SESSION_NOT_FOUND');
  });

  it('forwards an image sent to a remote session as its bytes, whatever way it came', async () => {
    const sid = (await gqlPost(r.a, { query: 'mutation { createSession }' })).json.data.createSession;
    const png = (await import('sharp')).default;
    const bytes = await png({ create: { width: 12, height: 10, channels: 3, background: '#ff0000' } }).png().toBuffer();
    const q = 'subscription($i: UnderstandInput!) { understand(input: $i) { done inputImage { originalWidth originalHeight source } } }';
    const out = await wsRun(ws(r.b), q, { i: { prompt: 'what is this', sessionId: sid, image: { dataUrl: `data:image/png;base64,${bytes.toString('base64')}` }, maxTokens: 1 } });
    expect((out.at(-1)!.data as any).understand.inputImage).toEqual({ originalWidth: 12, originalHeight: 10, source: 'REQUEST' });
    expect(r.engineA.requests.understand.at(-1)!.image).toMatchObject({ width: 12, height: 10 });
    // a malformed image is refused with the same typed error as locally, before anything is forwarded
    expect(codeOf(await wsRun(ws(r.b), q, { i: { prompt: 'x', sessionId: sid, image: { base64: '!!!' } } }))).toBe('BAD_IMAGE');
  });

  it('starts image jobs on the replica that owns their session, and cancels them there when the client leaves', async () => {
    const sid = (await gqlPost(r.a, { query: 'mutation { createSession }' })).json.data.createSession;
    const started = r.engineA.stats.generateStarted;
    const res = await gqlPost(r.b, { query: 'mutation($i: GenerateImageInput!) { generateImage(input: $i) { id status result { stage image { sha256 } } } }', variables: { i: { prompt: 'a red circle', sessionId: sid, mode: 'SIX_STEP' } } });
    expect(res.json.errors).toBeUndefined();
    expect(ownerOf(res.json.data.generateImage.id)).toBe('a');
    expect(res.json.data.generateImage.result.stage).toBe('FINAL');
    expect(r.engineA.stats.generateStarted).toBe(started + 1);
    expect(r.engineB.stats.generateStarted).toBe(0);
    // the session on a now holds that image: an edit through b without an image edits it
    const edit = await gqlPost(r.b, { query: 'mutation($i: EditImageInput!) { editImage(input: $i) { result { sourceImage { source } } } }', variables: { i: { instruction: 'make it blue', sessionId: sid, mode: 'SIX_STEP' } } });
    expect(edit.json.data.editImage.result.sourceImage.source).toBe('SESSION');

    // attached (selects previews) through b; the client stops after the first preview: a cancels the work
    const aborted = r.engineA.stats.generateAborted;
    await wsRun(
      ws(r.b),
      'mutation($i: GenerateImageInput!) { generateImage(input: $i) { id previews @stream { stage } } }',
      { i: { prompt: 'a red circle', sessionId: sid, mode: 'BASELINE', steps: 100 } },
      (_p, all) => (all.length >= 1 ? 'stop' : undefined),
    );
    await waitFor(() => r.engineA.stats.generateAborted === aborted + 1, 'a cancelled the job b\'s client left');
    await waitFor(() => r.b.runtime.activeStreamCount === 0, 'b closed its stream of that job');
  });

  it('counts forwarded operations on /metrics', async () => {
    const text = await (await fetch(r.b.url.replace('/graphql', '/metrics'))).text();
    expect(text).toMatch(/hyperbagel_gateway_forwarded_total\{field="imageJob",replica="a"\} [1-9]/);
  });

  it('ends at once, without events, a resume through another replica from a finished job\'s last event; past it, OUT_OF_RANGE', async () => {
    const id = await jobOnA({ mode: 'ONE_STEP' });
    const all = events(await wsRun(ws(r.a), EVENTS, { id }));
    // b's calls to the owner, counted: no retries of a "lost" connection
    const peers = r.b.runtime.relay!.peers;
    const { subscribe, request } = peers;
    const calls = { subscribe: 0, request: 0 };
    peers.subscribe = (...args: Parameters<typeof subscribe>) => {
      calls.subscribe++;
      return subscribe.apply(peers, args);
    };
    peers.request = (...args: Parameters<typeof request>) => {
      calls.request++;
      return request.apply(peers, args);
    };
    try {
      expect(await wsRun(ws(r.b), EVENTS, { id, after: all.length })).toEqual([]);
      // the job's summary, then its stream from one event before `after`: the terminal event, once
      expect(calls).toEqual({ subscribe: 1, request: 1 });
      // (graphql-ws: an error thrown by the subscribe resolver is one result with errors, then complete)
      const past = await wsRun(ws(r.b), EVENTS, { id, after: all.length + 5 });
      expect(past).toHaveLength(1);
      expect((past[0] as { errors: unknown[] }).errors[0]).toMatchObject({ extensions: { code: 'OUT_OF_RANGE' }, message: `after must be at most the job's lastSeq, ${all.length}; got ${all.length + 5}` });
      expect(calls).toEqual({ subscribe: 1, request: 2 }); // only the summary, which refuses it
    } finally {
      peers.subscribe = subscribe;
      peers.request = request;
    }
  });

  it('cancels a forwarded attached job when its plain-HTTP client goes away, and frees the session', async () => {
    const sid = (await gqlPost(r.a, { query: 'mutation { createSession }' })).json.data.createSession;
    const aborted = r.engineA.stats.generateAborted;
    const ac = new AbortController();
    const req = fetch(r.b.url, {
      method: 'POST',
      signal: ac.signal,
      headers: { 'content-type': 'application/json', accept: 'application/json' },
      body: JSON.stringify({ query: 'mutation($i: GenerateImageInput!) { generateImage(input: $i) { id result { stage } } }', variables: { i: { prompt: 'a red circle', sessionId: sid, mode: 'BASELINE', steps: 100 } } }),
    }).catch(() => undefined);
    await waitFor(() => r.engineA.stats.active > 0, 'the job running on a');
    ac.abort();
    await req;
    await waitFor(() => r.engineA.stats.generateAborted === aborted + 1, 'a cancelled the work');
    await waitFor(() => r.b.runtime.activeStreamCount === 0, 'b closed its stream');
    await waitFor(() => r.a.runtime.activeStreamCount === 0, 'a closed the relay');
    const closed = await gqlPost(r.b, { query: 'mutation($id: ID!) { closeSession(id: $id) }', variables: { id: sid } });
    expect(closed.json.data?.closeSession, JSON.stringify(closed.json)).toBe(true);
  });

  it('refuses image paths other than a token: nothing of the client\'s path reaches a peer', async () => {
    const { get } = await import('node:http');
    const raw = (path: string) =>
      new Promise<number>((resolve) => get({ host: '127.0.0.1', port: new URL(r.b.url).port, path }, (res) => (res.resume(), resolve(res.statusCode!))));
    const token = 'a_' + '0'.repeat(32);
    expect(await raw(`/images/${token}.png/../../metrics`)).toBe(404);
    expect(await raw(`/images/${token}.png/../../graphql`)).toBe(404);
    expect(await raw(`/images/${token}.png.exe`)).toBe(404);
  });

  it('fails with UNAVAILABLE when the owner does not answer', async () => {
    const { createServer } = await import('node:net');
    const closed = createServer();
    await new Promise<void>((res) => closed.listen(0, '127.0.0.1', res));
    const port = (closed.address() as { port: number }).port;
    await new Promise((res) => closed.close(res));
    r.peersB.set('c', `http://127.0.0.1:${port}/graphql`); // nothing listens there any more
    const res = await gqlPost(r.b, { query: '{ job(id: "c.1") { id } }' });
    expect(errorOf(res)).toBe('UNAVAILABLE');
    expect(res.json.errors[0].message).toMatch(/ECONNREFUSED/);
    expect(res.json.errors[0].extensions).toEqual({ code: 'UNAVAILABLE', replica: 'c' }); // nothing internal
    expect((await fetch(r.b.url.replace('/graphql', '/images/c_' + '0'.repeat(32) + '.png'))).status).toBe(502);
    expect(res.json.errors[0].message).toMatch(/Replica "c" did not answer/);
    expect(codeOf(await wsRun(ws(r.b), EVENTS, { id: 'c.1' }))).toBe('UNAVAILABLE');
  });
});

describe('replica misconfiguration and shutdown', () => {
  it('never forwards a forwarded request: peers whose addresses do not match their ids get a NOT_FOUND that says so, not a loop', async () => {
    const r = await pair();
    try {
      // both believe replica "x" lives at the other's address
      r.peersB.set('x', r.a.url);
      (r.a.runtime.relay!.peers.config.peers as Map<string, string>).set('x', r.b.url);
      const res = await gqlPost(r.b, { query: '{ job(id: "x.1") { id } }' });
      expect(errorOf(res)).toBe('JOB_NOT_FOUND');
      expect(res.json.errors[0].message).toMatch(/marked as from replica "b"\) to this replica \("a"\), but the job belongs to "x".*its --peer URL for "x" points here/);
      expect(errorOf(await gqlPost(r.b, { query: 'mutation { closeSession(id: "x.1") }' }))).toBe('SESSION_NOT_FOUND');
      expect(r.a.runtime.metrics.forwarded.get({ field: 'job', replica: 'x' })).toBe(0);
    } finally {
      await r.a.close();
      await r.b.close();
    }
  });

  it('tells a client when the owner refuses the forwarded request (replicas that do not share API keys)', async () => {
    const peers = new Map<string, string>();
    const logs: string[] = [];
    const a = await start({ engine: new FakeEngine(), apiKeys: ['only-a'], replica: { id: 'a', peers: new Map(), requestTimeoutMs: 2000 } });
    const b = await start({ engine: new FakeEngine(), log: (m) => logs.push(m), replica: { id: 'b', peers, requestTimeoutMs: 2000 } });
    peers.set('a', a.url);
    try {
      const res = await gqlPost(b, { query: '{ job(id: "a.1") { id } }' });
      expect(errorOf(res)).toBe('UNAVAILABLE');
      expect(res.json.errors[0].message).toMatch(/Replica "a" refused a request forwarded from this replica \(HTTP 401\); replicas must share their API keys/);
      // the owner's own words go to this replica's log (they may quote the peer URL's host)
      expect(logs.join('\n')).toMatch(/WARNING: peer a \(.*\) refuses requests forwarded from this replica \(HTTP 401: "Missing or invalid API key"\)/);
      expect(codeOf(await wsRun(ws(b), EVENTS, { id: 'a.1' }))).toBe('UNAVAILABLE');
    } finally {
      await a.close();
      await b.close();
    }
  });

  it('survives a peer that answers garbage: not JSON, an HTML page, a stream that is not SSE', async () => {
    const { createServer } = await import('node:http');
    let mode = 'html';
    const junk = createServer((req, res) => {
      req.resume();
      if (mode === 'html') res.writeHead(502, { 'content-type': 'text/html' }).end('<html>bad gateway</html>');
      else if (mode === 'json-without-data') res.writeHead(200, { 'content-type': 'application/json' }).end('{"hello":1}');
      else res.writeHead(200, { 'content-type': 'text/event-stream' }).end('event: next\ndata: {not json\n\n');
    });
    await new Promise<void>((r) => junk.listen(0, '127.0.0.1', r));
    const port = (junk.address() as { port: number }).port;
    const peers = new Map([['j', `http://127.0.0.1:${port}/graphql`]]);
    const b = await start({ engine: new FakeEngine(), replica: { id: 'b', peers, requestTimeoutMs: 2000 } });
    try {
      for (const m of ['html', 'json-without-data']) {
        mode = m;
        const res = await gqlPost(b, { query: '{ job(id: "j.1") { id } }' });
        expect(errorOf(res), m).toBe('UNAVAILABLE');
        expect(res.json.errors[0].message).toMatch(m === 'html' ? /Replica "j" did not answer \(HTTP 502\)/ : /^Replica "j" answered HTTP 200, not as a gateway: check the --peer URL given for it$/);
      }
      // a job the junk peer "has" ({"job":...} is never sent), so the subscription fails at its first question
      mode = 'html';
      expect(codeOf(await wsRun(ws(b), EVENTS, { id: 'j.1' }))).toBe('UNAVAILABLE');
      // a stream whose event is not JSON, and one that is HTML: typed errors from the peer client itself
      const client = new PeerClient({ id: 'b', peers, requestTimeoutMs: 2000 });
      const drain = async () => {
        for await (const _ of client.subscribe('j', peers.get('j')!, 'subscription { x }', {}, {}, new AbortController().signal));
      };
      mode = 'sse';
      await expect(drain()).rejects.toMatchObject({ code: 'UNAVAILABLE', message: expect.stringMatching(/Replica "j" did not answer \(connection lost/) });
      mode = 'html';
      await expect(drain()).rejects.toMatchObject({ code: 'UNAVAILABLE', message: expect.stringMatching(/HTTP 502/) });
      // the gateway is still fine
      expect((await gqlPost(b, { query: '{ health { status } }' })).json.data.health.status).toBe('ok');
    } finally {
      await b.close();
      junk.close();
    }
  });

  it('warns at start when a peer answers as another replica, once that peer is up', async () => {
    const single = await start({ engine: new FakeEngine() });
    const impostor = await start({ engine: new FakeEngine(), replica: { id: 'c', peers: new Map(), requestTimeoutMs: 1000 } });
    const logs: string[] = [];
    const a = await start({
      engine: new FakeEngine(),
      log: (m) => logs.push(m),
      replica: { id: 'a', peers: new Map([['b', single.url], ['c', impostor.url]]), requestTimeoutMs: 1000 },
    });
    try {
      await waitFor(() => logs.some((l) => l.includes('peer b')), 'the check of peer b');
      expect(logs.join('\n')).toMatch(/WARNING: peer b \(http:\/\/127\.0\.0\.1:\d+\/graphql\) answers as a server with no replica id/);
      await new Promise((r) => setTimeout(r, 200));
      expect(logs.join('\n')).not.toMatch(/peer c/); // c is who it says
      expect(await (await fetch(impostor.url.replace('/graphql', '/health'))).json()).toMatchObject({ replica: 'c' });
    } finally {
      await a.close();
      await single.close();
      await impostor.close();
    }
  });

  it('does not hang on an owner that stops sending (frozen): the stream fails with UNAVAILABLE after its retries', async () => {
    const { createServer } = await import('node:http');
    const streams: Array<{ destroy(): void }> = [];
    const frozen = createServer((req, res) => {
      req.resume();
      if (req.headers.accept === 'text/event-stream') {
        res.writeHead(200, { 'content-type': 'text/event-stream' });
        res.flushHeaders(); // then silence: no events, no keep-alives
        streams.push(res.socket!);
      } else res.writeHead(200, { 'content-type': 'application/json' }).end(JSON.stringify({ data: { job: { id: 'f.1', status: 'RUNNING', mode: 'PROGRESSIVE', seed: 1 } } }));
    });
    await new Promise<void>((res) => frozen.listen(0, '127.0.0.1', res));
    const peers = new Map([['f', `http://127.0.0.1:${(frozen.address() as { port: number }).port}/graphql`]]);
    const b = await start({ engine: new FakeEngine(), replica: { id: 'b', peers, requestTimeoutMs: 1000, streamIdleMs: 300 } });
    try {
      // the subscribe succeeded (the owner answered the job query), so the failure is the stream's `error` message
      const code = await wsRun(ws(b), EVENTS, { id: 'f.1' }).then(codeOf, (e) => e.errors?.[0]?.extensions?.code);
      expect(code).toBe('UNAVAILABLE');
      expect(streams.length).toBe(4); // the first try and three retries
      await waitFor(() => b.runtime.activeStreamCount === 0, 'b closed the stream');
    } finally {
      await b.close();
      for (const s of streams) s.destroy();
      frozen.close();
    }
  }, 20_000); // about 3.5 s; one wait for the default 30 s idle timeout instead of streamIdleMs would exceed it

  it('says which replica it is in health', async () => {
    const r = await pair();
    try {
      expect((await gqlPost(r.a, { query: '{ health { replica } }' })).json.data.health.replica).toBe('a');
      expect((await gqlPost(r.b, { query: '{ health { replica } }' })).json.data.health.replica).toBe('b');
      const single = await start({ engine: new FakeEngine() });
      expect((await gqlPost(single, { query: '{ health { replica } }' })).json.data.health.replica).toBeNull();
      const id = (await gqlPost(single, { query: 'mutation { generateImage(input: { prompt: "x", mode: ONE_STEP }) { id } }' })).json.data.generateImage.id;
      expect(id).toMatch(/^[0-9a-f-]{36}$/); // one server: plain ids, nothing forwarded
      await single.close();
    } finally {
      await r.a.close();
      await r.b.close();
    }
  });

  it('closes its connections to the owner when it shuts down, and the owner sees the watcher go', async () => {
    const r = await pair();
    try {
      const id = (await gqlPost(r.a, { query: 'mutation { generateImage(input: { prompt: "x", mode: BASELINE, steps: 200 }) { id } }' })).json.data.generateImage.id;
      const got: Payload[] = [];
      void wsRun(ws(r.b), EVENTS, { id }, (p) => void got.push(p)).catch(() => undefined);
      await waitFor(() => r.a.runtime.activeStreamCount === 1 && got.length >= 1, 'the relay watching the job on a');
      await r.b.close();
      await waitFor(() => r.a.runtime.activeStreamCount === 0, 'a sees the relay gone');
      const status = await gqlPost(r.a, { query: `{ job(id: "${id}") { status } }` });
      expect(status.json.data.job.status).toBe('RUNNING'); // a detached job keeps running for later watchers
    } finally {
      await r.a.close();
    }
  });
});

describe('replicas: what a review found', () => {
  it('survives a bad image sent with another replica\'s session (the decode is never started for a forwarded edit)', async () => {
    const b = await start({ engine: new FakeEngine(), replica: { id: 'b', peers: new Map(), requestTimeoutMs: 1000 } });
    try {
      const edit = 'mutation($i: EditImageInput!) { editImage(input: $i) { id } }';
      const bad = { instruction: 'make it blue', sessionId: 'zz.1', image: { base64: 'bm90IGFuIGltYWdl' } };
      expect(errorOf(await gqlPost(b, { query: edit, variables: { i: bad } }))).toBe('SESSION_NOT_FOUND');
      // also when the request claims to be forwarded (remoteOwner throws first)
      expect(errorOf(await gqlPost(b, { query: edit, variables: { i: bad } }, { 'hyperbagel-forwarded-by': 'x' }))).toBe('SESSION_NOT_FOUND');
      await new Promise((r) => setTimeout(r, 100)); // an unhandled rejection would have ended the process by now
      expect((await gqlPost(b, { query: '{ health { status } }' })).json.data.health.status).toBe('ok');
    } finally {
      await b.close();
    }
  });

  /** Replicas a (one job slot, taken by a 1 s understand stream) and b, and a session on a. */
  async function busyOwner(requestTimeoutMs: number) {
    const peers = new Map<string, string>();
    const engineA = new FakeEngine({ stepMs: 40 });
    const a = await start({ engine: engineA, limits: { maxConcurrentJobs: 1 }, replica: { id: 'a', peers: new Map(), requestTimeoutMs } });
    const b = await start({ engine: new FakeEngine(), replica: { id: 'b', peers, requestTimeoutMs } });
    peers.set('a', a.url);
    const sid = (await gqlPost(a, { query: 'mutation { createSession }' })).json.data.createSession as string;
    const busy = wsRun(ws(a), 'subscription { understand(input: { prompt: "hold the slot", maxTokens: 25 }) { done } }');
    await waitFor(() => engineA.stats.active > 0, 'the slot taken');
    return { a, b, sid, busy };
  }

  it('lets a forwarded understand wait in the owner\'s queue longer than the request timeout, as a direct client may', async () => {
    const { a, b, sid, busy } = await busyOwner(300);
    try {
      const out = await wsRun(ws(b), 'subscription($i: UnderstandInput!) { understand(input: $i) { done } }', { i: { prompt: 'then me', sessionId: sid, maxTokens: 2 } });
      expect(out.at(-1)).toMatchObject({ data: { understand: { done: true } } });
      await busy;
    } finally {
      await a.close();
      await b.close();
    }
  });

  it('releases a forwarded understand stream whose SSE client leaves before the first event', async () => {
    const { a, b, sid, busy } = await busyOwner(2000);
    try {
      const ac = new AbortController();
      const pending = fetch(b.url, {
        method: 'POST',
        signal: ac.signal,
        headers: { 'content-type': 'application/json', accept: 'text/event-stream' },
        body: JSON.stringify({ query: `subscription { understand(input: { prompt: "then me", sessionId: "${sid}" }) { done } }` }),
      }).catch(() => undefined);
      await waitFor(() => b.runtime.activeStreamCount === 1, 'the forwarded stream open on b');
      ac.abort();
      await pending;
      await waitFor(() => b.runtime.activeStreamCount === 0, 'b released it');
      await busy;
      await waitFor(() => a.runtime.activeStreamCount === 0, 'a released it');
    } finally {
      await a.close();
      await b.close();
    }
  });

  it('starts a forwarded attached job attached on its owner: the owner cancels it when the forwarding replica goes', async () => {
    const r = await pair();
    try {
      const sid = (await gqlPost(r.a, { query: 'mutation { createSession }' })).json.data.createSession;
      const aborted = r.engineA.stats.generateAborted;
      void wsRun(ws(r.b), 'mutation($i: GenerateImageInput!) { generateImage(input: $i) { id result { stage } } }', { i: { prompt: 'a red circle', sessionId: sid, mode: 'BASELINE', steps: 200 } }).catch(() => undefined);
      await waitFor(() => r.engineA.stats.active > 0, 'the job running on a');
      await r.b.close(); // no cancelJob is sent: the open request closing is what tells a
      await waitFor(() => r.engineA.stats.generateAborted === aborted + 1, 'a cancelled the job');
      await waitFor(() => r.a.runtime.activeStreamCount === 0, 'a released it');
      expect((await gqlPost(r.a, { query: 'mutation($id: ID!) { closeSession(id: $id) }', variables: { id: sid } })).json.data.closeSession).toBe(true);
    } finally {
      await r.a.close();
    }
  });

  it('relays every field the schema has for the events it forwards (a new schema field fails here until the relay selects it)', async () => {
    const { buildSchema, getNamedType, isObjectType, parse, visit, TypeInfo, visitWithTypeInfo } = await import('graphql');
    const { readFileSync } = await import('node:fs');
    const schema = buildSchema(readFileSync(new URL('../../schema.graphql', import.meta.url), 'utf8'));
    // computed here from the bytes (Image.byteLength), pointing here (Image.url), or the id asked for (jobId): not relayed
    const local = new Set(['Image.byteLength', 'Image.url', 'ImageEvent.jobId']);
    for (const [field, doc] of Object.entries(RELAYED_SUBSCRIPTIONS)) {
      const selected = new Map<string, Set<string>>(); // type -> fields selected on it
      const info = new TypeInfo(schema);
      visit(parse(doc), visitWithTypeInfo(info, { Field: () => {
        const parent = info.getParentType()!.name;
        const name = info.getFieldDef()!.name;
        selected.set(parent, (selected.get(parent) ?? new Set()).add(name));
      } }));
      const missing: string[] = [];
      for (const [typeName, fields] of selected) {
        if (typeName === 'Subscription') continue;
        const t = schema.getType(typeName);
        if (!isObjectType(t)) continue;
        for (const f of Object.values(t.getFields())) if (!fields.has(f.name) && !local.has(`${typeName}.${f.name}`)) missing.push(`${typeName}.${f.name}`);
        for (const f of Object.values(t.getFields())) {
          const inner = getNamedType(f.type);
          if (isObjectType(inner) && !local.has(`${typeName}.${f.name}`) && !selected.has(inner.name)) missing.push(`${inner.name} (under ${typeName}.${f.name})`);
        }
      }
      expect(missing, field).toEqual([]);
    }
  });
});

describe('per-client limits across replicas', () => {
  it('counts a forwarded operation for its own client at the owner, not for the forwarding replica (which already rate-limited it)', async () => {
    const peersA = new Map<string, string>();
    const peersB = new Map<string, string>();
    const a = await start({ engine: new FakeEngine(), limits: { rateLimitPerSecond: 1, rateLimitBurst: 2 }, replica: { id: 'a', peers: peersA, requestTimeoutMs: 2000 } });
    const b = await start({ engine: new FakeEngine(), replica: { id: 'b', peers: peersB, requestTimeoutMs: 2000 } });
    peersA.set('b', b.url);
    peersB.set('a', a.url);
    try {
      // eight clients' worth of forwarded queries in a burst: a would refuse them all as one client (b's address)
      const results = await Promise.all(Array.from({ length: 8 }, () => gqlPost(b, { query: '{ job(id: "a.00000000-0000-0000-0000-000000000000") { id } }' })));
      expect(results.map((r) => errorOf(r) ?? 'ok')).toEqual(Array(8).fill('ok'));
    } finally {
      await a.close();
      await b.close();
    }
  });

  it('does not let a request from a non-peer address speak for another client', async () => {
    // the only peer lives at 127.0.0.2, so this test's requests (from 127.0.0.1) are not a peer's
    const a = await start({ engine: new FakeEngine(), limits: { rateLimitPerSecond: 1, rateLimitBurst: 2 }, replica: { id: 'a', peers: new Map([['b', 'http://127.0.0.2:4999/graphql']]), requestTimeoutMs: 500 } });
    try {
      const spoofed = await Promise.all(Array.from({ length: 6 }, () => gqlPost(a, { query: '{ health { status } }' }, { 'hyperbagel-forwarded-by': 'b', 'hyperbagel-forwarded-for': 'ip:10.9.9.9' })));
      expect(spoofed.filter((r) => r.status === 429).length).toBeGreaterThanOrEqual(3);
    } finally {
      await a.close();
    }
  });

  it('takes a request as forwarded only when it names a peer, and with a shared secret only when it carries it', async () => {
    const limits = { rateLimitPerSecond: 1, rateLimitBurst: 2 };
    const burst = (s: RunningServer, headers: Record<string, string>) =>
      Promise.all(Array.from({ length: 6 }, () => gqlPost(s, { query: '{ health { status } }' }, headers))).then((rs) => rs.filter((r) => r.status === 429).length);
    // from a peer's address (loopback) but naming no peer: the client's own request, limited
    const a = await start({ engine: new FakeEngine(), limits, replica: { id: 'a', peers: new Map([['b', 'http://127.0.0.1:4999/graphql']]), requestTimeoutMs: 500 } });
    try {
      expect(await burst(a, { 'hyperbagel-forwarded-for': 'ip:10.9.9.9' })).toBeGreaterThanOrEqual(3);
      expect(await burst(a, { 'hyperbagel-forwarded-by': 'zz', 'hyperbagel-forwarded-for': 'ip:10.9.9.8' })).toBeGreaterThanOrEqual(3);
    } finally {
      await a.close();
    }
    // with a secret: a request without it is a client's, whatever it claims; the real peer's passes
    const secret = 'correct horse battery staple';
    const peersA = new Map<string, string>();
    const peersB = new Map<string, string>();
    const sa = await start({ engine: new FakeEngine(), limits, replica: { id: 'a', peers: peersA, requestTimeoutMs: 2000, secret } });
    const sb = await start({ engine: new FakeEngine(), replica: { id: 'b', peers: peersB, requestTimeoutMs: 2000, secret } });
    peersA.set('b', sb.url);
    peersB.set('a', sa.url);
    try {
      expect(await burst(sa, { 'hyperbagel-forwarded-by': 'b', 'hyperbagel-forwarded-for': 'ip:10.9.9.7' })).toBeGreaterThanOrEqual(3);
      expect(await burst(sa, { 'hyperbagel-forwarded-by': 'b', 'hyperbagel-peer-secret': 'wrong', 'hyperbagel-forwarded-for': 'ip:10.9.9.6' })).toBeGreaterThanOrEqual(3);
      const viaB = await Promise.all(Array.from({ length: 8 }, () => gqlPost(sb, { query: '{ job(id: "a.00000000-0000-0000-0000-000000000000") { id } }' })));
      expect(viaB.map((r) => errorOf(r) ?? 'ok')).toEqual(Array(8).fill('ok'));
    } finally {
      await sa.close();
      await sb.close();
    }
  });
});

describe('an owner that accepts connections but never answers', () => {
  it('fails forwarded operations with UNAVAILABLE in the request timeout, whatever they are', async () => {
    const { createServer } = await import('node:net');
    const sockets: Array<{ destroy(): void }> = [];
    const silent = createServer((s) => void sockets.push(s)); // accepts, reads nothing, never writes
    await new Promise<void>((res) => silent.listen(0, '127.0.0.1', res));
    const peers = new Map([['s', `http://127.0.0.1:${(silent.address() as { port: number }).port}/graphql`]]);
    const b = await start({ engine: new FakeEngine(), replica: { id: 'b', peers, requestTimeoutMs: 400 } });
    try {
      const sub = (q: string, v: Record<string, unknown>) => wsRun(ws(b), q, v).then(codeOf, (e) => e.errors?.[0]?.extensions?.code);
      const results = await Promise.all([
        gqlPost(b, { query: '{ job(id: "s.1") { id } }' }).then(errorOf),
        sub(EVENTS, { id: 's.1' }),
        sub('subscription($i: UnderstandInput!) { understand(input: $i) { done } }', { i: { prompt: 'hi', sessionId: 's.1' } }),
        sub('mutation($i: GenerateImageInput!) { generateImage(input: $i) { id result { stage } } }', { i: { prompt: 'a red circle', sessionId: 's.1' } }),
        gqlPost(b, { query: 'mutation { generateImage(input: { prompt: "a red circle", sessionId: "s.1" }) { id } }' }).then(errorOf),
      ]);
      expect(results).toEqual(Array(5).fill('UNAVAILABLE'));
    } finally {
      await b.close();
      for (const s of sockets) s.destroy();
      silent.close();
    }
  }, 20_000); // well under a second; a wait for the 30 s stream idle timeout instead of the request timeout would exceed it

  it('the start-up check says so once the peer has been quiet long enough, and keeps asking', async () => {
    const { createServer } = await import('node:net');
    const sockets: Array<{ destroy(): void }> = [];
    const silent = createServer((s) => void sockets.push(s));
    await new Promise<void>((res) => silent.listen(0, '127.0.0.1', res));
    const client = new PeerClient({ id: 'b', peers: new Map([['s', `http://127.0.0.1:${(silent.address() as { port: number }).port}/graphql`]]), requestTimeoutMs: 100 });
    const logs: string[] = [];
    const stop = new AbortController();
    const done = client.checkPeers((m) => logs.push(m), stop.signal, 50, 400);
    try {
      await waitFor(() => logs.length > 0, 'the quiet warning');
      expect(logs[0]).toMatch(/WARNING: peer s \(http:\/\/127\.0\.0\.1:\d+\/graphql\) has not answered in \d+ s; .*\(still asking\)/);
      await new Promise((r) => setTimeout(r, 300));
      expect(logs).toHaveLength(1); // once
      expect(sockets.length).toBeGreaterThan(2); // still asking
    } finally {
      stop.abort();
      await done;
      for (const s of sockets) s.destroy();
      silent.close();
    }
  });
});

describe('replicas with auth', () => {
  let r: Awaited<ReturnType<typeof pair>>;
  beforeAll(async () => {
    r = await pair(['k1']);
  });
  afterAll(async () => {
    await r.a.close();
    await r.b.close();
  });

  it('forwards the client\'s own key (HTTP header or connection_init)', async () => {
    const auth = { authorization: 'Bearer k1' };
    const id = (await gqlPost(r.a, { query: 'mutation { generateImage(input: { prompt: "a red circle", mode: ONE_STEP }) { id } }' }, auth)).json.data.generateImage.id;
    const viaHttp = await gqlPost(r.b, { query: `{ job(id: "${id}") { status } }` }, auth);
    expect(viaHttp.json.errors).toBeUndefined();
    const viaWs = events(await wsRun(ws(r.b, auth), EVENTS, { id }));
    expect(viaWs.at(-1)).toMatchObject({ done: true });
    expect((await gqlPost(r.b, { query: `{ job(id: "${id}") { status } }` })).status).toBe(401);
  });
});

describe('a relayed job whose connection to its owner drops', () => {
  /** A peer transport that serves a fixed log and drops the connection after `dropAfter` events on the first try. */
  function flakyPeer(log: Json[], dropAfter: number, failAlways = false) {
    const calls: number[] = [];
    const peers = new PeerClient({ id: 'b', peers: new Map([['a', 'http://a.invalid/graphql']]), requestTimeoutMs: 100 });
    peers.subscribe = async function* (_owner, _url, _query, variables) {
      const after = Number(variables['after'] ?? 0);
      calls.push(after);
      const rest = log.filter((e) => (e['seq'] as number) > after);
      for (const [i, e] of rest.entries()) {
        if ((failAlways || calls.length === 1) && i === dropAfter) throw transient(new GatewayError('UNAVAILABLE', 'connection lost'));
        yield { imageJob: e };
      }
    };
    return { peers, calls };
  }
  const frame = (stage: string, n: number) => ({ stage, nfe: n, step: n, elapsedMs: n, seed: 1, thought: null, image: { mimeType: 'image/png', width: 1, height: 1, base64: Buffer.from([n]).toString('base64'), sha256: String(n) }, sourceImage: null });
  const log: Json[] = [
    { seq: 1, status: 'RUNNING', done: false, error: null, frame: null },
    { seq: 2, status: 'RUNNING', done: false, error: null, frame: frame('PREVIEW', 1) },
    { seq: 4, status: 'RUNNING', done: false, error: null, frame: frame('PREVIEW', 3) }, // the owner skipped seq 3 for this slow peer
    { seq: 5, status: 'RUNNING', done: false, error: null, frame: frame('FINAL', 6) },
    { seq: 6, status: 'SUCCEEDED', done: true, error: null, frame: null },
  ];

  it('delivers every event it relays, even previews that arrived in one burst (the owner already thinned them)', async () => {
    const burst: Json[] = [
      { seq: 1, status: 'RUNNING', done: false, error: null, frame: null },
      { seq: 2, status: 'RUNNING', done: false, error: null, frame: frame('PREVIEW', 1) },
      { seq: 3, status: 'RUNNING', done: false, error: null, frame: frame('PREVIEW', 2) },
      { seq: 4, status: 'RUNNING', done: false, error: null, frame: frame('FINAL', 6) },
      { seq: 5, status: 'SUCCEEDED', done: true, error: null, frame: null },
    ];
    const { peers } = flakyPeer(burst, -1);
    const job = new RelayedJob({ id: 'a.1', mode: 'PROGRESSIVE', seed: 1 }, { peers, owner: 'a', url: 'http://a.invalid/graphql', caller: {} });
    let dropped = 0;
    const it = iterateJob(job, 0, { filter: () => true, isEnd: (j, c) => j.terminal && c >= j.events.length, map: (e) => e.seq, onDropped: (n) => (dropped += n) });
    const release = job.watch();
    await job.finished; // all relayed before the consumer reads any
    const got: number[] = [];
    for await (const seq of it) got.push(seq);
    release();
    expect(got).toEqual([1, 2, 3, 4, 5]);
    expect(dropped).toBe(0);
  });

  it('reconnects from the last event it got, and relays each event once, with the owner\'s numbers', async () => {
    const { peers, calls } = flakyPeer(log, 2);
    const job = new RelayedJob({ id: 'a.1', mode: 'PROGRESSIVE', seed: 1 }, { peers, owner: 'a', url: 'http://a.invalid/graphql', caller: {} });
    const release = job.watch();
    const final = await job.result();
    release();
    expect(final.frame.stage).toBe('final');
    expect(job.events.map((e) => e.seq)).toEqual([1, 2, 4, 5, 6]);
    expect(calls).toEqual([0, 2]);
    expect(job.status).toBe('SUCCEEDED');
  });

  it('breaks with UNAVAILABLE after the retries, and its waiters get that error', async () => {
    const { peers, calls } = flakyPeer(log, 0, true);
    const job = new RelayedJob({ id: 'a.1', mode: 'PROGRESSIVE', seed: 1 }, { peers, owner: 'a', url: 'http://a.invalid/graphql', caller: {} });
    const release = job.watch();
    await expect(job.result()).rejects.toMatchObject({ code: 'UNAVAILABLE' });
    release();
    expect(calls.length).toBe(4); // the first try and three retries
    expect(job.terminal).toBe(false);
  });
});

describe('serve --replica-id / --peer', () => {
  it('builds the replica config from flags and the environment', () => {
    const o = serveOptions(parseServeArgs(['--replica-id', 'a', '--peer', 'b=http://10.0.0.2:4000', '--peer', 'c=https://c.example/graphql']), { HYPERBAGEL_PEERS: 'd=http://10.0.0.4:4000/graphql' });
    expect(o.replica?.id).toBe('a');
    expect([...o.replica!.peers]).toEqual([
      ['b', 'http://10.0.0.2:4000/graphql'],
      ['c', 'https://c.example/graphql'],
      ['d', 'http://10.0.0.4:4000/graphql'],
    ]);
    expect(serveOptions(parseServeArgs([]), {}).replica).toBeUndefined();
    expect(serveOptions(parseServeArgs([]), { HYPERBAGEL_REPLICA_ID: 'z1' }).replica?.id).toBe('z1');
    expect(serveOptions(parseServeArgs(['--replica-id', 'a']), { HYPERBAGEL_PEER_SECRET: 'a shared secret, 27 chars' }).replica?.secret).toBe('a shared secret, 27 chars');
    expect(serveOptions(parseServeArgs(['--replica-id', 'a']), { HYPERBAGEL_PEER_SECRET: '' }).replica?.secret).toBeUndefined();
  });

  it.each([
    [['--peer', 'b=http://x:1'], {}, /need --replica-id/],
    [[], { HYPERBAGEL_PEERS: 'b=http://x:1' }, /need --replica-id/],
    [['--replica-id', 'A'], {}, /--replica-id must be 1-32 characters/],
    [['--replica-id', 'a.b'], {}, /--replica-id must be/],
    [['--replica-id', 'a', '--peer', 'b'], {}, /peer must be "id=http/],
    [['--replica-id', 'a', '--peer', 'b=ftp://x'], {}, /must be http\(s\)/],
    [['--replica-id', 'a', '--peer', 'b=not a url'], {}, /not a URL/],
    [['--replica-id', 'a', '--peer', 'a=http://x:1'], {}, /this replica's own id/],
    [['--replica-id', 'a', '--peer', 'b=http://x:1', '--peer', 'b=http://y:1'], {}, /given twice/],
    [['--replica-id', 'a', '--peer-secret', 'short'], {}, /at least 16 characters, got 5/],
    [['--peer-secret', '0123456789abcdef'], {}, /--peer-secret \/ HYPERBAGEL_PEER_SECRET needs --replica-id/],
  ])('refuses %j %j', (argv, env, message) => {
    expect(() => serveOptions(parseServeArgs(argv as string[]), env as NodeJS.ProcessEnv)).toThrow(UsageError);
    expect(() => serveOptions(parseServeArgs(argv as string[]), env as NodeJS.ProcessEnv)).toThrow(message);
  });

  it('parsePeers and replicaFrom agree on the endpoint form', () => {
    expect([...parsePeers('a', 'b=http://h:1/')]).toEqual([['b', 'http://h:1/graphql']]);
    expect(replicaFrom('a', undefined, '')).toMatchObject({ id: 'a' });
  });
});
