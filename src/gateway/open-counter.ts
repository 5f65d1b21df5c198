// Open things (WebSocket connections, streamed HTTP responses), counted in all and per client until each
// closes: what the connection and stream limits compare against.

/** Anything that says when it is gone (a socket, a ServerResponse). */
interface Closes {
  once(event: 'close', listener: () => void): unknown;
  off(event: 'close', listener: () => void): unknown;
}

export class OpenCounter {
  private open = 0;
  private readonly byClient = new Map<string, number>();

  get total(): number {
    return this.open;
  }

  /** What `client` holds open now. */
  of(client: string): number {
    return this.byClient.get(client) ?? 0;
  }

  /** Counts one for `client` until `thing` closes. */
  hold(client: string, ...things: Closes[]): void {
    this.open++;
    this.byClient.set(client, this.of(client) + 1);
    let held = true;
    const release = () => {
      if (!held) return;
      held = false;
      for (const t of things) t.off('close', release);
      this.open--;
      const n = this.of(client) - 1;
      if (n > 0) this.byClient.set(client, n);
      else this.byClient.delete(client);
    };
    for (const t of things) t.once('close', release);
    if (things.some((t) => (t as { destroyed?: boolean; closed?: boolean }).closed === true || (t as { destroyed?: boolean }).destroyed === true)) release();
  }
}
