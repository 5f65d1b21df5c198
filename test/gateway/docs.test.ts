// docs/gateway.md, the operator's reference, cannot fall behind the code: every limit, error code,
// metric and `serve` flag it should list is there.
import { readFileSync } from 'node:fs';
import { describe, expect, it } from 'vitest';
import { HELP as SERVE_HELP } from '../../src/cli/commands/serve.ts';
import { DEFAULT_LIMITS } from '../../src/gateway/limits.ts';
import { GatewayMetrics } from '../../src/gateway/metrics.ts';
import { SLOW_CONSUMER_CLOSE_CODE } from '../../src/gateway/server.ts';

const doc = readFileSync(new URL('../../docs/gateway.md', import.meta.url), 'utf8');
const schema = readFileSync(new URL('../../schema.graphql', import.meta.url), 'utf8');

describe('docs/gateway.md', () => {
  it('lists every limit', () => {
    for (const key of [...Object.keys(DEFAULT_LIMITS), 'maxQueuedPerClient']) expect(doc, key).toContain(`| \`${key}\` |`);
  });

  it('lists every error code of the schema', () => {
    const block = /enum ErrorCode \{([^}]*)\}/.exec(schema)![1]!;
    const codes = block.split('\n').map((l) => l.trim()).filter((l) => /^[A-Z_]+$/.test(l));
    expect(codes.length).toBeGreaterThan(20);
    for (const code of codes) expect(doc, code).toContain(`\`${code}\``);
  });

  it('lists every metric /metrics renders, and the gateway close code', () => {
    const m = new GatewayMetrics({ activeStreams: () => [], queueDepth: () => 0, runningJobs: () => 0, wsConnections: () => 0, sessions: () => 0, imageStoreBytes: () => 0, retainedJobs: () => 0 });
    const names = [...m.render().matchAll(/^# HELP (\S+) /gm)].map((x) => x[1]!);
    m.close();
    expect(names.length).toBeGreaterThan(25);
    for (const name of names) expect(doc, name).toContain(`| \`${name}\` |`);
    expect(doc).toContain(`| ${SLOW_CONSUMER_CLOSE_CODE} |`);
  });

  it('every serve flag it names exists', () => {
    const flags = [...doc.matchAll(/`(--[a-z-]+)`/g)].map((x) => x[1]!);
    expect(flags.length).toBeGreaterThan(5);
    for (const flag of flags) expect(SERVE_HELP, flag).toContain(flag);
  });
});
