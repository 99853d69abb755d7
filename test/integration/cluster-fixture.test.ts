/**
 * The launcher itself: two clusters side by side do not collide, a ServiceAccount kubeconfig carries
 * exactly that account's permissions, nothing outlives a disposed cluster or a test process that was
 * SIGKILLed, hack/cluster.sh up/down work, and a missing binary names the command that installs it.
 */
import { execFile, spawn } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { CoreV1Api, KubeConfig } from '@kubernetes/client-node';
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { isAlive, type PidRecord, readPidFiles } from '../../hack/lib/processes.ts';
import { REPO_ROOT } from '../../hack/node-agent/config.ts';
import { type LocalCluster, startCluster } from '../helpers/cluster.ts';
import { eventually } from '../helpers/eventually.ts';

function must(r: { code: number; stdout: string; stderr: string }): string {
  assert.is(r.code, 0, r.stderr);
  return r.stdout;
}

const TAINT = { key: 'tensile.dev/test', value: 'x', effect: 'NoSchedule' } as const;
let a: LocalCluster;
let b: LocalCluster;

test.before(async () => {
  try {
    [a, b] = (await Promise.all([
      startCluster({ nodeAgent: false }),
      startCluster({ nodes: 1, taints: [TAINT] }),
    ])) as [LocalCluster, LocalCluster];
  } catch (error) {
    // uvu swallows errors thrown by hooks: fail loudly instead.
    console.error(error);
    process.exit(1);
  }
});

test.after(async () => {
  await a?.[Symbol.asyncDispose]();
  await b?.[Symbol.asyncDispose]();
});

test('two clusters started side by side have their own ports, state and objects', async () => {
  assert.is.not(a.dir, b.dir);
  assert.is.not(a.server, b.server);
  must(await a.kubectl(['create', 'configmap', 'only-in-a', '--from-literal=k=v']));
  assert.is.not((await b.kubectl(['get', 'configmap', 'only-in-a'])).code, 0);
  assert.equal(must(await a.kubectl(['get', 'nodes', '-o', 'name'])).trim(), '');
  assert.equal(must(await b.kubectl(['get', 'nodes', '-o', 'name'])).trim(), 'node/node-0');
  const taints = JSON.parse(
    must(await b.kubectl(['get', 'node', 'node-0', '-o', 'jsonpath={.spec.taints}'])),
  );
  assert.ok(
    (taints as (typeof TAINT)[]).some(
      (t) => t.key === TAINT.key && t.value === TAINT.value && t.effect === TAINT.effect,
    ),
    `the taint asked for, in ${JSON.stringify(taints)}`,
  );
  // The CRD is there in both, for kubectl and for the client library.
  must(await a.kubectl(['get', 'trainingjobs']));
  const core = b.kubeConfig.makeApiClient(CoreV1Api);
  assert.is((await core.readNamespace({ name: 'default' })).metadata?.name, 'default');
});

test('a ServiceAccount kubeconfig authenticates as that account, with its permissions only', async () => {
  must(await a.kubectl(['create', 'serviceaccount', 'reader']));
  must(await a.kubectl(['create', 'role', 'pod-reader', '--verb=get,list', '--resource=pods']));
  must(
    await a.kubectl([
      'create',
      'rolebinding',
      'reader',
      '--role=pod-reader',
      '--serviceaccount=default:reader',
    ]),
  );
  const path = await a.serviceAccountKubeconfig('default', 'reader');
  const as = (args: string[]) => a.kubectl([...args, `--kubeconfig=${path}`]);
  assert.is(
    must(await as(['auth', 'whoami', '-o', 'jsonpath={.status.userInfo.username}'])),
    'system:serviceaccount:default:reader',
  );
  must(await as(['get', 'pods']));
  const nodes = await as(['get', 'nodes']);
  assert.is.not(nodes.code, 0);
  assert.match(nodes.stderr, 'forbidden');
  const kc = new KubeConfig();
  kc.loadFromFile(path);
  const core = kc.makeApiClient(CoreV1Api);
  assert.equal((await core.listNamespacedPod({ namespace: 'default' })).items, []);
  let refused = false;
  await core.listNode().catch(() => {
    refused = true;
  });
  assert.ok(refused, 'listing nodes is not in the role');
});

test('disposal stops every process of the cluster and removes its state directory', async () => {
  const records: PidRecord[] = [...readPidFiles(a.dir), ...readPidFiles(b.dir)];
  assert.ok(records.length >= 9, `pid files of both clusters (${records.length})`);
  assert.ok(records.every(isAlive));
  await Promise.all([a[Symbol.asyncDispose](), b[Symbol.asyncDispose]()]);
  assert.equal(
    records.filter(isAlive).map((r) => r.file),
    [],
    'every process of both clusters is gone',
  );
  assert.not.ok(existsSync(a.dir) || existsSync(b.dir), 'both state directories are removed');
});

test('a test process killed with SIGKILL leaves no process behind: the watchdog reaps its cluster', async () => {
  const script = `
    const { launchCluster } = await import('./hack/cluster/launcher.ts');
    const { CoreV1Api, KubeConfig } = await import('@kubernetes/client-node');
    const cluster = await launchCluster({ nodes: 1 });
    const kc = new KubeConfig();
    kc.loadFromFile(cluster.kubeconfigPath);
    await kc.makeApiClient(CoreV1Api).createNamespacedPod({ namespace: 'default', body: {
      metadata: { name: 'sleeper' },
      spec: { containers: [{ name: 'c', image: 'busybox', command: ['sleep', '300'] }] },
    } });
    console.log(JSON.stringify({ dir: cluster.dir }));
    setInterval(() => {}, 1000);
  `;
  const child = spawn(process.execPath, ['--import', 'tsx', '--input-type=module', '-e', script], {
    cwd: REPO_ROOT,
    stdio: ['ignore', 'pipe', 'inherit'],
  });
  let output = '';
  child.stdout.on('data', (chunk: Buffer) => {
    output += chunk.toString();
  });
  await eventually('the child cluster', () => output.includes('"dir"'), 90_000);
  const { dir } = JSON.parse(output.trim().split('\n').pop() ?? '{}') as { dir: string };
  await eventually('the pod process', () => readPidFiles(dir).some((r) => r.file.includes('/pod-')));
  const records = readPidFiles(dir);
  assert.ok(records.length >= 7, `control plane, agent, watchdog and pod (${records.length})`);
  child.kill('SIGKILL');
  await eventually('every process reaped', () => records.every((r) => !isAlive(r)));
  await eventually('the state directory removed', () => !existsSync(dir));
});

function run(command: string, args: string[], env: NodeJS.ProcessEnv) {
  return new Promise<{ code: number; stdout: string; stderr: string }>((resolve) => {
    execFile(command, args, { cwd: REPO_ROOT, env: { ...process.env, ...env } }, (error, stdout, stderr) => {
      resolve({ code: error === null ? 0 : typeof error.code === 'number' ? error.code : 1, stdout, stderr });
    });
  });
}

test('hack/cluster.sh up prints the kubeconfig last; status and down work', async () => {
  const dir = join(mkdtempSync(join(tmpdir(), 'tensile-cluster-sh-')), 'cluster');
  const env = { TENSILE_CLUSTER_DIR: dir };
  try {
    const up = await run('bash', ['hack/cluster.sh', 'up', '--nodes', '1'], env);
    assert.is(up.code, 0, up.stderr);
    const kubeconfig = up.stdout.trim().split('\n').pop() ?? '';
    assert.is(kubeconfig, join(dir, 'kubeconfig'));
    assert.match(up.stderr, 'nodes Ready', 'progress goes to stderr');
    const kubectl = JSON.parse(readFileSync(join(dir, 'cluster.json'), 'utf8')).kubectl as string;
    const nodes = await run(kubectl, ['get', 'nodes', '-o', 'name'], { KUBECONFIG: kubeconfig });
    assert.is(nodes.stdout.trim(), 'node/node-0', nodes.stderr);
    const again = await run('bash', ['hack/cluster.sh', 'up'], env);
    assert.is(again.code, 0);
    assert.is(again.stdout.trim(), kubeconfig, 'a second up reuses the running cluster');
    const status = await run('bash', ['hack/cluster.sh', 'status'], env);
    assert.is(status.code, 0, status.stderr);
    const records = readPidFiles(dir);
    assert.ok(records.length >= 5 && records.every(isAlive));
    const down = await run('bash', ['hack/cluster.sh', 'down'], env);
    assert.is(down.code, 0, down.stderr);
    assert.equal(
      records.filter(isAlive).map((r) => r.file),
      [],
    );
    assert.not.ok(existsSync(dir));
    assert.is((await run('bash', ['hack/cluster.sh', 'status'], env)).code, 1);
  } finally {
    await run('bash', ['hack/cluster.sh', 'down'], env);
    rmSync(join(dir, '..'), { recursive: true, force: true });
  }
});

test('a missing binary fails loudly with the command that installs it', async () => {
  const saved = process.env['TENSILE_CACHE'];
  process.env['TENSILE_CACHE'] = join(tmpdir(), 'tensile-no-such-cache');
  try {
    await startCluster({ nodeAgent: false });
    assert.unreachable('startCluster must fail without the binaries');
  } catch (error) {
    assert.is((error as Error).name, 'MissingToolError');
    assert.match((error as Error).message, 'kube-apiserver is missing');
    assert.match((error as Error).message, 'bash hack/install-tools.sh');
  } finally {
    if (saved === undefined) delete process.env['TENSILE_CACHE'];
    else process.env['TENSILE_CACHE'] = saved;
  }
});

test.run();
