// The graphql-ws heartbeat's judgement: is a socket that did not answer the last ping still alive?
// A client gone without closing (network lost, device asleep) neither answers pings nor takes data.
// A slow reader still reading takes data, while its pong waits behind its own backlog: it is spared.
import type { Socket } from 'node:net';

/** How far a socket's outgoing data has got, read at each heartbeat tick. */
export interface WriteProgress {
  /** bytes whose writes completed (taken by the kernel in full) */
  completed: number;
  /** bytes libuv still holds for writes in progress (a large write drains through this first) */
  queued: number;
}

export function writeProgress(tcp: Socket): WriteProgress {
  // writeQueueSize is libuv's, not a documented Node API: absent, only completed writes count
  const queued = (tcp as unknown as { _handle?: { writeQueueSize?: number } | null })._handle?.writeQueueSize;
  return { completed: tcp.bytesWritten - tcp.writableLength, queued: typeof queued === 'number' ? queued : 0 };
}

/** ping frames the heartbeat itself writes between ticks are not progress */
const PING_BYTES = 16;

/** Did the kernel take any of the socket's data between two ticks (beyond the pings themselves)? */
export function tookData(before: WriteProgress | undefined, now: WriteProgress): boolean {
  if (!before) return false;
  return now.completed > before.completed + PING_BYTES || (before.queued > 0 && now.queued < before.queued);
}
