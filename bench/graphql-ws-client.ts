// A minimal graphql-transport-ws client for the benchmarks' gateway sections: one connection, one
// operation at a time, every message of it handed to the caller until the caller says it is done.
// Fails, rather than hangs, when the server closes the socket or an operation runs past its timeout.
import WebSocket from 'ws';

export interface GraphqlWsMessage {
  id?: string;
  type: string;
  payload?: any;
}

export interface BenchWsClient {
  /**
   * Sends `subscribe` for `id` and feeds each message for it to `onMessage` until that returns a
   * value (the operation's result) or throws; `error`/`complete` before that, a closed socket, or
   * `timeoutMs` without a result reject.
   */
  operation<T>(id: string, payload: { query: string; variables?: Record<string, unknown> }, onMessage: (m: GraphqlWsMessage) => T | undefined, timeoutMs?: number): Promise<T>;
  close(): void;
}

export async function connectGraphqlWs(httpUrl: string, timeoutMs = 10_000): Promise<BenchWsClient> {
  const ws = new WebSocket(httpUrl.replace(/^http/, 'ws'), 'graphql-transport-ws');
  await new Promise<void>((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error('graphql-ws: no connection_ack in time')), timeoutMs);
    const fail = (e: Error) => (clearTimeout(timer), reject(e));
    ws.once('error', fail);
    ws.once('close', (code) => fail(new Error(`graphql-ws: closed (${code}) before connection_ack`)));
    ws.once('open', () => ws.send(JSON.stringify({ type: 'connection_init' })));
    ws.once('message', (raw) => {
      clearTimeout(timer);
      ws.removeAllListeners('close');
      ws.removeAllListeners('error');
      ws.on('error', () => {}); // surfaced as 'close' to the operation in flight
      if (JSON.parse(String(raw)).type === 'connection_ack') resolve();
      else reject(new Error(`graphql-ws: expected connection_ack, got ${String(raw)}`));
    });
  });
  return {
    operation<T>(id: string, payload: { query: string; variables?: Record<string, unknown> }, onMessage: (m: GraphqlWsMessage) => T | undefined, opTimeoutMs = 60_000): Promise<T> {
      return new Promise<T>((resolve, reject) => {
        const finish = (e: Error | undefined, v?: T) => {
          clearTimeout(timer);
          ws.off('message', handle);
          ws.off('close', closed);
          if (e) reject(e);
          else resolve(v as T);
        };
        const handle = (raw: WebSocket.RawData) => {
          const m = JSON.parse(String(raw)) as GraphqlWsMessage;
          if (m.id !== id) return;
          try {
            const v = onMessage(m);
            if (v !== undefined) return finish(undefined, v);
          } catch (e) {
            return finish(e as Error);
          }
          if (m.type === 'error' || m.type === 'complete') finish(new Error(`operation ${id} ended (${m.type}) without a result: ${JSON.stringify(m.payload ?? null)}`));
        };
        const closed = (code: number) => finish(new Error(`graphql-ws: the server closed the socket (${code}) during operation ${id}`));
        const timer = setTimeout(() => finish(new Error(`operation ${id}: no result in ${opTimeoutMs} ms`)), opTimeoutMs);
        ws.on('message', handle);
        ws.once('close', closed);
        ws.send(JSON.stringify({ id, type: 'subscribe', payload }));
      });
    },
    close: () => ws.terminate(),
  };
}
