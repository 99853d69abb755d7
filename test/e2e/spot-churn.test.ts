/**
 * Issue 6, end to end: operator and workers together on the local control plane under spot churn and
 * autoscaling (hack/e2e/scenario.ts, the same driver as hack/e2e.sh, with the same defaults):
 * `kubectl apply -f examples/fashion-mnist-mlp.yaml` unchanged, two nodes reclaimed with notice and
 * one without, the simulated autoscaler buying replacements. About four minutes on 2 cores.
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { computeGoodput, judgeEpochs } from '../../hack/e2e/analysis.ts';
import { DEFAULT_CHURN, runScenario, type ScenarioResult } from '../../hack/e2e/scenario.ts';
import { formatSummary } from '../../hack/e2e/summary.ts';

const example = fileURLToPath(new URL('../../examples/fashion-mnist-mlp.yaml', import.meta.url));
// The design's figure for this MLP (the example stops after 10 epochs at about 0.882 unless it
// reaches its 0.89 early-stop target first), and the goodput target.
const TARGET_ACCURACY = 0.88;
const MIN_GOODPUT = 0.9;

test('goodput counts each generation once, without the steps a later generation redid', () => {
  const end = (worker: string, generation: number, firstStep: number, lastStep: number, s: number) => ({
    event: 'generation-end',
    worker,
    generation,
    firstStep,
    lastStep,
    stepSeconds: s,
  });
  const lines = [
    end('a', 0, 0, 100, 10),
    end('b', 0, 0, 100, 11),
    // b finished step 150 alone; generation 2 redid it from a's state.
    end('a', 1, 100, 150, 5),
    end('b', 1, 100, 151, 5.1),
    end('a', 2, 150, 250, 10),
  ];
  const history = [
    { generation: 0, firstStep: 0 },
    { generation: 1, firstStep: 100 },
    { generation: 2, firstStep: 150 },
  ];
  const report = computeGoodput(lines, history, 40);
  assert.is(report.generations.length, 3);
  assert.is(report.generations[0]?.usefulSeconds, 11);
  assert.ok(Math.abs((report.generations[1]?.usefulSeconds ?? 0) - 5.0) < 1e-9);
  assert.is(report.generations[1]?.keptUntil, 150);
  assert.ok(Math.abs(report.goodput - 26 / 40) < 1e-9);
  // A generation the final history does not know owns no step.
  assert.is(computeGoodput(lines, history.slice(0, 1), 40).usefulSeconds, 11);
});

test('an epoch cut short by the stopping rule may miss samples, never duplicate them', () => {
  const verdicts = judgeEpochs(
    [
      { epoch: 0, seen: 100, duplicated: 0, missing: 0 },
      { epoch: 1, seen: 40, duplicated: 0, missing: 60 },
    ],
    1,
  );
  assert.equal(
    verdicts.map((v) => [v.complete, v.clean]),
    [
      [true, true],
      [false, true],
    ],
  );
  const bad = judgeEpochs([{ epoch: 0, seen: 99, duplicated: 1, missing: 1 }], 1);
  assert.is(bad[0]?.clean, false);
});

test('kubectl apply → training under spot churn → Succeeded, with nothing lost or repeated', async () => {
  const dir = mkdtempSync(join(process.env['TMPDIR'] ?? tmpdir(), 'tensile-e2e-test-'));
  const started = performance.now();
  const result: ScenarioResult = await runScenario({
    manifestFile: example,
    noticeSeconds: 20,
    autoscalerDelaySeconds: 5,
    churn: DEFAULT_CHURN,
    minAccuracy: TARGET_ACCURACY,
    minGoodput: MIN_GOODPUT,
    timeoutSeconds: 25 * 60,
    artifactsDir: join(dir, 'artifacts'),
    log: process.env['TENSILE_TEST_VERBOSE']
      ? (line) => console.error(`[${((performance.now() - started) / 1000).toFixed(1)} s] ${line}`)
      : undefined,
  });
  // The figures are the point of this test: always show them.
  console.log(formatSummary(result));
  const byName = new Map(result.checks.map((c) => [c.name, c]));
  for (const name of [
    'phase',
    'churn',
    'accuracy',
    'preemptions',
    'restarts',
    'audit',
    'goodput',
    'events',
  ]) {
    const c = byName.get(name);
    assert.ok(c !== undefined, `no check ${name}`);
    assert.ok(c.ok, `${name}: ${c.detail}`);
  }
  assert.is(result.status.phase, 'Succeeded');
  assert.is(result.status.restarts ?? 0, 0);
  assert.is(result.status.preemptions, result.workersLost);
  assert.is(result.workersLost, 3);
  assert.ok((result.status.accuracy ?? 0) >= TARGET_ACCURACY);
  assert.ok(result.goodput.goodput >= MIN_GOODPUT, `goodput ${result.goodput.goodput}`);
  assert.match(result.describeEvents, /NodeDisruption/);
  assert.match(result.describeEvents, /WorkerPreempted/);
  assert.match(result.describeEvents, /Rescaled/);
  if (result.ok) rmSync(dir, { recursive: true, force: true });
});

test.run();
