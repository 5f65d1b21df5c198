// HTTP request bodies and query strings, checked before yoga parses them. yoga's own parsers let three
// things through: JSON nested millions of levels deep (JSON.parse then holds the event loop for seconds),
// `variables`/`extensions` that are not JSON in a GET or form request (a JSON.parse outside any try: the client
// got INTERNAL), and multipart requests with any number of parts and a `map` that is not checked (unmapped
// files were buffered; a map naming a missing file was silently an empty image; non-file fields stopped at
// busboy's 1 MiB with "undefined bytes" in the message). Each becomes a 400 (413 for sizes) naming the problem.
import { createGraphQLError } from '@graphql-tools/utils';

/** Deeper JSON than any GraphQL request needs (the query is a string; variables mirror the input types). */
export const MAX_JSON_DEPTH = 64;
/** Bodies up to this size are parsed without the depth scan: too small to hold a costly nesting. */
const SCAN_OVER_BYTES = 64 * 1024;
/** One operation per request (batching is off), and the schema takes one image per operation. */
export const MAX_UPLOADS = 4;
/** A map of MAX_UPLOADS files to their variable paths is far smaller. */
const MAX_MAP_CHARS = 64 * 1024;

/** Is the JSON text nested deeper than `max` arrays/objects? One pass over the bytes, strings skipped. */
export function jsonDeeperThan(bytes: Uint8Array, max: number): boolean {
  let depth = 0;
  let inString = false;
  for (let i = 0; i < bytes.length; i++) {
    const c = bytes[i]!;
    if (inString) {
      if (c === 0x5c) i++; // a backslash escapes the next byte
      else if (c === 0x22) inString = false;
    } else if (c === 0x22) inString = true;
    else if (c === 0x5b || c === 0x7b) {
      if (++depth > max) return true;
    } else if (c === 0x5d || c === 0x7d) depth--;
  }
  return false;
}

type Params = { query?: string; operationName?: string; variables?: unknown; extensions?: unknown };
type Parser = (request: Request) => Params | Promise<Params>;
interface FetchApi {
  Request: typeof Request;
}

const refuse = (message: string, status = 400, extensions: Record<string, unknown> = {}): never => {
  throw createGraphQLError(message, { extensions: { http: { status }, code: status === 413 ? 'REQUEST_ENTITY_TOO_LARGE' : 'BAD_REQUEST', ...extensions } });
};

/** JSON text parsed only after the depth scan (when long enough to hold a costly nesting); `what` names it. */
function parseJson(text: string, what: string): unknown {
  if (text.length > SCAN_OVER_BYTES && jsonDeeperThan(Buffer.from(text), MAX_JSON_DEPTH)) refuse(`${what} is nested deeper than ${MAX_JSON_DEPTH} levels`);
  try {
    return JSON.parse(text);
  } catch {
    return refuse(`${what} is not valid JSON`);
  }
}

/**
 * The GraphQL parameters of a query string or form body, as yoga reads them, with `variables` and
 * `extensions` checked (yoga parsed them outside a try, and without the depth scan).
 */
function paramsOf(params: URLSearchParams): Params {
  const json = (k: string) => {
    const v = params.get(k);
    return v ? parseJson(v, `The "${k}" parameter`) : undefined;
  };
  return { operationName: params.get('operationName') || undefined, query: params.get('query') || undefined, variables: json('variables'), extensions: json('extensions') };
}

const sameRequest = (api: FetchApi, req: Request, body: Uint8Array) =>
  new api.Request(req.url, { method: req.method, headers: req.headers, body: body as BodyInit, signal: req.signal });

export interface BodyLimits {
  /** the largest field value (operations, map): the whole body may be one */
  maxFieldBytes: number;
  /** the largest uploaded file */
  maxFileBytes: number;
}

/**
 * The parser to use instead of `original` for this request, or undefined to keep it. Runs inside yoga's
 * body-size limit (yoga wraps whichever parser is set last), so reading the body here is bounded.
 */
export function guardedParser(request: Request, original: Parser, api: FetchApi, limits: BodyLimits): Parser | undefined {
  const ct = (request.headers.get('content-type') ?? '').split(',')[0]!.split(';')[0]!.trim();
  if (request.method === 'GET') {
    return (req) => {
      const q = req.url.indexOf('?');
      return paramsOf(new URLSearchParams(q >= 0 ? req.url.slice(q + 1) : ''));
    };
  }
  if (request.method !== 'POST') return undefined;
  if (ct === 'application/x-www-form-urlencoded') return async (req) => paramsOf(new URLSearchParams(await req.text()));
  if (ct === 'application/json' || ct === 'application/graphql+json')
    return async (req) => {
      const bytes = new Uint8Array(await req.arrayBuffer());
      if (bytes.length > SCAN_OVER_BYTES && jsonDeeperThan(bytes, MAX_JSON_DEPTH)) refuse(`The JSON body is nested deeper than ${MAX_JSON_DEPTH} levels`);
      return original(sameRequest(api, req, bytes));
    };
  if (ct === 'multipart/form-data') return (req) => parseMultipart(req, limits);
  return undefined;
}

/** Why busboy stopped, said as the limit the client met. */
function multipartFailure(e: unknown, limits: BodyLimits): never {
  if (e instanceof Error && 'extensions' in e) throw e; // yoga's own (the body-size limit)
  const m = e instanceof Error ? e.message : String(e);
  if (/Request body too large/.test(m)) refuse('Request body too large', 413);
  // the code an image sent as base64 over the limit gets (busboy stops at the limit: the size is not known)
  if (/^File size limit exceeded/.test(m)) refuse(`An uploaded image is over the limit of ${limits.maxFileBytes} bytes`, 413, { code: 'IMAGE_TOO_LARGE', limit: limits.maxFileBytes });
  if (/^Field value size exceeded/.test(m)) refuse(`A multipart field (operations or map) is over the limit of ${limits.maxFieldBytes} bytes`, 413);
  if (/^(Files|Parts) limit exceeded/.test(m)) refuse(`A multipart request carries at most ${MAX_UPLOADS} files (one image per operation)`);
  if (/^Fields limit exceeded/.test(m)) refuse('A multipart request carries the fields "operations" and "map" and its files, nothing else');
  return refuse(`POST body sent invalid multipart data: ${m}`);
}

/** The GraphQL multipart request spec (operations, map, files), with every part of it checked. */
async function parseMultipart(req: Request, limits: BodyLimits): Promise<Params> {
  let form: FormData;
  try {
    const opts = { formDataLimits: { fieldSize: limits.maxFieldBytes, fileSize: limits.maxFileBytes, files: MAX_UPLOADS, fields: 2, parts: MAX_UPLOADS + 2 } };
    form = await (req.formData as (o: unknown) => Promise<FormData>).call(req, opts);
  } catch (e) {
    if (e instanceof Error && e.name === 'AbortError') throw e;
    multipartFailure(e, limits);
  }
  const field = (name: string): string | undefined => {
    const v = form.get(name);
    if (v === null) return undefined;
    return typeof v === 'string' ? v : refuse(`Multipart field "${name}" must be a text field, not a file`);
  };
  const opsText = field('operations');
  if (!opsText) refuse('Missing multipart form field "operations"');
  const operations = parseJson(opsText!, 'Multipart field "operations"');
  if (!operations || typeof operations !== 'object' || Array.isArray(operations)) refuse('Multipart field "operations" must be a JSON object (one operation: batching is off)');
  const files = new Map<string, File>();
  form.forEach((v, k) => {
    if (typeof v !== 'string') files.set(k, v as File);
  });
  const mapText = field('map');
  if (mapText === undefined) {
    if (files.size) refuse(`The request carries file${files.size > 1 ? 's' : ''} ${[...files.keys()].map((k) => JSON.stringify(k)).join(', ')} but no "map" field saying which variable each is`);
    return operations as Params;
  }
  if (mapText.length > MAX_MAP_CHARS) refuse(`Multipart field "map" is over ${MAX_MAP_CHARS} characters (it names at most ${MAX_UPLOADS} files)`);
  const map = parseJson(mapText, 'Multipart field "map"');
  if (!map || typeof map !== 'object' || Array.isArray(map)) refuse('Multipart field "map" must be a JSON object: { "<file field>": ["variables.<path>"] }');
  const ops = operations as { variables?: unknown };
  for (const [name, paths] of Object.entries(map as Record<string, unknown>)) {
    const file = files.get(name);
    if (!file) refuse(`"map" names file ${JSON.stringify(name)}, which the request does not carry`);
    if (!Array.isArray(paths) || paths.length === 0 || !paths.every((p) => typeof p === 'string'))
      refuse(`"map" entry ${JSON.stringify(name)} must be a non-empty list of paths such as "variables.input.image.upload"`);
    for (const p of paths as string[]) setVariable(ops, p, file!, name);
    files.delete(name);
  }
  if (files.size) refuse(`The request carries file${files.size > 1 ? 's' : ''} ${[...files.keys()].map((k) => JSON.stringify(k)).join(', ')} that "map" does not name`);
  return ops as Params;
}

/** Puts `file` at `path` ("variables.input.image.upload"), which must lead to a null in the operation's variables. */
function setVariable(ops: { variables?: unknown }, path: string, file: File, name: string): void {
  const keys = path.split('.');
  if (keys[0] !== 'variables' || keys.length < 2) refuse(`"map" path ${JSON.stringify(path)} must start with "variables."`);
  if (keys.some((k) => k === '__proto__' || k === 'constructor' || k === 'prototype')) refuse(`"map" path ${JSON.stringify(path)} is not a variable path`);
  let at: unknown = ops;
  for (let i = 0; i < keys.length - 1; i++) {
    const k = keys[i]!;
    const next = isContainer(at) && Object.hasOwn(at, k) ? (at as Record<string, unknown>)[k] : undefined;
    if (!isContainer(next)) refuse(`"map" path ${JSON.stringify(path)} (file ${JSON.stringify(name)}) names no variable in "operations"`);
    at = next;
  }
  const last = keys.at(-1)!;
  // the spec's placeholder for a file is null; anything else there would be overwritten silently
  if (!Object.hasOwn(at as object, last) || (at as Record<string, unknown>)[last] !== null)
    refuse(`"map" path ${JSON.stringify(path)} (file ${JSON.stringify(name)}) must point to a null placeholder in "operations"`);
  (at as Record<string, unknown>)[last] = file;
}

const isContainer = (v: unknown): v is object => v !== null && typeof v === 'object' && !(v instanceof Blob);
