/**
 * What a federated TrainingJob means for one site, shared by the operator side (`tensile run`, the
 * pod builder) and the worker: the site's own job (its rendezvous, ring and checkpoints are its own,
 * so its membership changes stay inside it), the spec it trains by, and the NATS subjects the site
 * leaders exchange a round's messages on. Only model deltas travel between sites, never samples.
 */
import { generateKeyPairSync } from 'node:crypto';
import type { FederationSite, TrainingJobSpec } from './training-job.ts';

/** A site's Ed25519 identity key: the private half for the site's workers only, the public for all. */
export interface SiteSigningKey {
  /** PKCS8 PEM. */
  readonly privatePem: string;
  /** The raw 32-byte public key, base64 (the form of spec.federation.sites[].signingKey). */
  readonly public: string;
}

/** A new identity key for a site whose spec pins none (the launcher's, handed to its workers). */
export function newSiteSigningKey(): SiteSigningKey {
  const { privateKey, publicKey } = generateKeyPairSync('ed25519');
  const spki = publicKey.export({ format: 'der', type: 'spki' });
  return {
    privatePem: privateKey.export({ format: 'pem', type: 'pkcs8' }).toString(),
    public: spki.subarray(spki.length - 32).toString('base64'),
  };
}

/** The site's own group: `<job>-<site>` names its rendezvous bucket, subjects and checkpoints. */
export const siteJobName = (job: string, site: string): string => `${job}-${site}`;

export function siteOf(spec: TrainingJobSpec, site: string): { site: FederationSite; index: number } {
  const sites = spec.federation?.sites ?? [];
  const index = sites.findIndex((s) => s.name === site);
  const found = sites[index];
  if (found === undefined)
    throw new RangeError(
      `site "${site}" is not in spec.federation.sites (${sites.map((s) => s.name).join(', ') || 'none'})`,
    );
  return { site: found, index };
}

/**
 * The spec a site's workers train by: the site's replicas, its own data when it brings some, and a
 * stopping point of rounds × localSteps steps (a round is localSteps steps of the site's world).
 */
export function siteSpec(spec: TrainingJobSpec, site: string): TrainingJobSpec {
  const federation = spec.federation;
  if (federation === undefined) throw new RangeError('siteSpec needs spec.federation');
  const { site: s } = siteOf(spec, site);
  const dataset =
    s.dataset === undefined
      ? spec.dataset
      : {
          ...spec.dataset,
          path: s.dataset.path,
          ...(s.dataset.volume === undefined ? {} : { volume: s.dataset.volume }),
        };
  return {
    ...spec,
    replicas: s.replicas,
    minReplicas: 1,
    maxReplicas: s.replicas,
    dataset,
    // Every site runs every round: a site that stopped early (an epoch count, a target) would stall the rest.
    stopping: { steps: federation.rounds * federation.localSteps },
    // Evaluated after every round's aggregation: accuracy per round, as Flower reports it.
    evaluation: { ...spec.evaluation, intervalSteps: federation.localSteps },
  };
}

/** The bucket of a federated job's rounds: one per job, shared by its sites. */
export const federationBucket = (namespace: string, job: string): string =>
  `tensile_${namespace}_${job}_federation`.replace(/[^A-Za-z0-9_-]/g, '_');

/** The subject of one phase of one attempt at a round: `tensile.<ns>.<job>.federation.<round>.<attempt>.<phase>`. */
export function federationSubject(
  namespace: string,
  job: string,
  round: number,
  attempt: number,
  phase: 'advertise' | 'shares' | 'input' | 'unmask' | 'abort',
): string {
  return `tensile.${namespace}.${job}.federation.${round}.${attempt}.${phase}`;
}
