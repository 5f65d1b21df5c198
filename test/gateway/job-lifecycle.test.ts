// An image job's lifecycle at its edges: a cancel that reaches a job after its final frame is out (the
// job has done its work and, with a session, the final is already the session's latest image: cancelJob
// answers false and the job succeeds, rather than ending CANCELLED while `result` and the session both
// hold the final); a repeated cancel; which selections attach a job; imageJob cursors past the end.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { GenerateRequest, ImageFrame } from '../../src/engine/types.ts';
import type { RunningServer } from '../../src/gateway/server.ts';
import { FakeEngine } from './fake-engine.ts';
import { gqlPost, start, waitFor } from './helpers.ts';

/** The fake engine, lingering after its final frame (as the real one does while it closes its contexts). */
class LingeringEngine extends FakeEngine {
  lingerMs = 300;
  finalOut = false;
  /** how long a cancelled request takes to stop (the real engine finishes the model step in progress) */
  stopMs = 0;
  override async *generate(req: GenerateRequest, signal?: AbortSignal): AsyncGenerator<ImageFrame> {
    for await (const f of super.generate(req, signal)) {
      yield f;
      if (f.stage === 'final') {
        this.finalOut = true;
        await new Promise((r) => setTimeout(r, this.lingerMs));
      }
    }
    if (signal?.aborted && this.stopMs) await new Promise((r) => setTimeout(r, this.stopMs));
  }
}

let engine: LingeringEngine;
let server: RunningServer;
beforeAll(async () => {
  engine = new LingeringEngine({ nfeMs: 5 });
  server = await start({ engine });
});
afterAll(async () => {
  await server?.close();
});

const query = async (q: string, variables: Record<string, unknown> = {}) => (await gqlPost(server, { query: q, variables })).json;

describe('cancelJob after the final frame', () => {
  it('answers false; the job succeeds with its final, and a session keeps that image', async () => {
    const sessionId = (await query('mutation { createSession }')).data.createSession;
    engine.finalOut = false;
    const { data } = await query('mutation($s: ID!) { generateImage(input: { prompt: "a red circle", mode: SIX_STEP, sessionId: $s }) { id } }', { s: sessionId });
    const id = data.generateImage.id;
    await waitFor(() => engine.finalOut, 'the final frame');
    expect((await query('mutation($id: ID!) { cancelJob(id: $id) }', { id })).data.cancelJob).toBe(false);
    // it answered once the job had ended: the session is free for the next request at once
    expect(server.runtime.jobs.find(id)!.terminal).toBe(true);
    const job = (await query('query($id: ID!) { job(id: $id) { status result { stage nfe } } }', { id })).data.job;
    expect(job).toEqual({ status: 'SUCCEEDED', result: { stage: 'FINAL', nfe: 6 } });
    // the session's image is the final the client got: an edit without an image edits it
    const edit = await query('mutation($s: ID!) { editImage(input: { instruction: "make it blue", mode: SIX_STEP, sessionId: $s }) { result { sourceImage { source } } } }', { s: sessionId });
    expect(edit.errors).toBeUndefined();
    expect(edit.data.editImage.result.sourceImage.source).toBe('SESSION');
  });

  it('a request on the session sent as soon as the final arrives waits for the job to let go of it (not SESSION_BUSY)', async () => {
    const sessionId = (await query('mutation { createSession }')).data.createSession;
    engine.finalOut = false;
    const { data } = await query('mutation($s: ID!) { generateImage(input: { prompt: "a red circle", mode: SIX_STEP, sessionId: $s }) { id } }', { s: sessionId });
    const id = data.generateImage.id;
    // the final is out and the engine still holds the session (it lingers 300 ms): the job has not ended
    await waitFor(() => engine.finalOut, 'the final frame');
    expect(server.runtime.jobs.find(id)!.terminal).toBe(false);
    const edit = await query('mutation($s: ID!) { editImage(input: { instruction: "make it blue", mode: SIX_STEP, sessionId: $s }) { result { sourceImage { source } } } }', { s: sessionId });
    expect(edit.errors).toBeUndefined();
    expect(edit.data.editImage.result.sourceImage.source).toBe('SESSION');
    expect((await query('query($id: ID!) { job(id: $id) { status } }', { id })).data.job.status).toBe('SUCCEEDED');
  });

  it('before the final, a cancel still cancels', async () => {
    const { data } = await query('mutation { generateImage(input: { prompt: "a red circle", mode: BASELINE, steps: 200 }) { id } }');
    const id = data.generateImage.id;
    expect((await query('mutation($id: ID!) { cancelJob(id: $id) }', { id })).data.cancelJob).toBe(true);
    expect((await query('query($id: ID!) { job(id: $id) { status } }', { id })).data.job.status).toBe('CANCELLED');
  });
});

describe('which selections attach a job', () => {
  const attachedWith = async (selection: string, variables: Record<string, unknown> = {}) => {
    const decl = Object.keys(variables).length ? `(${Object.keys(variables).map((k) => `$${k}: Boolean!`).join(', ')})` : '';
    const r = await query(`mutation M${decl} { generateImage(input: { prompt: "a red circle", mode: ONE_STEP }) { id ${selection} } }`, variables);
    expect(r.errors, selection).toBeUndefined();
    return server.runtime.jobs.find(r.data.generateImage.id)!.attached;
  };
  it('previews or result attach it, unless @skip / @include leaves them out', async () => {
    expect(await attachedWith('')).toBe(false);
    expect(await attachedWith('result { nfe }')).toBe(true);
    expect(await attachedWith('result @include(if: false) { nfe }')).toBe(false);
    expect(await attachedWith('result @include(if: $on) { nfe }', { on: true })).toBe(true);
    expect(await attachedWith('result @skip(if: $off) { nfe }', { off: true })).toBe(false);
    expect(await attachedWith('... @include(if: false) { previews { nfe } }')).toBe(false);
    expect(await attachedWith('... on ImageJob @skip(if: false) { previews { nfe } }')).toBe(true);
    for (const [skip, attached] of [[true, false], [false, true]] as const) {
      const r = await query(`mutation { generateImage(input: { prompt: "a red circle", mode: ONE_STEP }) { id ...F @skip(if: ${skip}) } } fragment F on ImageJob { result { nfe } }`);
      expect(r.errors).toBeUndefined();
      expect(server.runtime.jobs.find(r.data.generateImage.id)!.attached).toBe(attached);
    }
  });
});

describe('cancelJob twice, and imageJob cursors', () => {
  it('a repeated cancel answers false once the job has ended, so the session is free', async () => {
    const sessionId = (await query('mutation { createSession }')).data.createSession;
    const { data } = await query('mutation($s: ID!) { generateImage(input: { prompt: "a red circle", mode: BASELINE, steps: 200, sessionId: $s }) { id } }', { s: sessionId });
    const id = data.generateImage.id;
    const job = server.runtime.jobs.find(id)!;
    // the engine stops a while after a cancel: the second cancel arrives before it has
    engine.stopMs = 300;
    try {
      await waitFor(() => engine.stats.active > 0, 'the job to run');
      const first = query('mutation($id: ID!) { cancelJob(id: $id) }', { id });
      await waitFor(() => job.controller.signal.aborted, 'the first cancel');
      const second = (await query('mutation($id: ID!) { cancelJob(id: $id) }', { id })).data.cancelJob;
      expect(second).toBe(false);
      expect(job.terminal).toBe(true);
      expect((await first).data.cancelJob).toBe(true);
    } finally {
      engine.stopMs = 0;
    }
    const next = await query('mutation($s: ID!) { generateImage(input: { prompt: "a blue square", mode: ONE_STEP, sessionId: $s }) { result { nfe } } }', { s: sessionId });
    expect(next.errors).toBeUndefined();
  });

  it('after past the job\'s lastSeq is OUT_OF_RANGE, naming lastSeq; after = lastSeq ends with nothing more', async () => {
    const { data } = await query('mutation { generateImage(input: { prompt: "a red circle", mode: ONE_STEP }) { id lastSeq result { nfe } } }');
    const id = data.generateImage.id;
    await waitFor(() => server.runtime.jobs.find(id)!.terminal, 'the job to end');
    const last = server.runtime.jobs.find(id)!.lastSeq;
    const sub = async (after: number) => {
      const res = await fetch(server.url, { method: 'POST', headers: { 'content-type': 'application/json', accept: 'text/event-stream' }, body: JSON.stringify({ query: 'subscription($id: ID!, $after: Int) { imageJob(id: $id, after: $after) { seq } }', variables: { id, after } }) });
      return res.text();
    };
    const past = await sub(last + 1);
    expect(past).toContain('OUT_OF_RANGE');
    expect(past).toContain(`after must be at most the job's lastSeq, ${last}; got ${last + 1}`);
    const atEnd = await sub(last);
    expect(atEnd).not.toContain('errors');
    expect(atEnd).not.toContain('"seq"');
    expect(await sub(last - 1)).toContain(`"seq":${last}`);
  });

  it('imageJob over SSE: each event carries its seq as the SSE id, and a reconnect naming Last-Event-ID resumes after it', async () => {
    const { data } = await query('mutation { generateImage(input: { prompt: "a red circle", mode: PROGRESSIVE }) { id lastSeq result { nfe } } }');
    const id = data.generateImage.id;
    await waitFor(() => server.runtime.jobs.find(id)!.terminal, 'the job to end');
    const last = server.runtime.jobs.find(id)!.lastSeq;
    expect(last).toBeGreaterThanOrEqual(3);
    const sub = async (headers: Record<string, string>, variables: Record<string, unknown> = { id }, fields = 'seq status', alias = '') => {
      const res = await fetch(server.url, { method: 'POST', headers: { 'content-type': 'application/json', accept: 'text/event-stream', ...headers }, body: JSON.stringify({ query: `subscription($id: ID!, $after: Int) { ${alias}imageJob(id: $id, after: $after) { ${fields} } }`, variables }) });
      const text = await res.text();
      const events = text.split('\n\n').filter((e) => e.includes('event: next'));
      return { text, ids: events.map((e) => /^id: (\d+)$/m.exec(e)?.[1]).map(Number), seqs: events.map((e) => Number(/"seq":(\d+)/.exec(e)?.[1])) };
    };
    const all = await sub({});
    expect(all.seqs).toEqual(Array.from({ length: last }, (_, i) => i + 1));
    expect(all.ids).toEqual(all.seqs);
    // what an EventSource sends when it reconnects
    const resumed = await sub({ 'last-event-id': '2' });
    expect(resumed.seqs).toEqual(Array.from({ length: last - 2 }, (_, i) => i + 3));
    // an explicit after wins; a Last-Event-ID that is not a seq is ignored; past the end is OUT_OF_RANGE as for after
    expect((await sub({ 'last-event-id': '2' }, { id, after: 1 })).seqs[0]).toBe(2);
    expect((await sub({ 'last-event-id': 'abc' })).seqs[0]).toBe(1);
    const past = (await sub({ 'last-event-id': String(last + 5) })).text;
    expect(past).toContain('OUT_OF_RANGE');
    expect(past).toContain('Last-Event-ID'); // the header the client sent, not an after it never sent
    expect(past).not.toContain('"argument":"after"');
    // an aliased field's events are named too (they had no id lines: a reconnect replayed from the start)
    const aliased = await sub({}, { id }, 'seq status', 'j: ');
    expect(aliased.ids).toEqual(all.seqs);
    expect((await sub({ 'last-event-id': '2' }, { id }, 'seq', 'j: ')).seqs).toEqual(resumed.seqs);
    // without seq selected there is nothing to name the event by: no id lines
    expect((await sub({}, { id }, 'status')).text).not.toMatch(/^id:/m);
  });
});
