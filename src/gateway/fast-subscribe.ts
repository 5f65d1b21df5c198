// A drop-in for graphql-js `subscribe` with a cheaper per-event path.
//
// graphql-js runs the spec's ExecuteSubscriptionEvent as a full `execute()` per event: it rebuilds
// the execution context (variable coercion), re-collects fields, re-coerces the root field's
// arguments (valueFromAST), builds a resolve info and a path per field, and hops through three
// async functions in mapAsyncIterator. For a streamed token that is most of the gateway's own
// per-event JavaScript.
//
// Here the operation's selection is planned once per subscription (with graphql-js's own
// collectFields/collectSubfields, so @include/@skip and fragments mean the same) and each event
// is completed from the plan. The plan is only built for selections where the result can only be
// what graphql-js computes: every field uses the default resolver, object types have no isTypeOf,
// no abstract types, no arguments below the root. At run time anything unusual (an Error or a
// promise as a value, null in a non-null position, a method where a property was expected, a
// non-array list, a leaf that fails to serialize) makes that event fall back to graphql-js
// `execute()` itself, so errors, their messages, paths and nulling stay exactly graphql-js's.
import {
  TypeNameMetaFieldDef,
  createSourceEventStream,
  defaultFieldResolver,
  execute,
  isLeafType,
  isListType,
  isNonNullType,
  isObjectType,
  type ExecutionArgs,
  type ExecutionResult,
  type FieldNode,
  type GraphQLLeafType,
  type GraphQLObjectType,
  type GraphQLError,
  type GraphQLOutputType,
} from 'graphql/index.js';
import { collectFields, collectSubfields } from 'graphql/execution/collectFields.js';
import { buildExecutionContext, type ExecutionContext } from 'graphql/execution/execute.js';

type Plan =
  | { kind: 'leaf'; nonNull: boolean; type: GraphQLLeafType }
  | { kind: 'list'; nonNull: boolean; item: Plan }
  | { kind: 'object'; nonNull: boolean; fields: FieldPlan[] };

interface FieldPlan {
  key: string;
  name: string;
  /** set for __typename: the constant value */
  typename?: string;
  plan?: Plan;
}

/** "this event needs graphql-js's own execute()" */
const FALLBACK = Symbol('fallback');

function planType(ctx: ExecutionContext, type: GraphQLOutputType, nodes: FieldNode[]): Plan | undefined {
  let nonNull = false;
  if (isNonNullType(type)) {
    nonNull = true;
    type = type.ofType;
  }
  if (isListType(type)) {
    const item = planType(ctx, type.ofType, nodes);
    return item && { kind: 'list', nonNull, item };
  }
  if (isLeafType(type)) return { kind: 'leaf', nonNull, type };
  if (!isObjectType(type) || type.isTypeOf) return undefined; // abstract types and isTypeOf: graphql-js
  const fields = planFields(ctx, type, collectSubfields(ctx.schema, ctx.fragments, ctx.variableValues, type, nodes));
  return fields && { kind: 'object', nonNull, fields };
}

function planFields(
  ctx: ExecutionContext,
  type: GraphQLObjectType,
  collected: Map<string, ReadonlyArray<FieldNode>>,
  root = false,
): FieldPlan[] | undefined {
  const defs = type.getFields();
  const out: FieldPlan[] = [];
  for (const [key, nodes] of collected) {
    const name = nodes[0]!.name.value;
    if (name === TypeNameMetaFieldDef.name) {
      out.push({ key, name, typename: type.name });
      continue;
    }
    const def = defs[name];
    if (!def || (def.resolve && def.resolve !== defaultFieldResolver)) return undefined;
    // below the root, arguments are left to graphql-js (it coerces them per field)
    if (!root && nodes.some((n) => n.arguments?.length)) return undefined;
    const plan = planType(ctx, def.type, nodes as FieldNode[]);
    if (!plan) return undefined;
    out.push({ key, name, plan });
  }
  return out;
}

/** The plan for the subscription root, or undefined when events must take graphql-js's execute(). */
function planOperation(args: ExecutionArgs): FieldPlan[] | undefined {
  if (args.fieldResolver || args.typeResolver) return undefined;
  const ctx = buildExecutionContext(args);
  if (!('schema' in ctx) || ctx.operation.operation !== 'subscription') return undefined;
  const root = ctx.schema.getSubscriptionType();
  if (!root) return undefined;
  const fields = planFields(ctx, root, collectFields(ctx.schema, ctx.fragments, ctx.variableValues, root, ctx.operation.selectionSet), true);
  // the root field's arguments are the ones createSourceEventStream already coerced; the default
  // resolver only passes them to a method, which falls back
  return fields && fields.length > 0 ? fields : undefined;
}

const isThenable = (v: unknown): boolean => typeof (v as { then?: unknown } | null)?.then === 'function';

function complete(plan: Plan, value: unknown): unknown {
  if (value instanceof Error) return FALLBACK;
  if (value == null) return plan.nonNull ? FALLBACK : null;
  if (isThenable(value)) return FALLBACK;
  switch (plan.kind) {
    case 'leaf': {
      let s: unknown;
      try {
        s = plan.type.serialize(value);
      } catch {
        return FALLBACK;
      }
      return s == null ? FALLBACK : s;
    }
    case 'list': {
      if (!Array.isArray(value)) return FALLBACK;
      const out = new Array<unknown>(value.length);
      for (let i = 0; i < value.length; i++) {
        const c = complete(plan.item, value[i]);
        if (c === FALLBACK) return FALLBACK;
        out[i] = c;
      }
      return out;
    }
    case 'object':
      return typeof value === 'object' ? completeFields(plan.fields, value as Record<string, unknown>) : FALLBACK;
  }
}

function completeFields(fields: FieldPlan[], source: Record<string, unknown>): unknown {
  const out: Record<string, unknown> = {};
  for (let i = 0; i < fields.length; i++) {
    const f = fields[i]!;
    if (f.typename !== undefined) {
      out[f.key] = f.typename;
      continue;
    }
    const v = source[f.name];
    if (typeof v === 'function') return FALLBACK; // the default resolver would call it
    const c = complete(f.plan!, v);
    if (c === FALLBACK) return FALLBACK;
    out[f.key] = c;
  }
  return out;
}

/** yoga's test for errors that must not be masked (graphql-yoga/esm/error.js isAbortError) */
const isAbortError = (e: unknown): boolean =>
  typeof e === 'object' &&
  (e as { constructor?: { name?: string } } | null)?.constructor?.name === 'DOMException' &&
  ((e as DOMException).name === 'AbortError' || (e as DOMException).name === 'TimeoutError');

type MaybePromise<T> = T | Promise<T>;

/**
 * Maps source events to results like graphql-js's mapAsyncIterator (same return/throw/close-on-error
 * behaviour) with one promise reaction per event instead of several async-function hops.
 *
 * With `mask` set (setEventMask) it also does what yoga's envelop layers do to each event, in the
 * same reaction: errors in a result are masked (useMaskedErrors' onNext), and an error from next()
 * is masked unless it is an abort (yoga's onSubscribeError hooks, errorAsyncIterator); return() and
 * throw() errors pass through unchanged, as there.
 */
class EventStream implements AsyncIterableIterator<ExecutionResult> {
  mask: ((error: unknown) => unknown) | undefined;
  constructor(
    private readonly iterator: AsyncIterator<unknown>,
    private readonly map: (payload: unknown) => MaybePromise<ExecutionResult>,
  ) {}

  private readonly fail = (error: unknown): never => {
    throw this.mask && !isAbortError(error) ? this.mask(error) : error;
  };

  private result(value: ExecutionResult): IteratorResult<ExecutionResult> {
    const mask = this.mask;
    if (mask && value.errors != null) value = { ...value, errors: value.errors.map((e) => mask(e) as GraphQLError) };
    return { value, done: false };
  }

  /** closes the source, then rejects with `error` (masked when `viaNext`, like a next() rejection) */
  private closeThenThrow(error: unknown, viaNext: boolean): Promise<never> {
    let p: unknown;
    try {
      p = typeof this.iterator.return === 'function' ? this.iterator.return() : undefined;
    } catch {
      // keep the original error
    }
    const rethrow = viaNext ? () => this.fail(error) : (): never => {
      throw error;
    };
    return Promise.resolve(p).then(rethrow, rethrow);
  }

  private mapResult(r: IteratorResult<unknown>, viaNext: boolean): MaybePromise<IteratorResult<ExecutionResult>> {
    if (r.done) return r as IteratorResult<ExecutionResult>;
    let v: MaybePromise<ExecutionResult>;
    try {
      v = this.map(r.value);
    } catch (e) {
      return this.closeThenThrow(e, viaNext);
    }
    if (isThenable(v))
      return (v as Promise<ExecutionResult>).then(
        (value) => this.result(value),
        (e) => this.closeThenThrow(e, viaNext),
      );
    return this.result(v as ExecutionResult);
  }

  private readonly onNext = (r: IteratorResult<unknown>) => this.mapResult(r, true);
  private readonly onOther = (r: IteratorResult<unknown>) => this.mapResult(r, false);

  next(): Promise<IteratorResult<ExecutionResult>> {
    let p: unknown;
    try {
      p = this.iterator.next();
    } catch (e) {
      return Promise.reject(e).catch(this.fail);
    }
    // one reaction per event; a rejection is masked (when masking) like envelop's errorAsyncIterator does
    return Promise.resolve(p as IteratorResult<unknown>).then(this.onNext, this.fail);
  }

  return(): Promise<IteratorResult<ExecutionResult>> {
    if (typeof this.iterator.return !== 'function') return Promise.resolve({ value: undefined, done: true });
    try {
      return Promise.resolve(this.iterator.return()).then(this.onOther);
    } catch (e) {
      return Promise.reject(e);
    }
  }

  throw(error: unknown): Promise<IteratorResult<ExecutionResult>> {
    if (typeof this.iterator.throw !== 'function') return this.closeThenThrow(error, false);
    try {
      return Promise.resolve(this.iterator.throw(error)).then(this.onOther);
    } catch (e) {
      return Promise.reject(e);
    }
  }

  [Symbol.asyncIterator](): this {
    return this;
  }
}

/**
 * graphql-js `subscribe`, with events completed from a per-subscription plan where that is exact.
 * `onStream` sees the event stream before the caller (envelop) wraps it.
 */
export async function fastSubscribe(
  args: ExecutionArgs,
  onStream?: (stream: AsyncGenerator<ExecutionResult>) => void,
): Promise<AsyncGenerator<ExecutionResult> | ExecutionResult> {
  const resultOrStream = await createSourceEventStream(args);
  if (!(Symbol.asyncIterator in (resultOrStream as object))) return resultOrStream as ExecutionResult;
  const slow = (payload: unknown) => execute({ ...args, rootValue: payload });
  let fields: FieldPlan[] | undefined;
  try {
    fields = planOperation(args);
  } catch {
    fields = undefined;
  }
  const plan = fields;
  const stream = new EventStream(
    (resultOrStream as AsyncIterable<unknown>)[Symbol.asyncIterator](),
    !plan
      ? slow
      : (payload) => {
          if (payload === null || typeof payload !== 'object') return slow(payload);
          const data = completeFields(plan, payload as Record<string, unknown>);
          return data === FALLBACK ? slow(payload) : { data: data as Record<string, unknown> };
        },
  ) as unknown as AsyncGenerator<ExecutionResult>;
  onStream?.(stream);
  return stream;
}

/**
 * Makes a fastSubscribe stream apply yoga's per-event masking itself (see EventStream), so that it
 * can be consumed without envelop's per-event wrappers. False for any other stream.
 */
export function setEventMask(stream: unknown, mask: (error: unknown) => unknown): boolean {
  if (!(stream instanceof EventStream)) return false;
  stream.mask = mask;
  return true;
}

/** For tests: would this subscription's events take the planned path? */
export function hasEventPlan(args: ExecutionArgs): boolean {
  return planOperation(args) !== undefined;
}
