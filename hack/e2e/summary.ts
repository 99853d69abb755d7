/** The summary `hack/e2e.sh` prints (and the e2e test shows when it fails). */
import { percent, tailAccuracy } from './analysis.ts';
import type { ScenarioResult } from './scenario.ts';

export function formatSummary(result: ScenarioResult): string {
  const { status } = result;
  const out: string[] = [];
  out.push(`=== ${result.namespace}/${result.job}: ${status.phase ?? 'no phase'} (${result.outcome})`);
  out.push(
    `time: control plane ${result.seconds.cluster.toFixed(1)} s, job ${result.seconds.job.toFixed(1)} s (apply → end), total ${result.seconds.total.toFixed(1)} s`,
  );
  const ref = result.reference;
  out.push(
    `final: step ${status.step ?? '?'}, epoch ${status.epoch ?? '?'}, loss ${status.loss?.toFixed(4) ?? '?'}, accuracy ${status.accuracy?.toFixed(4) ?? '?'} ${ref === undefined ? ` (at least ${result.minAccuracy?.toFixed(4) ?? 'none'})` : `; undisturbed reference ${ref.accuracy.toFixed(4)} at step ${ref.step} on ${ref.workers} workers, ${ref.backend}; the mean of the last fifth's evaluations at least ${result.minAccuracy?.toFixed(4) ?? 'none'} (the reference's ${tailAccuracy(ref.evaluations)?.mean.toFixed(4) ?? '?'} less ${(100 * ((tailAccuracy(ref.evaluations)?.mean ?? 0) - (result.minAccuracy ?? 0))).toFixed(1)} pt)`}`,
  );
  if (result.throttle !== undefined) out.push(`workers slowed: ${result.throttle}`);
  const placed = result.placement;
  if (placed !== undefined)
    out.push(
      `nodes: workers ran on ${[...placed.real, ...placed.fake].join(', ')}; reclaims took ${placed.reclaims.map((r) => `${r.node} (${r.kind})`).join(', ') || 'none'}`,
    );
  out.push(
    `status.preemptions ${status.preemptions ?? 0} (workers lost to reclaims: ${result.workersLost}), status.restarts ${status.restarts ?? 0}, reclaims ${result.churnDone}/${result.churnPlanned}`,
  );
  out.push('');
  out.push('timeline:');
  for (const t of result.timeline) out.push(`  ${t.seconds.toFixed(1).padStart(7)} s  ${t.what}`);
  out.push('');
  if (result.disturbance.length > 0) {
    for (const line of result.disturbance) out.push(line);
    out.push('');
  }
  out.push('audit (committed records of every worker):');
  out.push('  epoch        seen  duplicated   missing');
  for (const e of result.epochs) {
    const note = e.clean
      ? e.complete
        ? ''
        : '  (partial: training stopped in this epoch)'
      : '  <-- NOT CLEAN';
    out.push(
      `  ${String(e.epoch).padStart(5)} ${String(e.seen).padStart(11)} ${String(e.duplicated).padStart(11)} ${String(e.missing).padStart(9)}${note}`,
    );
  }
  if (result.epochs.length === 0) out.push('  (no audit records)');
  out.push('');
  const g = result.goodput;
  out.push(
    `goodput: ${percent(g.goodput)} = ${g.usefulSeconds.toFixed(1)} s of steps that count / ${g.wallSeconds.toFixed(1)} s from status.startTime to status.completionTime${result.minGoodput === undefined ? '' : ` (target ${percent(result.minGoodput)})`}; a step that counts takes ${(result.stepSeconds * 1000).toFixed(1)} ms`,
  );
  if (result.unreadableLogLines > 0)
    out.push(
      `  ${result.unreadableLogLines} worker log lines were not events of the protocol (operator/api/worker-events.ts)`,
    );
  if (result.standardErrorLines > 0)
    out.push(
      `  ${result.standardErrorLines} worker log lines were standard error (not JSON), e.g. TensorFlow's banner`,
    );
  out.push('  generation  first step  kept until  workers  step s  useful s');
  for (const x of g.generations) {
    out.push(
      `  ${String(x.generation).padStart(10)} ${String(x.firstStep).padStart(11)} ${String(x.keptUntil).padStart(11)} ${String(x.reporters).padStart(8)} ${x.stepSeconds.toFixed(1).padStart(7)} ${x.usefulSeconds.toFixed(1).padStart(9)}`,
    );
  }
  out.push('  time not spent on steps that count, each against its budget (seconds, and in step times):');
  for (const x of result.lost)
    out.push(
      `    ${x.ok ? 'ok  ' : 'OVER'} ${x.seconds.toFixed(1).padStart(6)} s ${`(${x.steps.toFixed(0)} steps)`.padStart(13)}  budget ${x.budgetSeconds.toFixed(1).padStart(5)} s  ${x.what}: ${x.rule}`,
    );
  out.push('');
  out.push(`kubectl describe trainingjob ${result.job}:`);
  out.push(result.describeEvents === '' ? '  (no events)' : result.describeEvents);
  out.push('');
  out.push('checks:');
  for (const c of result.checks) out.push(`  ${c.ok ? 'ok  ' : 'FAIL'} ${c.name.padEnd(12)} ${c.detail}`);
  if (result.artifactsDir !== undefined)
    out.push(`\nlogs, describe.txt and result.json in ${result.artifactsDir}`);
  out.push(result.ok ? 'PASSED' : 'FAILED');
  return out.join('\n');
}
