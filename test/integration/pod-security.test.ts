/**
 * The worker pod as the operator builds it, against the PodSecurity admission of a real kube-apiserver:
 * admitted in a namespace that enforces the `restricted` standard, while the same pod stripped of its
 * security settings is rejected there (so the namespace really enforces).
 */
import { ApiException, CoreV1Api, type V1Pod } from '@kubernetes/client-node';
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { buildWorkerPod } from '../../operator/controller/pod-builder.ts';
import { type LocalCluster, startCluster } from '../helpers/cluster.ts';
import { ownedJob } from '../helpers/k8s-builders.ts';

const NS = 'restricted-jobs';
let cluster: LocalCluster;
let core: CoreV1Api;

test.before(async () => {
  try {
    cluster = await startCluster({ nodeAgent: false });
    core = cluster.kubeConfig.makeApiClient(CoreV1Api);
    await core.createNamespace({
      body: {
        metadata: {
          name: NS,
          labels: {
            'pod-security.kubernetes.io/enforce': 'restricted',
            'pod-security.kubernetes.io/enforce-version': 'latest',
          },
        },
      },
    });
  } catch (error) {
    // uvu swallows errors thrown by hooks: fail loudly instead.
    console.error(error);
    process.exit(1);
  }
});

test.after(async () => {
  await cluster?.[Symbol.asyncDispose]();
});

function workerPod(): V1Pod {
  const job = ownedJob();
  const pod = buildWorkerPod({ ...job, metadata: { ...job.metadata, namespace: NS } }, 0, {
    workerImage: 'tensile-worker:test',
    workerGpuImage: 'tensile-worker:test-gpu',
    natsUrl: 'nats://nats:4222',
  });
  // Admission is what is tested: no owner to garbage-collect it against, no finalizer to clear.
  return { ...pod, metadata: { ...pod.metadata, ownerReferences: [], finalizers: [] } };
}

async function create(pod: V1Pod): Promise<string | undefined> {
  try {
    await core.createNamespacedPod({ namespace: NS, body: pod });
    return undefined;
  } catch (error) {
    if (error instanceof ApiException)
      return `${error.code}: ${typeof error.body === 'string' ? error.body : JSON.stringify(error.body)}`;
    throw error;
  }
}

test('the worker pod is admitted where the restricted standard is enforced', async () => {
  const rejected = await create(workerPod());
  assert.is(rejected, undefined, rejected);
  const stored = await core.readNamespacedPod({ namespace: NS, name: 'job-worker-0' });
  assert.is(stored.spec?.containers[0]?.securityContext?.readOnlyRootFilesystem, true);
});

test('without its security settings the same pod is rejected there', async () => {
  const pod = workerPod();
  const bare: V1Pod = {
    ...pod,
    metadata: { ...pod.metadata, name: 'job-worker-bare' },
    spec: {
      ...(pod.spec as NonNullable<V1Pod['spec']>),
      securityContext: {},
      containers: (pod.spec?.containers ?? []).map(({ securityContext: _, ...c }) => c),
    },
  };
  const rejected = await create(bare);
  assert.ok(rejected?.startsWith('403'), `expected a 403 from PodSecurity, got ${rejected}`);
  assert.match(String(rejected), /violates PodSecurity/);
  assert.match(String(rejected), /restricted/);
});

test.run();
