// /metrics after real traffic: the latency and speculation histograms are fed by image jobs and
// understand streams, and live previews a lagging imageJob consumer never took are counted as dropped
// (a replay of what was logged before it subscribed drops nothing).
import { createHash } from 'node:crypto';
import sharp from 'sharp';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { ImageFrame } from '../../src/engine/types.ts';
import { timePerOutputToken } from '../../src/gateway/metrics.ts';
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
const TPOT = 'hyperbagel_gateway_time_per_output_token_seconds_count';
const DROPPED = 'hyperbagel_gateway_dropped_previews_total';

describe('/metrics', () => {
  it('starts with empty histograms', async () => {
    for (const name of [PREVIEW, ACCEPTANCE, TTFT, TPOT, DROPPED, 'hyperbagel_gateway_ws_send_queue_bytes']) expect(await sample(name)).toBe(0);
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
    // the fake engine's 4 tokens at 2 ms a step: 3 decode steps after the first token, 2 ms each
    expect(await sample(TPOT)).toBe(1);
    expect(await sample('hyperbagel_gateway_time_per_output_token_seconds_sum')).toBeCloseTo(0.002, 6);
    expect(await sample(ACCEPTANCE)).toBe(4); // the fake engine's 4 verification steps
    expect(await sample('hyperbagel_gateway_acceptance_length_sum')).toBe(12); // 2 accepted per step, + 1 of its own
  });

  it('a replay of a finished job delivers every preview: none counted as dropped', async () => {
    // a detached job (no previews/result selected) runs to the end while nobody reads it
    const r = await gqlPost(server, { query: `mutation { generateImage(input: { prompt: "x", intermediatePreviews: true }) { id } }` });
    const id = r.json.data.generateImage.id as string;
    await waitFor(() => server.runtime.jobs.get(id).terminal, 'the job to end');
    const before = await sample(DROPPED);
    const client = wsClient(server);
    try {
      const events = await wsRun(client, `subscription($id: ID!) { imageJob(id: $id) { seq status done frame { stage nfe } } }`, { id });
      const frames = events.map((e) => (e.data as any).imageJob.frame).filter(Boolean);
      expect(frames).toEqual([1, 2, 3, 4, 5].map((nfe) => ({ stage: 'PREVIEW', nfe })).concat([{ stage: 'FINAL', nfe: 6 }]));
      expect((events.at(-1)!.data as any).imageJob).toMatchObject({ status: 'SUCCEEDED', done: true });
    } finally {
      await client.dispose();
    }
    expect((await sample(DROPPED)) - before).toBe(0);
  });

  it('counts live previews superseded before a lagging imageJob consumer took them', async () => {
    // previews produced in one burst after the consumer subscribed: while one is sent, newer ones supersede the rest
    let open!: () => void;
    const gate = new Promise<void>((r) => (open = r));
    const frame = async (stage: 'preview' | 'final', nfe: number): Promise<ImageFrame> => {
      const raw = Buffer.alloc(8 * 8 * 3, nfe * 20);
      const bytes = new Uint8Array(await sharp(raw, { raw: { width: 8, height: 8, channels: 3 } }).png().toBuffer());
      return { stage, nfe, step: nfe, elapsedMs: 0, seed: 0, image: { mimeType: 'image/png', width: 8, height: 8, bytes, sha256: createHash('sha256').update(bytes).digest('hex') }, rgb: { width: 8, height: 8, data: new Uint8Array(raw) } };
    };
    class BurstEngine extends FakeEngine {
      override async *generate(): AsyncGenerator<ImageFrame> {
        const frames = await Promise.all([1, 2, 3, 4, 5].map((n) => frame('preview', n)).concat([frame('final', 6)]));
        await gate;
        yield* frames; // back to back, with no I/O in between
      }
    }
    const s = await start({ engine: new BurstEngine() });
    const metric = async () => {
      const text = await (await fetch(s.url.replace(/\/graphql$/, '/metrics'))).text();
      return Number(new RegExp(`^${DROPPED} (\\S+)$`, 'm').exec(text)?.[1]);
    };
    const client = wsClient(s);
    try {
      const r = await gqlPost(s, { query: `mutation { generateImage(input: { prompt: "x", intermediatePreviews: true }) { id } }` });
      const id = r.json.data.generateImage.id as string;
      const job = s.runtime.jobs.get(id);
      const events = wsRun(client, `subscription($id: ID!) { imageJob(id: $id) { seq status done frame { stage nfe } } }`, { id });
      await waitFor(() => (job as unknown as { watchers: number }).watchers > 0, 'the consumer to subscribe');
      open();
      const frames = (await events).map((e) => (e.data as any).imageJob.frame).filter(Boolean);
      // the first preview goes out at once (the consumer was waiting); 2-4 are superseded while it is sent
      expect(frames).toEqual([
        { stage: 'PREVIEW', nfe: 1 },
        { stage: 'PREVIEW', nfe: 5 },
        { stage: 'FINAL', nfe: 6 },
      ]);
      expect(await metric()).toBe(3);
    } finally {
      await client.dispose();
      await s.close();
    }
  });
});

describe('timePerOutputToken', () => {
  const summary = (completionTokens: number, timeToFirstTokenMs: number, totalMs: number) => ({ usage: { completionTokens }, timings: { timeToFirstTokenMs, totalMs } });
  it('is the decode time after the first token over the tokens after it, in seconds', () => {
    expect(timePerOutputToken(summary(11, 5, 25))).toBeCloseTo(0.002, 9);
    expect(timePerOutputToken(summary(2, 3, 3))).toBe(0);
  });
  it('is undefined where there is no decode phase or no first token time', () => {
    expect(timePerOutputToken(summary(1, 5, 5))).toBeUndefined();
    expect(timePerOutputToken(summary(0, 0, 4))).toBeUndefined();
    expect(timePerOutputToken(summary(5, 0, 10))).toBeUndefined(); // cancelled before the first token
    expect(timePerOutputToken(summary(5, 10, 8))).toBeUndefined(); // inconsistent timings are not observed
  });
});
