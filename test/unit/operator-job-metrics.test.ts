import { test } from 'uvu';
import * as assert from 'uvu/assert';
import type { ProgressMessage } from '../../operator/api/contract.ts';
import {
  advanceUsefulTime,
  jobMetricValues,
  type UsefulTime,
} from '../../operator/controller/job-metrics.ts';
import { OperatorMetrics } from '../../operator/controller/metrics.ts';

const T0 = Date.parse('2026-12-01T10:00:00Z');
const at = (s: number) => new Date(T0 + s * 1000).toISOString();

function report(seconds: number, step: number, generation = 1, extra: Partial<ProgressMessage> = {}) {
  return {
    type: 'progress',
    worker: 'w0',
    generation,
    worldSize: 2,
    step,
    epoch: 0,
    loss: 0.5,
    samplesPerSecond: 1000,
    time: at(seconds),
    ...extra,
  } as const satisfies ProgressMessage;
}

function replay(reports: ProgressMessage[]): UsefulTime | undefined {
  let u: UsefulTime | undefined;
  for (const r of reports) u = advanceUsefulTime(u, r);
  return u;
}

test('useful time: steps of one world count; start-up, re-forming and redone steps do not', () => {
  const cases: [string, ProgressMessage[], number][] = [
    ['one report: nothing measured yet', [report(5, 0)], 0],
    ['steady progress', [report(5, 0), report(7, 100), report(9, 200)], 4],
    [
      'a second worker reporting the same step adds nothing',
      [report(5, 0), report(5.5, 0), report(7, 100)],
      1.5,
    ],
    [
      'the gap to a new world is lost',
      [report(5, 0), report(7, 100), report(20, 100, 2), report(22, 200, 2)],
      4,
    ],
    [
      'steps redone after a restore count only past the furthest step',
      [report(0, 0), report(10, 100), report(30, 50, 2), report(35, 100, 2), report(40, 150, 2)],
      15,
    ],
    ['a step going back within a world adds nothing', [report(0, 100), report(2, 50)], 0],
  ];
  for (const [name, reports, seconds] of cases)
    assert.ok(
      Math.abs((replay(reports)?.seconds ?? -1) - seconds) < 1e-9,
      `${name}: ${replay(reports)?.seconds}`,
    );
});

test('values: the goodput policy’s choice, its predicted goodput, noise scale and changes', () => {
  const autoscaling = {
    replicas: 2,
    specReplicas: 1,
    reason: '1 → 2 worker(s)',
    globalBatch: 256,
    chosenBatch: { globalBatch: 256, revision: 1 },
    noiseScale: 812,
    changes: 3,
    options: [
      { replicas: 1, globalBatch: 128, goodput: 900 },
      { replicas: 2, globalBatch: 256, goodput: 1700 },
    ],
  };
  const running = jobMetricValues(
    { namespace: 'ns', name: 'j', status: { phase: 'Running', autoscaling } },
    T0,
  );
  assert.is(running.autoscaling_replicas_workers, 2);
  assert.is(running.autoscaling_global_batch, 256);
  assert.is(running.autoscaling_predicted_goodput_samples_per_second, 1700);
  assert.is(running.autoscaling_noise_scale_samples, 812);
  assert.is(running.autoscaling_changes_total, 3);
  // Ended: the choice is history; the count of changes stays.
  const done = jobMetricValues(
    { namespace: 'ns', name: 'j', status: { phase: 'Succeeded', autoscaling } },
    T0,
  );
  assert.is(done.autoscaling_replicas_workers, undefined);
  assert.is(done.autoscaling_changes_total, 3);
});

test('values: fresh progress while running, status once ended, goodput over the time since start', () => {
  const running = jobMetricValues(
    {
      namespace: 'ns',
      name: 'j',
      status: {
        phase: 'Running',
        step: 90,
        restarts: 1,
        preemptions: 2,
        startTime: at(0),
        lastCheckpoint: { step: 80, path: '/c/80', time: at(50) },
      },
      progress: report(58, 100, 3, { accuracy: 0.8 }),
      useful: replay([report(10, 0), report(40, 100)]),
    },
    T0 + 60_000,
  );
  assert.equal(running, {
    preemptions_total: 2,
    restarts_total: 1,
    step: 100,
    epoch: 0,
    loss: 0.5,
    accuracy_ratio: 0.8,
    throughput_samples_per_second: 1000,
    world_size_workers: 2,
    rendezvous_generation: 3,
    last_checkpoint_step: 80,
    last_checkpoint_age_seconds: 10,
    goodput_ratio: 0.5,
  });
  const done = jobMetricValues(
    {
      namespace: 'ns',
      name: 'j',
      status: { phase: 'Succeeded', step: 200, accuracy: 0.9, startTime: at(0), completionTime: at(100) },
      progress: report(58, 100),
      useful: replay([report(10, 0), report(90, 200)]),
    },
    T0 + 500_000,
  );
  assert.is(done.step, 200);
  assert.is(done.accuracy_ratio, 0.9);
  assert.is(done.world_size_workers, 0);
  assert.is(done.throughput_samples_per_second, 0);
  assert.is(done.goodput_ratio, 0.8);
  assert.equal(jobMetricValues({ namespace: 'ns', name: 'new', status: undefined }, T0), {
    preemptions_total: 0,
    restarts_total: 0,
  });
});

test('goodput of an ended job: the larger of the operator’s useful time and the completion’s', () => {
  const status = { phase: 'Succeeded' as const, startTime: at(0), completionTime: at(100) };
  const goodput = (input: { useful?: UsefulTime | undefined; usefulSeconds?: number }) =>
    jobMetricValues(
      {
        namespace: 'ns',
        name: 'j',
        status,
        ...(input.useful === undefined ? {} : { useful: input.useful }),
        ...(input.usefulSeconds === undefined ? {} : { completed: { usefulSeconds: input.usefulSeconds } }),
      },
      T0 + 500_000,
    ).goodput_ratio;
  // A leader that saw no report: the workers' figure alone (the chaos run's undefined goodput).
  assert.is(goodput({ usefulSeconds: 70 }), 0.7);
  // One that saw part of the reports: the fuller of the two lower bounds.
  assert.is(goodput({ useful: replay([report(10, 0), report(40, 100)]), usefulSeconds: 70 }), 0.7);
  assert.is(goodput({ useful: replay([report(10, 0), report(90, 200)]), usefulSeconds: 20 }), 0.8);
  assert.is(goodput({}), undefined);
});

test('the registry shows each job labelled namespace and trainingjob, and forgets a deleted one', async () => {
  const metrics = new OperatorMetrics(() => T0 + 60_000);
  let jobs = [
    { namespace: 'team-a', name: 'alpha', status: { phase: 'Running' as const, step: 7, preemptions: 3 } },
    { namespace: 'team-b', name: 'beta', status: { phase: 'Pending' as const } },
  ];
  metrics.followJobs(() => jobs);
  const text = await metrics.registry.metrics();
  assert.match(text, /^tensile_trainingjob_step\{namespace="team-a",trainingjob="alpha"\} 7$/m);
  assert.match(text, /^# TYPE tensile_trainingjob_preemptions_total counter$/m);
  assert.match(text, /^tensile_trainingjob_preemptions_total\{namespace="team-a",trainingjob="alpha"\} 3$/m);
  assert.match(text, /^tensile_trainingjob_restarts_total\{namespace="team-b",trainingjob="beta"\} 0$/m);
  assert.not.match(text, /tensile_trainingjob_step\{namespace="team-b"/);
  jobs = jobs.slice(1);
  assert.not.match(await metrics.registry.metrics(), /trainingjob="alpha"/);
});

test.run();
