// SSE event ids for imageJob: each event of a job's log goes out with `id: <seq>`, so a browser's
// EventSource that reconnects sends `Last-Event-ID: <seq>` and the subscription resumes after it
// (resolvers read that header as `after` when the query gives none). yoga writes each event's data line
// whole (the stream may join several writes into one chunk), so the id is put in front of the line.
import { getOperationAST, Kind, type DocumentNode } from 'graphql/index.js';

/** The imageJob event's `seq`, when the line is one and the client selected it (`key`: the field's response key). */
function imageJobSeq(line: string, key: string): number | undefined {
  try {
    const seq = (JSON.parse(line.slice('data: '.length)) as { data?: Record<string, { seq?: unknown } | undefined> }).data?.[key]?.seq;
    return Number.isSafeInteger(seq) ? (seq as number) : undefined;
  } catch {
    return undefined;
  }
}

/**
 * `res` with `id:` lines added to its imageJob events, when it is an SSE response; else `res` itself.
 * `key` is the imageJob field's response key: its alias when the query gives one (a GraphQL name, so
 * safe in a pattern).
 */
export function withEventIds(res: Response, api: { Response: typeof Response; TransformStream: typeof TransformStream }, key = 'imageJob'): Response {
  if (!res.body || !(res.headers.get('content-type') ?? '').startsWith('text/event-stream')) return res;
  const enc = new TextEncoder();
  const head = `data: {"data":{"${key}":`;
  const lineHead = Buffer.from(head);
  const lines = new RegExp(`(^|\\n)(${head.replace(/[{}]/g, '\\$&')}[^\\n]*)`, 'g');
  const ids = new api.TransformStream<Uint8Array, Uint8Array>({
    transform(chunk, controller) {
      // the stream may join yoga's writes ("event: next\ndata: {...}\n\n" arrives as one chunk)
      const buf = Buffer.from(chunk.buffer, chunk.byteOffset, chunk.byteLength);
      if (buf.indexOf(lineHead) < 0) return controller.enqueue(chunk);
      const text = buf.toString('utf8').replace(lines, (whole, nl: string, line: string) => {
        const seq = imageJobSeq(line, key);
        return seq === undefined ? whole : `${nl}id: ${seq}\n${line}`;
      });
      controller.enqueue(enc.encode(text));
    },
  });
  return new api.Response(res.body.pipeThrough(ids), { status: res.status, statusText: res.statusText, headers: res.headers });
}

/** The response key of an operation's `imageJob` root field (its alias, else `imageJob`), if it has one. */
export function imageJobKey(doc: DocumentNode, operationName?: string | null): string | undefined {
  const op = getOperationAST(doc, operationName);
  if (op?.operation !== 'subscription') return undefined;
  for (const sel of op.selectionSet.selections) if (sel.kind === Kind.FIELD && sel.name.value === 'imageJob') return sel.alias?.value ?? 'imageJob';
  return undefined;
}

/** The resume point a reconnecting EventSource names: a non-negative integer, else undefined. */
export function lastEventId(header: string | null | undefined): number | undefined {
  if (!header || !/^\d{1,15}$/.test(header.trim())) return undefined;
  return Number(header.trim());
}
