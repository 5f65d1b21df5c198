// /metrics after real traffic: the latency and speculation histograms are fed by image jobs and
// understand streams, and previews a lagging imageJob consumer never took are counted as dropped.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { RunningServer } from '../../src/gateway/server.ts';
import { FakeEngine } from './fake-engine.ts';
import { gqlPost, start, waitFor, wsClient, wsRun } from './helpers.ts';

let engine: FakeEngine;
let server: RunningServer;
beforeAll(async () => {
  engine = new FakeEngine({ stepMs: 2, tokens: 4, nfeMs: 2 });
  server = await start({ engine });
});
afterAll(async () => {
  await server?.close();
});

/** The sample of a label-less series in the Prometheus text (NaN when absent). */
async function sample(name: string): Promise<number> {
  const text = await (await fetch(server.url.replace(/\/graphql$/, '/metrics'))).text();
  const m = new RegExp(`^${name} (\\S+)$`, 'm').exec(text);
  return m ? Number(m[1]) : NaN;
}

const PREVIEW = 'hyperbagel_gateway_preview_latency_seconds_count';
const ACCEPTANCE = 'hyperbagel_gateway_acceptance_length_count';
const TTFT = 'hyperbagel_gateway_ttft_seconds_count';
const DROPPED = 'hyperbagel_gateway_dropped_previews_total';

describe('/metrics', () => {
  it('starts with empty histograms', async () => {
    for (const name of [PREVIEW, ACCEPTANCE, TTFT, DROPPED]) expect(await sample(name)).toBe(0);
  });

  it('a progressive image job observes the preview latency; an understand stream TTFT and one acceptance length per step', async () => {
    const g = await gqlPost(server, { query: `mutation { generateImage(input: { prompt: "x", mode: PROGRESSIVE }) { result { stage } } }` });
    expect(g.json.data.generateImage.result.stage).toBe('FINAL');
    expect(await sample(PREVIEW)).toBe(1);

    const client = wsClient(server);
    try {
      const out = await wsRun(client, `subscription { understand(input: { prompt: "x", maxTokens: 4 }) { done } }`);
      expect((out.at(-1)!.data as any).understand.done).toBe(true);
    } finally {
      await client.dispose();
    }
    expect(await sample(TTFT)).toBe(1);
    expect(await sample(ACCEPTANCE)).toBe(4); // the fake engine's 4 verification steps
    expect(await sample('hyperbagel_gateway_acceptance_length_sum')).toBe(8); // 2 accepted per step
  });

  it('counts previews superseded before a lagging imageJob consumer took them', async () => {
    // a detached job (no previews/result selected) runs to the end while nobody reads it
    const r = await gqlPost(server, { query: `mutation { generateImage(input: { prompt: "x", intermediatePreviews: true }) { id } }` });
    const id = r.json.data.generateImage.id as string;
    await waitFor(() => server.runtime.jobs.get(id).terminal, 'the job to end');
    const before = await sample(DROPPED);
    // the consumer starts from the beginning of the log only now: 5 previews are waiting, it gets the latest
    const client = wsClient(server);
    try {
      const events = await wsRun(client, `subscription($id: ID!) { imageJob(id: $id) { seq status done frame { stage nfe } } }`, { id });
      const frames = events.map((e) => (e.data as any).imageJob.frame).filter(Boolean);
      expect(frames).toEqual([
        { stage: 'PREVIEW', nfe: 5 },
        { stage: 'FINAL', nfe: 6 },
      ]);
      expect((events.at(-1)!.data as any).imageJob).toMatchObject({ status: 'SUCCEEDED', done: true });
    } finally {
      await client.dispose();
    }
    expect((await sample(DROPPED)) - before).toBe(4);
  });
});
