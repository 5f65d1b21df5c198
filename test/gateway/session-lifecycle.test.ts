// Sessions at their edges: with auth on a session belongs to the API key that created it; one client
// holds at most its share of the sessions and, at that share, makes room by closing its own least
// recently used idle session, never another client's; a removed session says why it is gone; an
// understand turn a client stopped keeps its session (and job slot) until the engine has stopped.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { GenerateRequest, ImageFrame, UnderstandEvent, UnderstandRequest } from '../../src/engine/types.ts';
import type { RunningServer } from '../../src/gateway/server.ts';
import { FakeEngine } from './fake-engine.ts';
import { gqlPost, start, waitFor, wsClient, wsRun } from './helpers.ts';

/** The fake engine, taking a while to stop after a cancel (the real one finishes its model step). */
class SlowStopEngine extends FakeEngine {
  stopMs = 0;
  /** what the engine did, in order: a stopped understand turn ends, a generate starts and ends */
  log: string[] = [];
  override async *understand(req: UnderstandRequest, signal?: AbortSignal): AsyncGenerator<UnderstandEvent> {
    yield* super.understand(req, signal);
    if (signal?.aborted && this.stopMs) {
      await new Promise((r) => setTimeout(r, this.stopMs));
      this.log.push('understand-stopped');
    }
  }
  override async *generate(req: GenerateRequest, signal?: AbortSignal): AsyncGenerator<ImageFrame> {
    this.log.push('generate-started');
    try {
      yield* super.generate(req, signal);
    } finally {
      this.log.push('generate-ended');
    }
  }
}

let engine: SlowStopEngine;
let server: RunningServer;
beforeAll(async () => {
  engine = new SlowStopEngine({ stepMs: 5, tokens: 3, nfeMs: 2 });
  server = await start({ engine, apiKeys: ['k-one', 'k-two'], limits: { maxSessions: 4, maxSessionsPerClient: 2 } });
});
afterAll(async () => {
  await server?.close();
});

const as = (key: string) => ({ authorization: `Bearer ${key}` });
const q = async (key: string, query: string, variables: Record<string, unknown> = {}) => (await gqlPost(server, { query, variables }, as(key))).json;
const create = async (key: string) => (await q(key, 'mutation { createSession }')).data.createSession as string;
const close = async (key: string, id: string) => (await q(key, 'mutation($id: ID!) { closeSession(id: $id) }', { id })).data.closeSession as boolean;
const generate = (key: string, id: string) => q(key, 'mutation($s: ID!) { generateImage(input: { prompt: "a red circle", mode: ONE_STEP, sessionId: $s }) { result { nfe } } }', { s: id });
const codeOf = (r: { errors?: Array<{ extensions?: { code?: string }; message: string }> }) => r.errors?.[0]?.extensions?.code;

describe('sessions and API keys', () => {
  it("another key's session does not exist for a key: not usable, not closable", async () => {
    const mine = await create('k-one');
    const theirs = await generate('k-two', mine);
    expect(codeOf(theirs)).toBe('SESSION_NOT_FOUND');
    expect(theirs.errors[0].message).toMatch(/\(it may have expired\)$/); // the same answer as for an unknown id
    expect(await close('k-two', mine)).toBe(false);
    expect((await generate('k-one', mine)).errors).toBeUndefined();
    expect(await close('k-one', mine)).toBe(true);
    // closed: its own key is told so
    expect((await generate('k-one', mine)).errors[0].message).toMatch(/\(it was closed\)$/);
  });

  it("a client at its share closes its own least recently used idle session, never another client's", async () => {
    const one = [await create('k-one'), await create('k-one')];
    const two = [await create('k-two'), await create('k-two')];
    const third = await create('k-one');
    const gone = await generate('k-one', one[0]!);
    expect(codeOf(gone)).toBe('SESSION_NOT_FOUND');
    expect(gone.errors[0].message).toMatch(/it was closed to make room for a newer session/);
    for (const [key, id] of [['k-one', one[1]!], ['k-one', third], ['k-two', two[0]!], ['k-two', two[1]!]] as const)
      expect((await generate(key, id)).errors, `${key} ${id}`).toBeUndefined();
    for (const id of [one[1]!, third]) await close('k-one', id);
    for (const id of two) await close('k-two', id);
  });

  it('a client whose sessions are all in use gets BUSY, counted in the metrics', async () => {
    const ids = [await create('k-one'), await create('k-one')];
    engine.nfeMs = 300;
    const busyMetric = async () => Number(/hyperbagel_gateway_busy_rejections_total (\d+)/.exec(await (await fetch(`${server.url.replace(/\/graphql$/, '')}/metrics`, { headers: as('k-one') })).text())?.[1] ?? 0);
    try {
      const before = await busyMetric();
      const running = ids.map((id) => generate('k-one', id));
      await waitFor(() => engine.stats.active === 2, 'both sessions in use');
      const r = await q('k-one', 'mutation { createSession }');
      expect(codeOf(r)).toBe('BUSY');
      expect(r.errors[0].message).toMatch(/This client has 2 sessions in use \(at most 2 of the 4\)/);
      expect(await busyMetric()).toBe(before + 1);
      // another client still finds room
      const other = await create('k-two');
      expect(other).toBeTruthy();
      await close('k-two', other);
      await Promise.all(running);
    } finally {
      engine.nfeMs = 2;
    }
    for (const id of ids) await close('k-one', id);
  });
});

describe('an understand turn the client stopped', () => {
  /** A session of k-one whose understand turn the client stopped after its first event, the engine 1 s from stopping (a window no stall closes). */
  async function afterStoppedTurn(then: (id: string) => Promise<void>): Promise<void> {
    const id = await create('k-one');
    engine.stopMs = 1000;
    engine.log = [];
    const client = wsClient(server, { authorization: 'Bearer k-one' });
    try {
      await wsRun(client, 'subscription($i: UnderstandInput!) { understand(input: $i) { text } }', { i: { prompt: 'long', sessionId: id, maxTokens: 500 } }, () => 'stop');
      await then(id);
    } finally {
      engine.stopMs = 0;
      await client.dispose();
    }
  }

  it('holds its session until the engine has stopped; a next request right away waits for that, then runs', () =>
    afterStoppedTurn(async (id) => {
      // the engine is still finishing the turn: the session is the engine's, and the store knows it is stopping
      const entry = server.runtime.sessions.get(id, 'key:k-one');
      await waitFor(() => entry.stopping !== undefined, 'the server to see the stop');
      expect(entry.busy).toBe(true);
      const next = await generate('k-one', id);
      expect(next.errors).toBeUndefined();
      // it ran once the old turn had stopped, never beside it
      expect(engine.log).toEqual(['understand-stopped', 'generate-started', 'generate-ended']);
      expect(engine.stats.active).toBe(0);
    }));

  it('"complete the subscription, then close": closeSession right away waits for the engine and closes', () =>
    afterStoppedTurn(async (id) => {
      expect(await close('k-one', id)).toBe(true);
      expect(engine.stats.active).toBe(0);
    }));

  it('a cancelled image job: closeSession right away waits for it and closes', async () => {
    const id = await create('k-one');
    engine.stopMs = 0;
    engine.nfeMs = 100;
    try {
      const { data } = await q('k-one', 'mutation($s: ID!) { generateImage(input: { prompt: "a red circle", mode: BASELINE, steps: 50, sessionId: $s }) { id } }', { s: id });
      await waitFor(() => engine.stats.active > 0, 'the job to run');
      // cancel without waiting for the answer, then close at once
      void q('k-one', 'mutation($id: ID!) { cancelJob(id: $id) }', { id: data.generateImage.id });
      await waitFor(() => server.runtime.jobs.find(data.generateImage.id)!.controller.signal.aborted, 'the cancel');
      expect(await close('k-one', id)).toBe(true);
    } finally {
      engine.nfeMs = 2;
    }
  });
});
