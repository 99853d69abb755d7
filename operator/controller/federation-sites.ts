/**
 * A federated TrainingJob in a cluster: each site of spec.federation is a labelled group of worker
 * pods with its own rendezvous (the site job `<job>-<site>`), NATS identity, signing key and data. Pure:
 * which pod slot belongs to which site, the names of the per-site objects, and how the sites' reports
 * add up to the job's status. The planner and the pod builder call these; the reconciler creates the
 * Secrets and the ConfigMap they name.
 */
import type { V1Pod } from '@kubernetes/client-node';
import { siteJobName } from '../api/federation.ts';
import { gaussianEpsilon } from '../api/privacy-accountant.ts';
import type { FederationSite, TrainingJobSpec, TrainingJobStatus } from '../api/training-job.ts';
import type { JobObservations } from './progress.ts';

/** The label naming a worker pod's site. */
export const LABEL_FEDERATION_SITE = 'tensile.dev/federation-site';

/** Where the site's private key is in its Secret, and its public half beside it. */
export const SITE_KEY_FILE = 'signing-key.pem';
export const SITE_PUBLIC_KEY = 'signing-key.pub';
/** Each site's public key in a worker's environment, by site index (put together for the worker). */
export const SITE_KEY_ENV_PREFIX = 'TENSILE_FEDERATION_KEY_';

/**
 * The Secret with one site's Ed25519 identity key: its private half mounted by that site's pods only,
 * its public half read by every site's pods (by key). A site that pins its key brings this Secret.
 */
export const siteKeySecretName = (job: string, site: string): string => `${job}-${site}-federation-key`;

export interface FederationSlot {
  readonly site: string;
  /** The site's position in spec.federation.sites. */
  readonly siteIndex: number;
  /** The worker's index within its site (its replica index there). */
  readonly replicaIndex: number;
}

/** The sites this job runs (not `remote`), in spec order. */
export function localSites(spec: TrainingJobSpec): FederationSite[] {
  return (spec.federation?.sites ?? []).filter((s) => !s.remote);
}

/** Worker pods of a federated job: its sites' replicas (sites keep their size; no autoscaling). */
export function federatedReplicas(spec: TrainingJobSpec): number {
  return localSites(spec).reduce((n, s) => n + s.replicas, 0);
}

/**
 * The site of the job-wide pod index `index`: the sites' replicas laid end to end in spec order, so a
 * lost pod's replacement (the lowest free index) lands in the site that lost it.
 */
export function federationSlot(spec: TrainingJobSpec, index: number): FederationSlot | undefined {
  let first = 0;
  for (const [siteIndex, site] of (spec.federation?.sites ?? []).entries()) {
    if (site.remote) continue;
    if (index >= first && index < first + site.replicas)
      return { site: site.name, siteIndex, replicaIndex: index - first };
    first += site.replicas;
  }
  return undefined;
}

/** The `namespace/name` keys the sites' workers report under (their subjects name the site job). */
export function siteReportKeys(namespace: string, job: string, spec: TrainingJobSpec): string[] {
  return (spec.federation?.sites ?? []).map((s) => `${namespace}/${siteJobName(job, s.name)}`);
}

/**
 * The jobs that own NATS buckets, with the sites: each site job's rendezvous bucket and the job's
 * federation bucket (`tensile_<ns>_<job>_federation`, whose last part reads as an incarnation) are
 * the live job's, not orphans for the sweep.
 */
export function bucketOwningJobs(
  jobs: readonly (CachedJob & { readonly metadata?: { readonly namespace?: string } })[],
): { namespace: string; name: string; uid: string }[] {
  return jobs.flatMap((j) => {
    const own = {
      namespace: j.metadata?.namespace ?? '',
      name: j.metadata?.name ?? '',
      uid: j.metadata?.uid ?? '',
    };
    const sites = cachedSites(j);
    if (sites.length === 0) return [own];
    return [
      own,
      { ...own, uid: 'federation' },
      ...sites.map((site) => ({ ...own, name: siteJobName(own.name, site) })),
    ];
  });
}

/**
 * `namespace/name` of the site jobs that run elsewhere (sites[].remote): their buckets carry another
 * place's incarnation and are that place's to clean up, never orphans here.
 */
export function remoteSiteJobs(
  jobs: readonly (CachedJob & { readonly metadata?: { readonly namespace?: string } })[],
): Set<string> {
  const out = new Set<string>();
  for (const job of jobs) {
    const sites = (job.spec as { federation?: { sites?: readonly { name?: unknown; remote?: unknown }[] } })
      ?.federation?.sites;
    for (const site of Array.isArray(sites) ? sites : [])
      if (site.remote === true && typeof site.name === 'string')
        out.add(`${job.metadata?.namespace ?? ''}/${siteJobName(job.metadata?.name ?? '', site.name)}`);
  }
  return out;
}

export interface SitePods {
  readonly pods: number;
  readonly ready: number;
  /** A pod of the site exited 0 (its workers finished training). */
  readonly succeeded: boolean;
}

/** Per site this job runs, from the job's pods (by their site label). */
export function sitePods(
  spec: TrainingJobSpec,
  pods: readonly { pod: V1Pod; active: boolean; ready: boolean; succeeded: boolean }[],
): SitePods[] {
  return localSites(spec).map((s) => {
    const mine = pods.filter((p) => p.pod.metadata?.labels?.[LABEL_FEDERATION_SITE] === s.name);
    return {
      pods: mine.filter((p) => p.active).length,
      ready: mine.filter((p) => p.active && p.ready).length,
      succeeded: mine.some((p) => p.succeeded),
    };
  });
}

/**
 * The sites' reports as one job's: progress of the site furthest behind (its step, its round), every
 * site's workers and throughput added up, the first site's loss and accuracy (after a round every site
 * holds the same weights), a re-forming world of any site; completed only once every site completed.
 */
export function combineSiteObservations(
  sites: readonly { readonly name: string; readonly observations: JobObservations | undefined }[],
): JobObservations {
  const progress = sites.map((s) => s.observations?.progress);
  const first = progress[0];
  const out: { -readonly [K in keyof JobObservations]: JobObservations[K] } = {};
  if (first !== undefined && progress.every((p) => p !== undefined)) {
    const all = progress as NonNullable<(typeof progress)[number]>[];
    const behind = all.reduce((a, b) => (b.step < a.step ? b : a));
    const workers = all.flatMap((p) => p.workers ?? []);
    const stragglers = all.flatMap((p) => p.stragglers ?? []);
    out.progress = {
      ...first,
      step: behind.step,
      epoch: behind.epoch,
      worldSize: all.reduce((n, p) => n + p.worldSize, 0),
      samplesPerSecond: all.reduce((n, p) => n + p.samplesPerSecond, 0),
      ...(workers.length === 0 ? {} : { workers }),
      stragglers,
    };
  }
  const done = sites.map((s) => s.observations?.completed);
  const firstDone = done[0];
  if (firstDone !== undefined && done.every((c) => c !== undefined))
    out.completed = {
      ...firstDone,
      reason: `every site completed (${sites.map((s) => s.name).join(', ')}): ${firstDone.reason}`,
    };
  const broken = sites.find((s) => s.observations?.rescaling !== undefined);
  if (broken?.observations?.rescaling !== undefined)
    out.rescaling = {
      ...broken.observations.rescaling,
      reason: `site ${broken.name}: ${broken.observations.rescaling.reason}`,
    };
  const useful = sites[0]?.observations?.useful;
  if (useful !== undefined) out.useful = useful;
  return out;
}

/**
 * status.federation: rounds every site this job runs completed, each one's membership and progress,
 * the ε (`sites`, `pods`: in localSites order).
 */
export function federationStatus(
  spec: TrainingJobSpec,
  sites: readonly (JobObservations | undefined)[],
  pods: readonly SitePods[],
): NonNullable<TrainingJobStatus['federation']> {
  const federation = spec.federation;
  if (federation === undefined) throw new RangeError('federationStatus needs spec.federation');
  const entries = localSites(spec).map((site, i) => {
    const seen = sites[i];
    const step = seen?.completed?.step ?? seen?.progress?.step;
    const finished = seen?.completed !== undefined || pods[i]?.succeeded === true;
    const round = finished
      ? federation.rounds
      : step === undefined
        ? undefined
        : Math.min(federation.rounds, Math.floor(step / federation.localSteps));
    return {
      name: site.name,
      replicas: pods[i]?.pods ?? 0,
      readyReplicas: pods[i]?.ready ?? 0,
      ...(seen?.progress === undefined ? {} : { worldSize: seen.progress.worldSize }),
      ...(step === undefined ? {} : { step }),
      ...(round === undefined ? {} : { round }),
      ...(finished ? { completed: true } : {}),
    };
  });
  const rounds = Math.min(...entries.map((e) => e.round ?? 0));
  const dp = federation.differentialPrivacy;
  return {
    rounds,
    sites: entries,
    ...(dp === undefined || rounds === 0
      ? {}
      : { epsilon: roundEpsilon(gaussianEpsilon(dp.noiseMultiplier, rounds, dp.delta).epsilon) }),
  };
}

const roundEpsilon = (e: number): number => (Number.isFinite(e) ? Number(e.toPrecision(4)) : e);

/** What the operator's cache holds of a job, enough to know its sites. */
export interface CachedJob {
  readonly metadata?: { readonly name?: string; readonly uid?: string };
  readonly spec?: unknown;
}

function cachedSites(job: CachedJob): readonly string[] {
  const sites = (job.spec as { federation?: { sites?: readonly { name?: unknown }[] } } | undefined)
    ?.federation?.sites;
  return Array.isArray(sites) ? sites.flatMap((s) => (typeof s.name === 'string' ? [s.name] : [])) : [];
}

/**
 * The federated job whose site job is `name` (its workers report as `<job>-<site>`), among the jobs of
 * one namespace; undefined when none is.
 */
export function siteOwner(
  name: string,
  jobs: readonly CachedJob[],
): { readonly name: string; readonly uid: string } | undefined {
  for (const job of jobs) {
    const own = job.metadata?.name;
    if (own === undefined || !name.startsWith(`${own}-`)) continue;
    if (cachedSites(job).some((site) => siteJobName(own, site) === name))
      return { name: own, uid: job.metadata?.uid ?? '' };
  }
  return undefined;
}
