/**
 * The e2e across the real node and fake nodes (hack/e2e/real-node.ts): the kubelet's container log
 * format read back into the workers' lines, which node a reclaim takes, the spread verdict; and the
 * node agent's pod address beside a real node.
 */
import {
  appendFileSync,
  mkdirSync,
  mkdtempSync,
  readdirSync,
  readFileSync,
  rmSync,
  writeFileSync,
} from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { kubeletConfig, realNodePlan } from '../../hack/cluster/real-node.ts';
import { CriLogReader, judgeSpread, nodeOfKind, REAL_NODE_CHURN } from '../../hack/e2e/real-node.ts';
import { WorkerLogs } from '../../hack/e2e/scenario.ts';
import { AgentConfigSchema } from '../../hack/node-agent/config.ts';
import { readyNodeStatus } from '../../hack/node-agent/nodes.ts';
import { type LocalContainer, podStatus } from '../../hack/node-agent/pod-status.ts';

test('CRI log lines: the text after time, stream and tag; partial pieces joined; lines cut anywhere', () => {
  const reader = new CriLogReader();
  const json = '{"event":"progress","step":7,"message":"é"}';
  const file = Buffer.from(
    `2026-12-01T18:00:00.000000001Z stdout F ${json}\n` +
      `2026-12-01T18:00:00.1Z stderr P {"event":"eval",\n` +
      `2026-12-01T18:00:00.2Z stderr F "step":8}\n` +
      `2026-12-01T18:00:00.3Z stdout F \n` +
      `2026-12-01T18:00:01Z stdout F last\n`,
  );
  // Cut inside the two-byte "é" and in the middle of a line.
  const cut = file.indexOf(Buffer.from('é')) + 1;
  const out = [
    reader.push(file.subarray(0, cut)),
    reader.push(file.subarray(cut, cut + 40)),
    reader.push(file.subarray(cut + 40)),
  ].join('');
  assert.is(out, `${json}\n{"event":"eval","step":8}\n\nlast\n`);
  assert.is(reader.push(Buffer.from('2026-12-01T18:00:02Z stdout F no newline yet')), '');
  assert.is(reader.push(Buffer.from('\n')), 'no newline yet\n');
});

test('a reclaim takes the kind of node it names; without one, the first spot node running a worker', () => {
  const candidates = ['node-0', 'node-1', 'real-node-0', 'spot-local-x'];
  assert.is(nodeOfKind('real', 'real-node-0')(candidates), 'real-node-0');
  assert.is(nodeOfKind('fake', 'real-node-0')(['real-node-0', 'spot-local-x']), 'spot-local-x');
  assert.is(nodeOfKind(undefined, 'real-node-0')(candidates), 'node-0');
  assert.is(nodeOfKind('real', 'real-node-0')(['node-0']), undefined, 'the real node runs no worker now');
  assert.is(nodeOfKind('real', undefined)(candidates), undefined, 'no real node at all');
  assert.equal(
    REAL_NODE_CHURN.map((c) => c.on),
    ['fake', 'real', 'fake'],
  );
});

test('spread: workers on both kinds and reclaims of both kinds, or it fails naming what is missing', () => {
  const both = judgeSpread({
    real: ['real-node-0'],
    fake: ['node-0', 'node-1'],
    reclaims: [
      { node: 'node-0', kind: 'fake' },
      { node: 'real-node-0', kind: 'real' },
    ],
    containerLines: { events: 40, progress: 12 },
  });
  assert.ok(both.ok, both.detail);
  const silent = judgeSpread({
    real: ['real-node-0'],
    fake: ['node-0'],
    reclaims: [
      { node: 'node-0', kind: 'fake' },
      { node: 'real-node-0', kind: 'real' },
    ],
    containerLines: { events: 3, progress: 0 },
  });
  assert.not.ok(silent.ok, 'a worker that ran there but never logged a step');
  const none = { events: 0, progress: 0 };
  const fakeOnly = judgeSpread({
    real: [],
    fake: ['node-0'],
    reclaims: [{ node: 'node-0', kind: 'fake' }],
    containerLines: none,
  });
  assert.not.ok(fakeOnly.ok);
  assert.match(fakeOnly.detail, 'the real node (none;');
  const noRealReclaim = judgeSpread({
    real: ['real-node-0'],
    fake: ['node-0'],
    reclaims: [{ node: 'node-0', kind: 'fake' }],
    containerLines: { events: 9, progress: 2 },
  });
  assert.not.ok(noRealReclaim.ok);
  assert.match(noRealReclaim.detail, 'took the real node 0 times');
});

test('node agent: pods and nodes report the configured address (127.0.0.1 unless beside a real node)', () => {
  const base = {
    agentName: 'local',
    kubeconfig: '/k',
    stateDir: '/s',
    apiServer: { host: '127.0.0.1', port: 1 },
    caFile: '/ca',
    defaultNode: { capacity: { cpu: '1' } },
  };
  assert.is(AgentConfigSchema.parse(base).podIp, '127.0.0.1');
  assert.is(AgentConfigSchema.parse(base).umask, undefined, 'the umask stays as it is');
  assert.is(AgentConfigSchema.parse({ ...base, podIp: '172.29.3.1', umask: 0 }).podIp, '172.29.3.1');
  assert.throws(() => AgentConfigSchema.parse({ ...base, podIp: 'localhost' }));
  const local: LocalContainer = {
    state: { kind: 'running', startedAt: '2026-12-01T00:00:00Z', containerID: 'x://1' },
    restartCount: 0,
    finished: false,
  } as LocalContainer;
  const pod = { metadata: { name: 'p' }, spec: { containers: [{ name: 'c', image: 'i' }] } };
  const status = podStatus(pod, local, '2026-12-01T00:00:00Z', new Date(0), '172.29.3.1');
  assert.equal([status.podIP, status.hostIP], ['172.29.3.1', '172.29.3.1']);
  assert.is(podStatus(pod, local, '2026-12-01T00:00:00Z', new Date(0)).podIP, '127.0.0.1');
  const node = readyNodeStatus(
    { metadata: { name: 'n' } },
    { capacity: { cpu: '1' }, labels: {}, taints: [] },
    new Date(0),
    '172.29.3.1',
  );
  assert.equal(node.addresses[0], { type: 'InternalIP', address: '172.29.3.1' });
});

test('real node: CPUs held back from pods as the system’s, so that one worker fits as on a fake node', () => {
  const plan = realNodePlan('/tmp/c', 6443);
  assert.match(kubeletConfig(plan, '/ca', undefined, 1000), 'systemReserved: { cpu: 1000m }');
  assert.not.match(kubeletConfig(plan, '/ca', undefined), 'systemReserved');
});

const line = (worker: string, step: number) =>
  JSON.stringify({
    timestamp: '2026-12-01T18:00:00.000Z',
    level: 'info',
    message: 'progress',
    job: 'job',
    worker,
    generation: 1,
    event: 'progress',
    step,
  });

test('worker logs: the agent’s files and the kubelet’s container logs, read on after the kubelet removed them', () => {
  const root = mkdtempSync(join(tmpdir(), 'e2e-real-node-'));
  try {
    const agentDir = join(root, 'logs');
    const podDir = join(root, 'pod-logs', 'default_job-worker-0_uid-1', 'worker');
    mkdirSync(agentDir, { recursive: true });
    mkdirSync(podDir, { recursive: true });
    writeFileSync(join(agentDir, 'default_job-worker-1.log'), `${line('job-worker-1', 1)}\n`);
    writeFileSync(join(agentDir, 'default_other-worker-0.log'), `${line('other-worker-0', 1)}\n`);
    const cri = join(podDir, '0.log');
    writeFileSync(cri, `2026-12-01T18:00:00Z stdout F ${line('job-worker-0', 1)}\n`);
    const logs = new WorkerLogs(agentDir, 'default_job-worker-', join(root, 'pod-logs'), join(root, 'copy'));
    assert.equal(
      logs
        .poll()
        .map((e) => `${e.worker}@${e.event === 'progress' ? e.step : '?'}`)
        .sort(),
      ['job-worker-0@1', 'job-worker-1@1'],
    );
    // The kubelet removes the pod's folder; the worker's last lines were written just before.
    // A rank that is not the leader logs rank-progress.
    const rankLine = JSON.stringify({
      ...(JSON.parse(line('job-worker-0', 2)) as object),
      event: 'rank-progress',
      rank: 1,
      steps: 2,
      samplesPerSecond: 900,
      stepMs: 30,
      allReduceMs: 5,
    });
    appendFileSync(cri, `2026-12-01T18:00:01Z stdout F ${rankLine}\n`);
    rmSync(join(root, 'pod-logs', 'default_job-worker-0_uid-1'), { recursive: true });
    assert.equal(
      logs.poll().map((e) => e.worker),
      ['job-worker-0'],
    );
    assert.equal(logs.fromContainers, { events: 2, progress: 2 });
    const copies = readdirSync(join(root, 'copy'));
    assert.equal(copies, ['default_job-worker-0_uid-1_worker_0.log']);
    assert.is(
      readFileSync(join(root, 'copy', copies[0] ?? ''), 'utf8')
        .split('\n')
        .filter(Boolean).length,
      2,
    );
    logs.close();
  } finally {
    rmSync(root, { recursive: true, force: true });
  }
});

test.run();
