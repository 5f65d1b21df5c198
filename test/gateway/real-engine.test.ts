// End to end on the real engine (test/fixtures/tiny-pack, random weights: outputs are meaningless,
// shapes and protocol are not), through real graphql-ws and HTTP clients.
import { createHash } from 'node:crypto';
import sharp from 'sharp';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { LocalEngine } from '../../src/engine/index.ts';
import type { RunningServer } from '../../src/gateway/server.ts';
import { gqlPost, httpStream, mergeIncremental, start, waitFor, wsClient, wsRun } from './helpers.ts';

const PACK = 'test/fixtures/tiny-pack';
const UNDERSTAND = `subscription U($input: UnderstandInput!) { understand(input: $input) {
  text tokenIds acceptedTokens draftedTokens steps done finishReason fullText
  usage { promptTokens completionTokens totalTokens } timings { queueMs timeToFirstTokenMs tokensPerSecond }
  speculation { mode drafts draftedTokens acceptedTokens meanAcceptedLength acceptanceRate }
  inputImage { source originalWidth originalHeight width height resized cropped } } }`;
const FRAME = 'stage nfe step seed elapsedMs image { mimeType width height byteLength base64 url sha256 }';
const jobQuery = (field: 'generateImage' | 'editImage', type: string) => `mutation M($input: ${type}!) { ${field}(input: $input) {
  id seed mode previews @stream(initialCount: 0) { ${FRAME} } ... @defer { result { ${FRAME} } } } }`;

let server: RunningServer;
let scene: Buffer;
beforeAll(async () => {
  server = await start({ packDir: PACK });
  // a red circle-ish 64x64 test image
  const svg = `<svg xmlns="http://www.w3.org/2000/svg" width="64" height="64"><rect width="64" height="64" fill="white"/><circle cx="32" cy="32" r="14" fill="red"/></svg>`;
  scene = await sharp(Buffer.from(svg)).png().toBuffer();
}, 120_000);
afterAll(async () => {
  await server?.close();
});

/** the real engine behind the test server (its test hooks and sessionInfo) */
const localEngine = () => (server.runtime as unknown as { engine: LocalEngine }).engine;

async function checkImage(frame: Record<string, any>) {
  const img = frame.image;
  const bytes = Buffer.from(img.base64, 'base64');
  expect(bytes.byteLength).toBe(img.byteLength);
  expect(createHash('sha256').update(bytes).digest('hex')).toBe(img.sha256);
  const meta = await sharp(bytes).metadata();
  expect([meta.width, meta.height]).toEqual([img.width, img.height]);
  expect(img.mimeType).toBe(`image/${meta.format}`);
  const served = await fetch(img.url);
  expect(served.status).toBe(200);
  expect(Buffer.from(await served.arrayBuffer()).equals(bytes)).toBe(true);
  // a client holding the bytes revalidates them: 304 without a body for its ETag (weak or in a list), 200 for another
  const etag = served.headers.get('etag')!;
  expect(etag).toBe(`"${img.sha256}"`);
  for (const held of [etag, `W/${etag}`, `"other", ${etag}`, '*']) {
    const again = await fetch(img.url, { headers: { 'if-none-match': held } });
    expect(again.status, held).toBe(304);
    expect(again.headers.get('etag')).toBe(etag);
    expect((await again.arrayBuffer()).byteLength).toBe(0);
  }
  expect((await fetch(img.url, { headers: { 'if-none-match': '"other"' } })).status).toBe(200);
  // read-only, and only under its own type's extension
  const head = await fetch(img.url, { method: 'HEAD' });
  expect([head.status, head.headers.get('content-type')]).toEqual([200, img.mimeType]);
  for (const method of ['POST', 'DELETE', 'PUT']) {
    const r = await fetch(img.url, { method });
    expect([r.status, r.headers.get('allow')], method).toEqual([405, 'GET, HEAD']);
  }
  const other = img.mimeType === 'image/png' ? '.jpg' : '.png';
  expect((await fetch(img.url.replace(/\.(png|jpg|webp)$/, other))).status).toBe(404);
  expect((await fetch(img.url.replace(/\.(png|jpg|webp)$/, ''))).status).toBe(200); // no extension: the token alone
}

describe('real engine on the tiny pack', () => {
  it('reports the model', async () => {
    const r = await gqlPost(server, { query: '{ models { name imageSize { width height } vocabularySize words contextLength sessionContext capabilities { understand generate edit } } health { ready } }' });
    // the words a prompt may use: every one is accepted, and they are all the vocabulary's non-special words
    const words = r.json.data.models[0].words as string[];
    expect(words.length).toBe(81 - 10);
    expect(words).toContain('circle');
    expect(r.json.data.models[0]).toMatchObject({ name: 'tiny-pack', imageSize: { width: 64, height: 64 }, vocabularySize: 81, contextLength: 256, sessionContext: 'CONVERSATION', capabilities: { understand: true, generate: true, edit: true } });
    expect(r.json.data.health.ready).toBe(true);
  });

  it('streams understanding with an image over graphql-ws; deltas add up to the full text', async () => {
    const client = wsClient(server);
    try {
      const out = await wsRun(client, UNDERSTAND, {
        input: { prompt: 'describe the image', image: { base64: scene.toString('base64') }, maxTokens: 12, temperature: 0, speculation: { mode: 'CHAIN', chainLength: 3 } },
      });
      expect(out.every((p) => !p.errors)).toBe(true);
      const events = out.map((p) => p.data!.understand as Record<string, any>);
      const last = events.at(-1)!;
      expect(last.done).toBe(true);
      expect(['EOS', 'STOP', 'LENGTH']).toContain(last.finishReason);
      const chunks = events.slice(0, -1);
      expect(chunks.map((c) => c.text).join('')).toBe(last.fullText);
      expect(last.text).toBe('');
      // the last event carries the textless trailing steps (e.g. EOS): all events' tokenIds are the answer
      expect(events.flatMap((c) => c.tokenIds).length).toBe(last.usage.completionTokens);
      expect(events.reduce((n, c) => n + c.acceptedTokens, 0)).toBe(last.speculation.acceptedTokens);
      expect(events.reduce((n, c) => n + c.draftedTokens, 0)).toBe(last.speculation.draftedTokens);
      expect(last.usage.completionTokens).toBeLessThanOrEqual(12);
      expect(last.usage.totalTokens).toBe(last.usage.promptTokens + last.usage.completionTokens);
      expect(last.timings.timeToFirstTokenMs).toBeGreaterThanOrEqual(0);
      expect(last.speculation.mode).toBe('CHAIN');
    } finally {
      await client.dispose();
    }
  });

  it('streams understanding over SSE', async () => {
    const r = await httpStream(server, 'text/event-stream', { query: UNDERSTAND, variables: { input: { prompt: 'what is in the picture', maxTokens: 6 } } });
    const events = r.payloads.map((p) => p.data!.understand as Record<string, any>);
    expect(events.at(-1)!.done).toBe(true);
    expect(events.slice(0, -1).map((e) => e.text).join('')).toBe(events.at(-1)!.fullText);
  });

  it('types engine input errors (unknown words)', async () => {
    const client = wsClient(server);
    try {
      const err = await wsRun(client, UNDERSTAND, { input: { prompt: 'describe the zebra', maxTokens: 4 } }).then(
        (out) => out.at(-1)!.errors,
        (e) => e.errors,
      );
      expect(err?.[0]?.extensions?.code).toBe('UNKNOWN_WORDS');
      expect(err?.[0]?.message).toContain('zebra');
    } finally {
      await client.dispose();
    }
  });

  it('refuses what the engine would refuse before queueing or handing out a job id, naming the schema field', async () => {
    const client = wsClient(server);
    const understandError = (input: Record<string, unknown>) =>
      wsRun(client, UNDERSTAND, { input }).then(
        (out) => out.at(-1)!.errors?.[0],
        (e) => e.errors?.[0],
      );
    try {
      // within the gateway's limits, beyond the model's (256 positions, 81 words)
      const long = await understandError({ prompt: 'describe the image', maxTokens: 257 });
      expect(long?.extensions).toMatchObject({ code: 'OUT_OF_RANGE', argument: 'maxTokens', min: 1, max: 256 });
      expect(long?.extensions?.param).toBeUndefined();
      // beyond both: the error names the one range that applies, the model's, not the server's wider one
      const longer = await understandError({ prompt: 'describe the image', maxTokens: 1025 });
      expect(longer?.message).toBe('maxTokens must be in [1, 256], got 1025');
      expect(longer?.extensions).toMatchObject({ code: 'OUT_OF_RANGE', argument: 'maxTokens', min: 1, max: 256 });
      for (const topK of [100, 1_000_001]) {
        const e = await understandError({ prompt: 'describe the image', topK });
        expect(e?.message).toBe(`topK must be in [0, 81], got ${topK}`);
        expect(e?.extensions).toMatchObject({ code: 'OUT_OF_RANGE', argument: 'topK', min: 0, max: 81 });
      }
      expect((await understandError({ prompt: ' ' }))?.extensions).toMatchObject({ code: 'INVALID_INPUT', argument: 'prompt' });
    } finally {
      await client.dispose();
    }
    const jobs = server.runtime.jobs.size;
    const gen = await gqlPost(server, { query: 'mutation { generateImage(input: { prompt: "a photo of a xyzzy" }) { id status } }' });
    expect(gen.json.data).toBeNull();
    expect(gen.json.errors[0].extensions.code).toBe('UNKNOWN_WORDS');
    const EDIT = 'mutation($i: EditImageInput!) { editImage(input: $i) { id } }';
    const empty = await gqlPost(server, { query: EDIT, variables: { i: { instruction: '', image: { base64: scene.toString('base64') } } } });
    expect(empty.json.errors[0].message).toBe('instruction is empty');
    expect(empty.json.errors[0].extensions).toMatchObject({ code: 'INVALID_INPUT', argument: 'instruction' });
    const tiny = await sharp({ create: { width: 4, height: 4, channels: 3, background: '#ff0000' } }).png().toBuffer();
    const small = await gqlPost(server, { query: EDIT, variables: { i: { instruction: 'make it blue', image: { base64: tiny.toString('base64') } } } });
    expect(small.json.errors[0].extensions.code).toBe('BAD_IMAGE');
    expect(small.json.errors[0].message).toMatch(/^image: 4×4 is too small/);
    expect(small.json.errors[0].extensions.argument).toBe('image'); // as every other refusal of an input field
    expect(server.runtime.jobs.size).toBe(jobs); // no job was created for any of them
  });

  it('a session whose conversation fills the model context answers SESSION_FULL, not PROMPT_TOO_LONG', async () => {
    const client = wsClient(server);
    try {
      const sid = (await gqlPost(server, { query: 'mutation { createSession }' })).json.data.createSession;
      let err: Record<string, any> | undefined;
      for (let turn = 0; turn < 40 && !err; turn++) {
        err = await wsRun(client, UNDERSTAND, { input: { prompt: 'describe the image', sessionId: sid, maxTokens: 40, temperature: 1, seed: turn } }).then(
          (out) => out.at(-1)!.errors?.[0],
          (e) => e.errors?.[0],
        );
      }
      expect(err?.extensions).toMatchObject({ code: 'SESSION_FULL', limit: 256 });
      expect(err?.message).toContain('start a new session');
    } finally {
      await client.dispose();
    }
  });

  it('a model worker crash fails the streams and jobs in flight with WORKER_CRASHED; the next requests are served', async () => {
    const engine = localEngine();
    const client = wsClient(server);
    try {
      let crashed: Promise<void> | undefined;
      const stream = wsRun(client, UNDERSTAND, { input: { prompt: 'describe the image', maxTokens: 200, temperature: 1, seed: 11, speculation: { mode: 'OFF' } } }, (_p, all) => {
        if (all.length === 1) crashed = engine.crashWorkerForTest();
      }).then(
        (out) => out.at(-1)!.errors?.[0],
        (e) => e.errors?.[0],
      );
      const err = await stream;
      await crashed;
      expect(err?.extensions?.code).toBe('WORKER_CRASHED');
      // an image job running at the crash ends FAILED with the same code
      const r = await gqlPost(server, { query: 'mutation { generateImage(input: { prompt: "a photo of a red circle", mode: BASELINE, steps: 250, seed: 1 }) { id } }' });
      const id = r.json.data.generateImage.id as string;
      const job = server.runtime.jobs.get(id);
      await waitFor(() => job.status === 'RUNNING', 'the job to start');
      await engine.crashWorkerForTest();
      await job.finished;
      expect(job.status).toBe('FAILED');
      expect(job.error?.code).toBe('WORKER_CRASHED');
      // served again, and nothing is left open
      const ok = await wsRun(client, UNDERSTAND, { input: { prompt: 'describe the image', maxTokens: 4 } });
      expect(ok.at(-1)!.data!.understand).toMatchObject({ done: true });
      await waitFor(() => server.runtime.activeStreamCount === 0 && server.runtime.scheduler.runningCount === 0, 'streams and slots to be released');
    } finally {
      await client.dispose();
    }
  });

  it('generateImage: 1-NFE preview streamed first, final deferred last (graphql-ws and multipart)', async () => {
    const client = wsClient(server);
    try {
      const out = await wsRun(client, jobQuery('generateImage', 'GenerateImageInput'), { input: { prompt: 'a red circle', seed: 11 } });
      const previewAt = out.findIndex((p) => p.incremental?.some((i) => i.items));
      const finalAt = out.findIndex((p) => p.incremental?.some((i) => i.data?.result));
      expect(previewAt).toBeGreaterThan(0);
      expect(finalAt).toBe(out.length - 1);
      const job = mergeIncremental(out).generateImage;
      expect(job.seed).toBe(11);
      expect(job.previews.length).toBeGreaterThanOrEqual(1);
      expect(job.previews[0].stage).toBe('PREVIEW');
      expect(job.result.stage).toBe('FINAL');
      expect(job.result.nfe).toBeGreaterThan(job.previews[0].nfe);
      await checkImage(job.previews[0]);
      await checkImage(job.result);
    } finally {
      await client.dispose();
    }
    const r = await httpStream(server, 'multipart/mixed', { query: jobQuery('generateImage', 'GenerateImageInput'), variables: { input: { prompt: 'a red circle', seed: 11 } } });
    const job2 = mergeIncremental(r.payloads).generateImage;
    expect(job2.result.stage).toBe('FINAL');
    // same seed, same image
    await checkImage(job2.result);
  });

  it('the last understand event reports the seed it sampled with (drawn when absent) and what drafted; the seed reproduces the answer', async () => {
    const client = wsClient(server);
    const Q = 'subscription U($input: UnderstandInput!) { understand(input: $input) { done fullText seed speculation { mode proposer } } }';
    try {
      const input = { prompt: 'describe the image', maxTokens: 10, temperature: 1.5, speculation: { mode: 'NGRAM' } };
      const first = (await wsRun(client, Q, { input })).at(-1)!.data!.understand as { seed: number; fullText: string; speculation: { mode: string; proposer: string } };
      expect(Number.isInteger(first.seed)).toBe(true);
      expect(first.speculation).toEqual({ mode: 'NGRAM', proposer: 'ngram' });
      const again = (await wsRun(client, Q, { input: { ...input, seed: first.seed, speculation: { mode: 'OFF' } } })).at(-1)!.data!.understand as typeof first;
      expect(again.seed).toBe(first.seed);
      expect(again.fullText).toBe(first.fullText);
      expect(again.speculation).toEqual({ mode: 'OFF', proposer: 'none' });
    } finally {
      await client.dispose();
    }
  });

  it('frames name their sampler: the 1-NFE preview and the 6-NFE intermediate previews share nfe and step, not the sampler', async () => {
    const client = wsClient(server);
    const Q = `mutation M($input: GenerateImageInput!) { generateImage(input: $input) { previews @stream(initialCount: 0) { stage nfe step sampler } ... @defer { result { stage nfe sampler } } } }`;
    try {
      const job = mergeIncremental(await wsRun(client, Q, { input: { prompt: 'a red circle', seed: 3, intermediatePreviews: true } })).generateImage;
      const samplers = job.previews.map((p: { sampler: string }) => p.sampler);
      expect(samplers[0]).toMatch(/1nfe|euler-1/);
      expect(samplers.slice(1).every((x: string) => /6nfe|euler-6/.test(x))).toBe(true);
      expect(job.previews.length).toBeGreaterThan(1);
      expect(job.result.sampler).toBe(samplers.at(-1));
    } finally {
      await client.dispose();
    }
  });

  it('editImage from a base64 image and a session conversation (describe, then edit without resending)', async () => {
    const client = wsClient(server);
    try {
      const direct = await wsRun(client, jobQuery('editImage', 'EditImageInput'), { input: { instruction: 'make the circle green', image: { base64: scene.toString('base64') }, seed: 3 } });
      const job = mergeIncremental(direct).editImage;
      expect(job.result.stage).toBe('FINAL');
      await checkImage(job.result);

      const sid = (await gqlPost(server, { query: 'mutation { createSession }' })).json.data.createSession;
      const described = await wsRun(client, UNDERSTAND, { input: { prompt: 'describe this image', image: { base64: scene.toString('base64') }, sessionId: sid, maxTokens: 6 } });
      expect(described.at(-1)!.errors, JSON.stringify(described.at(-1))).toBeUndefined();
      expect((described.at(-1)!.data!.understand as any).done).toBe(true);
      const edited = await wsRun(client, jobQuery('editImage', 'EditImageInput'), { input: { instruction: 'now make the circle green', sessionId: sid, seed: 4 } });
      expect(edited.every((p) => !p.errors && !p.incremental?.some((i) => i.errors))).toBe(true);
      expect(mergeIncremental(edited).editImage.result.stage).toBe('FINAL');
      // and the conversation continues
      const again = await wsRun(client, UNDERSTAND, { input: { prompt: 'what is in the image', sessionId: sid, maxTokens: 4 } });
      expect((again.at(-1)!.data!.understand as any).done).toBe(true);
      expect((await gqlPost(server, { query: 'mutation($s: ID!) { closeSession(id: $s) }', variables: { s: sid } })).json.data.closeSession).toBe(true);
    } finally {
      await client.dispose();
    }
  });

  it('one conversation through the gateway: describe this image, now make the circle green, what colour is the circle now? (the engine keeps the session image)', async () => {
    const client = wsClient(server);
    try {
      const sid = (await gqlPost(server, { query: 'mutation { createSession }' })).json.data.createSession;
      // a non-square photo-sized image: the engine centre-crops and resizes it
      const wide = await sharp(scene).resize(160, 96, { fit: 'fill' }).png().toBuffer();
      const described = await wsRun(client, UNDERSTAND, { input: { prompt: 'describe this image', image: { base64: wide.toString('base64') }, sessionId: sid, maxTokens: 6 } });
      expect(described.every((p) => !p.errors), JSON.stringify(described.at(-1))).toBe(true);
      const d = described.at(-1)!.data!.understand as any;
      expect(d.done).toBe(true);
      expect(d.inputImage).toEqual({ source: 'REQUEST', originalWidth: 160, originalHeight: 96, width: 64, height: 64, resized: true, cropped: true });

      const edited = await wsRun(client, jobQuery('editImage', 'EditImageInput').replace('result { ', 'result { sourceImage { source width height } '), {
        input: { instruction: 'now make the circle green', sessionId: sid, seed: 4 },
      });
      expect(edited.every((p) => !p.errors && !p.incremental?.some((i) => i.errors)), JSON.stringify(edited.at(-1))).toBe(true);
      const job = mergeIncremental(edited).editImage;
      expect(job.result.stage).toBe('FINAL');
      expect(job.result.sourceImage).toEqual({ source: 'SESSION', width: 64, height: 64 });
      await checkImage(job.result);

      const asked = await wsRun(client, UNDERSTAND, { input: { prompt: 'what colour is the circle now?', sessionId: sid, maxTokens: 6 } });
      expect(asked.every((p) => !p.errors), JSON.stringify(asked.at(-1))).toBe(true);
      const a = asked.at(-1)!.data!.understand as any;
      expect(a.done).toBe(true);
      // no image sent: the engine fed the session's latest image (the edit's result) in this turn
      expect(a.inputImage).toMatchObject({ source: 'SESSION', width: 64, height: 64 });
      expect(a.usage.promptTokens).toBeGreaterThan(d.usage.promptTokens);
      expect((await gqlPost(server, { query: 'mutation($s: ID!) { closeSession(id: $s) }', variables: { s: sid } })).json.data.closeSession).toBe(true);
    } finally {
      await client.dispose();
    }
  });

  it('bounds session memory with the engine sessionInfo', async () => {
    const engine = localEngine();
    const client = wsClient(server);
    try {
      const sid = (await gqlPost(server, { query: 'mutation { createSession }' })).json.data.createSession;
      const entry = server.runtime.sessions.get(sid);
      await wsRun(client, UNDERSTAND, { input: { prompt: 'describe this image', image: { base64: scene.toString('base64') }, sessionId: sid, maxTokens: 4 } });
      const info = engine.sessionInfo(entry.handle);
      expect(info.hasImage).toBe(true);
      expect(info.tokens).toBeGreaterThan(0);
      expect(info.bytes).toBeGreaterThan(64 * 64 * 3);
      expect(server.runtime.sessions.bytes).toBeGreaterThanOrEqual(info.bytes);
      await gqlPost(server, { query: 'mutation($s: ID!) { closeSession(id: $s) }', variables: { s: sid } });
    } finally {
      await client.dispose();
    }
  });

  it('rejects a corrupt image before it reaches the engine', async () => {
    const bad = Buffer.concat([scene.subarray(0, 40), Buffer.alloc(40)]);
    const r = await gqlPost(server, { query: `mutation($i: EditImageInput!) { editImage(input: $i) { id } }`, variables: { i: { instruction: 'make it blue', image: { base64: bad.toString('base64') } } } });
    expect(r.json.errors[0].extensions.code).toBe('BAD_IMAGE');
  });

  it('stops model work when a client stops a stream, and keeps serving', async () => {
    const engine = localEngine();
    const client = wsClient(server);
    try {
      // a full run's model calls, for scale
      const c0 = (await engine.workerStats()).modelCalls;
      const full = await wsRun(client, UNDERSTAND, { input: { prompt: 'describe the image', maxTokens: 40, temperature: 0, speculation: { mode: 'OFF' }, stop: [] } });
      const fullCalls = (await engine.workerStats()).modelCalls - c0;
      const fullTokens = (full.at(-1)!.data!.understand as any).usage.completionTokens as number;
      // now stop after the first event
      const c1 = (await engine.workerStats()).modelCalls;
      await wsRun(client, UNDERSTAND, { input: { prompt: 'describe the image', maxTokens: 40, temperature: 0, speculation: { mode: 'OFF' } } }, () => 'stop');
      await waitFor(() => server.runtime.scheduler.runningCount === 0, 'the slot to be released');
      await new Promise((r) => setTimeout(r, 200));
      const cancelledCalls = (await engine.workerStats()).modelCalls - c1;
      if (fullTokens > 6) expect(cancelledCalls).toBeLessThan(fullCalls);
      // the engine still serves
      const after = await wsRun(client, UNDERSTAND, { input: { prompt: 'describe the image', maxTokens: 3 } });
      expect((after.at(-1)!.data!.understand as any).done).toBe(true);
      // and an image job cancelled with cancelJob while it runs ends CANCELLED. The tiny model runs 250 steps in
      // about 150 ms, less than a stall of a loaded machine: its model calls wait until the cancel has reached the job
      const worker = engine.workerClient;
      const call = worker.call;
      let open!: () => void;
      const gate = new Promise<void>((r) => (open = r));
      worker.call = (async (...args: Parameters<typeof call>) => {
        await gate;
        return call.apply(worker, args);
      }) as typeof call;
      let id: string;
      let cancel: ReturnType<typeof gqlPost>;
      try {
        id = (await gqlPost(server, { query: 'mutation { generateImage(input: { prompt: "a red circle", mode: BASELINE, steps: 250 }) { id } }' })).json.data.generateImage.id;
        const job = server.runtime.jobs.get(id);
        await waitFor(() => job.status === 'RUNNING', 'the job to start');
        // (cancelJob answers once the job has ended, which takes the engine's next step)
        cancel = gqlPost(server, { query: 'mutation($id: ID!) { cancelJob(id: $id) }', variables: { id } });
        await waitFor(() => job.controller.signal.aborted, 'the cancel to reach the job');
      } finally {
        worker.call = call;
        open();
      }
      expect((await cancel).json.data.cancelJob).toBe(true);
      const events = await wsRun(client, 'subscription($id: ID!) { imageJob(id: $id) { status done } }', { id });
      expect((events.at(-1)!.data!.imageJob as any).status).toBe('CANCELLED');
    } finally {
      await client.dispose();
    }
  });
});

describe('think mode through the gateway on the real engine (tiny pack copy with prompts.think)', () => {
  let thinker: RunningServer;
  let dir = '';
  beforeAll(async () => {
    const fs = await import('node:fs');
    const os = await import('node:os');
    const path = await import('node:path');
    dir = fs.mkdtempSync(path.join(os.tmpdir(), 'hb-gw-think-'));
    fs.cpSync(PACK, dir, { recursive: true });
    const mf = path.join(dir, 'manifest.json');
    fs.writeFileSync(mf, JSON.stringify({ ...JSON.parse(fs.readFileSync(mf, 'utf8')), prompts: { think: true } }));
    thinker = await start({ packDir: dir });
  }, 120_000);
  afterAll(async () => {
    await thinker?.close();
    if (dir) (await import('node:fs')).rmSync(dir, { recursive: true, force: true });
  });

  it('every streamed frame carries the thought; the same seed gives the same thought and image; imageJob events carry it too', async () => {
    const q = `mutation M($input: GenerateImageInput!) { generateImage(input: $input) {
      id seed previews @stream(initialCount: 0) { stage thought image { sha256 } } ... @defer { result { stage thought elapsedMs image { sha256 } } } } }`;
    const input = { prompt: 'a photo of a square', seed: 5, think: true, thinkTemperature: 0.9 };
    const a = mergeIncremental((await httpStream(thinker, 'multipart/mixed', { query: q, variables: { input } })).payloads).generateImage;
    const b = mergeIncremental((await httpStream(thinker, 'multipart/mixed', { query: q, variables: { input } })).payloads).generateImage;
    expect(typeof a.result.thought).toBe('string');
    expect(a.result.thought.length).toBeGreaterThan(0);
    for (const p of a.previews) expect(p.thought).toBe(a.result.thought);
    expect(b.result.thought).toBe(a.result.thought);
    expect(b.result.image.sha256).toBe(a.result.image.sha256);
    // the detached-job path: imageJob(id) events carry the same frames
    const client = wsClient(thinker);
    try {
      const started = await gqlPost(thinker, { query: 'mutation M($input: GenerateImageInput!) { generateImage(input: $input) { id } }', variables: { input } });
      const id = started.json.data.generateImage.id as string;
      const evs = await wsRun(client, 'subscription J($id: ID!) { imageJob(id: $id) { done frame { stage thought } } }', { id });
      const frames = evs.map((e: any) => e.data?.imageJob?.frame).filter(Boolean);
      expect(frames.at(-1)).toEqual({ stage: 'FINAL', thought: a.result.thought });
    } finally {
      await client.dispose();
    }
    const caps = await gqlPost(thinker, { query: '{ models { capabilities { think } } }' });
    expect(caps.json.data.models[0].capabilities.think).toBe(true);
    const plain = await gqlPost(server, { query: 'mutation { generateImage(input: { prompt: "a red circle", think: true }) { id } }' });
    expect(plain.json.errors[0].extensions.code).toBe('INVALID_INPUT');
  });
});
