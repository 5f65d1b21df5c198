// Never a hang: a wedged engine fails requests with a typed error, and a client leaving a wedged
// stream still frees its job slot.
import { describe, expect, it } from 'vitest';
import { HungEngine } from './fake-engine.ts';
import { gqlPost, start, waitFor, wsClient, wsRun } from './helpers.ts';

describe('a wedged engine', () => {
  it('fails understand and image jobs after the stall timeout, releasing slots', async () => {
    const s = await start({ engine: new HungEngine(), limits: { engineStallTimeoutMs: 150, maxConcurrentJobs: 1 } });
    const client = wsClient(s);
    try {
      const err = await wsRun(client, `subscription { understand(input: { prompt: "x" }) { text } }`).then(
        (out) => out.at(-1)!.errors,
        (e) => e.errors,
      );
      expect(err?.[0]?.extensions?.code).toBe('INTERNAL');
      expect(err?.[0]?.message).toMatch(/engine produced nothing/);
      await waitFor(() => s.runtime.scheduler.runningCount === 0, 'slot release');
      const r = await gqlPost(s, { query: `mutation { generateImage(input: { prompt: "x" }) { id result { nfe } } }` });
      expect(r.json.errors[0].extensions.code).toBe('INTERNAL');
      await waitFor(() => s.runtime.scheduler.runningCount === 0, 'slot release');
    } finally {
      await client.dispose();
      await s.close();
    }
  });

  it('a client leaving a wedged stream frees its slot', async () => {
    const s = await start({ engine: new HungEngine(), limits: { maxConcurrentJobs: 1 } });
    const client = wsClient(s);
    try {
      const unsub = client.subscribe({ query: `subscription { understand(input: { prompt: "x" }) { text } }` }, { next: () => {}, error: () => {}, complete: () => {} });
      await waitFor(() => s.runtime.scheduler.runningCount === 1, 'the stream to hold a slot');
      unsub();
      await waitFor(() => s.runtime.scheduler.runningCount === 0, 'slot release');
      const j = await gqlPost(s, { query: `mutation { generateImage(input: { prompt: "x" }) { id } }` });
      const id = j.json.data.generateImage.id;
      await waitFor(() => s.runtime.scheduler.runningCount === 1, 'job to run');
      expect((await gqlPost(s, { query: `mutation($id: ID!) { cancelJob(id: $id) }`, variables: { id } })).json.data.cancelJob).toBe(true);
      await waitFor(() => s.runtime.scheduler.runningCount === 0, 'slot release after cancelJob');
    } finally {
      await client.dispose();
      await s.close();
    }
  });
});
