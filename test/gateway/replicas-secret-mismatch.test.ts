// With the proposed server.ts change: replicas whose peer secrets differ say so, on both sides.
import { describe, expect, it } from 'vitest';
import { FakeEngine } from './fake-engine.ts';
import { gqlPost, start, waitFor } from './helpers.ts';

describe('replicas whose peer secrets differ', () => {
  it('say so in both logs, once, and replicas that agree say nothing', async () => {
    for (const [secretA, secretB] of [['secret-version-2-xxxxxxxx', 'secret-version-1-xxxxxxxx'], ['secret-version-2-xxxxxxxx', undefined], ['same-secret-0123456789', 'same-secret-0123456789']] as const) {
      const logsA: string[] = [];
      const logsB: string[] = [];
      const peersA = new Map<string, string>();
      const peersB = new Map<string, string>();
      const a = await start({ engine: new FakeEngine(), log: (l) => logsA.push(l), replica: { id: 'a', peers: peersA, requestTimeoutMs: 2000, secret: secretA } });
      const b = await start({ engine: new FakeEngine(), log: (l) => logsB.push(l), replica: { id: 'b', peers: peersB, requestTimeoutMs: 2000, ...(secretB ? { secret: secretB } : {}) } });
      peersA.set('b', b.url);
      peersB.set('a', a.url);
      try {
        for (let i = 0; i < 3; i++) expect((await gqlPost(b, { query: '{ job(id: "a.00000000-0000-0000-0000-000000000000") { id } }' })).json.data.job).toBeNull();
        if (secretA === secretB) {
          await new Promise((r) => setTimeout(r, 200));
          expect([...logsA, ...logsB].filter((l) => /secret/.test(l))).toEqual([]);
          continue;
        }
        await waitFor(() => logsB.length > 0 && logsA.length > 0, 'the warnings');
        expect(logsB).toEqual([expect.stringMatching(secretB ? /peer a .* did not accept this replica's peer secret: give every replica the same --peer-secret/ : /peer a .* expects a peer secret, and this replica has none/)]);
        expect(logsA).toEqual([expect.stringMatching(new RegExp(`a request marked as forwarded by peer b came ${secretB ? 'with a wrong' : 'without the'} peer secret: taken as a client's own`))]);
      } finally {
        await a.close();
        await b.close();
      }
    }
  });
});
