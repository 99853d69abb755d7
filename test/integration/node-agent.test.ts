/**
 * The node agent against the real control plane: fake GPU nodes kept Ready, pods run as local
 * processes with their exit codes, the scheduler's verdicts, env and volumes, graceful deletion,
 * garbage collection, node deletion, simulated crashes and adoption of nodes created later.
 */
import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import {
  ApiException,
  CoreV1Api,
  CustomObjectsApi,
  PatchStrategy,
  setHeaderOptions,
  type V1Container,
  type V1Node,
  type V1Pod,
  type V1PodSpec,
} from '@kubernetes/client-node';
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { findClusterTools } from '../../hack/cluster/tools.ts';
import { API_GROUP, API_VERSION, PLURAL } from '../../operator/api/training-job.ts';
import { type LocalCluster, startCluster } from '../helpers/cluster.ts';
import { consistently, eventually } from '../helpers/eventually.ts';
import { validManifest } from '../helpers/job-builder.ts';

const NS = 'default';
let cluster: LocalCluster;
let core: CoreV1Api;
const mergePatch = setHeaderOptions('Content-Type', PatchStrategy.MergePatch);

test.before(async () => {
  try {
    const { kubectl } = findClusterTools();
    cluster = await startCluster({
      nodes: 3,
      gpusPerNode: 1,
      imageMap: { 'tools/kubectl': { entrypoint: [kubectl], cmd: [] } },
    });
    core = cluster.kubeConfig.makeApiClient(CoreV1Api);
  } catch (error) {
    // uvu swallows errors thrown by hooks: fail loudly instead.
    console.error(error);
    process.exit(1);
  }
});

test.after(async () => {
  await cluster?.[Symbol.asyncDispose]();
});

async function readPod(name: string): Promise<V1Pod | undefined> {
  try {
    return await core.readNamespacedPod({ name, namespace: NS });
  } catch (error) {
    if (error instanceof ApiException && error.code === 404) return undefined;
    throw error;
  }
}

/** Kubernetes reduces `$$` to `$` in command and args: a script writes `$$$$` for the shell's pid. */
function shellPod(
  name: string,
  script: string,
  spec: Partial<V1PodSpec> = {},
  container: Partial<V1Container> = {},
) {
  return {
    apiVersion: 'v1',
    kind: 'Pod',
    metadata: { name, namespace: NS },
    spec: {
      restartPolicy: 'Never',
      terminationGracePeriodSeconds: 5,
      ...spec,
      containers: [{ name: 'main', image: 'busybox:1.36', command: ['sh', '-c', script], ...container }],
    },
  } as V1Pod;
}

const phaseIs =
  (name: string, ...phases: string[]) =>
  async () => {
    const pod = await readPod(name);
    return pod !== undefined && phases.includes(pod.status?.phase ?? '') ? pod : undefined;
  };

/** True while a process with this pid exists (and is not a zombie). */
function processAlive(pid: number): boolean {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    return stat.slice(stat.lastIndexOf(')') + 2, stat.lastIndexOf(')') + 3) !== 'Z';
  } catch {
    return false;
  }
}

const gpu = (n: number) => ({ resources: { limits: { 'nvidia.com/gpu': String(n) } } });

test('the nodes are Ready, labelled as spot GPU nodes, with their leases renewed', async () => {
  const nodes = await core.listNode({ labelSelector: `tensile.dev/node-agent=${cluster.agentName}` });
  assert.equal(nodes.items.map((n) => n.metadata?.name).sort(), [...cluster.nodeNames].sort());
  for (const node of nodes.items) {
    assert.is(node.metadata?.labels?.['karpenter.sh/capacity-type'], 'spot');
    assert.is(node.metadata?.labels?.['kubernetes.io/hostname'], node.metadata?.name);
    assert.ok(node.metadata?.labels?.['node.kubernetes.io/instance-type']);
    assert.is(node.status?.capacity?.['nvidia.com/gpu'], '1');
    assert.is(node.status?.allocatable?.['nvidia.com/gpu'], '1');
    assert.is(node.status?.conditions?.find((c) => c.type === 'Ready')?.status, 'True');
  }
  const name = cluster.nodeNames[0] ?? '';
  const renewed = async () =>
    (
      await cluster.kubeConfig
        .makeApiClient((await import('@kubernetes/client-node')).CoordinationV1Api)
        .readNamespacedLease({ name, namespace: 'kube-node-lease' })
    ).spec?.renewTime;
  const first = String(await renewed());
  await eventually('a lease renewal', async () => String(await renewed()) !== first);
});

test('a pod on a GPU node runs a real process: Succeeded with exit 0, Failed with its code', async () => {
  await core.createNamespacedPod({
    namespace: NS,
    body: shellPod('ok', 'echo hello from $HOSTNAME', {}, gpu(1)),
  });
  await core.createNamespacedPod({
    namespace: NS,
    body: shellPod('fails', 'echo bad >&2; exit 3', {}, gpu(1)),
  });
  const ok = await eventually('pod ok Succeeded', phaseIs('ok', 'Succeeded', 'Failed'));
  assert.is(ok.status?.phase, 'Succeeded');
  assert.ok(cluster.nodeNames.includes(ok.spec?.nodeName ?? ''), 'bound to one of the fake nodes');
  assert.is(ok.status?.podIP, '127.0.0.1');
  assert.is(ok.status?.hostIP, '127.0.0.1');
  assert.ok(ok.status?.startTime);
  const okState = ok.status?.containerStatuses?.[0]?.state?.terminated;
  assert.is(okState?.exitCode, 0);
  assert.is(okState?.reason, 'Completed');
  assert.ok(okState?.startedAt && okState.finishedAt);
  assert.is(ok.status?.conditions?.find((c) => c.type === 'PodScheduled')?.status, 'True');
  assert.is(ok.status?.conditions?.find((c) => c.type === 'Ready')?.reason, 'PodCompleted');
  assert.is(readFileSync(cluster.podLogFile(NS, 'ok'), 'utf8'), 'hello from ok\n');

  const failed = await eventually('pod fails Failed', phaseIs('fails', 'Succeeded', 'Failed'));
  assert.is(failed.status?.phase, 'Failed');
  const failedState = failed.status?.containerStatuses?.[0]?.state?.terminated;
  assert.is(failedState?.exitCode, 3);
  assert.is(failedState?.reason, 'Error');
  assert.is(readFileSync(cluster.podLogFile(NS, 'fails'), 'utf8'), 'bad\n');
});

test('a pod asking for more GPUs than any node has stays Pending: Unschedulable', async () => {
  await core.createNamespacedPod({ namespace: NS, body: shellPod('greedy', 'exit 0', {}, gpu(2)) });
  const pod = await eventually('an Unschedulable verdict', async () => {
    const p = await readPod('greedy');
    const scheduled = p?.status?.conditions?.find((c) => c.type === 'PodScheduled');
    return scheduled?.status === 'False' ? p : undefined;
  });
  const scheduled = pod.status?.conditions?.find((c) => c.type === 'PodScheduled');
  assert.is(scheduled?.reason, 'Unschedulable');
  assert.match(scheduled?.message ?? '', 'nvidia.com/gpu');
  assert.is(pod.status?.phase, 'Pending');
  assert.is(pod.spec?.nodeName, undefined);
  await core.deleteNamespacedPod({ name: 'greedy', namespace: NS });
});

test('env field references, ConfigMap and Secret keys, and a claim mounted as a shared folder', async () => {
  await core.createNamespacedPersistentVolumeClaim({
    namespace: NS,
    body: {
      metadata: { name: 'shared' },
      spec: { accessModes: ['ReadWriteMany'], resources: { requests: { storage: '1Gi' } } },
    },
  });
  await core.createNamespacedConfigMap({
    namespace: NS,
    body: { metadata: { name: 'cfg' }, data: { greeting: 'hi' } },
  });
  await core.createNamespacedSecret({
    namespace: NS,
    body: { metadata: { name: 'sec' }, stringData: { token: 's3cret' } },
  });
  const fieldRef = (fieldPath: string) => ({ valueFrom: { fieldRef: { fieldPath } } });
  // Paths inside the script are not rewritten (only whole values are): they arrive through env and $0.
  const script =
    'echo "$POD_NAME $POD_NAMESPACE $POD_UID $POD_IP $NODE_NAME $TOKEN $(cat "$CFG/greeting")" > "$OUT"; cp "$CFG/greeting" "$0"';
  const writer = shellPod(
    'writer',
    script,
    {
      volumes: [
        { name: 'data', persistentVolumeClaim: { claimName: 'shared' } },
        { name: 'config', configMap: { name: 'cfg' } },
      ],
    },
    {
      args: ['/data/copy.txt'],
      env: [
        { name: 'POD_NAME', ...fieldRef('metadata.name') },
        { name: 'POD_NAMESPACE', ...fieldRef('metadata.namespace') },
        { name: 'POD_UID', ...fieldRef('metadata.uid') },
        { name: 'POD_IP', ...fieldRef('status.podIP') },
        { name: 'NODE_NAME', ...fieldRef('spec.nodeName') },
        { name: 'TOKEN', valueFrom: { secretKeyRef: { name: 'sec', key: 'token' } } },
        { name: 'CFG', value: '/etc/config' },
        { name: 'OUT', value: '/data/$(POD_NAME).txt' },
      ],
      volumeMounts: [
        { name: 'data', mountPath: '/data' },
        { name: 'config', mountPath: '/etc/config' },
      ],
      ...gpu(1),
    },
  );
  await core.createNamespacedPod({ namespace: NS, body: writer });
  const pod = await eventually('writer done', phaseIs('writer', 'Succeeded', 'Failed'));
  assert.is(pod.status?.phase, 'Succeeded', readFileSync(cluster.podLogFile(NS, 'writer'), 'utf8'));
  const folder = cluster.claimFolder(NS, 'shared');
  assert.is(
    readFileSync(join(folder, 'writer.txt'), 'utf8'),
    `writer default ${pod.metadata?.uid} 127.0.0.1 ${pod.spec?.nodeName} s3cret hi\n`,
  );
  assert.is(
    readFileSync(join(folder, 'copy.txt'), 'utf8'),
    'hi',
    'an argument under the mount path is mapped too',
  );
  const claim = await core.readNamespacedPersistentVolumeClaim({ name: 'shared', namespace: NS });
  assert.is(claim.status?.phase, 'Bound');

  // A second pod of the same claim sees the first one's files.
  await core.createNamespacedPod({
    namespace: NS,
    body: shellPod(
      'reader',
      'cat "$IN"',
      { volumes: [{ name: 'data', persistentVolumeClaim: { claimName: 'shared' } }] },
      {
        env: [{ name: 'IN', value: '/data/writer.txt' }],
        volumeMounts: [{ name: 'data', mountPath: '/data' }],
      },
    ),
  });
  const reader = await eventually('reader done', phaseIs('reader', 'Succeeded', 'Failed'));
  assert.is(reader.status?.phase, 'Succeeded');
  assert.match(readFileSync(cluster.podLogFile(NS, 'reader'), 'utf8'), 's3cret hi');
});

// Chaos seed 2 (20 minutes): after a kube-apiserver restart node-lifecycle marked every pod NotReady,
// the agent never said Ready again (it compared with what it had sent), and the operator counted 0 of
// 3 workers ready for the rest of the run.
test('a running pod that someone else marked NotReady is reported Ready again, as a kubelet does', async () => {
  await core.createNamespacedPod({ namespace: NS, body: shellPod('steady', 'sleep 600') });
  const ready = (pod: V1Pod | undefined) =>
    pod?.status?.conditions?.find((c) => c.type === 'Ready')?.status === 'True';
  const running = await eventually('steady Ready', async () => {
    const pod = await readPod('steady');
    return ready(pod) ? pod : undefined;
  });
  // What node-lifecycle's MarkPodsNotReady writes: the Ready condition False, the container as it was.
  const conditions = (running.status?.conditions ?? []).map((c) =>
    c.type === 'Ready' ? { ...c, status: 'False', lastTransitionTime: new Date() } : c,
  );
  await core.patchNamespacedPodStatus(
    { name: 'steady', namespace: NS, body: { status: { conditions } } },
    mergePatch,
  );
  await eventually('steady Ready again', async () => ready(await readPod('steady')));
  // Said once: no patch storm while it holds.
  const settled = (await readPod('steady'))?.metadata?.resourceVersion;
  await consistently(
    'no further status writes',
    async () => (await readPod('steady'))?.metadata?.resourceVersion === settled,
    { forMs: 2000 },
  );
  await core.deleteNamespacedPod({ name: 'steady', namespace: NS, gracePeriodSeconds: 0 });
});

test('restartPolicy OnFailure restarts a failed container in the same pod', async () => {
  await core.createNamespacedPod({
    namespace: NS,
    body: shellPod(
      'flaky',
      'if [ -f "$MARK" ]; then exit 0; fi; touch "$MARK"; exit 7',
      { restartPolicy: 'OnFailure', volumes: [{ name: 'scratch', emptyDir: {} }] },
      {
        env: [{ name: 'MARK', value: '/scratch/seen' }],
        volumeMounts: [{ name: 'scratch', mountPath: '/scratch' }],
      },
    ),
  });
  const pod = await eventually('flaky done', phaseIs('flaky', 'Succeeded', 'Failed'));
  const status = pod.status?.containerStatuses?.[0];
  assert.is(pod.status?.phase, 'Succeeded');
  assert.is(status?.restartCount, 1);
  assert.is(status?.lastState?.terminated?.exitCode, 7);
  assert.is(status?.state?.terminated?.exitCode, 0);
});

test("the image map: the tensile image runs this repository's CLI; an unknown image or binary cannot start", async () => {
  await core.createNamespacedPod({
    namespace: NS,
    body: {
      metadata: { name: 'tensile-cli' },
      spec: {
        restartPolicy: 'Never',
        containers: [
          {
            name: 'main',
            image: 'ghcr.io/tensile-dev/tensile:0.1.0',
            args: ['validate', 'examples/minimal.yaml'],
          },
        ],
      },
    },
  });
  await core.createNamespacedPod({
    namespace: NS,
    body: {
      metadata: { name: 'unknown-image' },
      spec: { containers: [{ name: 'main', image: 'example.com/nope:1' }] },
    },
  });
  await core.createNamespacedPod({
    namespace: NS,
    body: {
      metadata: { name: 'no-binary' },
      spec: {
        restartPolicy: 'Never',
        containers: [{ name: 'main', image: 'busybox', command: ['/no/such/binary'] }],
      },
    },
  });
  const cli = await eventually('tensile validate done', phaseIs('tensile-cli', 'Succeeded', 'Failed'));
  const log = readFileSync(cluster.podLogFile(NS, 'tensile-cli'), 'utf8');
  assert.is(cli.status?.phase, 'Succeeded', log);
  assert.match(log, 'minimal.yaml');
  const waiting = await eventually('ErrImagePull', async () => {
    const p = await readPod('unknown-image');
    const w = p?.status?.containerStatuses?.[0]?.state?.waiting;
    return w?.reason === 'ErrImagePull' ? w : undefined;
  });
  assert.match(waiting.message ?? '', 'example.com/nope:1');
  assert.is((await readPod('unknown-image'))?.status?.phase, 'Pending');
  await core.deleteNamespacedPod({ name: 'unknown-image', namespace: NS });
  const noBinary = await eventually('no-binary failed', phaseIs('no-binary', 'Failed', 'Succeeded'));
  const startError = noBinary.status?.containerStatuses?.[0]?.state?.terminated;
  assert.is(noBinary.status?.phase, 'Failed');
  assert.is(startError?.reason, 'StartError');
  assert.is(startError?.exitCode, 128);
  assert.match(startError?.message ?? '', '/no/such/binary');
});

test('a pod with a service-account token gets a KUBECONFIG with that identity', async () => {
  await core.createNamespacedPod({
    namespace: NS,
    body: {
      metadata: { name: 'whoami' },
      spec: {
        restartPolicy: 'Never',
        containers: [
          {
            name: 'main',
            image: 'tools/kubectl',
            args: ['auth', 'whoami', '-o', 'jsonpath={.status.userInfo.username}'],
          },
        ],
      },
    },
  });
  const pod = await eventually('whoami done', phaseIs('whoami', 'Succeeded', 'Failed'));
  const log = readFileSync(cluster.podLogFile(NS, 'whoami'), 'utf8');
  assert.is(pod.status?.phase, 'Succeeded', log);
  assert.is(log.trim(), 'system:serviceaccount:default:default');
});

test('deletion: SIGTERM reaches the process group, the grace period is honoured, then the pod is gone', async () => {
  const dir = join(cluster.dir, 'deletion-test');
  const polite = shellPod(
    'polite',
    'trap \'echo term > "$D/polite"; sleep 1; echo done >> "$D/polite"; exit 0\' TERM; echo $$$$ > "$D/polite.pid"; while :; do sleep 0.1; done',
    {
      terminationGracePeriodSeconds: 10,
      volumes: [{ name: 'd', hostPath: { path: dir, type: 'DirectoryOrCreate' } }],
    },
    { env: [{ name: 'D', value: dir }], volumeMounts: [{ name: 'd', mountPath: '/d' }] },
  );
  const stubborn = shellPod(
    'stubborn',
    'trap "" TERM; echo $$$$ > "$D/stubborn.pid"; while :; do date +%s%N >> "$D/beats"; sleep 0.1; done',
    {
      terminationGracePeriodSeconds: 2,
      volumes: [{ name: 'd', hostPath: { path: dir, type: 'DirectoryOrCreate' } }],
    },
    { env: [{ name: 'D', value: dir }], volumeMounts: [{ name: 'd', mountPath: '/d' }] },
  );
  await core.createNamespacedPod({ namespace: NS, body: polite });
  await core.createNamespacedPod({ namespace: NS, body: stubborn });
  await eventually(
    'both running',
    async () => (await phaseIs('polite', 'Running')()) && (await phaseIs('stubborn', 'Running')()),
  );
  const politePid = await eventually('polite pid', async () =>
    existsSync(join(dir, 'polite.pid')) ? Number(readFileSync(join(dir, 'polite.pid'), 'utf8')) : undefined,
  );
  const stubbornPid = await eventually('stubborn pid', async () =>
    existsSync(join(dir, 'stubborn.pid'))
      ? Number(readFileSync(join(dir, 'stubborn.pid'), 'utf8'))
      : undefined,
  );

  await core.deleteNamespacedPod({ name: 'polite', namespace: NS });
  await eventually('polite gone', async () => (await readPod('polite')) === undefined);
  assert.is(readFileSync(join(dir, 'polite'), 'utf8'), 'term\ndone\n', 'the TERM handler ran to its end');
  assert.not.ok(processAlive(politePid));

  const deletedAt = Date.now();
  await core.deleteNamespacedPod({ name: 'stubborn', namespace: NS });
  const during = await readPod('stubborn');
  // Gone this early is wrong unless this machine took the whole grace period to ask.
  assert.ok(
    during?.metadata?.deletionTimestamp !== undefined || Date.now() - deletedAt >= 2000,
    'within the grace period the pod still exists, terminating',
  );
  // The agent sees the deletion after we sent it and kills no sooner than the grace period after
  // that: however slow the machine, the death we observe comes at least that long after `deletedAt`.
  const killedAt = await eventually(
    'the stubborn process killed',
    () => (processAlive(stubbornPid) ? undefined : Date.now()),
    { intervalMs: 20 },
  );
  assert.ok(
    killedAt - deletedAt >= 1500,
    `the process ran on for the grace period (${killedAt - deletedAt} ms of 2000)`,
  );
  await eventually('stubborn gone', async () => (await readPod('stubborn')) === undefined);
  assert.not.ok(processAlive(stubbornPid), 'SIGKILL after the grace period');
  const beats = readFileSync(join(dir, 'beats'), 'utf8')
    .trim()
    .split('\n')
    .map((ns) => Number(ns) / 1e6);
  assert.ok(
    beats.some((beat) => beat > deletedAt),
    'the process went on running after SIGTERM (it ignores it)',
  );
});

test("deletion keeps other controllers' finalizers: the pod ends terminal and waits for them", async () => {
  const pod = shellPod('finalized', 'sleep 30');
  pod.metadata = { ...pod.metadata, finalizers: ['example.com/keep'] };
  await core.createNamespacedPod({ namespace: NS, body: pod });
  await eventually('finalized running', phaseIs('finalized', 'Running'));
  await core.deleteNamespacedPod({ name: 'finalized', namespace: NS });
  const ended = await eventually('terminal and force-deleted', async () => {
    const p = await readPod('finalized');
    return p?.metadata?.deletionGracePeriodSeconds === 0 && p.status?.phase === 'Failed' ? p : undefined;
  });
  assert.equal(ended.metadata?.finalizers, ['example.com/keep']);
  assert.is(ended.status?.containerStatuses?.[0]?.state?.terminated?.exitCode, 143, 'SIGTERM: 128 + 15');
  await core.patchNamespacedPod(
    { name: 'finalized', namespace: NS, body: { metadata: { finalizers: null } } },
    mergePatch,
  );
  await eventually('finalized gone', async () => (await readPod('finalized')) === undefined);
});

test('deleting an owner deletes its dependents (garbage collector)', async () => {
  const custom = cluster.kubeConfig.makeApiClient(CustomObjectsApi);
  const job = (await custom.createNamespacedCustomObject({
    group: API_GROUP,
    version: API_VERSION,
    namespace: NS,
    plural: PLURAL,
    body: validManifest('owner'),
  })) as { metadata: { uid: string } };
  const ownerReferences = [
    {
      apiVersion: `${API_GROUP}/${API_VERSION}`,
      kind: 'TrainingJob',
      name: 'owner',
      uid: job.metadata.uid,
      controller: true,
      blockOwnerDeletion: true,
    },
  ];
  await core.createNamespacedConfigMap({
    namespace: NS,
    body: { metadata: { name: 'owned', ownerReferences } },
  });
  const pod = shellPod('owned', 'sleep 30');
  pod.metadata = { ...pod.metadata, ownerReferences };
  await core.createNamespacedPod({ namespace: NS, body: pod });
  await eventually('owned running', phaseIs('owned', 'Running'));
  await custom.deleteNamespacedCustomObject({
    group: API_GROUP,
    version: API_VERSION,
    namespace: NS,
    plural: PLURAL,
    name: 'owner',
  });
  await eventually('dependents gone', async () => {
    const cms = await core.listNamespacedConfigMap({ namespace: NS, fieldSelector: 'metadata.name=owned' });
    return cms.items.length === 0 && (await readPod('owned')) === undefined;
  });
});

function nodeReady(node: V1Node | undefined): string | undefined {
  return node?.status?.conditions?.find((c) => c.type === 'Ready')?.status;
}

async function pidOf(podName: string, file: string): Promise<number> {
  return eventually(`${podName} pid`, async () =>
    existsSync(file) && readFileSync(file, 'utf8').trim() !== ''
      ? Number(readFileSync(file, 'utf8'))
      : undefined,
  );
}

function pinnedPod(name: string, node: string, pidFile: string): V1Pod {
  return shellPod(
    name,
    'echo $$$$ > "$PID_FILE"; exec sleep 300',
    { nodeName: node },
    {
      env: [{ name: 'PID_FILE', value: pidFile }],
    },
  );
}

test('the crashed annotation: heartbeats stop, processes die, node-lifecycle marks the node NotReady', async () => {
  const node = cluster.nodeNames[2] ?? '';
  const pidFile = join(cluster.dir, 'crash.pid');
  const pod = pinnedPod('on-crashing-node', node, pidFile);
  await core.createNamespacedPod({ namespace: NS, body: pod });
  await eventually('running', phaseIs('on-crashing-node', 'Running'));
  const pid = await pidOf('on-crashing-node', pidFile);
  assert.ok(processAlive(pid));
  await core.patchNode(
    { name: node, body: { metadata: { annotations: { 'tensile.dev/fake-node-state': 'crashed' } } } },
    mergePatch,
  );
  await eventually('the process killed', async () => !processAlive(pid));
  const notReady = await eventually('node NotReady', async () => {
    const n = await core.readNode({ name: node });
    return nodeReady(n) !== 'True' ? n : undefined;
  });
  assert.is(nodeReady(notReady), 'Unknown', 'no heartbeat: the node lifecycle controller does not know');
  // The taint follows the condition in a separate pass of the controller.
  await eventually('the unreachable taint', async () =>
    (await core.readNode({ name: node })).spec?.taints?.some(
      (t) => t.key === 'node.kubernetes.io/unreachable',
    ),
  );
  // The dead kubelet reported nothing: the API still shows the pod Running.
  assert.is((await readPod('on-crashing-node'))?.status?.phase, 'Running');

  await core.patchNode(
    { name: node, body: { metadata: { annotations: { 'tensile.dev/fake-node-state': null } } } },
    mergePatch,
  );
  await eventually('node Ready again', async () => nodeReady(await core.readNode({ name: node })) === 'True');
  const after = await eventually('the lost container reported', phaseIs('on-crashing-node', 'Failed'));
  assert.is(after.status?.containerStatuses?.[0]?.state?.terminated?.exitCode, 137);
});

test('a Node created later with the agent label is adopted, kept Ready and runs pods', async () => {
  const name = 'late-node';
  await core.createNode({
    body: {
      metadata: {
        name,
        labels: { 'tensile.dev/node-agent': cluster.agentName, 'karpenter.sh/capacity-type': 'spot' },
        annotations: {
          'tensile.dev/fake-node-capacity': JSON.stringify({
            cpu: '4',
            memory: '8Gi',
            pods: '10',
            'nvidia.com/gpu': '4',
          }),
        },
      },
    },
  });
  const node = await eventually('adopted and Ready', async () => {
    const n = await core.readNode({ name });
    return nodeReady(n) === 'True' ? n : undefined;
  });
  assert.is(node.status?.capacity?.['nvidia.com/gpu'], '4');
  assert.is(node.metadata?.labels?.['kubernetes.io/hostname'], name);
  await core.createNamespacedPod({
    namespace: NS,
    body: shellPod('four-gpus', 'exit 0', {}, gpu(4)),
  });
  const pod = await eventually('four-gpus done', phaseIs('four-gpus', 'Succeeded', 'Failed'));
  assert.is(pod.spec?.nodeName, name, 'only the adopted node has four GPUs');
  assert.is(pod.status?.phase, 'Succeeded');
});

test('deleting a node kills its processes at once', async () => {
  const node = cluster.nodeNames[1] ?? '';
  const pidFile = join(cluster.dir, 'doomed.pid');
  const pod = pinnedPod('doomed', node, pidFile);
  await core.createNamespacedPod({ namespace: NS, body: pod });
  await eventually('running', phaseIs('doomed', 'Running'));
  const pid = await pidOf('doomed', pidFile);
  assert.ok(processAlive(pid));
  await core.deleteNode({ name: node });
  await eventually('the process killed', async () => !processAlive(pid));
  await consistently(
    'the agent does not register a deleted node again',
    async () => !(await core.listNode()).items.some((n) => n.metadata?.name === node),
    { forMs: 3000, intervalMs: 250 },
  );
});

test.run();
