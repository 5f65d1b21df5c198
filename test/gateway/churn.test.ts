// The gateway reference's target G4 as a test: many subscribe -> cancel cycles through every way a
// client stops a stream, then nothing left behind. The full run (10,000 cycles, heap growth) is
// `npx hyperbagel bench gateway --churn 10000 --json`; this is its smoke version on the same code.
import { describe, expect, it } from 'vitest';
import { CHURN_KINDS, churnLeftSomething, runChurn, type ChurnResult } from '../../bench/gateway-churn.ts';

describe('subscribe -> cancel churn (G4)', () => {
  it('every cancel path stops the model work, no step starts after a cancel, and nothing is left behind', async () => {
    const cycles = 50 * CHURN_KINDS.length;
    const r = await runChurn({ cycles, concurrency: 5, stepMs: 5 });
    expect(r.errors, r.error_samples.join('\n')).toBe(0);
    for (const kind of CHURN_KINDS) expect(r.cycles_ok[kind], kind).toBe(50);
    expect(churnLeftSomething(r)).toEqual([]);
    expect(r.work_never_stopped).toBe(0);
    expect(r.ran_to_end).toBe(0);
    // the gateway never asked a request for another event after aborting its signal
    expect(r.pulls_after_abort).toBe(0);
    // every cancel path reached the engine as an abort, not only as an abandoned iterator
    for (const kind of CHURN_KINDS) expect(r.aborted[kind], kind).toBe(r.cycles_ok[kind]);
    expect(r.checkpoints.map((c) => c.after_cycles)).toEqual([50, 150, cycles]);
    expect(r.left_over.retained_jobs).toBe(100); // the two image-job kinds, within maxRetainedJobs
  }, 60_000);

  it('churnLeftSomething names what a run left behind', () => {
    const clean: ChurnResult = {
      cycles: 10, concurrency: 1, step_ms: 1, kinds: CHURN_KINDS, cycles_ok: {}, errors: 0, error_samples: [],
      stop_latency_ms: {}, cancel_to_abort_ms: {}, aborted: {}, stop_latency_p99_steps: 0, pulls_after_abort: 0, ran_to_end: 0, work_never_stopped: 0,
      left_over: { engine_requests: 0, active_streams: 0, running_jobs: 0, queued_jobs: 0, ws_connections: 0, ws_send_queue_bytes: 0, retained_jobs: 3, max_retained_jobs: 4 },
      checkpoints: [
        { after_cycles: 2, heap_used_mb: 1, lane_socket_listeners: 12, lane_socket_operations: 0 },
        { after_cycles: 10, heap_used_mb: 1, lane_socket_listeners: 12, lane_socket_operations: 0 },
      ],
      heap_growth_bytes_per_cycle: 0, heap_growth_late_bytes_per_cycle: 0, gateway_loop_utilization: 0.1, wall_s: 1,
    };
    expect(churnLeftSomething(clean)).toEqual([]);
    const leaky = structuredClone(clean);
    leaky.left_over.active_streams = 2;
    leaky.left_over.retained_jobs = 5;
    leaky.work_never_stopped = 1;
    leaky.checkpoints[1]!.lane_socket_listeners = 13;
    leaky.checkpoints[1]!.lane_socket_operations = 1;
    expect(churnLeftSomething(leaky)).toEqual([
      'active_streams 2',
      'retained_jobs 5 > 4',
      '1 requests never stopped',
      'socket listeners 12 -> 13',
      '1 operations still on open sockets',
    ]);
    expect(churnLeftSomething({ ...clean, checkpoints: [] })).toEqual(['no checkpoints']);
  });
});
