// The planned per-event path of fastSubscribe must give exactly what graphql-js subscribe gives:
// same data (keys, order, serialized leaves), and for anything unusual the same errors, because
// those events fall back to graphql-js execute().
import { describe, expect, it } from 'vitest';
import { GraphQLScalarType, buildSchema, parse, subscribe, type ExecutionArgs, type ExecutionResult } from 'graphql/index.js';
import { fastSubscribe, hasEventPlan, setEventMask } from '../../src/gateway/fast-subscribe.ts';

const sdl = `
  type Query { ok: Boolean }
  enum Color { RED GREEN }
  type Inner { n: Int! label: String }
  type Ev {
    text: String!
    ids: [Int!]!
    maybe: String
    color: Color
    inner: Inner
    inners: [Inner]
    count(times: Int): Int
    strict: Int!
  }
  interface Named { name: String }
  type Thing implements Named { name: String }
  type Subscription { ev(input: String!): Ev! named: Named }
`;

function makeSchema(events: unknown[]) {
  const schema = buildSchema(sdl);
  const sub = schema.getSubscriptionType()!.getFields();
  sub.ev!.subscribe = async function* () {
    for (const e of events) yield e;
  };
  sub.named!.subscribe = async function* () {
    yield { named: { __typename: 'Thing', name: 'x' } };
  };
  (schema.getType('Named') as unknown as { resolveType: () => string }).resolveType = () => 'Thing';
  return schema;
}

async function collect(run: (args: ExecutionArgs) => Promise<unknown>, args: ExecutionArgs): Promise<unknown[]> {
  const it = (await run(args)) as AsyncIterable<ExecutionResult> | ExecutionResult;
  if (!(Symbol.asyncIterator in (it as object))) return [JSON.parse(JSON.stringify(it))];
  const out: unknown[] = [];
  try {
    for await (const r of it as AsyncIterable<ExecutionResult>) out.push(JSON.parse(JSON.stringify(r)));
  } catch (e) {
    out.push({ thrown: String(e) });
  }
  return out;
}

const good = { ev: { text: 'a', ids: [1, 2], maybe: null, color: 'RED', inner: { n: 1, label: 'l' }, inners: [{ n: 2 }, null], count: 3, strict: 4 } };

async function same(query: string, events: unknown[], variableValues?: Record<string, unknown>, planned = true) {
  const args = { schema: makeSchema(events), document: parse(query), variableValues } as ExecutionArgs;
  expect(hasEventPlan(args)).toBe(planned);
  const want = await collect(subscribe as never, args);
  const got = await collect(fastSubscribe as never, { ...args, schema: makeSchema(events) });
  expect(got).toEqual(want);
  return got;
}

describe('fastSubscribe', () => {
  it('plans plain selections and matches graphql-js', async () => {
    const got = await same(
      `subscription S($skip: Boolean!) { ev(input: "x") { __typename t: text ids maybe color inner { n label } inners { n ...F } strict ... on Ev { text } maybe @skip(if: $skip) } }
       fragment F on Inner { label }`,
      [good, { ev: { ...good.ev, ids: [], inners: [] } }],
      { skip: true },
    );
    expect(got).toHaveLength(2);
    expect((got[0] as { data: unknown }).data).toEqual({
      ev: { __typename: 'Ev', t: 'a', ids: [1, 2], maybe: null, color: 'RED', inner: { n: 1, label: 'l' }, inners: [{ n: 2, label: null }, null], strict: 4, text: 'a' },
    });
  });

  it('falls back to execute() for errors, nulls in non-null positions and odd values', async () => {
    const q = `subscription { ev(input: "x") { text ids color inner { n } inners { n } strict } }`;
    const events = [
      good,
      { ev: { ...good.ev, strict: null } }, // non-null field null -> root nulled -> error
      { ev: { ...good.ev, ids: [1, null] } },
      { ev: { ...good.ev, color: 'BLUE' } }, // enum serialize fails
      { ev: { ...good.ev, inner: { n: 'x' } } }, // Int serialize fails
      { ev: { ...good.ev, inners: new Set([{ n: 1 }]) } }, // non-array iterable
      { ev: { ...good.ev, text: new Error('boom') } },
      { ev: { ...good.ev, text: Promise.resolve('later') } },
      { ev: { ...good.ev, text: () => 'method' } },
      { ev: null },
      'not an object',
      good,
    ];
    const got = await same(q, events);
    expect(got).toHaveLength(events.length);
    expect((got[1] as { errors?: unknown[] }).errors?.length).toBe(1);
  });

  it('leaves field arguments, abstract types and custom resolvers to graphql-js', async () => {
    await same(`subscription { ev(input: "x") { count(times: 2) } }`, [good], undefined, false);
    await same(`subscription { named { name } }`, [], undefined, false);
    const schema = makeSchema([good]);
    (schema.getType('Inner') as unknown as { getFields(): Record<string, { resolve?: unknown }> }).getFields().label!.resolve = () => 'custom';
    const args = { schema, document: parse(`subscription { ev(input: "x") { inner { label } } }`) } as ExecutionArgs;
    expect(hasEventPlan(args)).toBe(false);
    expect(await collect(fastSubscribe as never, args)).toEqual([{ data: { ev: { inner: { label: 'custom' } } } }]);
  });

  it('uses custom scalars serialize and keeps subscribe-time errors', async () => {
    const schema = buildSchema(`type Query { ok: Boolean } scalar Up type Subscription { s: Up }`);
    const up = schema.getType('Up') as GraphQLScalarType;
    up.serialize = (v: unknown) => String(v).toUpperCase();
    schema.getSubscriptionType()!.getFields().s!.subscribe = async function* () {
      yield { s: 'abc' };
    };
    const args = { schema, document: parse(`subscription { s }`) } as ExecutionArgs;
    expect(await collect(fastSubscribe as never, args)).toEqual([{ data: { s: 'ABC' } }]);
    const bad = { schema: makeSchema([]), document: parse(`subscription { ev(input: 1) { text } }`) } as ExecutionArgs;
    expect(await collect(fastSubscribe as never, bad)).toEqual(await collect(subscribe as never, bad));
  });

  it('return() and throw() reach the source like graphql-js mapAsyncIterator', async () => {
    let returned = 0;
    const schema = makeSchema([]);
    schema.getSubscriptionType()!.getFields().ev!.subscribe = () => {
      let i = 0;
      const it = {
        next: () => Promise.resolve({ value: good, done: i++ > 5 }),
        return: () => {
          returned++;
          return Promise.resolve({ value: undefined, done: true });
        },
        [Symbol.asyncIterator]: () => it,
      };
      return it;
    };
    const stream = (await fastSubscribe({ schema, document: parse(`subscription { ev(input: "x") { text } }`) } as ExecutionArgs)) as AsyncGenerator<ExecutionResult>;
    expect(await stream.next()).toEqual({ value: { data: { ev: { text: 'a' } } }, done: false });
    expect(await stream.return(undefined)).toEqual({ value: undefined, done: true });
    expect(returned).toBe(1);
    await expect(stream.throw(new Error('x'))).rejects.toThrow('x');
    expect(returned).toBe(2);
  });

  it('setEventMask: result errors and next() errors are masked, aborts and return() are not', async () => {
    const mask = (e: unknown) => new Error(`masked: ${(e as Error).message}`);
    const streamOf = async (events: unknown[], fail?: unknown) => {
      const schema = makeSchema([]);
      schema.getSubscriptionType()!.getFields().ev!.subscribe = async function* () {
        for (const e of events) yield e;
        if (fail) throw fail;
      };
      const s = (await fastSubscribe({ schema, document: parse(`subscription { ev(input: "x") { text strict } }`) } as ExecutionArgs)) as AsyncGenerator<ExecutionResult>;
      expect(setEventMask(s, mask)).toBe(true);
      return s;
    };
    const it = await streamOf([good, { ev: { ...good.ev, strict: null } }], new Error('thrown'));
    expect((await it.next()).value).toEqual({ data: { ev: { text: 'a', strict: 4 } } });
    const second = (await it.next()).value as ExecutionResult;
    expect(second.data).toBeNull();
    expect(second.errors![0]!.message).toBe('masked: Cannot return null for non-nullable field Ev.strict.');
    await expect(it.next()).rejects.toThrow('masked: thrown');
    const abort = new DOMException('gone', 'AbortError');
    await expect((await streamOf([], abort)).next()).rejects.toBe(abort);
    expect(await (await streamOf([good])).return(undefined)).toEqual({ value: undefined, done: true });
    expect(setEventMask({}, mask)).toBe(false);
  });
});
