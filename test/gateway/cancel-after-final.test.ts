// A cancel that reaches a job after its final frame is out: the job has done its work (with a session,
// the final is already the session's latest image), so cancelJob answers false and the job succeeds,
// rather than ending CANCELLED while `result` and the session both hold the final.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { GenerateRequest, ImageFrame } from '../../src/engine/types.ts';
import type { RunningServer } from '../../src/gateway/server.ts';
import { FakeEngine } from './fake-engine.ts';
import { gqlPost, start, waitFor } from './helpers.ts';

/** The fake engine, lingering after its final frame (as the real one does while it closes its contexts). */
class LingeringEngine extends FakeEngine {
  lingerMs = 300;
  finalOut = false;
  override async *generate(req: GenerateRequest, signal?: AbortSignal): AsyncGenerator<ImageFrame> {
    for await (const f of super.generate(req, signal)) {
      yield f;
      if (f.stage === 'final') {
        this.finalOut = true;
        await new Promise((r) => setTimeout(r, this.lingerMs));
      }
    }
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
    await waitFor(() => server.runtime.jobs.find(id)!.terminal, 'the job to end');
    const job = (await query('query($id: ID!) { job(id: $id) { status result { stage nfe } } }', { id })).data.job;
    expect(job).toEqual({ status: 'SUCCEEDED', result: { stage: 'FINAL', nfe: 6 } });
    // the session's image is the final the client got: an edit without an image edits it
    const edit = await query('mutation($s: ID!) { editImage(input: { instruction: "make it blue", mode: SIX_STEP, sessionId: $s }) { result { sourceImage { source } } } }', { s: sessionId });
    expect(edit.errors).toBeUndefined();
    expect(edit.data.editImage.result.sourceImage.source).toBe('SESSION');
  });

  it('before the final, a cancel still cancels', async () => {
    const { data } = await query('mutation { generateImage(input: { prompt: "a red circle", mode: BASELINE, steps: 200 }) { id } }');
    const id = data.generateImage.id;
    expect((await query('mutation($id: ID!) { cancelJob(id: $id) }', { id })).data.cancelJob).toBe(true);
    expect((await query('query($id: ID!) { job(id: $id) { status } }', { id })).data.job.status).toBe('CANCELLED');
  });
});
