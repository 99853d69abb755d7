/**
 * The built images on a real kubelet: hack/images.sh builds the operator, worker and NATS images
 * (no registry), `hack/cluster.sh up --real-node`'s node (kubelet, containerd, runc, CNI, kube-proxy)
 * runs them in containers. One fake node (tainted: nothing is scheduled there) stays for its agent's
 * volume provisioner. `helm install` of the chart with the local images, `kubectl apply -f
 * examples/minimal.yaml` (the overlay names only the local images: the chart's worker defaults need no
 * GPU and no spot node; the example is unchanged), the job Succeeds, its checkpoint and audit
 * are on the volume, `kubectl logs` shows the worker's progress; a worker pod deleted mid-run is
 * replaced and the job still Succeeds with a clean audit.
 */
import { execFile } from 'node:child_process';
import { existsSync, readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { parse, stringify } from 'yaml';
import { readImagesEnv } from '../../hack/cluster/launcher.ts';
import { CheckpointStore } from '../../worker/checkpoint/store.ts';
import { auditEpochs, committedRecords, readAuditFile } from '../../worker/data/audit.ts';
import { type LocalCluster, startCluster } from '../helpers/cluster.ts';
import { eventually } from '../helpers/eventually.ts';
import { helm } from '../helpers/helm.ts';

const root = fileURLToPath(new URL('../..', import.meta.url));
const chart = join(root, 'charts', 'tensile');
const NS = 'tensile-system';
let cluster: LocalCluster;
let images: Map<string, string>;

function sh(command: string, args: string[]): Promise<string> {
  return new Promise((resolve, reject) => {
    execFile(command, args, { cwd: root, maxBuffer: 64 << 20 }, (error, stdout, stderr) => {
      if (error) reject(new Error(`${command} ${args.join(' ')}: ${stderr || error.message}`));
      else resolve(stdout);
    });
  });
}

const image = (name: string) => {
  const ref = images.get(name);
  if (ref === undefined) throw new Error(`hack/images.sh recorded no ${name} image`);
  return ref;
};

test.before(async () => {
  try {
    const only = ['--only', 'operator', '--only', 'worker', '--only', 'nats'];
    await sh('bash', ['hack/images.sh', ...only]);
    images = readImagesEnv(readFileSync((await sh('bash', ['hack/images.sh', '--print'])).trim(), 'utf8'));
    cluster = await startCluster({
      nodes: 1,
      realNode: true,
      taints: [{ key: 'tensile.dev/fake-node', value: 'true', effect: 'NoSchedule' }],
    });
    const socket = cluster.realNode?.containerdSocket;
    if (socket === undefined) throw new Error('the cluster has no real node');
    await sh('bash', ['hack/images.sh', ...only, '--load', socket]);
  } catch (error) {
    console.error(error);
    process.exit(1);
  }
});

test.after(async () => {
  await cluster?.[Symbol.asyncDispose]();
});

const kubectl = (args: string[], input?: string): Promise<string> => cluster.kubectlOk(args, input);

/** Image pulls and container starts on the real node take minutes on a loaded machine. */
const until = <T>(what: string, probe: () => Promise<T | undefined | false>, timeoutMs = 240_000) =>
  eventually(what, probe, { timeoutMs, intervalMs: 500 });

const jsonpath = (ns: string, kind: string, name: string, path: string) =>
  kubectl(['-n', ns, 'get', kind, name, '-o', `jsonpath=${path}`]);

test('a pod in a container on the real node: Succeeded, its output in kubectl logs', async () => {
  const pod = {
    apiVersion: 'v1',
    kind: 'Pod',
    metadata: { name: 'hello', namespace: 'default' },
    spec: {
      restartPolicy: 'Never',
      nodeSelector: { 'tensile.dev/real-node': 'true' },
      containers: [
        {
          name: 'hello',
          image: image('WORKER'),
          imagePullPolicy: 'Never',
          command: ['node', '-e', 'console.log("hello from", process.version, "as uid", process.getuid())'],
        },
      ],
    },
  };
  await kubectl(['apply', '-f', '-'], stringify(pod));
  await until(
    'the pod Succeeded',
    async () => (await jsonpath('default', 'pod', 'hello', '{.status.phase}')) === 'Succeeded',
  );
  assert.is(await jsonpath('default', 'pod', 'hello', '{.spec.nodeName}'), 'real-node-0');
  assert.match(await kubectl(['-n', 'default', 'logs', 'hello']), /hello from v20\.\d+\.\d+ as uid 1000/);
});

test('the kubelet is system:node:real-node-0, not an admin: it may not read the cluster’s secrets', async () => {
  // The later --kubeconfig wins over the admin one the fixture passes.
  const asNode = `--kubeconfig=${join(cluster.dir, 'real-node', 'kubeconfig')}`;
  const whoami = await cluster.kubectl([
    asNode,
    'auth',
    'whoami',
    '-o',
    'jsonpath={.status.userInfo.username}',
  ]);
  assert.is(whoami.stdout, 'system:node:real-node-0', whoami.stderr);
  const secrets = await cluster.kubectl([asNode, 'get', 'secrets', '-A']);
  assert.is.not(secrets.code, 0);
  assert.match(secrets.stderr, /forbidden/i);
  const node = await cluster.kubectl([asNode, 'get', 'node', 'real-node-0', '-o', 'name']);
  assert.is(node.stdout.trim(), 'node/real-node-0', node.stderr);
});

function overlay(): string {
  const [opRepo, opTag] = image('OPERATOR').split(':');
  const [wRepo, wTag] = image('WORKER').split(':');
  const [nRepo, nTag] = image('NATS').split(':');
  return stringify({
    operator: {
      image: { repository: opRepo, tag: opTag, pullPolicy: 'Never' },
      replicas: 1,
    },
    nats: {
      bundled: {
        image: { repository: nRepo, tag: nTag, pullPolicy: 'Never' },
      },
    },
    workers: {
      // Only the local images: the chart's worker defaults (no GPU, no spot) fit this CPU node as they are.
      image: { repository: wRepo, tag: wTag },
    },
  });
}

async function workerPods(job: string): Promise<{ name: string; uid: string; phase: string }[]> {
  const out = await kubectl([
    '-n',
    'default',
    'get',
    'pods',
    '-l',
    `tensile.dev/job-name=${job}`,
    '-o',
    'jsonpath={range .items[*]}{.metadata.name} {.metadata.uid} {.status.phase} {.metadata.deletionTimestamp}{"\\n"}{end}',
  ]);
  return out
    .split('\n')
    .map((l) => l.trim().split(' '))
    .filter((p) => p.length === 3 && p[0] !== '')
    .map(([name, uid, phase]) => ({ name: name ?? '', uid: uid ?? '', phase: phase ?? '' }));
}

test('helm install with the local images; examples/minimal.yaml Succeeds, surviving a deleted worker', async () => {
  const values = join(cluster.dir, 'real-node-values.yaml');
  writeFileSync(values, overlay());
  const env = {
    KUBECONFIG: cluster.kubeconfigPath,
    HELM_CACHE_HOME: `${cluster.dir}/helm-cache`,
    HELM_CONFIG_HOME: `${cluster.dir}/helm-config`,
  };
  const r = await helm(
    ['install', 'demo', chart, '--namespace', NS, '--create-namespace', '-f', values],
    env,
  );
  assert.is(r.code, 0, r.stderr);
  for (const component of ['operator', 'nats'])
    await until(`${component} running on the real node`, async () => {
      const out = await kubectl([
        '-n',
        NS,
        'get',
        'pods',
        '-l',
        `app.kubernetes.io/component=${component}`,
        '-o',
        'jsonpath={range .items[?(@.status.phase=="Running")]}{.spec.nodeName}{"\\n"}{end}',
      ]);
      return out.trim() === 'real-node-0';
    });

  const example = readFileSync(join(root, 'examples', 'minimal.yaml'), 'utf8');
  const name = (parse(example) as { metadata: { name: string } }).metadata.name;
  await kubectl(['-n', 'default', 'apply', '-f', join(root, 'examples', 'minimal.yaml')]);

  // Progress in the worker's log, through kubectl logs (the kubelet's log endpoint).
  const first = await until('a worker logging training steps', async () => {
    const pods = (await workerPods(name)).filter((p) => p.phase === 'Running');
    const pod = pods[0];
    if (pod === undefined) return undefined;
    const logs = await kubectl(['-n', 'default', 'logs', pod.name]);
    return /"event":"(step|progress|checkpoint)"|step \d+/.test(logs)
      ? { pod: pod.name, uid: pod.uid, logs }
      : undefined;
  });
  assert.match(first.logs, /tensorflow/, 'the native backend');

  // A worker lost mid-run: the operator replaces it and the job resumes from its checkpoint.
  await kubectl(['-n', 'default', 'delete', 'pod', first.pod, '--wait=false']);
  const replacement = await until('a replacement worker', async () =>
    (await workerPods(name)).find((p) => p.uid !== first.uid),
  );
  const phase = await until(
    'the job finished',
    async () => {
      const p = await jsonpath('default', 'trainingjob', name, '{.status.phase}');
      return p === 'Succeeded' || p === 'Failed' ? p : undefined;
    },
    540_000,
  );
  assert.is(phase, 'Succeeded');

  const claim = await jsonpath('default', 'trainingjob', name, '{.spec.checkpoint.volume.claimName}');
  const claimDir = join(cluster.dir, 'volumes', 'default', claim || `${name}-checkpoints`);
  const store = new CheckpointStore(claimDir, 3);
  const latest = await store.latest(() => {});
  assert.ok(latest !== undefined, `a checkpoint in ${claimDir}`);
  const state = latest.snapshot.state;
  const auditDir = join(claimDir, 'audit');
  assert.ok(existsSync(auditDir), 'audit files on the volume');
  const records = readdirSync(auditDir)
    .filter((f) => f.endsWith('.bin'))
    .flatMap((f) => readAuditFile(join(auditDir, f)));
  const epochs = auditEpochs(committedRecords(records, state.generations), state.dataset.trainSamples);
  console.log(
    `[real-node] ${name}: Succeeded; worker ${first.pod} deleted mid-run, replaced by ${replacement.name} (uid ${replacement.uid}); checkpoint at step ${latest.snapshot.state.step} in ${claimDir}; ` +
      `generations ${state.generations.map((g) => g.generation).join(',')}; audit ${epochs
        .map((e) => `epoch ${e.epoch}: ${e.seen} seen, ${e.duplicated} duplicated, ${e.missing} missing`)
        .join('; ')}`,
  );
  const progress = first.logs.split('\n').find((l) => l.includes('"event":"progress"'));
  console.log(`[real-node] kubectl logs ${first.pod}: ${progress ?? first.logs.split('\n')[0]}`);
  assert.ok(epochs.length > 0, 'audited epochs');
  for (const e of epochs) {
    assert.is(e.duplicated, 0, `epoch ${e.epoch}: no sample trained twice`);
    assert.is(e.missing, 0, `epoch ${e.epoch}: no sample missed`);
  }
});

test.run();
