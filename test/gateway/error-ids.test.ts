// An unexpected failure reaches the client as INTERNAL with a safe message and an error id, and the
// server log has the same id with what actually went wrong: an operator can find a user's report.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { RunningServer } from '../../src/gateway/server.ts';
import { FakeEngine } from './fake-engine.ts';
import { gqlPost, start, waitFor, wsClient, wsRun } from './helpers.ts';

let server: RunningServer;
const logged: string[] = [];
beforeAll(async () => {
  server = await start({ engine: new FakeEngine({ stepMs: 1, tokens: 4 }), log: (line) => logged.push(line) });
});
afterAll(async () => {
  await server?.close();
});

const SECRET = 'secret internal stack detail /opt/model';

/** The client's error says INTERNAL, an 8-hex error id and nothing internal; the log has the id and the cause, once. */
function expectTraced(e: { message: string; extensions?: Record<string, unknown> }, context = '') {
  expect(e.extensions?.['code']).toBe('INTERNAL');
  const id = e.extensions?.['errorId'] as string;
  expect(id).toMatch(/^[0-9a-f]{8}$/);
  expect(e.message).toBe(`Internal server error (error id ${id})`);
  expect(JSON.stringify(e)).not.toContain(SECRET);
  const lines = logged.filter((l) => l.includes(id));
  expect(lines).toHaveLength(1);
  // one line, the stack's frames joined: a line-based collector keeps the id with its stack
  expect(lines[0]).toMatch(new RegExp(`^hyperbagel: internal error ${id}: Error: ${SECRET} \\| at `));
  expect(lines[0]).not.toContain('\n');
  if (context) expect(lines[0]).toContain(context);
  return id;
}

describe('error ids', () => {
  it('an understand stream that fails mid-way', async () => {
    const client = wsClient(server);
    try {
      const out = await wsRun(client, 'subscription { understand(input: { prompt: "explode" }) { text } }').catch((rejected) => [rejected]);
      const errors = out.flatMap((p: any) => p.errors ?? []);
      expect(errors).toHaveLength(1);
      expectTraced(errors[0]);
    } finally {
      await client.dispose();
    }
  });

  it('a failed image job: its result error and its imageJob event carry the id the log has', async () => {
    const r = await gqlPost(server, { query: 'mutation { generateImage(input: { prompt: "explode" }) { id result { stage } } }' });
    const e = r.json.errors[0];
    expect(r.json.data).toBeNull(); // result is non-null: the job's error takes its id with it
    await waitFor(() => logged.some((l) => l.includes(e.extensions.errorId)), 'the log line');
    const id = expectTraced(e, '(image job ');
    // the same error, read back through the job's events
    const detached = await gqlPost(server, { query: 'mutation { generateImage(input: { prompt: "explode" }) { id } }' });
    const job = detached.json.data.generateImage.id as string;
    await waitFor(() => logged.some((l) => l.includes(`(image job ${job})`)), 'the job to fail');
    const client = wsClient(server);
    try {
      const events = await wsRun(client, `subscription { imageJob(id: "${job}") { done status error { code message errorId } } }`);
      const last = events.at(-1)!.data!.imageJob as any;
      expect(last).toMatchObject({ done: true, status: 'FAILED', error: { code: 'INTERNAL' } });
      const later = /error id ([0-9a-f]{8})/.exec(last.error.message)![1]!;
      expect(last.error.errorId).toBe(later);
      expect(later).not.toBe(id);
      expect(logged.filter((l) => l.includes(later) && l.includes(`(image job ${job})`))).toHaveLength(1);
    } finally {
      await client.dispose();
    }
  });
});

describe('error ids across replicas', () => {
  it('an owner\'s INTERNAL error read through another replica keeps its id, and only the owner logs it', async () => {
    const logs: Record<'a' | 'b', string[]> = { a: [], b: [] };
    const peersA = new Map<string, string>();
    const peersB = new Map<string, string>();
    const a = await start({ engine: new FakeEngine({ nfeMs: 2 }), log: (l) => logs.a.push(l), replica: { id: 'a', peers: peersA, requestTimeoutMs: 2000 } });
    const b = await start({ engine: new FakeEngine({ nfeMs: 2 }), log: (l) => logs.b.push(l), replica: { id: 'b', peers: peersB, requestTimeoutMs: 2000 } });
    peersA.set('b', b.url);
    peersB.set('a', a.url);
    try {
      const id = (await gqlPost(a, { query: 'mutation { generateImage(input: { prompt: "explode" }) { id } }' })).json.data.generateImage.id as string;
      await waitFor(() => logs.a.some((l) => l.includes(`(image job ${id})`)), 'the owner to log the failure');
      const viaB = await gqlPost(b, { query: `{ job(id: "${id}") { result { stage } } }` });
      const e = viaB.json.errors[0];
      expect(e.extensions.code).toBe('INTERNAL');
      const errorId = e.extensions.errorId as string;
      expect(logs.a.filter((l) => l.includes(errorId))).toHaveLength(1);
      expect(logs.b.filter((l) => l.includes(errorId))).toEqual([]);
    } finally {
      await a.close();
      await b.close();
    }
  });
});
