/**
 * The operator at scale: 1,000 TrainingJobs on the real control plane, pods not run (no node agent, so
 * they stay Pending). The operator runs as it ships: the compiled build (operator/tsconfig.build.json)
 * with the chart's NODE_OPTIONS heap cap.
 *
 * Figures: time for every job to converge (worker pod created, status written); reconcile p50/p99
 * from the operator's own metric while converging and again in steady state (a fresh operator
 * re-syncing the 1,000 converged jobs); the operator's peak RSS. Baselines from the same run: the same
 * number of TrainingJobs and pods created straight through the API at the same concurrency, with the
 * latency of each request, so the operator's figures can be read against the API server's.
 */
import { spawnSync } from 'node:child_process';
import { copyFileSync, mkdtempSync, readFileSync, rmSync, symlinkSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { fileURLToPath } from 'node:url';
import { CoreV1Api, CustomObjectsApi } from '@kubernetes/client-node';
import { startCluster } from '../helpers/cluster.ts';
import { setPath, validManifest } from '../helpers/job-builder.ts';
import { type OperatorProcess, startOperator } from '../helpers/operator-process.ts';

const JOBS = Number(process.env['TENSILE_BENCH_JOBS'] ?? 1000);
const CONCURRENCY = 16;
/** As the Helm chart runs it (operator.nodeOptions). */
const NODE_OPTIONS = '--max-old-space-size=160';
const root = fileURLToPath(new URL('../..', import.meta.url));

async function timedInParallel<T>(items: T[], work: (item: T) => Promise<unknown>): Promise<number[]> {
  const latencies: number[] = [];
  let next = 0;
  await Promise.all(
    Array.from({ length: CONCURRENCY }, async () => {
      while (next < items.length) {
        const item = items[next++] as T;
        const started = performance.now();
        await work(item);
        latencies.push(performance.now() - started);
      }
    }),
  );
  return latencies;
}

function percentile(values: number[], p: number): number {
  const sorted = [...values].sort((a, b) => a - b);
  return sorted[Math.min(sorted.length - 1, Math.floor((p / 100) * sorted.length))] ?? Number.NaN;
}

function quantile(text: string, q: string): number {
  const match = new RegExp(`^tensile_reconcile_seconds\\{quantile="${q}"\\} ([0-9.eE+-]+|NaN)$`, 'm').exec(
    text,
  );
  return match?.[1] === undefined ? Number.NaN : Number(match[1]) * 1000;
}

function reconcileCount(text: string): number {
  return Number(/^tensile_reconcile_seconds_count ([0-9.]+)$/m.exec(text)?.[1] ?? Number.NaN);
}

function peakRssMiB(pid: number): number {
  const status = readFileSync(`/proc/${pid}/status`, 'utf8');
  return Number(/VmHWM:\s+(\d+) kB/.exec(status)?.[1] ?? Number.NaN) / 1024;
}

/** The compiled operator, laid out as in the image: dist/ beside package.json and node_modules. */
function buildOperator(): string {
  const out = mkdtempSync(join(tmpdir(), 'tensile-bench-build-'));
  const r = spawnSync(
    join(root, 'node_modules', '.bin', 'tsc'),
    ['-p', join(root, 'operator', 'tsconfig.build.json'), '--outDir', out],
    { encoding: 'utf8' },
  );
  if (r.status !== 0) throw new Error(`tsc failed:\n${r.stdout}${r.stderr}`);
  copyFileSync(join(root, 'package.json'), join(out, 'package.json'));
  symlinkSync(join(root, 'node_modules'), join(out, 'node_modules'));
  return out;
}

export default async function operatorScale(): Promise<Record<string, unknown>> {
  const build = buildOperator();
  await using cluster = await startCluster({ nodeAgent: false });
  const custom = cluster.kubeConfig.makeApiClient(CustomObjectsApi);
  const core = cluster.kubeConfig.makeApiClient(CoreV1Api);
  for (const ns of ['bench', 'baseline']) await cluster.kubectl(['create', 'namespace', ns]);
  const names = Array.from({ length: JOBS }, (_, i) => `job-${i}`);
  const job = (namespace: string, name: string) => {
    const m = validManifest(name);
    setPath(m, 'metadata.namespace', namespace);
    setPath(m, 'spec.replicas', 1);
    setPath(m, 'spec.checkpoint', { intervalSteps: 100, volume: { claimName: 'shared-checkpoints' } });
    setPath(m, 'spec.worker', { image: 'ghcr.io/tensile-dev/tensile-worker:bench' });
    return m;
  };
  const createJob = (namespace: string) => (name: string) =>
    custom.createNamespacedCustomObject({
      group: 'tensile.dev',
      version: 'v1alpha1',
      namespace,
      plural: 'trainingjobs',
      body: job(namespace, name),
    });

  // Baseline: the API work alone — the jobs, and the pods the operator would create for them.
  let started = performance.now();
  const jobLatencies = await timedInParallel(names, createJob('baseline'));
  const createJobsSeconds = (performance.now() - started) / 1000;
  started = performance.now();
  const podLatencies = await timedInParallel(names, (name) =>
    core.createNamespacedPod({
      namespace: 'baseline',
      body: { metadata: { name: `${name}-pod` }, spec: { containers: [{ name: 'w', image: 'x' }] } },
    }),
  );
  const createPodsSeconds = (performance.now() - started) / 1000;
  // Gone before the operator starts, so that it only sees the jobs it is measured on.
  await cluster.kubectl(['delete', 'namespace', 'baseline', '--wait=true', '--timeout=600s']);

  const operatorArgs = ['--kubeconfig', cluster.kubeconfigPath, '--no-leader-elect', '--concurrency', '4'];
  const launch = (id: string): OperatorProcess =>
    startOperator(id, operatorArgs, { entry: join(build, 'operator', 'main.js'), env: { NODE_OPTIONS } });
  let operator = launch('bench');
  let port = await operator.port();
  started = performance.now();
  await timedInParallel(names, createJob('bench'));
  const submitSeconds = (performance.now() - started) / 1000;
  let converged = 0;
  const deadline = Date.now() + 15 * 60_000;
  while (Date.now() < deadline) {
    const list = (await custom.listNamespacedCustomObject({
      group: 'tensile.dev',
      version: 'v1alpha1',
      namespace: 'bench',
      plural: 'trainingjobs',
    })) as {
      items: { status?: { replicas?: number; observedGeneration?: number } }[];
    };
    converged = list.items.filter(
      (j) => j.status?.replicas === 1 && j.status.observedGeneration !== undefined,
    ).length;
    if (converged === JOBS) break;
    await sleep(500);
  }
  const convergeSeconds = (performance.now() - started) / 1000;
  const podsCreated = (await core.listNamespacedPod({ namespace: 'bench' })).items.length;
  const converging = await (await fetch(`http://127.0.0.1:${port}/metrics`)).text();
  const convergingRss = peakRssMiB(operator.child.pid as number);
  await operator[Symbol.asyncDispose]();

  // Steady state: a fresh operator finds 1,000 converged jobs and reconciles each once.
  operator = launch('bench-resync');
  port = await operator.port();
  started = performance.now();
  let steady = '';
  while (Date.now() < deadline) {
    steady = await (await fetch(`http://127.0.0.1:${port}/metrics`)).text();
    if (reconcileCount(steady) >= JOBS && /^tensile_workqueue_depth 0$/m.test(steady)) break;
    await sleep(250);
  }
  const resyncSeconds = (performance.now() - started) / 1000;
  const steadyRss = peakRssMiB(operator.child.pid as number);
  await operator[Symbol.asyncDispose]();
  rmSync(build, { recursive: true, force: true });

  const apiPodP99 = percentile(podLatencies, 99);
  const convergingP99 = quantile(converging, '0.99');
  const steadyP99 = quantile(steady, '0.99');
  const rss = Math.max(convergingRss, steadyRss);
  return {
    jobs: JOBS,
    converged,
    podsCreated,
    submitSeconds,
    convergeSeconds,
    resyncSeconds,
    baseline: {
      createJobsSeconds,
      createPodsSeconds,
      apiCreateJobP50Ms: percentile(jobLatencies, 50),
      apiCreateJobP99Ms: percentile(jobLatencies, 99),
      apiCreatePodP50Ms: percentile(podLatencies, 50),
      apiCreatePodP99Ms: apiPodP99,
    },
    convergeVsApiFloor: convergeSeconds / (createJobsSeconds + createPodsSeconds),
    reconcileWhileConvergingP50Ms: quantile(converging, '0.5'),
    reconcileWhileConvergingP99Ms: convergingP99,
    reconcileWhileConvergingP99VsApiCreatePodP99: convergingP99 / apiPodP99,
    reconcileSteadyP50Ms: quantile(steady, '0.5'),
    reconcileSteadyP99Ms: steadyP99,
    reconcileSteadyP99VsTarget: steadyP99 / 100,
    operatorPeakRssMiB: rss,
    rssVsTarget: rss / 256,
    targets: {
      steadyP99Within100Ms: steadyP99 <= 100,
      rssWithin256MiB: rss <= 256,
      allConverged: converged === JOBS,
    },
  };
}
