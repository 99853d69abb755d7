/**
 * Several goodput jobs on a limited number of GPUs: how many each gets, to maximise the sum of their
 * speedups (goodput at an allocation over goodput at the fair share, as Pollux's scheduler does),
 * with a fairness floor. Pure. The operator's leader divides its goodput jobs with `clusterShares`
 * (controller/goodput-shares.ts) and each job's decision (goodput-policy.ts) stays within its share;
 * the cluster simulator (test/bench/goodput.bench.ts) runs the same two functions.
 */

export interface ClusterJob {
  readonly id: string;
  readonly min: number;
  readonly max: number;
  /** Predicted goodput at r workers is goodput[r − 1]; sizes past the end are worth the last. */
  readonly goodput: readonly number[];
}

export interface ClusterSettings {
  /** Each job first gets enough workers for this fraction of its goodput at the fair share (if it fits). */
  readonly fairnessFloor: number;
}

function goodputAt(job: ClusterJob, replicas: number): number {
  if (replicas <= 0 || job.goodput.length === 0) return 0;
  return job.goodput[Math.min(replicas, job.goodput.length) - 1] as number;
}

/**
 * Jobs in priority order (earlier first when not everyone's minimum fits): each gets its minimum,
 * then up to the fairness floor, then GPUs go one at a time to the largest gain in speedup.
 */
export function divideCluster(
  jobs: readonly ClusterJob[],
  capacity: number,
  settings: ClusterSettings,
): Map<string, number> {
  const given = new Map<string, number>(jobs.map((j) => [j.id, 0]));
  let free = capacity;
  for (const job of jobs) {
    if (job.min > free) continue;
    given.set(job.id, job.min);
    free -= job.min;
  }
  const running = jobs.filter((j) => (given.get(j.id) ?? 0) > 0);
  if (running.length === 0) return given;
  const fair = Math.max(1, Math.floor(capacity / running.length));
  const reference = new Map(running.map((j) => [j.id, Math.max(goodputAt(j, Math.min(fair, j.max)), 1e-12)]));
  const speedup = (j: ClusterJob, r: number) => goodputAt(j, r) / (reference.get(j.id) as number);
  for (const job of running) {
    let r = given.get(job.id) as number;
    while (free > 0 && r < job.max && speedup(job, r) < settings.fairnessFloor) {
      r++;
      free--;
    }
    given.set(job.id, r);
  }
  while (free > 0) {
    let best: { job: ClusterJob; gain: number } | undefined;
    for (const job of running) {
      const r = given.get(job.id) as number;
      if (r >= job.max) continue;
      const gain = speedup(job, r + 1) - speedup(job, r);
      if (gain > 1e-9 && (best === undefined || gain > best.gain)) best = { job, gain };
    }
    if (best === undefined) break;
    given.set(best.job.id, (given.get(best.job.id) as number) + 1);
    free--;
  }
  return given;
}

/** One job as the division sees it: its range, where it is, and what it predicts by worker count. */
export interface ShareInput {
  readonly id: string;
  readonly min: number;
  readonly max: number;
  /** Workers it runs now (its desired count). */
  readonly current: number;
  /** Predicted goodput by worker count (status.autoscaling.options); empty before anything is measured. */
  readonly options: readonly { readonly replicas: number; readonly goodput: number }[];
}

/**
 * Each job's share of `capacity` workers, jobs in priority order (the first wait least). A job with
 * no prediction keeps what it runs (within its range): it must be measured before it can be weighed.
 * The others are weighed by their options, as far as their model is trusted (the options' sizes);
 * below its smallest option a job's goodput is taken to shrink in proportion.
 */
export function clusterShares(
  jobs: readonly ShareInput[],
  capacity: number,
  settings: ClusterSettings,
): Map<string, number> {
  const cluster = jobs.map((job): ClusterJob => {
    const held = Math.min(job.max, Math.max(job.min, job.current));
    const known = [...job.options].filter((o) => o.replicas >= 1).sort((a, b) => a.replicas - b.replicas);
    const first = known[0];
    const last = known.at(-1);
    if (first === undefined || last === undefined) return { id: job.id, min: held, max: held, goodput: [1] };
    const goodput = Array.from({ length: last.replicas }, (_, i) => {
      const r = i + 1;
      const at = known.find((o) => o.replicas === r);
      if (at !== undefined) return at.goodput;
      if (r < first.replicas) return (first.goodput * r) / first.replicas;
      // A gap between measured sizes: the last size below it.
      return [...known].reverse().find((o) => o.replicas < r)?.goodput ?? first.goodput;
    });
    return { id: job.id, min: job.min, max: Math.min(job.max, Math.max(last.replicas, held)), goodput };
  });
  return divideCluster(cluster, capacity, settings);
}
