/**
 * `tensile operator`: the operator process (and the operator image's entrypoint). Serves /healthz,
 * /readyz and /metrics at once; syncs its caches (leader or not: /readyz says when they are synced and
 * the API server answers); campaigns for the leader Lease; while leading, runs the reconcilers.
 * SIGTERM stops the controller, hands the lease back and exits 0.
 */

import { readFileSync } from 'node:fs';
import { createServer, type Server } from 'node:http';
import { hostname } from 'node:os';
import { KubeConfig } from '@kubernetes/client-node';
import { parse as parseYaml } from 'yaml';
import { zodProblems } from '../api/validate.ts';
import { WorkerDefaultsSchema } from '../api/worker-defaults.ts';
import { TrainingJobController } from '../controller/controller.ts';
import { EventRecorder } from '../controller/events.ts';
import { KubeClient } from '../controller/kube.ts';
import { KueueClient } from '../controller/kueue-client.ts';
import { LeaderElector } from '../controller/leader-election.ts';
import { OperatorMetrics } from '../controller/metrics.ts';
import type { WorkerTemplateDefaults } from '../controller/pod-builder.ts';
import {
  ApiServerContact,
  type ReadinessCheck,
  readinessChecks,
  readinessResponse,
} from '../controller/readiness.ts';
import { createOperatorLogger } from '../logging.ts';
import { type CommandSpec, commandLine, UsageError } from './args.ts';
import { type OperatorNats, operatorNats } from './operator-nats.ts';

export const OPERATOR_COMMAND = {
  command: 'tensile operator',
  synopsis: '[options]',
  description: `Runs the operator: serves /healthz, /readyz and /metrics, campaigns for the leader Lease and, while
leading, reconciles TrainingJobs. SIGTERM hands the lease back and exits 0.`,
  options: {
    kubeconfig: { type: 'string', value: 'FILE', help: 'kubeconfig (default: $KUBECONFIG, then in-cluster)' },
    nats: {
      type: 'string',
      value: 'URL',
      help: 'NATS server for worker control messages (default: $TENSILE_NATS_URL)',
    },
    namespace: {
      type: 'string',
      value: 'NS',
      help: 'namespace of the leader Lease (default: $POD_NAMESPACE or tensile-system)',
    },
    'nats-account-seed': {
      type: 'string',
      value: 'FILE',
      help: 'seed of the NATS account that workers belong to: each job gets its own\ncredentials, limited to its subjects and bucket (default: none)',
    },
    'nats-trust': {
      type: 'string',
      value: 'DIR',
      help: "a trust directory written by tensile nats-trust: as --nats-account-seed, and\nthe operator revokes a job's credentials on the server when the job ends",
    },
    'nats-tls-ca': {
      type: 'string',
      value: 'FILE',
      help: 'CA certificate (PEM) of a NATS server that takes TLS; workers get it too',
    },
    'nats-tls-cert': {
      type: 'string',
      value: 'FILE',
      help: 'client certificate (PEM) for a NATS server that verifies clients',
    },
    'nats-tls-key': { type: 'string', value: 'FILE', help: 'the key of --nats-tls-cert (PEM)' },
    'job-network-policies': {
      type: 'boolean',
      help: 'give each job a NetworkPolicy: only its own workers reach its workers',
    },
    'watch-namespace': {
      type: 'string',
      value: 'NS',
      help: 'reconcile TrainingJobs of this namespace only (default: every namespace)',
    },
    'worker-image': {
      type: 'string',
      value: 'IMAGE',
      help: 'image of CPU workers (default: $TENSILE_WORKER_IMAGE)',
    },
    'worker-gpu-image': {
      type: 'string',
      value: 'IMAGE',
      help: 'image of GPU workers (default: $TENSILE_WORKER_GPU_IMAGE or --worker-image)',
    },
    'worker-defaults': {
      type: 'string',
      value: 'FILE',
      help: "YAML with nodeSelector, tolerations, resources, priorityClassName, gpu,\nspot, imagePullSecrets for workers (the Helm chart's workers values)",
    },
    'http-port': {
      type: 'string',
      value: 'PORT',
      help: '/healthz, /readyz, /metrics (default 8080; 0 picks a free port)',
    },
    concurrency: { type: 'string', value: 'N', help: 'jobs reconciled at once (default 4)' },
    'no-leader-elect': { type: 'boolean', help: 'run without a Lease (one replica only)' },
    'no-kueue': {
      type: 'boolean',
      help: 'ignore the kueue.x-k8s.io/queue-name label (default: such jobs wait for Kueue)',
    },
    'lease-duration': { type: 'string', value: 'SECONDS', help: 'leader lease duration (default 15)' },
    'renew-deadline': {
      type: 'string',
      value: 'SECONDS',
      help: 'give up leadership after failing to renew this long (default 10)',
    },
    'retry-period': { type: 'string', value: 'SECONDS', help: 'lease renew/retry period (default 2)' },
    'failure-backoff': {
      type: 'string',
      value: 'SECONDS',
      help: 'first delay before replacing a failed worker, doubling (default 10)',
    },
    id: { type: 'string', value: 'NAME', help: 'identity in the Lease (default: hostname-pid)' },
    'log-level': { type: 'string', value: 'LEVEL', help: 'error|warn|info|debug (default info)' },
  },
} as const satisfies CommandSpec;

const DEFAULT_WORKER_IMAGE = 'ghcr.io/tensile-dev/tensile-worker:0.1.0';

function positive(name: string, value: string | undefined, fallback: number): number {
  if (value === undefined) return fallback;
  const n = Number(value);
  if (!Number.isFinite(n) || n < 0)
    throw new UsageError(`--${name}: expected a non-negative number, got "${value}"`);
  return n;
}

/** Reads the cluster defaults for workers; a bad file names the field. */
export function loadWorkerDefaults(file: string): WorkerTemplateDefaults {
  const raw: unknown = parseYaml(readFileSync(file, 'utf8')) ?? {};
  const result = WorkerDefaultsSchema.safeParse(raw, { reportInput: true });
  if (!result.success) {
    const problems = zodProblems(result.error, WorkerDefaultsSchema).map((p) => `${p.path}: ${p.message}`);
    throw new Error(`${file}: ${problems.join('; ')}`);
  }
  return result.data;
}

export async function runOperator(argv: readonly string[]): Promise<number> {
  const io = { out: console.log, err: console.error };
  const line = commandLine(OPERATOR_COMMAND, argv, io, (values) => {
    const leaseMs = positive('lease-duration', values['lease-duration'], 15) * 1000;
    const renewMs = positive('renew-deadline', values['renew-deadline'], 10) * 1000;
    if (renewMs >= leaseMs) throw new UsageError('--renew-deadline must be shorter than --lease-duration');
    return {
      values,
      leaseMs,
      renewMs,
      retryMs: positive('retry-period', values['retry-period'], 2) * 1000,
      port: positive('http-port', values['http-port'], 8080),
      concurrency: Math.max(1, Math.floor(positive('concurrency', values.concurrency, 4))),
      backoff: positive('failure-backoff', values['failure-backoff'], 10),
    };
  });
  if ('exit' in line) return line.exit;
  const { values, leaseMs, renewMs, retryMs, port, concurrency, backoff } = line.parsed;
  const identity = values.id ?? `${hostname()}-${process.pid}`;
  const log = createOperatorLogger(values['log-level'] ?? 'info', { instance: identity });
  const kubeConfig = new KubeConfig();
  try {
    const file = values.kubeconfig ?? process.env['KUBECONFIG'];
    if (file !== undefined && file !== '') kubeConfig.loadFromFile(file);
    else kubeConfig.loadFromCluster();
    if (kubeConfig.getCurrentCluster() === null) throw new Error('no current cluster in the kubeconfig');
  } catch (error) {
    log.error('cannot load a kubeconfig; pass --kubeconfig FILE or run in a cluster', {
      error: (error as Error).message,
    });
    return 2;
  }
  const namespace = values.namespace ?? process.env['POD_NAMESPACE'] ?? 'tensile-system';
  const workerImage = values['worker-image'] ?? process.env['TENSILE_WORKER_IMAGE'] ?? DEFAULT_WORKER_IMAGE;
  const natsUrl = values.nats ?? process.env['TENSILE_NATS_URL'];
  let template: WorkerTemplateDefaults | undefined;
  if (values['worker-defaults'] !== undefined) {
    try {
      template = loadWorkerDefaults(values['worker-defaults']);
    } catch (error) {
      log.error('invalid --worker-defaults', { error: (error as Error).message });
      return 2;
    }
  }
  const metrics = new OperatorMetrics();
  const kube = new KubeClient(kubeConfig);
  let natsSide: OperatorNats;
  try {
    natsSide = await operatorNats(values, natsUrl, log);
  } catch (error) {
    log.error('invalid NATS options', { error: (error as Error).message });
    return 2;
  }
  const { link: nats, minter: credentials, revoker, natsTls } = natsSide;
  void nats
    .start()
    .catch((error: unknown) => log.error('NATS connection failed', { error: (error as Error).message }));
  const stop = new AbortController();
  let exitCode = 0;
  // One controller for the life of the process: its caches run on every replica, its reconcilers only
  // while this replica leads (losing the lease ends the process).
  const controller = new TrainingJobController({
    kubeConfig,
    kube,
    publisher: nats,
    events: new EventRecorder(kube, 'tensile.dev/operator', identity, log),
    metrics,
    config: {
      workerImage,
      workerGpuImage: values['worker-gpu-image'] ?? process.env['TENSILE_WORKER_GPU_IMAGE'] ?? workerImage,
      natsUrl: natsUrl ?? 'nats://nats:4222',
      ...(template === undefined ? {} : { template }),
      ...(credentials?.mints === true ? { perJobCredentials: true } : {}),
      ...(natsTls === undefined ? {} : { natsTls }),
      ...(values['job-network-policies'] === true ? { jobNetworkPolicies: true } : {}),
      failureBackoffSeconds: backoff,
      maxFailureBackoffSeconds: 360,
    },
    log,
    concurrency,
    nats: async () => {
      await nats.start();
      return nats.nats;
    },
    ...(natsUrl === undefined ? {} : { jobState: nats }),
    ...(values['no-kueue'] === true ? {} : { kueue: new KueueClient(kubeConfig) }),
    ...(values['watch-namespace'] === undefined ? {} : { watchNamespace: values['watch-namespace'] }),
    ...(credentials === undefined ? {} : { credentials }),
    ...(revoker === undefined ? {} : { revoker }),
  });
  // Reachable "recently" means within the renew deadline: what a leader tolerates before it gives up.
  const contact = new ApiServerContact(kubeConfig, retryMs);
  const readiness = () =>
    readinessChecks({
      informers: controller.cacheStatus(),
      lastContactMs: contact.lastContactMs,
      nowMs: Date.now(),
      contactWindowMs: renewMs,
    });
  const server = await serve(port, metrics, readiness, log);
  contact.start();
  const caches = controller
    .startCaches()
    .catch((error: unknown) => log.error('informers failed to start', { error: (error as Error).message }));

  const onSignal = (signal: string) => {
    log.info('shutting down', { signal });
    stop.abort();
  };
  process.once('SIGTERM', () => onSignal('SIGTERM'));
  process.once('SIGINT', () => onSignal('SIGINT'));

  if (values['no-leader-elect']) {
    metrics.leader.set(1);
    await controller.run(stop.signal);
  } else {
    const elector = new LeaderElector(
      kubeConfig,
      {
        namespace,
        name: 'tensile-operator',
        identity,
        leaseDurationMs: leaseMs,
        renewDeadlineMs: renewMs,
        retryPeriodMs: retryMs,
      },
      log,
    );
    let controllerDone: Promise<void> = Promise.resolve();
    await elector.run(stop.signal, {
      onStartedLeading: (signal) => {
        metrics.leader.set(1);
        controllerDone = controller.run(signal);
        return controllerDone;
      },
      onStoppedLeading: () => {
        metrics.leader.set(0);
        if (!stop.signal.aborted) {
          log.error('lost leadership; exiting so that a fresh process campaigns again');
          exitCode = 1;
        }
      },
    });
    await controllerDone;
  }
  contact.stop();
  await caches;
  await controller.stopCaches().catch(() => undefined);
  await nats[Symbol.asyncDispose]().catch(() => undefined);
  await revoker?.[Symbol.asyncDispose]().catch(() => undefined);
  await new Promise((resolve) => server.close(resolve));
  log.info('operator stopped', { exitCode });
  return exitCode;
}

async function serve(
  port: number,
  metrics: OperatorMetrics,
  readiness: () => ReadinessCheck[],
  log: ReturnType<typeof createOperatorLogger>,
): Promise<Server> {
  const server = createServer((req, res) => {
    const url = req.url ?? '/';
    const path = url.split('?')[0] ?? url;
    if (path === '/healthz') {
      res.writeHead(200, { 'content-type': 'text/plain' }).end('ok');
    } else if (path === '/readyz' || path.startsWith('/readyz/')) {
      const answer = readinessResponse(readiness(), url);
      res.writeHead(answer.status, { 'content-type': 'text/plain' }).end(answer.body);
    } else if (url === '/metrics') {
      metrics.registry
        .metrics()
        .then((text) => res.writeHead(200, { 'content-type': metrics.registry.contentType }).end(text))
        .catch((error: unknown) => res.writeHead(500).end(String(error)));
    } else {
      res.writeHead(404).end('not found');
    }
  });
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(port, () => resolve());
  });
  const address = server.address();
  log.info('serving /healthz, /readyz, /metrics', {
    port: typeof address === 'object' && address !== null ? address.port : port,
  });
  return server;
}
