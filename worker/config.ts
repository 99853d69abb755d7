/**
 * The worker's configuration: the environment variables of operator/api/worker-env.ts (the contract
 * the pod builder and `tensile run` write), optionally from a JSON file named by TENSILE_CONFIG_FILE with the
 * same keys (environment variables win). Validated once at start; a bad value exits non-zero naming it.
 */

import { readFileSync } from 'node:fs';
import { hostname } from 'node:os';
import { z } from 'zod';
import { JOB_UID_PATTERN } from '../operator/api/contract.ts';
import { siteJobName, siteOf, siteSpec } from '../operator/api/federation.ts';
import { BACKENDS, type TrainingJobSpec, TrainingJobSpecSchema } from '../operator/api/training-job.ts';
import { zodProblems } from '../operator/api/validate.ts';
import { WORKER_ENV } from '../operator/api/worker-env.ts';
import { WorkerError } from './errors.ts';
import { FAILPOINTS } from './failpoint.ts';

const DNS_LABEL = /^[a-z0-9]([-a-z0-9]*[a-z0-9])?$/;

export const WorkerConfigSchema = z
  .object({
    jobName: z.string().regex(DNS_LABEL, 'expected the TrainingJob name (a DNS-1123 label)'),
    namespace: z.string().regex(DNS_LABEL, 'expected a namespace name').default('default'),
    /** The job's incarnation (its uid): names its NATS state. Required with NATS. */
    jobUid: z.string().regex(JOB_UID_PATTERN, "expected the job's uid (letters, digits and '-')").optional(),
    spec: TrainingJobSpecSchema,
    /**
     * The revision of `spec` (the TrainingJob's metadata.generation when the pod was created): among
     * workers holding different specs, the world follows the highest (rendezvous/agreement.ts).
     */
    specRevision: z.coerce.number().pipe(z.int().min(0)).default(0),
    workerId: z.string().min(1).max(253),
    replicaIndex: z.coerce.number().pipe(z.int().min(0)),
    podIp: z.union([z.ipv4(), z.ipv6()]).default('127.0.0.1'),
    /** Where this worker runs (empty: unknown); the ring keeps same-node and same-zone peers adjacent. */
    nodeName: z
      .string()
      .max(253)
      .transform((s) => (s === '' ? undefined : s))
      .optional(),
    zone: z
      .string()
      .max(253)
      .transform((s) => (s === '' ? undefined : s))
      .optional(),
    /** Absent: a standalone single worker (`tensile run --workers 1`), no rendezvous. */
    natsUrl: z
      .string()
      .regex(/^(nats|tls|ws|wss):\/\/\S+$/, 'expected a NATS URL such as nats://127.0.0.1:4222')
      .optional(),
    natsCreds: z.string().optional(),
    natsTlsCa: z.string().optional(),
    natsTlsCert: z.string().optional(),
    natsTlsKey: z.string().optional(),
    checkpointDir: z.string().startsWith('/', 'expected an absolute path'),
    backend: z.enum(BACKENDS).optional(),
    outDir: z.string().optional(),
    modelDir: z.string().startsWith('/', 'expected an absolute path').optional(),
    logLevel: z.enum(['error', 'warn', 'info', 'debug']).default('info'),
    /** At most one progress line per this many ms (0: every step, which `tensile run --chaos` needs). */
    progressMs: z.coerce.number().pipe(z.int().min(0).max(3_600_000)).default(2000),
    /** Every rank logs a checksum of its weights every this many steps (0: never): proof of lockstep. */
    checksumEvery: z.coerce.number().pipe(z.int().min(0)).default(0),
    /** A failure injected on purpose, for tests (worker/failpoint.ts): `<failpoint>@<worker id>|once:<file>`. */
    failpoint: z
      .string()
      .regex(
        new RegExp(`^(${FAILPOINTS.join('|')})@.+$`),
        `expected <failpoint>@<worker id> or <failpoint>@once:<file>, failpoints: ${FAILPOINTS.join(', ')}`,
      )
      .optional(),
    /** spec.federation: the site of this worker; the config is then the site's (see withSite). */
    federationSite: z.string().min(1).optional(),
    /** spec.federation with secure aggregation: this site's Ed25519 identity key (a PKCS8 PEM file). */
    federationSigningKey: z.string().startsWith('/', 'expected an absolute path').optional(),
    /** Every site's Ed25519 public key, as the launcher gave them: JSON of site name → base64. */
    federationSiteKeys: z
      .string()
      .transform((text, ctx) => {
        try {
          return z.record(z.string(), z.string()).parse(JSON.parse(text));
        } catch {
          ctx.addIssue({ code: 'custom', message: 'expected JSON of site name → base64 public key' });
          return z.NEVER;
        }
      })
      .optional(),
    federationAudit: z
      .enum(['0', '1'])
      .transform((v) => v === '1')
      .default(false),
  })
  .refine((c) => c.natsUrl === undefined || c.jobUid !== undefined, {
    path: ['jobUid'],
    message: 'required with NATS: the rendezvous state belongs to one incarnation of the job',
  })
  .refine((c) => c.federationSite === undefined || c.spec.federation !== undefined, {
    path: ['federationSite'],
    message: 'names a site, but the spec has no federation',
  })
  .refine(
    (c) =>
      c.federationSite === undefined || c.spec.federation?.sites.some((s) => s.name === c.federationSite),
    { path: ['federationSite'], message: 'is not one of spec.federation.sites' },
  )
  .refine((c) => c.spec.federation === undefined || c.federationSite !== undefined, {
    path: ['federationSite'],
    message: 'required: a federated job’s worker belongs to one of spec.federation.sites',
  })
  .transform(withSite);

/** Where a site worker stands in the federation: the whole job, its site, and the site's index. */
export interface FederationMember {
  readonly job: string;
  readonly site: string;
  readonly index: number;
  /** The federated spec (all sites); `spec` is the site's own. */
  readonly spec: TrainingJobSpec;
}

/**
 * A site's worker is, to everything below the federation, a worker of the site's own job: its name,
 * its spec (replicas, data, steps). The federation itself is kept beside it.
 */
function withSite<C extends { jobName: string; spec: TrainingJobSpec; federationSite?: string | undefined }>(
  config: C,
): C & { federation?: FederationMember } {
  const site = config.federationSite;
  if (site === undefined) return config;
  return {
    ...config,
    jobName: siteJobName(config.jobName, site),
    spec: siteSpec(config.spec, site),
    federation: { job: config.jobName, site, index: siteOf(config.spec, site).index, spec: config.spec },
  };
}

export type WorkerConfig = z.output<typeof WorkerConfigSchema>;
export type WorkerConfigInput = z.input<typeof WorkerConfigSchema>;

export class WorkerConfigError extends WorkerError {
  override readonly name = 'WorkerConfigError';
  readonly classification = 'terminal';
  constructor(
    readonly problems: readonly string[],
    options?: ErrorOptions,
  ) {
    super(`invalid worker configuration:\n  ${problems.join('\n  ')}`, options);
  }
}

/** Reads and validates the configuration; throws WorkerConfigError naming every bad variable. */
export function loadWorkerConfig(env: NodeJS.ProcessEnv = process.env): WorkerConfig {
  const raw: Record<string, unknown> = {};
  const problems: string[] = [];
  const file = env[WORKER_ENV.configFile];
  if (file !== undefined && file !== '') {
    try {
      const parsed: unknown = JSON.parse(readFileSync(file, 'utf8'));
      if (typeof parsed !== 'object' || parsed === null) throw new Error('not a JSON object');
      for (const [key, field] of Object.entries(WORKER_ENV)) {
        const value = (parsed as Record<string, unknown>)[field];
        if (value !== undefined) raw[key] = value;
      }
    } catch (error) {
      throw new WorkerConfigError([`${WORKER_ENV.configFile}=${file}: ${(error as Error).message}`], {
        cause: error,
      });
    }
  }
  for (const [key, field] of Object.entries(WORKER_ENV)) {
    const value = env[field];
    if (value !== undefined && value !== '') raw[key] = value;
  }
  if (typeof raw['spec'] === 'string') {
    try {
      raw['spec'] = JSON.parse(raw['spec']);
    } catch (error) {
      problems.push(`${WORKER_ENV.spec}: not JSON (${(error as Error).message})`);
    }
  }
  raw['workerId'] ??= hostname();
  const result = WorkerConfigSchema.safeParse(raw, { reportInput: true });
  if (!result.success) {
    for (const problem of zodProblems(result.error, WorkerConfigSchema)) {
      const [head, ...rest] = problem.path.split(/(?=[.[])/);
      const variable = WORKER_ENV[head as keyof typeof WORKER_ENV] ?? head;
      problems.push(`${variable}${rest.join('')}: ${problem.message}`);
    }
  }
  if (problems.length > 0) throw new WorkerConfigError(problems);
  if (!result.success) throw new WorkerConfigError(['unknown problem']);
  return result.data;
}
