// The heartbeat's judgement of a socket that did not answer its last ping: still taking data (a slow
// reader whose pong waits behind its backlog) or not (gone). The end-to-end heartbeat is tested in
// security.test.ts.
import net from 'node:net';
import { describe, expect, it } from 'vitest';
import { tookData, writeProgress } from '../../src/gateway/heartbeat.ts';
import { waitFor } from './helpers.ts';

describe('tookData', () => {
  it('counts completed writes beyond the ping frames, and a shrinking libuv queue; nothing else', () => {
    expect(tookData(undefined, { completed: 1e6, queued: 0 })).toBe(false); // no earlier tick to compare with
    expect(tookData({ completed: 100, queued: 0 }, { completed: 100, queued: 0 })).toBe(false); // idle
    expect(tookData({ completed: 100, queued: 0 }, { completed: 102, queued: 0 })).toBe(false); // only a ping went out
    expect(tookData({ completed: 100, queued: 0 }, { completed: 5000, queued: 0 })).toBe(true);
    expect(tookData({ completed: 100, queued: 4e6 }, { completed: 100, queued: 3e6 })).toBe(true); // a big write draining
    expect(tookData({ completed: 100, queued: 4e6 }, { completed: 100, queued: 4e6 + 2 })).toBe(false); // stuck, a ping queued behind
    expect(tookData({ completed: 100, queued: 0 }, { completed: 100, queued: 3e6 })).toBe(false); // a new write, none of it taken
  });
});

describe('writeProgress', () => {
  it('on a real socket: stalls while the peer does not read, and moves as it reads', async () => {
    let serverSide!: net.Socket;
    const server = net.createServer((s) => (serverSide = s));
    await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
    const client = net.connect((server.address() as net.AddressInfo).port, '127.0.0.1');
    client.pause();
    try {
      await waitFor(() => serverSide !== undefined, 'the connection');
      const size = 32 * 1024 * 1024; // far more than the kernel's buffers hold
      let done = false;
      serverSide.write(Buffer.alloc(size, 1), () => (done = true));
      await new Promise((r) => setTimeout(r, 200));
      const stalled = writeProgress(serverSide);
      expect(stalled.completed).toBe(0); // the one write has not completed
      await new Promise((r) => setTimeout(r, 200));
      expect(tookData(stalled, writeProgress(serverSide))).toBe(false); // nobody reads: nothing taken
      client.resume();
      await waitFor(() => done, 'the write to complete');
      const after = writeProgress(serverSide);
      expect(after).toEqual({ completed: size, queued: 0 });
      expect(tookData(stalled, after)).toBe(true);
    } finally {
      client.destroy();
      serverSide?.destroy();
      await new Promise((r) => server.close(r));
    }
  });
});
