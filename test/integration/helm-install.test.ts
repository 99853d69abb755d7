/**
 * `helm install` of charts/tensile into the local control plane: the CRD comes from the chart, the
 * operator pods and the bundled NATS run as local processes through the node agent's image map, the
 * operator reconciles a TrainingJob under the chart's RBAC, and upgrade and uninstall leave no orphans.
 */
import { fileURLToPath } from 'node:url';
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { stringify } from 'yaml';
import { type LocalCluster, startCluster } from '../helpers/cluster.ts';
import { eventually } from '../helpers/eventually.ts';
import { helm } from '../helpers/helm.ts';
import { setPath, validManifest } from '../helpers/job-builder.ts';

const chart = fileURLToPath(new URL('../../charts/tensile', import.meta.url));
const fakeWorker = fileURLToPath(new URL('../helpers/fake-worker.mjs', import.meta.url));
const FAKE_IMAGE = 'tensile.test/fake-worker:1';
const NS = 'tensile-system';
let cluster: LocalCluster;

// Every pod of the local cluster shares the host's loopback: the two operator replicas cannot both
// listen on 8080, so the test gives them free ports; the bundled NATS is reached on 127.0.0.1.
const installArgs = ['--set-json', 'operator.extraArgs=["--http-port=0","--nats=nats://127.0.0.1:4222"]'];

test.before(async () => {
  try {
    cluster = await startCluster({
      nodes: 2,
      crds: false,
      imageMap: { [FAKE_IMAGE]: { entrypoint: [process.execPath, fakeWorker], cmd: ['run'] } },
    });
  } catch (error) {
    console.error(error);
    process.exit(1);
  }
});

test.after(async () => {
  await cluster?.[Symbol.asyncDispose]();
});

const kubectl = (args: string[], input?: string): Promise<string> => cluster.kubectlOk(args, input);

const kubeEnv = () => ({
  KUBECONFIG: cluster.kubeconfigPath,
  HELM_CACHE_HOME: `${cluster.dir}/helm-cache`,
  HELM_CONFIG_HOME: `${cluster.dir}/helm-config`,
});

/** Helm and the API server are slow to start here: a longer deadline and fewer polls than the default. */
const until = <T>(what: string, probe: () => Promise<T | undefined | false>) =>
  eventually(what, probe, { timeoutMs: 90_000, intervalMs: 500 });

async function runningPods(selector: string): Promise<string[]> {
  const out = await kubectl([
    '-n',
    NS,
    'get',
    'pods',
    '-l',
    selector,
    '-o',
    'jsonpath={range .items[?(@.status.phase=="Running")]}{.metadata.name}{"\\n"}{end}',
  ]);
  return out.split('\n').filter((s) => s !== '');
}

test('helm install: the CRD from the chart, both operator pods and NATS running', async () => {
  const r = await helm(
    ['install', 'demo', chart, '--namespace', NS, '--create-namespace', '--wait=false', ...installArgs],
    kubeEnv(),
  );
  assert.is(r.code, 0, r.stderr);
  assert.match(r.stdout, 'Tensile 0.1.0 is installed', 'NOTES.txt is shown');
  await kubectl(['get', 'crd', 'trainingjobs.tensile.dev']);
  const operators = await until('2 operator pods running', async () => {
    const pods = await runningPods('app.kubernetes.io/component=operator');
    return pods.length === 2 ? pods : undefined;
  });
  assert.is(operators.length, 2);
  await until(
    'NATS running',
    async () => (await runningPods('app.kubernetes.io/component=nats')).length === 1,
  );
  const holder = await until('a leader', async () => {
    const out = await kubectl([
      '-n',
      NS,
      'get',
      'lease',
      'tensile-operator',
      '-o',
      'jsonpath={.spec.holderIdentity}',
    ]);
    return out !== '' ? out : undefined;
  });
  assert.ok(holder.length > 0);
});

test('the installed operator reconciles a TrainingJob, with the chart’s worker defaults (no GPU, no spot)', async () => {
  const job = validManifest('hello');
  setPath(job, 'metadata.namespace', 'default');
  setPath(job, 'spec.replicas', 2);
  setPath(job, 'spec.worker', { image: FAKE_IMAGE, args: ['run'] });
  await kubectl(['apply', '-f', '-'], stringify(job));
  await until('2 workers running', async () => {
    const out = await kubectl([
      '-n',
      'default',
      'get',
      'pods',
      '-l',
      'tensile.dev/job-name=hello',
      '-o',
      'jsonpath={range .items[?(@.status.phase=="Running")]}{.metadata.name}{"\\n"}{end}',
    ]);
    return out.split('\n').filter((s) => s !== '').length === 2;
  });
  const selector = await kubectl([
    '-n',
    'default',
    'get',
    'pod',
    'hello-worker-0',
    '-o',
    'jsonpath={.spec.nodeSelector}',
  ]);
  assert.is(selector, '', 'a job that sets nothing gets no spot node selector');
  const limits = await kubectl([
    '-n',
    'default',
    'get',
    'pod',
    'hello-worker-0',
    '-o',
    'jsonpath={.spec.containers[0].resources}',
  ]);
  assert.not.match(limits, 'nvidia.com/gpu', 'nor a GPU');
  assert.match(limits, '"cpu":"500m"', 'the chart’s default requests');
  const priority = await kubectl([
    '-n',
    'default',
    'get',
    'pod',
    'hello-worker-0',
    '-o',
    'jsonpath={.spec.priorityClassName}',
  ]);
  assert.is(priority, 'tensile-training');
  await until(
    'status Running',
    async () =>
      (await kubectl(['-n', 'default', 'get', 'tj', 'hello', '-o', 'jsonpath={.status.phase}'])) ===
      'Running',
  );
  await kubectl(['-n', 'default', 'delete', 'tj', 'hello', '--wait=true', '--timeout=60s']);
});

test('the chart’s RBAC allows what the operator needs and forbids the rest', async () => {
  const as = `--as=system:serviceaccount:${NS}:demo-tensile`;
  const can = async (verb: string, resource: string, subresource?: string) =>
    (
      await cluster.kubectl([
        'auth',
        'can-i',
        verb,
        resource,
        '-n',
        'default',
        as,
        ...(subresource ? [`--subresource=${subresource}`] : []),
      ])
    ).stdout.trim();
  assert.is(await can('create', 'pods'), 'yes');
  assert.is(await can('patch', 'trainingjobs.tensile.dev', 'status'), 'yes');
  assert.is(await can('get', 'secrets'), 'no');
  assert.is(await can('create', 'deployments.apps'), 'no');
  assert.is(await can('delete', 'nodes'), 'no');
  assert.is(await can('update', 'trainingjobs.tensile.dev'), 'no', 'the spec belongs to the user');
  const denied = await cluster.kubectl(['-n', 'default', 'get', 'secrets', as]);
  assert.is.not(denied.code, 0);
  assert.match(denied.stderr, 'forbidden');
});

test('helm upgrade rolls the operator to the new settings', async () => {
  const r = await helm(
    [
      'upgrade',
      'demo',
      chart,
      '--namespace',
      NS,
      '--wait=false',
      '--set',
      'operator.concurrency=8',
      ...installArgs,
    ],
    kubeEnv(),
  );
  assert.is(r.code, 0, r.stderr);
  await until('rolled out with --concurrency=8', async () => {
    const args = await kubectl([
      '-n',
      NS,
      'get',
      'pods',
      '-l',
      'app.kubernetes.io/component=operator',
      '-o',
      'jsonpath={range .items[?(@.status.phase=="Running")]}{.spec.containers[0].args}{"\\n"}{end}',
    ]);
    const lines = args.split('\n').filter((s) => s !== '');
    return lines.length === 2 && lines.every((l) => l.includes('--concurrency=8'));
  });
  const replicaSets = await kubectl([
    '-n',
    NS,
    'get',
    'rs',
    '-l',
    'app.kubernetes.io/component=operator',
    '-o',
    'jsonpath={range .items[*]}{.status.replicas}{" "}{end}',
  ]);
  assert.equal(
    replicaSets.trim().split(' ').map(Number).sort(),
    [0, 2],
    'the old ReplicaSet is scaled to zero',
  );
});

test('helm uninstall leaves nothing behind but the CRD (as Helm does with crds/)', async () => {
  const r = await helm(['uninstall', 'demo', '--namespace', NS, '--wait'], kubeEnv());
  assert.is(r.code, 0, r.stderr);
  await until('no object of the release left', async () => {
    const namespaced = await kubectl([
      '-n',
      NS,
      'get',
      'all,configmap,serviceaccount,pdb,pvc,lease',
      '-l',
      'app.kubernetes.io/instance=demo',
      '-o',
      'name',
    ]);
    const pvcs = await kubectl(['-n', NS, 'get', 'pvc', '-o', 'name']);
    const cluster_ = await kubectl([
      'get',
      'clusterrole,clusterrolebinding,priorityclass',
      '-l',
      'app.kubernetes.io/instance=demo',
      '-o',
      'name',
    ]);
    return namespaced.trim() === '' && pvcs.trim() === '' && cluster_.trim() === '';
  });
  await kubectl(['get', 'crd', 'trainingjobs.tensile.dev']);
});

test.run();
