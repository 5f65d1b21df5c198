// The gateway's use of newer engine features, on the in-test engine: session memory bounded in bytes
// via Engine.sessionInfo, input images of any size (the engine centre-crops and resizes), folded/trailing textless steps (the last event carries
// UnderstandSummary.trailing, so events' tokenIds and per-step stats add up).
import sharp from 'sharp';
import { afterEach, describe, expect, it } from 'vitest';
import type { RunningServer } from '../../src/gateway/server.ts';
import { FakeEngine } from './fake-engine.ts';
import { gqlPost, start, wsClient, wsRun } from './helpers.ts';

let server: RunningServer | undefined;
afterEach(async () => {
  await server?.close();
  server = undefined;
});

const U = `subscription U($input: UnderstandInput!) { understand(input: $input) { text tokenIds acceptedTokens draftedTokens steps done fullText
  usage { completionTokens } speculation { drafts draftedTokens acceptedTokens } } }`;
const codeOf = (p: Promise<unknown[]>) =>
  p.then(
    (out: any) => out.at(-1)?.errors?.[0]?.extensions?.code,
    (e) => e.errors?.[0]?.extensions?.code,
  );

describe('session memory in bytes (Engine.sessionInfo)', () => {
  it('a session past maxSessionBytes is full; past maxTotalSessionBytes the least recently used idle session is evicted', async () => {
    const engine = new FakeEngine({ stepMs: 1, tokens: 3 });
    engine.bytesPerToken = 1000; // one understand turn of 3 tokens: 6 context tokens, 6000 bytes
    server = await start({ engine, limits: { maxSessionBytes: 10_000, maxTotalSessionBytes: 15_000, maxSessionTokens: 1_000_000 } });
    const s = server;
    const create = async () => (await gqlPost(s, { query: 'mutation { createSession }' })).json.data.createSession as string;
    const client = wsClient(s);
    try {
      const a = await create();
      await wsRun(client, U, { input: { prompt: 'x', sessionId: a } });
      await wsRun(client, U, { input: { prompt: 'x', sessionId: a } }); // 12000 bytes now
      expect(await codeOf(wsRun(client, U, { input: { prompt: 'x', sessionId: a } }))).toBe('SESSION_FULL');
      expect(s.runtime.sessions.bytes).toBe(12_000);
      const metrics = await (await fetch(s.url.replace(/\/graphql$/, '/metrics'))).text();
      expect(metrics).toMatch(/hyperbagel_gateway_session_bytes 12000/);
      // b's turn brings the total to 18000 > 15000: a (idle, least recently used) goes
      const b = await create();
      await wsRun(client, U, { input: { prompt: 'x', sessionId: b } });
      expect(s.runtime.sessions.memoryEvictions).toBe(1);
      expect(s.runtime.sessions.size).toBe(1);
      expect(engine.liveSessions.size).toBe(1);
      expect(await codeOf(wsRun(client, U, { input: { prompt: 'x', sessionId: a } }))).toBe('SESSION_NOT_FOUND');
      expect(await codeOf(wsRun(client, U, { input: { prompt: 'x', sessionId: b } }))).toBeUndefined();
    } finally {
      await client.dispose();
    }
  });

  it('a session the engine no longer knows is SESSION_NOT_FOUND', async () => {
    const engine = new FakeEngine({ stepMs: 1, tokens: 2 });
    server = await start({ engine });
    const id = (await gqlPost(server, { query: 'mutation { createSession }' })).json.data.createSession as string;
    engine.sessionState.clear(); // e.g. dropped inside the engine
    const client = wsClient(server);
    try {
      expect(await codeOf(wsRun(client, U, { input: { prompt: 'x', sessionId: id } }))).toBe('SESSION_NOT_FOUND');
      expect(server.runtime.sessions.size).toBe(0);
    } finally {
      await client.dispose();
    }
  });

  it('without sessionInfo, the gateway counts tokens itself', async () => {
    const engine = new FakeEngine({ stepMs: 1, tokens: 3 });
    engine.withoutSessionInfo = true;
    server = await start({ engine, limits: { maxSessionTokens: 10 } });
    const id = (await gqlPost(server, { query: 'mutation { createSession }' })).json.data.createSession as string;
    const client = wsClient(server);
    try {
      await wsRun(client, U, { input: { prompt: 'x', sessionId: id } });
      await wsRun(client, U, { input: { prompt: 'x', sessionId: id } }); // 12 tokens >= 10
      expect(await codeOf(wsRun(client, U, { input: { prompt: 'x', sessionId: id } }))).toBe('SESSION_FULL');
    } finally {
      await client.dispose();
    }
  });
});

describe('textless steps', () => {
  it('folded steps count in `steps`; the last event carries the trailing steps, so everything adds up', async () => {
    const engine = new FakeEngine({ stepMs: 1, tokens: 4 });
    engine.textlessSteps = true;
    server = await start({ engine });
    const client = wsClient(server);
    try {
      const out = await wsRun(client, U, { input: { prompt: 'x' } });
      expect(out.every((p) => !p.errors)).toBe(true);
      const events = out.map((p) => (p.data as any).understand);
      const last = events.at(-1);
      expect(last).toMatchObject({ done: true, text: '', tokenIds: [91, 92], acceptedTokens: 1, draftedTokens: 1, steps: 1 });
      // the engine's chunks: [90, 0] (2 steps), [1], [2], [3]; then trailing [91, 92] (1 step)
      expect(events.flatMap((e: any) => e.tokenIds)).toEqual([90, 0, 1, 2, 3, 91, 92]);
      expect(events.reduce((n: number, e: any) => n + e.steps, 0)).toBe(6);
      expect(events.reduce((n: number, e: any) => n + e.acceptedTokens, 0)).toBe(3 + 2 * 3 + 1);
      expect(events.reduce((n: number, e: any) => n + e.draftedTokens, 0)).toBe(5 + 3 * 3 + 1);
      expect(events.map((e: any) => e.text).join('')).toBe(last.fullText);
    } finally {
      await client.dispose();
    }
  });
});

describe('input images of any size', () => {
  it('are passed on as decoded (large ones centre-cropped and scaled to MAX_DECODED_SIDE first) and reported as sent', async () => {
    const engine = new FakeEngine({ stepMs: 1, tokens: 1 });
    server = await start({ engine });
    const client = wsClient(server);
    const q = `subscription U($input: UnderstandInput!) { understand(input: $input) { done inputImage { source originalWidth originalHeight width height resized cropped } } }`;
    const send = async (width: number, height: number) => {
      const png = await sharp({ create: { width, height, channels: 3, background: '#336699' } }).png().toBuffer();
      const out = await wsRun(client, q, { input: { prompt: 'x', image: { base64: png.toString('base64') } } });
      expect(out.every((p) => !p.errors), JSON.stringify(out.at(-1))).toBe(true);
      const img = engine.requests.understand.at(-1)!.image!;
      return { sent: [img.width, img.height], reported: (out.at(-1)!.data as any).understand.inputImage };
    };
    try {
      expect(await send(8, 8)).toEqual({ sent: [8, 8], reported: { source: 'REQUEST', originalWidth: 8, originalHeight: 8, width: 8, height: 8, resized: false, cropped: false } });
      expect(await send(30, 20)).toEqual({ sent: [30, 20], reported: { source: 'REQUEST', originalWidth: 30, originalHeight: 20, width: 8, height: 8, resized: true, cropped: true } });
      // larger than 1024 a side: square-cropped by the gateway, still reported as sent
      expect(await send(1600, 1200)).toEqual({ sent: [1024, 1024], reported: { source: 'REQUEST', originalWidth: 1600, originalHeight: 1200, width: 8, height: 8, resized: true, cropped: true } });
      // a long thin image keeps its short side (not scaled below the engine's minimum side)
      expect((await send(3000, 12)).sent).toEqual([12, 12]);
    } finally {
      await client.dispose();
    }
  });
});

describe('think mode (GenerateImageInput.think)', () => {
  const G = `mutation G($input: GenerateImageInput!) { generateImage(input: $input) { result { stage thought } } }`;
  it('passes think and thinkTemperature to the engine and reports the thought on the frames', async () => {
    const engine = new FakeEngine({ nfeMs: 1 });
    server = await start({ engine });
    const r = await gqlPost(server, { query: G, variables: { input: { prompt: 'a photo of a square', mode: 'ONE_STEP', think: true, thinkTemperature: 0.5 } } });
    expect(r.json.errors).toBeUndefined();
    expect(r.json.data.generateImage.result).toEqual({ stage: 'FINAL', thought: 'a scene for a photo of a square' });
    expect(engine.requests.generate.at(-1)).toMatchObject({ think: true, thinkTemperature: 0.5 });
    // one think job observed in /metrics (3 ms of thinking: the 0.005 s bucket)
    const metrics = await (await fetch(server.url.replace(/\/graphql$/, '/metrics'))).text();
    expect(metrics).toMatch(/hyperbagel_gateway_think_seconds_count 1\b/);
    expect(metrics).toMatch(/hyperbagel_gateway_think_seconds_bucket\{le="0.005"\} 1\b/);
    const caps = await gqlPost(server, { query: '{ models { capabilities { think } } }' });
    expect(caps.json.data.models[0].capabilities.think).toBe(true);
    // without think: no thought, and the engine is not asked to think
    const p = await gqlPost(server, { query: G, variables: { input: { prompt: 'a photo of a square', mode: 'ONE_STEP' } } });
    expect(p.json.data.generateImage.result.thought).toBeNull();
    expect(engine.requests.generate.at(-1)!.think).toBeUndefined();
  });

  it('refuses malformed think options before any work, naming them', async () => {
    const engine = new FakeEngine({ nfeMs: 1 });
    server = await start({ engine });
    const err = async (input: Record<string, unknown>) => (await gqlPost(server!, { query: G, variables: { input: { prompt: 'x', mode: 'ONE_STEP', ...input } } })).json.errors?.[0];
    let e = await err({ think: false, thinkTemperature: 0.5 });
    expect(e.extensions.code).toBe('INVALID_INPUT');
    expect(e.message).toContain('thinkTemperature');
    e = await err({ think: true, thinkTemperature: 2.5 });
    expect(e.extensions.code).toBe('OUT_OF_RANGE');
    expect(e.message).toContain('thinkTemperature');
    e = await err({ think: 'yes' });
    expect(e.message).toMatch(/Boolean/);
    expect(engine.requests.generate).toHaveLength(0);
    // a model that cannot think
    (engine.info.capabilities as { think: boolean }).think = false;
    e = await err({ think: true });
    expect(e.extensions.code).toBe('INVALID_INPUT');
    expect(e.message).toContain('capabilities.think');
    expect(engine.requests.generate).toHaveLength(0);
  });
});
