// The gateway sections of `bench generate` and `bench understand` on the real fixture engine: a
// progressive image request (previews @stream, @defer result) and understand streams through the
// gateway over graphql-ws, as streaming clients see them, beside the engine called directly.
import path from 'node:path';
import { afterAll, beforeAll, expect, test } from 'vitest';
import { timeViaGateway } from '../../bench/generate-gateway.ts';
import { compareUnderstandViaGateway } from '../../bench/understand-gateway.ts';
import { createEngine, type LocalEngine } from '../../src/engine/index.ts';
import { FIXTURE } from '../engine/fixture-helpers.ts';

let engine: LocalEngine;
beforeAll(async () => {
  engine = await createEngine(path.join(path.dirname(FIXTURE), 'tiny-pack-accel'), { calibrate: false, intraOpThreads: 1 });
});
afterAll(async () => {
  await engine?.close();
});

test('the preview reaches the client before the final; both frames carry the engine time and stay small', async () => {
  const g = await timeViaGateway(engine, 'a red circle', 2);
  expect(g.runs).toBe(2);
  expect(g.preview_ms).toBeLessThanOrEqual(g.final_ms);
  expect(g.engine_preview_ms).toBeLessThanOrEqual(g.engine_final_ms);
  // the client cannot see a frame before the engine made it
  expect(g.preview_ms).toBeGreaterThanOrEqual(g.engine_preview_ms);
  expect(g.final_ms).toBeGreaterThanOrEqual(g.engine_final_ms);
  expect(g.preview_mime).toBe('image/jpeg');
  expect(g.final_mime).toBe('image/png');
  // previews stay far under the 60 KB a progressive client budgets for one
  expect(g.preview_base64_bytes).toBeGreaterThan(0);
  expect(g.preview_base64_bytes).toBeLessThan(60 * 1024);
}, 60_000);

test('a request the gateway refuses is an error, not a hang', async () => {
  await expect(timeViaGateway(engine, '', 1)).rejects.toThrow(/gateway error|without a final/);
}, 30_000);

test('understand through the gateway: the same text as the engine alone', async () => {
  const image = { width: 32, height: 32, data: new Uint8Array(32 * 32 * 3).fill(200) };
  const g = await compareUnderstandViaGateway(engine, [
    { prompt: 'a red circle', maxTokens: 6, temperature: 0 },
    { prompt: 'a red circle', image, maxTokens: 4, temperature: 0 },
  ]);
  expect(g).toMatchObject({ requests: 2, same_text: true });
  expect(g.gateway_ttft_ms).toBeLessThanOrEqual(g.gateway_total_ms);
  expect(g.direct_ttft_ms).toBeLessThanOrEqual(g.direct_total_ms);
}, 60_000);
