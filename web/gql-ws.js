// @ts-check
// A minimal client for the graphql-ws protocol (subprotocol `graphql-transport-ws`):
// connection_init → connection_ack, then any number of operations multiplexed by id
// (subscribe → next* → complete | error), with ping/pong. Connects lazily on the first operation and
// reconnects on the next operation after the socket closes. No dependencies.

/**
 * @typedef {{ message: string, path?: (string|number)[], extensions?: Record<string, unknown> }} GraphQLErrorLike
 * @typedef {{ data?: any, errors?: GraphQLErrorLike[], hasNext?: boolean, incremental?: any[], pending?: any[], completed?: any[], extensions?: any }} ExecutionPayload
 * @typedef {{ query: string, variables?: Record<string, unknown>, operationName?: string }} OperationPayload
 * @typedef {{
 *   next: (payload: ExecutionPayload) => void,
 *   error: (errors: GraphQLErrorLike[]) => void,
 *   complete: () => void,
 * }} Sink
 */

/** Close codes (the protocol's, and WebSocket ones a person can act on), in words. */
export const CLOSE_REASONS = /** @type {Record<number, string>} */ ({
  1009: 'a message was larger than the server accepts (close code 1009)',
  4008: 'the server closed the connection: this page was not reading what it sent (a stalled tab or network)',
  4400: 'the server rejected a malformed message',
  4401: 'unauthorized (subscribed before the connection was acknowledged)',
  4403: 'forbidden: the API key is missing or invalid',
  4406: 'the server does not speak graphql-transport-ws',
  4408: 'connection initialisation timed out',
  4409: 'duplicate operation id',
  4429: 'too many initialisation requests',
  4500: 'internal server error',
});

export class GraphQLWsClient {
  /**
   * @param {string} url  ws:// or wss:// URL of the GraphQL endpoint
   * @param {{ connectionParams?: () => Record<string, unknown> | undefined, onStatus?: (status: 'connecting'|'connected'|'closed', detail?: string) => void }} [options]
   */
  constructor(url, options = {}) {
    this.url = url;
    this.options = options;
    /** @type {WebSocket | null} */
    this.socket = null;
    /** @type {Promise<WebSocket> | null} */
    this.ready = null;
    /** @type {Map<string, Sink>} */
    this.sinks = new Map();
    this.nextId = 1;
  }

  /** @returns {Promise<WebSocket>} */
  connect() {
    if (this.ready) return this.ready;
    this.options.onStatus?.('connecting');
    this.ready = new Promise((resolveReady, rejectReady) => {
      const ws = new WebSocket(this.url, 'graphql-transport-ws');
      this.socket = ws;
      let acked = false;
      ws.onopen = () => {
        const payload = this.options.connectionParams?.();
        ws.send(JSON.stringify(payload ? { type: 'connection_init', payload } : { type: 'connection_init' }));
      };
      ws.onmessage = (ev) => {
        /** @type {any} */
        let msg;
        try {
          msg = JSON.parse(String(ev.data));
        } catch {
          ws.close(4400, 'invalid JSON from server');
          return;
        }
        switch (msg.type) {
          case 'connection_ack':
            acked = true;
            this.options.onStatus?.('connected');
            resolveReady(ws);
            return;
          case 'ping':
            ws.send(JSON.stringify({ type: 'pong' }));
            return;
          case 'pong':
            return;
          case 'next':
            this.sinks.get(msg.id)?.next(msg.payload);
            return;
          case 'error': {
            const sink = this.sinks.get(msg.id);
            this.sinks.delete(msg.id);
            sink?.error(Array.isArray(msg.payload) ? msg.payload : [{ message: String(msg.payload) }]);
            return;
          }
          case 'complete': {
            const sink = this.sinks.get(msg.id);
            this.sinks.delete(msg.id);
            sink?.complete();
            return;
          }
        }
      };
      ws.onclose = (ev) => {
        const fallback = acked ? `connection closed (code ${ev.code})` : `could not connect to the server (code ${ev.code})`;
        const reason = CLOSE_REASONS[ev.code] ?? (ev.reason || fallback);
        const detail = ev.reason && CLOSE_REASONS[ev.code] ? `${reason}: ${ev.reason}` : reason;
        if (this.socket === ws) {
          this.socket = null;
          this.ready = null;
        }
        this.options.onStatus?.('closed', detail);
        if (!acked) rejectReady(new Error(detail));
        // Before the server acknowledged the connection no operation reached it: CONNECTION_FAILED
        // (nothing was sent, it is safe to try again). After, CONNECTION_CLOSED: an operation may have
        // been cut off half-way.
        const code = ev.code === 4403 ? 'UNAUTHENTICATED' : acked ? 'CONNECTION_CLOSED' : 'CONNECTION_FAILED';
        const sinks = [...this.sinks.values()];
        this.sinks.clear();
        for (const sink of sinks) sink.error([{ message: detail, extensions: { code, closeCode: ev.code } }]);
      };
    });
    // An unobserved rejection here is reported through each operation's sink instead.
    this.ready.catch(() => {});
    return this.ready;
  }

  /**
   * Starts an operation. Returns a function that stops it (sends `complete`; the sink is not called
   * again). Works for queries and mutations (one or more `next` with @stream/@defer) and subscriptions.
   * @param {OperationPayload} payload
   * @param {Sink} sink
   * @returns {() => void}
   */
  subscribe(payload, sink) {
    const id = String(this.nextId++);
    let active = true;
    /** @type {Sink} */
    const guarded = {
      next: (p) => { if (active) sink.next(p); },
      error: (e) => { if (active) { active = false; sink.error(e); } },
      complete: () => { if (active) { active = false; sink.complete(); } },
    };
    this.sinks.set(id, guarded);
    this.connect().then(
      (ws) => {
        if (!active) return;
        ws.send(JSON.stringify({ id, type: 'subscribe', payload }));
      },
      (err) => {
        this.sinks.delete(id);
        guarded.error([{ message: err instanceof Error ? err.message : String(err), extensions: { code: 'CONNECTION_FAILED' } }]);
      },
    );
    return () => {
      if (!active) return;
      active = false;
      this.sinks.delete(id);
      const ws = this.socket;
      if (ws && ws.readyState === WebSocket.OPEN) ws.send(JSON.stringify({ id, type: 'complete' }));
    };
  }

  /**
   * Runs a single-result operation; resolves with its (last) payload, rejects with a GraphQLRequestError.
   * @param {OperationPayload} payload
   * @returns {Promise<ExecutionPayload>}
   */
  request(payload) {
    return new Promise((resolveResult, rejectResult) => {
      /** @type {ExecutionPayload | undefined} */
      let last;
      this.subscribe(payload, {
        next: (p) => {
          last = p;
          if (p.errors?.length) rejectResult(new GraphQLRequestError(p.errors));
        },
        error: (errors) => rejectResult(new GraphQLRequestError(errors)),
        complete: () => (last ? resolveResult(last) : rejectResult(new GraphQLRequestError([{ message: 'no result' }]))),
      });
    });
  }

  close() {
    this.socket?.close(1000, 'client closed');
  }
}

/** Errors of one GraphQL operation, with the first error's `extensions.code` lifted out. */
export class GraphQLRequestError extends Error {
  /** @param {GraphQLErrorLike[]} errors */
  constructor(errors) {
    super(errors.map((e) => e.message).join('; ') || 'request failed');
    this.name = 'GraphQLRequestError';
    this.errors = errors;
    const code = errors.find((e) => e.extensions && typeof e.extensions.code === 'string')?.extensions?.code;
    /** @type {string} */
    this.code = typeof code === 'string' ? code : 'ERROR';
  }
}
