import { createClient, type Client, type ExecutionResult } from 'graphql-ws';
import WebSocket from 'ws';
import { startServer, type RunningServer, type ServerOptions } from '../../src/gateway/server.ts';

export async function start(opts: ServerOptions): Promise<RunningServer> {
  return startServer({ port: 0, webDemo: false, log: () => {}, ...opts });
}

export const wsUrl = (s: RunningServer) => s.url.replace(/^http/, 'ws');

/** A raw graphql-transport-ws socket, open and acknowledged (connection_init sent, the ack read). */
export async function ackedSocket(s: RunningServer, options?: WebSocket.ClientOptions): Promise<WebSocket> {
  const ws = new WebSocket(wsUrl(s), 'graphql-transport-ws', options);
  await new Promise((r) => ws.once('open', r));
  ws.send(JSON.stringify({ type: 'connection_init' }));
  await new Promise((r) => ws.once('message', r)); // connection_ack
  return ws;
}

export function wsClient(s: RunningServer, connectionParams?: Record<string, unknown>, onClose?: (code: number) => void): Client {
  return createClient({
    url: wsUrl(s),
    webSocketImpl: WebSocket,
    retryAttempts: 0,
    lazy: true,
    // keep the socket open after an operation completes, so "complete" is tested apart from "disconnect"
    lazyCloseTimeout: 30_000,
    connectionParams,
    on: onClose ? { closed: (e) => onClose((e as { code: number }).code) } : undefined,
  });
}

export type Payload = ExecutionResult<Record<string, unknown>, unknown> & { hasNext?: boolean; incremental?: Array<{ items?: unknown[]; data?: Record<string, unknown>; path: (string | number)[]; errors?: unknown[] }> };

/** Runs an operation over graphql-ws to completion; rejects on a protocol-level error. */
export function wsRun(client: Client, query: string, variables?: Record<string, unknown>, onNext?: (p: Payload, all: Payload[]) => void | 'stop'): Promise<Payload[]> {
  return new Promise((resolve, reject) => {
    const all: Payload[] = [];
    let stopped = false;
    const unsub = client.subscribe<Record<string, unknown>>(
      { query, variables },
      {
        next: (v) => {
          all.push(v as Payload);
          if (!stopped && onNext?.(v as Payload, all) === 'stop') {
            stopped = true;
            unsub();
            resolve(all);
          }
        },
        error: (e) => (stopped ? undefined : reject(Object.assign(new Error('ws operation failed'), { errors: e }))),
        complete: () => resolve(all),
      },
    );
  });
}

export async function gqlPost(s: RunningServer, body: unknown, headers: Record<string, string> = {}): Promise<{ status: number; json: any }> {
  const res = await fetch(s.url, { method: 'POST', headers: { 'content-type': 'application/json', accept: 'application/json', ...headers }, body: JSON.stringify(body) });
  const text = await res.text();
  let json: unknown;
  try {
    json = JSON.parse(text);
  } catch {
    json = text;
  }
  return { status: res.status, json };
}

/** Parses a multipart/mixed body into its JSON parts. */
export function parseMultipart(text: string): Payload[] {
  const out: Payload[] = [];
  for (const part of text.split(/\r\n---/)) {
    const i = part.indexOf('\r\n\r\n');
    if (i < 0) continue;
    const body = part.slice(i + 4).trim();
    if (body.startsWith('{')) out.push(JSON.parse(body));
  }
  return out;
}

export function parseSse(text: string): Payload[] {
  const out: Payload[] = [];
  for (const block of text.split('\n\n')) {
    const lines = block.split('\n');
    if (!lines.some((l) => l === 'event: next')) continue;
    const data = lines.filter((l) => l.startsWith('data:')).map((l) => l.slice(5).trim()).join('\n');
    if (data) out.push(JSON.parse(data));
  }
  return out;
}

/** POSTs and reads the streamed body; `stopWhen` may abort the request early. */
export async function httpStream(
  s: RunningServer,
  accept: 'multipart/mixed' | 'text/event-stream',
  body: unknown,
  opts: { headers?: Record<string, string>; stopWhen?: (payloads: Payload[]) => boolean } = {},
): Promise<{ status: number; contentType: string; payloads: Payload[]; aborted: boolean }> {
  const ac = new AbortController();
  const res = await fetch(s.url, { method: 'POST', signal: ac.signal, headers: { 'content-type': 'application/json', accept, ...opts.headers }, body: JSON.stringify(body) });
  const reader = res.body!.getReader();
  const dec = new TextDecoder();
  let text = '';
  const parse = accept === 'multipart/mixed' ? parseMultipart : parseSse;
  let aborted = false;
  try {
    for (;;) {
      const { value, done } = await reader.read();
      if (done) break;
      text += dec.decode(value, { stream: true });
      if (opts.stopWhen?.(parse(text))) {
        aborted = true;
        ac.abort();
        break;
      }
    }
  } catch (e) {
    if (!aborted) throw e;
  }
  return { status: res.status, contentType: res.headers.get('content-type') ?? '', payloads: parse(text), aborted };
}

export async function waitFor(cond: () => boolean, what: string, timeoutMs = 10_000): Promise<void> {
  const t0 = Date.now();
  while (!cond()) {
    if (Date.now() - t0 > timeoutMs) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 10));
  }
}

/** Applies @stream/@defer incremental payloads onto the initial data. */
export function mergeIncremental(payloads: Payload[]): Record<string, any> {
  const data: Record<string, any> = structuredClone((payloads[0]?.data ?? {}) as Record<string, any>);
  for (const p of payloads.slice(1)) {
    for (const inc of p.incremental ?? []) {
      let target: any = data;
      const path = [...inc.path];
      if (inc.items) {
        path.pop();
        for (const k of path) target = target[k];
        target.push(...inc.items);
      } else if (inc.data) {
        for (const k of path) target = target[k];
        Object.assign(target, inc.data);
      }
    }
  }
  return data;
}
