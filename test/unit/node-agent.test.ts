/** The node agent's pure parts: image map, argv, env, path mapping, pod and node status. */
import type { V1Container, V1Node, V1Pod } from '@kubernetes/client-node';
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { AgentConfigSchema, defaultImageMap, ImageMapSchema } from '../../hack/node-agent/config.ts';
import {
  ContainerConfigError,
  containerEnvironment,
  type EnvSources,
  expandReferences,
  fieldRefValue,
  finalArgv,
  parseQuantity,
  resourceFieldValue,
  rewriteArgument,
  rewritePath,
} from '../../hack/node-agent/container.ts';
import { containerArgv, findImage } from '../../hack/node-agent/images.ts';
import { nodeObject, readyNodeStatus } from '../../hack/node-agent/nodes.ts';
import {
  exitCodeOf,
  type LocalContainer,
  podPhase,
  podStatus,
  restartDelayMs,
  shouldRestart,
} from '../../hack/node-agent/pod-status.ts';

const imageMap = ImageMapSchema.parse({
  ...defaultImageMap('/repo'),
  'busybox:1.36': { entrypoint: ['/bin/sh'], cmd: ['-c', 'true'] },
  'example.com/app*': { entrypoint: ['app'], cmd: ['serve'] },
  'example.com/app-gpu*': { entrypoint: ['app-gpu'], cmd: [] },
});

test('image map: exact match wins, then the longest prefix', () => {
  const cases: [string, string | undefined][] = [
    ['busybox:1.36', 'busybox:1.36'],
    ['busybox:1.37', undefined],
    ['example.com/app:1', 'example.com/app*'],
    ['example.com/app-gpu:1', 'example.com/app-gpu*'],
    ['ghcr.io/tensile-dev/tensile:0.1.0', 'ghcr.io/tensile-dev/tensile*'],
    ['ghcr.io/tensile-dev/tensile-gpu:0.1.0', 'ghcr.io/tensile-dev/tensile*'],
    ['nats:2.10-alpine', 'nats*'],
    ['docker.io/library/nginx', undefined],
  ];
  for (const [image, pattern] of cases) assert.is(findImage(imageMap, image)?.pattern, pattern, image);
  assert.equal(findImage(imageMap, 'ghcr.io/tensile-dev/tensile:1')?.entry.entrypoint, [
    process.execPath,
    '/repo/operator/bin/tensile.mjs',
  ]);
});

test('argv follows Kubernetes: command replaces entrypoint and cmd, args replace cmd', () => {
  const entry = { entrypoint: ['ep', '--x'], cmd: ['default'] };
  const cases: [{ command?: string[]; args?: string[] }, string[]][] = [
    [{}, ['ep', '--x', 'default']],
    [{ args: ['a', 'b'] }, ['ep', '--x', 'a', 'b']],
    [{ command: ['c'] }, ['c']],
    [{ command: ['c'], args: ['a'] }, ['c', 'a']],
    [{ command: [], args: [] }, ['ep', '--x', 'default']],
  ];
  for (const [container, argv] of cases)
    assert.equal(containerArgv(entry, container).argv, argv, JSON.stringify(container));
  assert.equal(containerArgv(undefined, {}).argv, [], 'an unknown image runs nothing');
  assert.equal(containerArgv(undefined, { command: ['sh'], args: ['-c', 'x'] }).argv, ['sh', '-c', 'x']);
  // Which words the pod gave: only those are expanded and rewritten.
  assert.equal(containerArgv(entry, { args: ['a'] }).fromPod, [false, false, true]);
  assert.equal(containerArgv(entry, {}).fromPod, [false, false, false]);
  assert.equal(containerArgv(entry, { command: ['c'], args: ['a'] }).fromPod, [true, true]);
});

const mounts = [
  { mountPath: '/data', localPath: '/state/volumes/ns/claim' },
  { mountPath: '/data/cache/', localPath: '/state/pods/u/volumes/cache' },
  { mountPath: '/etc/cfg', localPath: '/state/pods/u/volumes/cfg' },
];

test('paths under a mountPath map to the local folder (longest mount wins)', () => {
  const cases: [string, string][] = [
    ['/data', '/state/volumes/ns/claim'],
    ['/data/', '/state/volumes/ns/claim/'],
    ['/data/x/y.txt', '/state/volumes/ns/claim/x/y.txt'],
    ['/data/cache/z', '/state/pods/u/volumes/cache/z'],
    ['/database', '/database'],
    ['relative/data', 'relative/data'],
    ['{"path":"/data/x"}', '{"path":"/data/x"}'],
    ['/etc/cfg/a.conf', '/state/pods/u/volumes/cfg/a.conf'],
  ];
  for (const [input, output] of cases) assert.is(rewritePath(input, mounts), output, input);
  assert.is(rewriteArgument('--out=/data/o', mounts), '--out=/state/volumes/ns/claim/o');
  assert.is(rewriteArgument('-c=/etc/cfg/a', mounts), '-c=/state/pods/u/volumes/cfg/a');
  assert.is(rewriteArgument('--name=data', mounts), '--name=data');
});

test('$(VAR) expansion: known names expand, unknown stay, $$ escapes', () => {
  const vars = new Map([
    ['A', 'x'],
    ['B', '/data'],
  ]);
  assert.is(expandReferences('$(A)-$(B)/f', vars), 'x-/data/f');
  assert.is(expandReferences('$(NOPE)', vars), '$(NOPE)');
  assert.is(expandReferences('$$(A)', vars), '$(A)');
  assert.is(expandReferences('cost $5', vars), 'cost $5');
  assert.is(
    expandReferences('echo $$$$ $$', vars),
    'echo $$ $',
    'as in Kubernetes, every $$ is an escaped $',
  );
});

const pod: V1Pod = {
  metadata: {
    name: 'p',
    namespace: 'ns',
    uid: 'u-1',
    labels: { app: 'a', 'tensile.dev/role': 'worker' },
    annotations: { note: 'n' },
  },
  spec: {
    nodeName: 'node-3',
    serviceAccountName: 'sa',
    containers: [{ name: 'main', image: 'busybox:1.36' }],
  },
};

test('downward API fields', () => {
  const cases: [string, string][] = [
    ['metadata.name', 'p'],
    ['metadata.namespace', 'ns'],
    ['metadata.uid', 'u-1'],
    ["metadata.labels['tensile.dev/role']", 'worker'],
    ["metadata.annotations['note']", 'n'],
    ['metadata.labels', 'app="a"\ntensile.dev/role="worker"'],
    ['spec.nodeName', 'node-3'],
    ['spec.serviceAccountName', 'sa'],
    ['status.podIP', '127.0.0.1'],
    ['status.hostIP', '127.0.0.1'],
  ];
  for (const [path, value] of cases) assert.is(fieldRefValue(pod, path, '127.0.0.1'), value, path);
  assert.throws(
    () => fieldRefValue(pod, 'spec.bogus', '127.0.0.1'),
    (e: unknown) => e instanceof ContainerConfigError,
  );
});

test('resourceFieldRef: limits by divisor, rounded up; node allocatable when unset', () => {
  const container: V1Container = {
    name: 'c',
    resources: { limits: { cpu: '1500m', memory: '1Gi' }, requests: { cpu: '250m' } },
  };
  assert.is(resourceFieldValue(container, 'limits.cpu', undefined, {}), '2');
  assert.is(resourceFieldValue(container, 'limits.cpu', '1m', {}), '1500');
  assert.is(resourceFieldValue(container, 'limits.memory', '1Mi', {}), '1024');
  assert.is(resourceFieldValue(container, 'requests.cpu', '1m', {}), '250');
  assert.is(resourceFieldValue({ name: 'c' }, 'limits.memory', '1Gi', { memory: '32Gi' }), '32');
  assert.is(parseQuantity('2e3'), 2000);
  assert.throws(
    () => parseQuantity('lots'),
    (e: unknown) => e instanceof ContainerConfigError,
  );
});

const sources: EnvSources = {
  configMap: async (name) => (name === 'cm' ? { color: 'blue', PATH_IN: '/data/in' } : undefined),
  secret: async (name) => (name === 's' ? { token: 't0k' } : undefined),
};

test('environment: envFrom, then env in order with $(VAR) expansion, field refs, keys, path rewrite', async () => {
  const container: V1Container = {
    name: 'main',
    envFrom: [{ configMapRef: { name: 'cm' }, prefix: 'CM_' }],
    env: [
      { name: 'NAME', valueFrom: { fieldRef: { fieldPath: 'metadata.name' } } },
      { name: 'IP', valueFrom: { fieldRef: { fieldPath: 'status.podIP' } } },
      { name: 'OUT', value: '/data/$(NAME)/out' },
      { name: 'TOKEN', valueFrom: { secretKeyRef: { name: 's', key: 'token' } } },
      { name: 'COLOR', valueFrom: { configMapKeyRef: { name: 'cm', key: 'color' } } },
      { name: 'MISSING', valueFrom: { configMapKeyRef: { name: 'cm', key: 'nope', optional: true } } },
      { name: 'HOME', value: '/data/home' },
    ],
  };
  const env = await containerEnvironment(
    { pod, container, podIP: '127.0.0.1', nodeAllocatable: {}, mounts, sources },
    { PATH: '/usr/bin', HOME: '/root' },
  );
  assert.is(env.get('NAME'), 'p');
  assert.is(env.get('IP'), '127.0.0.1');
  assert.is(env.get('OUT'), '/state/volumes/ns/claim/p/out');
  assert.is(env.get('TOKEN'), 't0k');
  assert.is(env.get('COLOR'), 'blue');
  assert.is(env.get('CM_color'), 'blue');
  assert.is(env.get('CM_PATH_IN'), '/state/volumes/ns/claim/in');
  assert.is(env.has('MISSING'), false);
  assert.is(env.get('PATH'), '/usr/bin');
  assert.is(env.get('HOME'), '/state/volumes/ns/claim/home', 'a value the pod sets is rewritten');
  const fromPod = (argv: string[]) => ({ argv, fromPod: argv.map(() => true) });
  assert.equal(finalArgv(fromPod(['/bin/sh', '-c', 'echo $(NAME)', '/data/x', '--o=/data/y']), env, mounts), [
    '/bin/sh',
    '-c',
    'echo p',
    '/state/volumes/ns/claim/x',
    '--o=/state/volumes/ns/claim/y',
  ]);
  // The image map's words are paths on this machine, even below a mount path (a checkout in /data).
  assert.equal(
    finalArgv(
      containerArgv({ entrypoint: ['/usr/bin/node', '/data/repo/bin.mjs'], cmd: [] }, { args: ['/data/in'] }),
      env,
      mounts,
    ),
    ['/usr/bin/node', '/data/repo/bin.mjs', '/state/volumes/ns/claim/in'],
  );
});

test('environment: a missing ConfigMap or key is a CreateContainerConfigError naming it', async () => {
  const run = (env: V1Container['env']) =>
    containerEnvironment(
      { pod, container: { name: 'c', env }, podIP: '127.0.0.1', nodeAllocatable: {}, mounts, sources },
      {},
    );
  for (const [env, message] of [
    [
      [{ name: 'X', valueFrom: { configMapKeyRef: { name: 'other', key: 'k' } } }],
      /configmap "other" not found/,
    ],
    [
      [{ name: 'X', valueFrom: { secretKeyRef: { name: 's', key: 'nope' } } }],
      /couldn't find key nope in secret ns\/s/,
    ],
  ] as const) {
    try {
      await run([...env]);
      assert.unreachable('expected an error');
    } catch (error) {
      assert.instance(error, ContainerConfigError);
      assert.match((error as Error).message, message);
      assert.is((error as ContainerConfigError).reason, 'CreateContainerConfigError');
    }
  }
});

const at = (s: number) => new Date(Date.UTC(2026, 0, 1, 0, 0, s));
const iso = (s: number) => at(s).toISOString().replace('.000Z', 'Z');

test('restart policy decisions and back-off', () => {
  const cases: ['Always' | 'OnFailure' | 'Never', number, boolean][] = [
    ['Never', 0, false],
    ['Never', 1, false],
    ['OnFailure', 0, false],
    ['OnFailure', 2, true],
    ['Always', 0, true],
    ['Always', 137, true],
  ];
  for (const [policy, code, restart] of cases)
    assert.is(shouldRestart(policy, code), restart, `${policy} ${code}`);
  assert.equal([1, 2, 3, 4, 5, 9].map(restartDelayMs), [1000, 2000, 4000, 8000, 10000, 10000]);
  assert.is(exitCodeOf(3, undefined), 3);
  assert.is(exitCodeOf(null, 15), 143);
  assert.is(exitCodeOf(null, 9), 137);
});

test('pod phase follows the container', () => {
  const terminated = (exitCode: number) =>
    ({
      kind: 'terminated',
      exitCode,
      reason: exitCode === 0 ? 'Completed' : 'Error',
      finishedAt: iso(9),
    }) as const;
  const cases: [LocalContainer, string][] = [
    [
      { state: { kind: 'waiting', reason: 'ContainerCreating' }, restartCount: 0, finished: false },
      'Pending',
    ],
    [{ state: { kind: 'waiting', reason: 'ErrImagePull' }, restartCount: 0, finished: false }, 'Pending'],
    [
      { state: { kind: 'running', startedAt: iso(1), containerID: 'x' }, restartCount: 0, finished: false },
      'Running',
    ],
    [{ state: terminated(0), restartCount: 0, finished: true }, 'Succeeded'],
    [{ state: terminated(3), restartCount: 0, finished: true }, 'Failed'],
    [
      {
        state: { kind: 'waiting', reason: 'CrashLoopBackOff' },
        lastTermination: terminated(1),
        restartCount: 1,
        finished: false,
      },
      'Running',
    ],
  ];
  for (const [local, phase] of cases) assert.is(podPhase(local), phase, JSON.stringify(local.state));
});

test('pod status: container state, conditions kept and owned, transition times stable', () => {
  const scheduled = {
    ...pod,
    status: {
      conditions: [
        { type: 'PodScheduled', status: 'True', lastTransitionTime: at(0) },
        { type: 'Ready', status: 'False', lastTransitionTime: at(1) },
        { type: 'DisruptionTarget', status: 'True', reason: 'Preemption', lastTransitionTime: at(1) },
      ],
    },
  } as V1Pod;
  const running = podStatus(
    scheduled,
    { state: { kind: 'running', startedAt: iso(2), containerID: 'c1' }, restartCount: 0, finished: false },
    iso(1),
    at(3),
  );
  assert.is(running.phase, 'Running');
  assert.is(running.podIP, '127.0.0.1');
  assert.is(running.hostIP, '127.0.0.1');
  assert.is(running.startTime, iso(1));
  const byType = new Map(running.conditions.map((c) => [c.type, c]));
  assert.equal([...byType.keys()].sort(), [
    'ContainersReady',
    'DisruptionTarget',
    'Initialized',
    'PodReadyToStartContainers',
    'PodScheduled',
    'Ready',
  ]);
  assert.is(byType.get('Ready')?.status, 'True');
  assert.is(byType.get('Ready')?.lastTransitionTime, iso(3), 'Ready flipped now');
  assert.is(byType.get('PodScheduled')?.lastTransitionTime, iso(0), 'PodScheduled kept as it was');
  const status = running.containerStatuses[0];
  assert.equal(status?.state, { running: { startedAt: iso(2) } });
  assert.is(status?.ready, true);
  assert.is(status?.name, 'main');

  const failed = podStatus(
    { ...scheduled, status: { conditions: running.conditions } } as unknown as V1Pod,
    {
      state: {
        kind: 'terminated',
        exitCode: 3,
        reason: 'Error',
        startedAt: iso(2),
        finishedAt: iso(4),
        containerID: 'c1',
      },
      restartCount: 0,
      finished: true,
    },
    iso(1),
    at(5),
  );
  assert.is(failed.phase, 'Failed');
  const ready = failed.conditions.find((c) => c.type === 'Ready');
  assert.is(ready?.status, 'False');
  assert.is(ready?.reason, 'PodCompleted');
  assert.equal(failed.containerStatuses[0]?.state, {
    terminated: { exitCode: 3, reason: 'Error', startedAt: iso(2), finishedAt: iso(4), containerID: 'c1' },
  });
  assert.is(
    failed.conditions.find((c) => c.type === 'Initialized')?.lastTransitionTime,
    iso(3),
    'unchanged conditions keep their transition time',
  );
});

test('node status: Ready with heartbeats, capacity filled in only when missing', () => {
  const shape = {
    capacity: { cpu: '8', 'nvidia.com/gpu': '1' },
    labels: { 'karpenter.sh/capacity-type': 'spot' },
    taints: [{ key: 'gpu', value: 'true', effect: 'NoSchedule' as const }],
  };
  const node = nodeObject('node-0', shape, 'local');
  assert.equal(node.metadata?.labels, {
    'karpenter.sh/capacity-type': 'spot',
    'kubernetes.io/hostname': 'node-0',
    'tensile.dev/node-agent': 'local',
  });
  assert.equal(node.spec?.taints, [{ key: 'gpu', value: 'true', effect: 'NoSchedule' }]);
  assert.equal(node.status?.capacity, shape.capacity);

  const bare: V1Node = {
    metadata: {
      name: 'late',
      annotations: { 'tensile.dev/fake-node-capacity': '{"nvidia.com/gpu":4,"cpu":"2"}' },
    },
  };
  const first = readyNodeStatus(bare, shape, at(10));
  assert.equal(first.capacity, { 'nvidia.com/gpu': '4', cpu: '2' });
  assert.equal(first.allocatable, first.capacity);
  const ready = first.conditions.find((c) => c.type === 'Ready');
  assert.is(ready?.status, 'True');
  assert.is(ready?.lastHeartbeatTime, iso(10));
  const later = readyNodeStatus(
    { ...bare, status: { capacity: first.capacity, conditions: first.conditions } } as unknown as V1Node,
    shape,
    at(20),
  );
  assert.is(later.capacity, undefined, 'an existing capacity is left alone');
  const again = later.conditions.find((c) => c.type === 'Ready');
  assert.is(again?.lastHeartbeatTime, iso(20));
  assert.is(again?.lastTransitionTime, iso(10));
  assert.equal(readyNodeStatus({ metadata: { name: 'x' } }, shape, at(1)).capacity, shape.capacity);
});

test('agent configuration: defaults and a clear error for a bad field', () => {
  const config = AgentConfigSchema.parse({
    agentName: 'local',
    kubeconfig: '/k',
    stateDir: '/s',
    apiServer: { host: '127.0.0.1', port: 6443 },
    caFile: '/ca',
    defaultNode: { capacity: { cpu: 8 } },
  });
  assert.is(config.leaseRenewSeconds, 2);
  assert.is(config.provisionVolumes, true);
  assert.equal(config.defaultNode.capacity, { cpu: '8' });
  const bad = AgentConfigSchema.safeParse({ ...config, agentName: 'Not Valid' });
  assert.is(bad.success, false);
  assert.equal(bad.error?.issues[0]?.path, ['agentName']);
});

test.run();
