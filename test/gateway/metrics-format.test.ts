// /metrics as a Prometheus scraper and an operator read it: a valid exposition, every error code and root
// field shown from the start, each event counted once, and the process and build series operators expect.
import { GraphQLObjectType } from 'graphql/index.js';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ROOT_FIELDS } from '../../src/gateway/runtime.ts';
import { ErrorCodeValues } from '../../src/gateway/schema-types.ts';
import type { RunningServer } from '../../src/gateway/server.ts';
import { FakeEngine } from './fake-engine.ts';
import { gqlPost, start, waitFor, wsClient, wsUrl } from './helpers.ts';
import WebSocket from 'ws';

let server: RunningServer;
const engine = new FakeEngine({ stepMs: 5, tokens: 6 });
beforeAll(async () => {
  server = await start({ engine, apiKeys: ['k'] });
});
afterAll(async () => {
  await server?.close();
});

const auth = { authorization: 'Bearer k' };
const scrape = async () => (await fetch(server.url.replace(/\/graphql$/, '/metrics'), { headers: auth })).text();
/** series line -> value */
const series = (text: string) => new Map(text.split('\n').filter((l) => l && !l.startsWith('#')).map((l) => [l.slice(0, l.lastIndexOf(' ')), Number(l.slice(l.lastIndexOf(' ') + 1))]));

describe('/metrics', () => {
  it('is a valid exposition: HELP and TYPE for each family, counters end in _total, histograms end at +Inf with a matching count', async () => {
    const text = await scrape();
    const families = new Map<string, string>();
    for (const m of text.matchAll(/^# TYPE (\S+) (\S+)$/gm)) families.set(m[1]!, m[2]!);
    for (const name of families.keys()) expect(text, name).toMatch(new RegExp(`^# HELP ${name} \\S`, 'm'));
    for (const [line] of series(text)) {
      expect(line).toMatch(/^[a-zA-Z_:][a-zA-Z0-9_:]*(\{([a-zA-Z_][a-zA-Z0-9_]*="([^"\\\n]|\\.)*",?)*\})?$/);
      const base = line.replace(/\{.*$/, '');
      const family = families.has(base) ? base : base.replace(/_(bucket|sum|count)$/, '');
      expect(families.has(family), line).toBe(true);
    }
    for (const [name, type] of families) {
      if (type === 'counter') expect(name).toMatch(/_total$/);
      if (type === 'histogram') {
        // per label set: a +Inf bucket equal to the count
        const s = series(text);
        const counts = [...s].filter(([k]) => k === `${name}_count` || k.startsWith(`${name}_count{`));
        expect(counts.length, name).toBeGreaterThan(0);
        for (const [k, v] of counts) {
          const labels = k.slice(`${name}_count`.length).replace(/^\{|\}$/g, '');
          expect(s.get(`${name}_bucket{${labels ? `${labels},` : ''}le="+Inf"}`), k).toBe(v);
        }
      }
    }
  });

  it('shows every error code and root field at 0 from the start; the root fields are the schema\'s', async () => {
    const s = series(await scrape());
    for (const code of ErrorCodeValues) expect(s.has(`hyperbagel_gateway_errors_total{code="${code}"}`), code).toBe(true);
    for (const field of ROOT_FIELDS) expect(s.has(`hyperbagel_gateway_operations_total{field="${field}"}`), field).toBe(true);
    const { buildSchema } = await import('graphql/index.js');
    const { readFileSync } = await import('node:fs');
    const sdl = buildSchema(readFileSync('schema.graphql', 'utf8'));
    const roots = [sdl.getQueryType(), sdl.getMutationType(), sdl.getSubscriptionType()].flatMap((t) => Object.keys((t as GraphQLObjectType).getFields()));
    expect([...ROOT_FIELDS].sort()).toEqual(roots.sort());
  });

  it('a counter with labels shows no label-less series, ever; the ways work is cancelled are at 0 from the start', async () => {
    const s = series(await scrape());
    for (const name of ['operations_total', 'errors_total', 'cancellations_total', 'rate_limited_total', 'origin_rejected_total', 'ws_protocol_errors_total', 'ws_connections_refused_total', 'forwarded_total'])
      expect(s.has(`hyperbagel_gateway_${name}`), name).toBe(false); // it vanished at the first event (a reset to increase())
    expect(s.get('hyperbagel_gateway_cancellations_total{operation="understand",reason="client_gone"}')).toBeGreaterThanOrEqual(0);
    for (const reason of ['client_gone', 'cancel_job', 'unwatched_timeout', 'shutdown'])
      expect(s.has(`hyperbagel_gateway_cancellations_total{operation="image_job",reason="${reason}"}`), reason).toBe(true);
    expect(s.get('hyperbagel_gateway_origin_rejected_total{transport="ws"}')).toBeGreaterThanOrEqual(0);
    expect(s.get('hyperbagel_gateway_ws_connections_refused_total{reason="per_client"}')).toBeGreaterThanOrEqual(0);
  });

  it('the build, readiness, limits and process series', async () => {
    const s = series(await scrape());
    expect(s.get(`hyperbagel_build_info{model="fake",version="${JSON.parse((await import('node:fs')).readFileSync('package.json', 'utf8')).version}"}`)).toBe(1);
    expect(s.get('hyperbagel_gateway_ready')).toBe(1);
    expect(s.get('hyperbagel_gateway_limit{name="max_concurrent_jobs"}')).toBe(server.runtime.limits.maxConcurrentJobs);
    for (const name of ['process_start_time_seconds', 'process_cpu_seconds_total', 'process_resident_memory_bytes', 'nodejs_heap_used_bytes']) expect(s.get(name), name).toBeGreaterThan(0);
  });

  it('image job durations by mode and outcome; queue waits by kind', async () => {
    const r = await gqlPost(server, { query: 'mutation { generateImage(input: { prompt: "x", mode: ONE_STEP }) { result { nfe } } }' }, auth);
    expect(r.json.errors).toBeUndefined();
    const s = series(await scrape());
    expect(s.get('hyperbagel_gateway_image_job_seconds_count{mode="ONE_STEP",outcome="succeeded"}')).toBeGreaterThanOrEqual(1);
    expect(s.get('hyperbagel_gateway_queue_wait_seconds_count{kind="image_job"}')).toBeGreaterThanOrEqual(1);
  });

  it('counts queries as operations; acceptance length is per drafted step, accepted + 1', async () => {
    const before = series(await scrape());
    await gqlPost(server, { query: '{ models { name } health { ready } }' }, auth);
    const client = wsClient(server, { authorization: 'Bearer k' });
    try {
      await new Promise<void>((resolve, reject) => client.subscribe({ query: 'subscription { understand(input: { prompt: "hi" }) { text } }' }, { next: () => {}, error: reject, complete: resolve }));
    } finally {
      await client.dispose();
    }
    const after = series(await scrape());
    const d = (k: string) => (after.get(k) ?? 0) - (before.get(k) ?? 0);
    expect(d('hyperbagel_gateway_operations_total{field="models"}')).toBe(1);
    expect(d('hyperbagel_gateway_operations_total{field="health"}')).toBe(1);
    // the fake engine's steps each accept 2 of 3 drafted tokens: 3 tokens per step
    const n = d('hyperbagel_gateway_acceptance_length_count');
    expect(n).toBeGreaterThan(0);
    expect(d('hyperbagel_gateway_acceptance_length_sum')).toBe(3 * n);
  });

  it('one stopped stream is one cancellation; a refused key is UNAUTHENTICATED on graphql-ws and on /metrics too', async () => {
    const before = series(await scrape());
    const client = wsClient(server, { authorization: 'Bearer k' });
    try {
      let chunks = 0;
      await new Promise<void>((resolve) => {
        const stop = client.subscribe({ query: 'subscription { understand(input: { prompt: "hi", maxTokens: 1000 }) { text } }' }, {
          next: () => {
            if (++chunks === 1) {
              stop();
              resolve();
            }
          },
          error: () => resolve(),
          complete: () => resolve(),
        });
      });
      await waitFor(() => server.runtime.activeStreamCount === 0, 'the stream to close');
    } finally {
      await client.dispose();
    }
    const ws = new WebSocket(wsUrl(server), 'graphql-transport-ws');
    const closed = new Promise<number>((r) => ws.once('close', (c) => r(c)));
    ws.once('open', () => ws.send(JSON.stringify({ type: 'connection_init', payload: { authorization: 'Bearer wrong' } })));
    expect(await closed).toBe(4403);
    expect((await fetch(server.url.replace(/\/graphql$/, '/metrics'))).status).toBe(401);
    const after = series(await scrape());
    const total = (m: Map<string, number>, prefix: string) => [...m].filter(([k]) => k.startsWith(prefix)).reduce((a, [, v]) => a + v, 0);
    expect(total(after, 'hyperbagel_gateway_cancellations_total') - total(before, 'hyperbagel_gateway_cancellations_total')).toBe(1); // the operation's client_gone, once
    expect(after.has('hyperbagel_gateway_cancellations_total{operation="any",reason="ws_complete"}')).toBe(false);
    expect((after.get('hyperbagel_gateway_errors_total{code="UNAUTHENTICATED"}') ?? 0) - (before.get('hyperbagel_gateway_errors_total{code="UNAUTHENTICATED"}') ?? 0)).toBe(2);
  });
});
