/**
 * The Dockerfiles users build from, and the pure parts of the local image build and the real node:
 * hack/images/dockerfile.ts (the final-stage config hack/images.sh writes into its images),
 * hack/cluster/real-node.ts (names, addresses, configuration) and hack/cluster/cluster-dns.ts.
 */
import { readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { answer, parseQuery, serviceOf } from '../../hack/cluster/cluster-dns.ts';
import { cniConfig, containerdConfig, kubeletConfig, realNodePlan } from '../../hack/cluster/real-node.ts';
import {
  DEFAULT_PATH,
  DockerfileError,
  finalStageConfig,
  instructions,
} from '../../hack/images/dockerfile.ts';

const read = (path: string) => readFileSync(fileURLToPath(new URL(`../../${path}`, import.meta.url)), 'utf8');
const DOCKERFILES = ['operator/Dockerfile', 'worker/Dockerfile', 'worker/Dockerfile.gpu'] as const;

test('every Dockerfile is multi-stage, builds on Node 20 and ends as a non-root user', () => {
  for (const file of DOCKERFILES) {
    const ins = instructions(read(file));
    const froms = ins.filter((i) => i.keyword === 'FROM');
    assert.ok(froms.length >= 2, `${file}: multi-stage`);
    assert.match(froms[0]?.rest ?? '', /AS build$/, `${file}: a build stage`);
    const args = ins.filter((i) => i.keyword === 'ARG').map((i) => i.rest);
    assert.ok(
      args.some((a) => a.startsWith('NODE_IMAGE=node:20-')),
      `${file}: Node 20 LTS base as a build-arg`,
    );
    assert.ok(
      args.some((a) => a.startsWith('NPM_REGISTRY=')),
      `${file}: npm mirror build-arg`,
    );
    const config = finalStageConfig(read(file));
    assert.ok(config.User !== undefined && !/^(0|root)(:|$)/.test(config.User), `${file}: non-root USER`);
    assert.equal(config.Entrypoint?.slice(-1), ['/app/dist/operator/main.js'], `${file}: entrypoint`);
  }
});

test('the worker images are linux/amd64 (x86_64 libtensorflow); every base is pinned by digest', () => {
  for (const file of ['worker/Dockerfile', 'worker/Dockerfile.gpu']) {
    for (const from of instructions(read(file)).filter((i) => i.keyword === 'FROM'))
      assert.match(from.rest, /^--platform=linux\/amd64 /, `${file}: ${from.rest}`);
  }
  for (const file of DOCKERFILES) {
    const bases = instructions(read(file))
      .filter((i) => i.keyword === 'ARG' && /^[A-Z_]+_IMAGE=/.test(i.rest))
      .map((i) => i.rest);
    assert.ok(bases.length > 0, `${file}: its bases are build-args`);
    for (const base of bases) {
      assert.match(
        base,
        /^[A-Z_]+_IMAGE=[^@\s]+:[^@\s]+@sha256:[0-9a-f]{64}$/,
        `${file}: ${base} is tag@digest`,
      );
      assert.not.match(base, /@sha256:(0{8}|1234|abcd|aa11)/, `${file}: ${base} is a placeholder digest`);
    }
  }
});

test('the final-stage config: WORKDIR, USER, ENV, ENTRYPOINT and CMD, later ones winning', () => {
  const config = finalStageConfig(`FROM a AS build
WORKDIR /src
USER 5
FROM b
ENV A=1 B="two words"
WORKDIR /app
WORKDIR sub
EXPOSE 8080 53/udp
# a comment
ENTRYPOINT ["node", \\
  "main.js"]
CMD ["x"]
CMD ["worker"]
USER 1000:1000
`);
  assert.equal(config, {
    Env: [DEFAULT_PATH, 'A=1', 'B=two words'],
    WorkingDir: '/app/sub',
    User: '1000:1000',
    Entrypoint: ['node', 'main.js'],
    Cmd: ['worker'],
    ExposedPorts: { '8080/tcp': {}, '53/udp': {} },
  });
  assert.equal(finalStageConfig(read('operator/Dockerfile')), {
    Env: [DEFAULT_PATH],
    WorkingDir: '/app',
    User: '65532:65532',
    Entrypoint: ['/nodejs/bin/node', '/app/dist/operator/main.js'],
    Cmd: ['operator'],
  });
  assert.throws(
    () => finalStageConfig('FROM a\nCMD node main.js\n'),
    (e: unknown) => e instanceof DockerfileError,
  );
  assert.throws(
    () => finalStageConfig('FROM a\nVOLUME /x\n'),
    (e: unknown) => e instanceof DockerfileError,
  );
});

test('real node: names and addresses per cluster directory, all inside private ranges', () => {
  const a = realNodePlan('/tmp/tensile-cluster-a', 6443);
  const b = realNodePlan('/tmp/tensile-cluster-b', 6443);
  assert.is.not(a.netns, b.netns);
  for (const p of [a, b]) {
    assert.ok(p.hostVeth.length <= 15 && p.nodeVeth.length <= 15 && p.bridge.length <= 15, 'interface names');
    assert.match(p.nodeIp, /^172\.29\.\d+\.2$/);
    assert.match(p.podCidr, /^10\.214\.\d+\.0\/24$/);
    assert.ok(p.containerdSocket.startsWith(p.stateDir));
  }
  assert.equal(realNodePlan('/tmp/tensile-cluster-a', 6443), a, 'the same directory, the same plan');
});

test('real node: containerd, CNI and kubelet settings this sandbox needs', () => {
  const plan = realNodePlan('/tmp/c', 6443);
  const containerd = containerdConfig(plan, 'tensile.local/pause:1');
  assert.match(containerd, 'restrict_oom_score_adj = true');
  assert.match(containerd, 'sandbox_image = "tensile.local/pause:1"');
  assert.match(containerd, `conf_dir = "${plan.stateDir}/cni/net.d"`, 'CNI config outside /etc/cni/net.d');
  const cni = JSON.parse(cniConfig(plan)) as {
    plugins: { type: string; bridge?: string; ipMasq?: boolean }[];
  };
  assert.equal(cni.plugins[0]?.bridge, plan.bridge);
  assert.is(cni.plugins[0]?.ipMasq, false, 'nothing masqueraded towards the outside');
  const kubelet = kubeletConfig(plan, '/tmp/c/pki/ca.crt', plan.hostIp);
  for (const line of [
    'anonymous: { enabled: false }',
    'x509: { clientCAFile: /tmp/c/pki/ca.crt }',
    'cgroupDriver: cgroupfs',
    'failSwapOn: false',
    'failCgroupV1: false',
    `address: ${plan.nodeIp}`,
    `cgroupRoot: ${plan.cgroupRoot}`,
    `clusterDNS: [${plan.hostIp}]`,
  ])
    assert.match(kubelet, line);
});

function query(name: string, type: number): Buffer {
  const labels = name.split('.').map((l) => Buffer.concat([Buffer.from([l.length]), Buffer.from(l)]));
  const header = Buffer.from([0x12, 0x34, 0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0]);
  const tail = Buffer.alloc(4);
  tail.writeUInt16BE(type, 0);
  tail.writeUInt16BE(1, 2);
  return Buffer.concat([header, ...labels, Buffer.from([0]), tail]);
}

test('cluster DNS: services under svc.cluster.local only; A answers, NXDOMAIN otherwise', () => {
  assert.equal(serviceOf('demo-nats.tensile-system.svc.cluster.local'), {
    service: 'demo-nats',
    namespace: 'tensile-system',
  });
  assert.is(serviceOf('example.com'), undefined);
  assert.is(serviceOf('a.b.svc.svc.cluster.local'), undefined);
  const q = parseQuery(query('demo-nats.tensile-system.svc.cluster.local', 1));
  assert.ok(q);
  assert.is(q.name, 'demo-nats.tensile-system.svc.cluster.local');
  const a = answer(q, '10.0.0.12', true);
  assert.is(a.readUInt16BE(0), 0x1234);
  assert.is(a.readUInt16BE(2) & 0xf, 0, 'NOERROR');
  assert.is(a.readUInt16BE(6), 1, 'one answer');
  assert.equal([...a.subarray(a.length - 4)], [10, 0, 0, 12]);
  const missing = answer(q, undefined, false);
  assert.is(missing.readUInt16BE(2) & 0xf, 3, 'NXDOMAIN');
  const aaaa = parseQuery(query('demo-nats.tensile-system.svc.cluster.local', 28));
  assert.ok(aaaa);
  assert.is(answer(aaaa, '10.0.0.12', true).readUInt16BE(6), 0, 'no AAAA record, no error');
  assert.is(parseQuery(Buffer.from([1, 2, 3])), undefined);
});

test.run();
