// Cancellation on every path stops model work within one model step: the engine's step counter
// grows by at most one after the client's cancel, and the engine sees its signal aborted.
import WebSocket from 'ws';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { EngineError, type GenerateRequest, type ImageFrame } from '../../src/engine/types.ts';
import type { RunningServer } from '../../src/gateway/server.ts';
import { FakeEngine } from './fake-engine.ts';
import { ackedSocket, gqlPost, httpStream, start, waitFor, wsClient, wsRun } from './helpers.ts';

const UNDERSTAND = `subscription U($input: UnderstandInput!) { understand(input: $input) { text done } }`;
const GENERATE = `mutation G($input: GenerateImageInput!) { generateImage(input: $input) {
  id previews @stream(initialCount: 0) { nfe } ... @defer { result { nfe } } } }`;

let engine: FakeEngine;
let server: RunningServer;
beforeAll(async () => {
  // long model steps: a cancel that took more than one step to arrive would be visible
  engine = new FakeEngine({ stepMs: 150, tokens: 1000, nfeMs: 150 });
  server = await start({ engine });
});
afterAll(async () => {
  await server?.close();
});

async function expectStoppedWithinOneStep(stepsAtCancel: number) {
  await waitFor(() => engine.stats.active === 0, 'the engine to stop');
  expect(engine.stats.steps - stepsAtCancel).toBeLessThanOrEqual(1);
  await waitFor(() => server.runtime.scheduler.runningCount === 0, 'the slot to be released');
}

const jobStatus = async (id: string) => (await gqlPost(server, { query: `query($id: ID!) { job(id: $id) { status } }`, variables: { id } })).json.data.job.status;

describe('cancellation', () => {
  it('a client completing an understand subscription (graphql-ws)', async () => {
    const client = wsClient(server);
    const aborted = engine.stats.understandAborted;
    let steps = 0;
    try {
      const out = await wsRun(client, UNDERSTAND, { input: { prompt: 'long' } }, (_p, all) => {
        if (all.length === 2) {
          steps = engine.stats.steps;
          return 'stop';
        }
      });
      expect(out).toHaveLength(2);
      await expectStoppedWithinOneStep(steps);
      expect(engine.stats.understandAborted).toBe(aborted + 1);
    } finally {
      await client.dispose();
    }
  });

  it('an SSE client going away', async () => {
    const aborted = engine.stats.understandAborted;
    let steps = 0;
    const r = await httpStream(server, 'text/event-stream', { query: UNDERSTAND, variables: { input: { prompt: 'long' } } }, {
      stopWhen: (p) => {
        if (p.length >= 1) steps = engine.stats.steps;
        return p.length >= 1;
      },
    });
    expect(r.aborted).toBe(true);
    await expectStoppedWithinOneStep(steps);
    expect(engine.stats.understandAborted).toBe(aborted + 1);
  });

  it('a client stopping an @stream mutation (graphql-ws)', async () => {
    const client = wsClient(server);
    const aborted = engine.stats.generateAborted;
    let steps = 0;
    try {
      const out = await wsRun(client, GENERATE, { input: { prompt: 'x', intermediatePreviews: true } }, (_p, all) => {
        // stop after the first streamed preview
        if (all.some((p) => p.incremental?.some((i) => i.items))) {
          steps = engine.stats.steps;
          return 'stop';
        }
      });
      const id = (out[0]!.data!.generateImage as { id: string }).id;
      await expectStoppedWithinOneStep(steps);
      expect(engine.stats.generateAborted).toBe(aborted + 1);
      await waitFor(() => server.runtime.jobs.get(id).terminal, 'job end');
      expect(await jobStatus(id)).toBe('CANCELLED');
    } finally {
      await client.dispose();
    }
  });

  it('an HTTP client aborting a multipart @stream mutation', async () => {
    const aborted = engine.stats.generateAborted;
    let steps = 0;
    const r = await httpStream(server, 'multipart/mixed', { query: GENERATE, variables: { input: { prompt: 'x', intermediatePreviews: true } } }, {
      stopWhen: (p) => {
        if (p.length >= 1) steps = engine.stats.steps;
        return p.length >= 1;
      },
    });
    const id = (r.payloads[0]!.data!.generateImage as { id: string }).id;
    await expectStoppedWithinOneStep(steps);
    expect(engine.stats.generateAborted).toBe(aborted + 1);
    expect(await jobStatus(id)).toBe('CANCELLED');
  });

  it('an SSE client aborting an @stream mutation', async () => {
    const aborted = engine.stats.generateAborted;
    let steps = 0;
    const r = await httpStream(server, 'text/event-stream', { query: GENERATE, variables: { input: { prompt: 'x', intermediatePreviews: true } } }, {
      stopWhen: (p) => {
        if (p.length >= 1) steps = engine.stats.steps;
        return p.length >= 1;
      },
    });
    expect(r.aborted).toBe(true);
    expect(r.contentType).toContain('text/event-stream');
    const id = (r.payloads[0]!.data!.generateImage as { id: string }).id;
    await expectStoppedWithinOneStep(steps);
    expect(engine.stats.generateAborted).toBe(aborted + 1);
    await waitFor(() => server.runtime.jobs.get(id).terminal, 'job end');
    expect(await jobStatus(id)).toBe('CANCELLED');
  });

  it('completing a single-result (non-incremental) mutation over graphql-ws, socket kept open', async () => {
    // graphql-ws itself only stops streaming operations; the gateway aborts pending single results too
    const aborted = engine.stats.generateAborted;
    const ws = await ackedSocket(server);
    try {
      ws.send(JSON.stringify({ id: 'm1', type: 'subscribe', payload: { query: `mutation { generateImage(input: { prompt: "x" }) { id result { nfe } } }` } }));
      await waitFor(() => engine.stats.steps > 0 && engine.stats.active === 1, 'the job to start');
      const steps = engine.stats.steps;
      ws.send(JSON.stringify({ id: 'm1', type: 'complete' }));
      await expectStoppedWithinOneStep(steps);
      expect(engine.stats.generateAborted).toBe(aborted + 1);
      expect(ws.readyState).toBe(WebSocket.OPEN);
    } finally {
      ws.close();
    }
  });

  it("a graphql-ws client's close frame stops the work at once, before the TCP connection closes", async () => {
    const aborted = engine.stats.understandAborted;
    const ws = await ackedSocket(server);
    try {
      ws.send(JSON.stringify({ id: '1', type: 'subscribe', payload: { query: UNDERSTAND, variables: { input: { prompt: 'long' } } } }));
      await waitFor(() => engine.stats.active === 1 && engine.stats.steps > 0, 'the stream to run');
      const steps = engine.stats.steps;
      // the close frame goes out; then the client stops reading, so it never sees the server's close
      // frame and never ends the TCP connection: the server's 'close' would wait for ws's 30 s timeout
      ws.close(1000);
      (ws as unknown as { _socket: { pause(): void } })._socket.pause();
      await waitFor(() => engine.stats.active === 0, 'the engine to stop', 3_000);
      expect(engine.stats.steps - steps).toBeLessThanOrEqual(1);
      expect(engine.stats.understandAborted).toBe(aborted + 1);
    } finally {
      ws.terminate();
    }
    await waitFor(() => server.runtime.activeStreamCount === 0, 'streams to close');
  });

  it('a graphql-ws client disconnecting (understand and image job at once)', async () => {
    const ua = engine.stats.understandAborted;
    const ga = engine.stats.generateAborted;
    const ws = await ackedSocket(server);
    ws.send(JSON.stringify({ id: '1', type: 'subscribe', payload: { query: UNDERSTAND, variables: { input: { prompt: 'long' } } } }));
    ws.send(JSON.stringify({ id: '2', type: 'subscribe', payload: { query: GENERATE, variables: { input: { prompt: 'x' } } } }));
    await waitFor(() => engine.stats.active === 2 && engine.stats.steps > 0, 'both to run');
    const steps = engine.stats.steps;
    ws.terminate();
    await waitFor(() => engine.stats.active === 0, 'the engine to stop');
    // two runs in flight: each may finish the step it was in
    expect(engine.stats.steps - steps).toBeLessThanOrEqual(2);
    expect(engine.stats.understandAborted).toBe(ua + 1);
    expect(engine.stats.generateAborted).toBe(ga + 1);
    await waitFor(() => server.runtime.activeStreamCount === 0, 'streams to close');
  });

  it('cancelJob, seen by an imageJob subscriber', async () => {
    const aborted = engine.stats.generateAborted;
    const r = await gqlPost(server, { query: `mutation { generateImage(input: { prompt: "x" }) { id } }` });
    const id = r.json.data.generateImage.id as string;
    const client = wsClient(server);
    try {
      const events = wsRun(client, `subscription($id: ID!) { imageJob(id: $id) { seq status done error { code } } }`, { id });
      await waitFor(() => engine.stats.active === 1 && engine.stats.steps > 0, 'the job to run');
      const steps = engine.stats.steps;
      const c = await gqlPost(server, { query: `mutation($id: ID!) { cancelJob(id: $id) }`, variables: { id } });
      expect(c.json.data.cancelJob).toBe(true);
      await expectStoppedWithinOneStep(steps);
      expect(engine.stats.generateAborted).toBe(aborted + 1);
      const last = (await events).at(-1)!.data!.imageJob;
      expect(last).toMatchObject({ status: 'CANCELLED', done: true, error: { code: 'CANCELLED' } });
      // a second cancel is a no-op; an unknown id is typed
      expect((await gqlPost(server, { query: `mutation($id: ID!) { cancelJob(id: $id) }`, variables: { id } })).json.data.cancelJob).toBe(false);
      const unknown = await gqlPost(server, { query: `mutation { cancelJob(id: "nope") }` });
      expect(unknown.json.errors[0].extensions.code).toBe('JOB_NOT_FOUND');
    } finally {
      await client.dispose();
    }
  });

  it('cancelJob answers once the job has ended: its status is CANCELLED and its session takes the next request at once', async () => {
    // model steps of 150 ms that look at the signal only between steps, and a session that is busy until the
    // engine's stream has ended, as in the real engine (admission.ts)
    class StepwiseEngine extends FakeEngine {
      readonly busy = new Set<string>();
      override async *generate(req: GenerateRequest, signal?: AbortSignal): AsyncGenerator<ImageFrame> {
        const sid = req.session?.id;
        if (sid && this.busy.has(sid)) throw new EngineError('BUSY', 'this session is already answering a request');
        if (sid) this.busy.add(sid);
        this.stats.active++;
        try {
          for (let i = 0; i < 100 && !signal?.aborted; i++) await new Promise((r) => setTimeout(r, 150));
        } finally {
          this.stats.active--;
          if (sid) this.busy.delete(sid);
        }
      }
    }
    const slow = new StepwiseEngine();
    const s = await start({ engine: slow });
    try {
      const sid = (await gqlPost(s, { query: 'mutation { createSession }' })).json.data.createSession as string;
      const gen = (p: string) => gqlPost(s, { query: `mutation($sid: ID!) { generateImage(input: { prompt: "${p}", sessionId: $sid }) { id } }`, variables: { sid } });
      const id = (await gen('x')).json.data.generateImage.id as string;
      await waitFor(() => slow.stats.active === 1, 'the job to run');
      const c = await gqlPost(s, { query: `mutation($id: ID!) { cancelJob(id: $id) }`, variables: { id } });
      expect(c.json.data.cancelJob).toBe(true);
      expect(s.runtime.jobs.get(id).status).toBe('CANCELLED');
      const next = (await gen('y')).json.data.generateImage.id as string;
      await waitFor(() => s.runtime.jobs.get(next).status !== 'QUEUED', 'the next job to start');
      expect(s.runtime.jobs.get(next).status).toBe('RUNNING'); // not failed BUSY: the session was free
      await gqlPost(s, { query: `mutation($id: ID!) { cancelJob(id: $id) }`, variables: { id: next } });
    } finally {
      await s.close();
    }
  });

  it('a client waiting on job(id) { result } watches the job: an unwatched-job timeout does not cancel it meanwhile', async () => {
    // 6 NFE x 100 ms: the job outlives the 300 ms timeout
    const slow = new FakeEngine({ stepMs: 2, tokens: 3, nfeMs: 100 });
    const s = await start({ engine: slow, limits: { unwatchedJobTimeoutMs: 300 } });
    try {
      // a detached job (selects neither previews nor result), then a plain query that waits for its result
      const r = await gqlPost(s, { query: `mutation { generateImage(input: { prompt: "x", mode: SIX_STEP }) { id } }` });
      const id = r.json.data.generateImage.id as string;
      const waited = await gqlPost(s, { query: `query($id: ID!) { job(id: $id) { result { stage nfe } } }`, variables: { id } });
      expect(waited.json.errors).toBeUndefined();
      expect(waited.json.data.job.result).toEqual({ stage: 'FINAL', nfe: 6 });
      expect(slow.stats.generateAborted).toBe(0);
      // with nobody watching, the same timeout does cancel a detached job
      const again = await gqlPost(s, { query: `mutation { generateImage(input: { prompt: "x", mode: BASELINE, steps: 50 }) { id } }` });
      const id2 = again.json.data.generateImage.id as string;
      await waitFor(() => slow.stats.generateAborted === 1, 'the unwatched job to be cancelled');
      expect((await gqlPost(s, { query: `query($id: ID!) { job(id: $id) { status } }`, variables: { id: id2 } })).json.data.job.status).toBe('CANCELLED');
    } finally {
      await s.close();
    }
  });

  it('a client polling job(id) { status } keeps a detached job from being cancelled as unwatched', async () => {
    // 6 NFE x 250 ms: the job outlives the 600 ms timeout more than twice over (polls every 100 ms)
    const slow = new FakeEngine({ stepMs: 2, tokens: 3, nfeMs: 250 });
    const s = await start({ engine: slow, limits: { unwatchedJobTimeoutMs: 600 } });
    try {
      const r = await gqlPost(s, { query: `mutation { generateImage(input: { prompt: "x", mode: SIX_STEP }) { id } }` });
      const id = r.json.data.generateImage.id as string;
      let status = 'QUEUED';
      while (status === 'QUEUED' || status === 'RUNNING') {
        await new Promise((res) => setTimeout(res, 100));
        status = (await gqlPost(s, { query: `query($id: ID!) { job(id: $id) { status } }`, variables: { id } })).json.data.job.status;
      }
      expect(status).toBe('SUCCEEDED');
      expect(slow.stats.generateAborted).toBe(0);
    } finally {
      await s.close();
    }
  });
});
