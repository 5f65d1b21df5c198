// Typed errors. Every error a client sees carries `extensions.code` (an ErrorCode from the schema);
// anything unexpected is masked to INTERNAL with no internals leaked.
import { randomBytes } from 'node:crypto';
import { GraphQLError } from 'graphql/index.js'; // the CJS entry yoga uses: one graphql instance under tsx and vitest
import { EngineError, type EngineErrorCode } from '../engine/types.ts';
import { ErrorCodeValues, type ErrorCode } from './schema-types.ts';

export class GatewayError extends GraphQLError {
  /**
   * INTERNAL only: what actually went wrong, for the server log (never serialised: GraphQL responses carry
   * message, locations, path and extensions). `extensions.errorId` ties the client's error to that line.
   */
  readonly internalCause?: unknown;

  constructor(
    readonly code: ErrorCode,
    message: string,
    details?: Record<string, unknown>,
    internalCause?: unknown,
  ) {
    const errorId = code === 'INTERNAL' ? ((details?.['errorId'] as string | undefined) ?? randomBytes(4).toString('hex')) : undefined;
    super(errorId && !message.includes(errorId) ? `${message} (error id ${errorId})` : message, { extensions: { code, ...(details ?? {}), ...(errorId ? { errorId } : {}) } });
    this.name = 'GatewayError';
    if (internalCause !== undefined) this.internalCause = internalCause;
  }
}

/** An unexpected failure as a client sees it: INTERNAL, a safe message and an error id; `cause` stays for the log. */
export function internalError(cause: unknown, message = 'Internal server error'): GatewayError {
  return new GatewayError('INTERNAL', message, undefined, cause);
}

const gatewayErrorIn = (error: unknown): GatewayError | undefined =>
  error instanceof GatewayError ? error : error instanceof GraphQLError && error.originalError instanceof GatewayError ? error.originalError : undefined;

/** INTERNAL errors already written to a log: one error (a failed job's, read by several clients) is one line. */
const LOGGED = new WeakSet<GatewayError>();

/** An INTERNAL error whose line is in another log (a peer replica's, which gave it its id): never written here. */
export function loggedElsewhere(error: GatewayError): GatewayError {
  LOGGED.add(error);
  return error;
}

/** Writes `internalLogLine` for `error` unless this GatewayError was logged before; `suffix` adds context. */
export function logInternal(log: (line: string) => void, error: unknown, errorId?: unknown, suffix = ''): void {
  const g = gatewayErrorIn(error);
  if (g) {
    if (LOGGED.has(g)) return;
    LOGGED.add(g);
  }
  log(internalLogLine(error, errorId) + suffix);
}

/**
 * The server log's line for an INTERNAL error a client was given (`error`: the GatewayError, or a GraphQL
 * error around one or around the thrown value): its error id and what went wrong, with the stack, on one line.
 */
function internalLogLine(error: unknown, errorId?: unknown): string {
  const g = gatewayErrorIn(error);
  const id = errorId ?? g?.extensions['errorId'];
  let cause: unknown = g ? (g.internalCause ?? g) : error instanceof GraphQLError && error.originalError ? error.originalError : error;
  if (cause instanceof GraphQLError && cause.originalError) cause = cause.originalError;
  const what = cause instanceof Error ? (cause.stack ?? cause.message) : String(cause);
  // one line (a line-based log collector keeps the error id with its stack): the stack's frames joined by " | "
  return `hyperbagel: internal error${typeof id === 'string' ? ` ${id}` : ''}: ${what.replace(/\s*\n\s*/g, ' | ')}`;
}

const ENGINE_CODES: Record<EngineErrorCode, ErrorCode> = {
  INVALID_INPUT: 'INVALID_INPUT',
  UNKNOWN_WORDS: 'UNKNOWN_WORDS',
  PROMPT_TOO_LONG: 'PROMPT_TOO_LONG',
  SESSION_FULL: 'SESSION_FULL',
  BAD_IMAGE: 'BAD_IMAGE',
  OUT_OF_RANGE: 'OUT_OF_RANGE',
  BUSY: 'BUSY',
  CANCELLED: 'CANCELLED',
  MODEL_LOAD_FAILED: 'MODEL_LOAD_FAILED',
  WORKER_CRASHED: 'WORKER_CRASHED',
  INTERNAL: 'INTERNAL',
};

/** Engine codes whose message describes the client's input and may be shown as is. */
const CLIENT_FACING = new Set<EngineErrorCode>(['INVALID_INPUT', 'UNKNOWN_WORDS', 'PROMPT_TOO_LONG', 'SESSION_FULL', 'BAD_IMAGE', 'OUT_OF_RANGE', 'BUSY', 'CANCELLED']);
const SAFE_MESSAGES: Partial<Record<ErrorCode, string>> = {
  MODEL_LOAD_FAILED: 'The model failed to load',
  WORKER_CRASHED: 'The inference worker crashed; retry the request',
  INTERNAL: 'Internal server error',
};

function isEngineError(err: unknown): err is EngineError {
  return err instanceof EngineError || (err instanceof Error && err.name === 'EngineError' && typeof (err as { code?: unknown }).code === 'string' && (err as unknown as { code: string }).code in ENGINE_CODES);
}

/** Maps any thrown value to a client-safe GatewayError. */
export function toGatewayError(err: unknown): GatewayError {
  if (err instanceof GatewayError) return err;
  if (err instanceof GraphQLError) {
    const inner = err.originalError;
    if (inner && inner !== err) return toGatewayError(inner);
    return new GatewayError('INVALID_INPUT', err.message);
  }
  if (isEngineError(err)) {
    const code = ENGINE_CODES[err.code];
    if (CLIENT_FACING.has(err.code)) {
      const details: Record<string, unknown> = {};
      // only plain scalar details are forwarded
      for (const [k, v] of Object.entries(err.details ?? {})) {
        if (['string', 'number', 'boolean'].includes(typeof v)) details[k] = v;
        else if (Array.isArray(v) && v.length <= 64 && v.every((x) => typeof x === 'string' || typeof x === 'number')) details[k] = v;
      }
      return new GatewayError(code, err.message, details);
    }
    // a session whose context the crash took: the client must know its next turn starts a new conversation
    if (err.code === 'WORKER_CRASHED' && err.details?.['sessionReset'] === true)
      return new GatewayError(code, `${SAFE_MESSAGES.WORKER_CRASHED}: this session's conversation was lost, and its next request starts a new one`, { sessionReset: true });
    return new GatewayError(code, SAFE_MESSAGES[code] ?? 'Internal server error', undefined, code === 'INTERNAL' ? err : undefined);
  }
  return internalError(err);
}

const ERROR_CODES: ReadonlySet<unknown> = new Set(ErrorCodeValues);
const isErrorCode = (code: unknown): code is ErrorCode => ERROR_CODES.has(code);

/** yoga `maskedErrors.maskError`: keep typed errors, map engine errors, mask the rest. */
export function maskError(error: unknown): Error {
  if (error instanceof GraphQLError) {
    const orig = error.originalError;
    if (!orig || orig === error) {
      // Errors from parsing/validation/variable coercion: keep the message, type them.
      if (error instanceof GatewayError) return error;
      // yoga's request-level codes (GRAPHQL_PARSE_FAILED, GRAPHQL_VALIDATION_FAILED, BAD_REQUEST,
      // OPERATION_RESOLUTION_FAILURE, REQUEST_ENTITY_TOO_LARGE) are not ErrorCodes: all of them say the
      // request itself is malformed, which is INVALID_INPUT (the HTTP status, 400/405/413, tells more)
      const given = error.extensions?.code;
      let code: ErrorCode = isErrorCode(given) ? given : 'INVALID_INPUT';
      // yoga re-wraps parser errors as GRAPHQL_PARSE_FAILED; keep the token limit's own code
      if (/^Query exceeds the limit of \d+ tokens/.test(error.message)) code = 'QUERY_TOO_COMPLEX';
      // yoga's `originalError` extension (the JSON parser's SyntaxError) and `unexpected` flag are internals.
      // `http` stays: yoga takes the response status from it and leaves it out of HTTP bodies (graphql-ws
      // results are stripped in server.ts). yoga applies that status with Accept: application/json only
      // because of the originalError extension; without it, `http.spec` is dropped to keep the status.
      const { originalError, unexpected: _unexpected, ...extensions } = error.extensions ?? {};
      const http = extensions.http as { spec?: boolean } | undefined;
      if (originalError !== undefined && http?.spec) {
        const { spec: _spec, ...rest } = http;
        extensions.http = rest;
      }
      return new GraphQLError(error.message, { nodes: error.nodes, source: error.source, positions: error.positions, path: error.path, extensions: { ...extensions, code } });
    }
    // a variable's value refused by graphql-js's coercion (no path: before execution): its message names the
    // variable and where in it ('Variable "$input" got invalid value 5 at "input.image.base64"; String cannot
    // represent ...'); the inner error alone says only what, not where
    if (!error.path && orig instanceof GraphQLError && !(orig instanceof GatewayError))
      return new GraphQLError(error.message, { nodes: error.nodes, source: error.source, positions: error.positions, extensions: { code: 'INVALID_INPUT' } });
    const mapped = toGatewayError(orig);
    return new GraphQLError(mapped.message, { nodes: error.nodes, source: error.source, positions: error.positions, path: error.path, extensions: mapped.extensions });
  }
  return toGatewayError(error);
}

export function cancelledError(): GatewayError {
  return new GatewayError('CANCELLED', 'The operation was cancelled');
}
