/** The Helm chart: lint, render with defaults and with every option, and reject bad values. */
import { mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { parse, parseAllDocuments } from 'yaml';
import { WorkerDefaultsSchema } from '../../operator/api/worker-defaults.ts';
import { OperatorMetrics } from '../../operator/controller/metrics.ts';
import { effectiveWorker } from '../../operator/controller/pod-builder.ts';
import { helm, KUBE_VERSION } from '../helpers/helm.ts';
import { ownedJob } from '../helpers/k8s-builders.ts';

const chart = fileURLToPath(new URL('../../charts/tensile', import.meta.url));
const allOptions = join(chart, 'ci', 'all-options-values.yaml');
const dir = mkdtempSync(join(tmpdir(), 'tensile-helm-'));

type Doc = { kind: string; metadata: { name: string }; spec?: Record<string, unknown>; [k: string]: unknown };

async function render(...extra: string[]): Promise<Doc[]> {
  const r = await helm([
    'template',
    'demo',
    chart,
    '--namespace',
    'tensile-system',
    '--kube-version',
    KUBE_VERSION,
    ...extra,
  ]);
  assert.is(r.code, 0, r.stderr);
  return parseAllDocuments(r.stdout)
    .map((d) => d.toJS() as Doc)
    .filter((d) => d !== null);
}

function one(docs: Doc[], kind: string, name?: string): Doc {
  const found = docs.find((d) => d.kind === kind && (name === undefined || d.metadata.name === name));
  assert.ok(found, `no ${kind} ${name ?? ''}`);
  return found as Doc;
}

test('helm lint passes with the defaults and with every option', async () => {
  for (const args of [[], ['-f', allOptions]]) {
    const r = await helm(['lint', chart, '--strict', '--kube-version', KUBE_VERSION, ...args]);
    assert.is(r.code, 0, `${r.stdout}${r.stderr}`);
  }
});

test('defaults: two operator replicas, hardened, probed, with the ClusterRole of files/', async () => {
  const docs = await render();
  const deployment = one(docs, 'Deployment') as unknown as {
    spec: {
      replicas: number;
      template: { spec: Record<string, unknown> & { containers: Record<string, unknown>[] } };
    };
  };
  assert.is(deployment.spec.replicas, 2);
  const pod = deployment.spec.template.spec;
  assert.equal(pod['securityContext'], {
    runAsNonRoot: true,
    runAsUser: 65532,
    runAsGroup: 65532,
    seccompProfile: { type: 'RuntimeDefault' },
  });
  const container = pod.containers[0] as Record<string, unknown>;
  assert.equal(container['securityContext'], {
    allowPrivilegeEscalation: false,
    readOnlyRootFilesystem: true,
    capabilities: { drop: ['ALL'] },
  });
  assert.equal((container['livenessProbe'] as Record<string, unknown>)['httpGet'], {
    path: '/healthz',
    port: 'http',
  });
  assert.equal((container['readinessProbe'] as Record<string, unknown>)['httpGet'], {
    path: '/readyz',
    port: 'http',
  });
  assert.ok(container['resources'] !== undefined);
  const args = container['args'] as string[];
  assert.ok(args.includes('--nats=nats://demo-tensile-nats.tensile-system.svc:4222'), args.join(' '));
  assert.ok(args.includes('--lease-duration=15'));
  const role = one(docs, 'ClusterRole', 'demo-tensile');
  const file = parse(readFileSync(join(chart, 'files', 'operator-clusterrole.yaml'), 'utf8')) as {
    rules: { resources: string[] }[];
  };
  const isLease = (r: { resources: string[] }) => r.resources.includes('leases');
  assert.equal(
    role['rules'],
    file.rules.filter((r) => !isLease(r)),
    'the chart reuses the operator’s tested role, but for the Lease rule',
  );
  const leader = one(docs, 'Role', 'demo-tensile-leader') as Doc & { metadata: { namespace: string } };
  assert.is(leader.metadata.namespace, 'tensile-system', 'Leases only in the operator’s own namespace');
  assert.equal(leader['rules'], file.rules.filter(isLease));
  one(docs, 'RoleBinding', 'demo-tensile-leader');
  const binding = one(docs, 'ClusterRoleBinding');
  assert.equal(binding['subjects'], [
    { kind: 'ServiceAccount', name: 'demo-tensile', namespace: 'tensile-system' },
  ]);
  one(docs, 'PodDisruptionBudget');
  one(docs, 'Service', 'demo-tensile-metrics');
  const nats = one(docs, 'StatefulSet') as unknown as {
    spec: { volumeClaimTemplates: { spec: { resources: { requests: { storage: string } } } }[] };
  };
  assert.is(nats.spec.volumeClaimTemplates[0]?.spec.resources.requests.storage, '1Gi');
  assert.is(one(docs, 'PriorityClass', 'tensile-training')['preemptionPolicy'], 'Never', 'evicts nobody');
  assert.equal(
    (pod['affinity'] as Record<string, Record<string, unknown>>)['podAntiAffinity'],
    {
      preferredDuringSchedulingIgnoredDuringExecution: [
        {
          weight: 100,
          podAffinityTerm: {
            topologyKey: 'kubernetes.io/hostname',
            labelSelector: {
              matchLabels: {
                'app.kubernetes.io/name': 'tensile',
                'app.kubernetes.io/instance': 'demo',
                'app.kubernetes.io/component': 'operator',
              },
            },
          },
        },
      ],
    },
    'the two replicas prefer different nodes',
  );
  assert.is(pod['imagePullSecrets'], undefined);
  // The operator reads this file: a job that sets nothing gets a CPU worker on any node.
  const defaults = WorkerDefaultsSchema.parse(
    parse((one(docs, 'ConfigMap')['data'] as Record<string, string>)['worker-defaults.yaml'] as string),
  );
  const worker = effectiveWorker(ownedJob().spec.worker, defaults);
  assert.is(worker.nodeSelector, undefined, 'no spot node selector by default');
  assert.is(worker.tolerations, undefined);
  assert.equal(worker.resources, { requests: { cpu: '500m', memory: '1Gi' }, limits: { memory: '4Gi' } });
  assert.equal(
    defaults.spot.nodeSelector,
    { 'karpenter.sh/capacity-type': 'spot' },
    'spot stays one flag away',
  );
  assert.is(
    docs.some((d) => d.kind === 'ServiceMonitor'),
    false,
  );
  assert.is(
    docs.some((d) => d.kind === 'CustomResourceDefinition'),
    false,
    'CRDs come from crds/, not templates',
  );
  const withCrds = await render('--include-crds');
  one(withCrds, 'CustomResourceDefinition', 'trainingjobs.tensile.dev');
});

test('RBAC for users: TrainingJobs aggregated into admin/edit and view', async () => {
  const docs = await render();
  const edit = one(docs, 'ClusterRole', 'demo-tensile-edit') as Doc & {
    metadata: { labels: Record<string, string> };
    rules: { resources: string[]; verbs: string[] }[];
  };
  assert.is(edit.metadata.labels['rbac.authorization.k8s.io/aggregate-to-edit'], 'true');
  assert.ok(
    edit.rules[0]?.verbs.includes('create') && edit.rules[0].resources.includes('trainingjobs/scale'),
  );
  const view = one(docs, 'ClusterRole', 'demo-tensile-view') as Doc & {
    metadata: { labels: Record<string, string> };
    rules: { verbs: string[] }[];
  };
  assert.is(view.metadata.labels['rbac.authorization.k8s.io/aggregate-to-view'], 'true');
  assert.equal(view.rules[0]?.verbs, ['get', 'list', 'watch']);
  const off = await render('--set', 'rbac.aggregateToDefaultRoles=false');
  assert.not.ok(off.some((d) => d.metadata.name === 'demo-tensile-edit'));
});

test('single-namespace mode: a Role in the watched namespace, Leases in its own, Nodes read cluster-wide', async () => {
  const docs = await render('--set', 'operator.watchNamespace=team-a');
  assert.not.ok(docs.some((d) => d.kind === 'ClusterRole' && d.metadata.name === 'demo-tensile'));
  type Rules = Doc & { metadata: { namespace?: string }; rules: { resources: string[] }[] };
  const resources = (d: Doc) => (d as Rules).rules.flatMap((r) => r.resources);
  const role = one(docs, 'Role', 'demo-tensile') as Rules;
  assert.is(role.metadata.namespace, 'team-a');
  assert.ok(resources(role).includes('pods') && resources(role).includes('trainingjobs'));
  assert.not.ok(resources(role).includes('nodes') || resources(role).includes('leases'));
  const leader = one(docs, 'Role', 'demo-tensile-leader') as Rules;
  assert.is(leader.metadata.namespace, 'tensile-system');
  assert.equal(resources(leader), ['leases']);
  assert.equal(resources(one(docs, 'ClusterRole', 'demo-tensile-nodes')), ['nodes']);
  for (const name of ['demo-tensile', 'demo-tensile-leader']) one(docs, 'RoleBinding', name);
  one(docs, 'ClusterRoleBinding', 'demo-tensile-nodes');
  const deployment = one(docs, 'Deployment') as unknown as {
    spec: { template: { spec: { containers: { args: string[] }[] } } };
  };
  assert.ok(deployment.spec.template.spec.containers[0]?.args.includes('--watch-namespace=team-a'));
});

test('NetworkPolicies: workers reach workers, NATS and DNS only; NATS takes workers and the operator', async () => {
  const docs = await render('--set', 'networkPolicy.workerNamespaces={team-a,team-b}');
  const workers = docs.filter(
    (d) => d.kind === 'NetworkPolicy' && d.metadata.name === 'demo-tensile-workers',
  );
  assert.equal(
    workers.map((d) => (d.metadata as { namespace?: string }).namespace),
    ['team-a', 'team-b'],
  );
  const spec = workers[0]?.spec as {
    policyTypes: string[];
    ingress: unknown[];
    egress: { to?: unknown[]; ports?: { port: number }[] }[];
  };
  assert.equal(spec.policyTypes, ['Ingress', 'Egress'], 'both directions are closed but for the rules');
  assert.equal(
    spec.egress.flatMap(
      (rule): (string | number)[] => rule.ports?.map((p) => p.port) ?? ['any port to workers'],
    ),
    ['any port to workers', 4222, 53, 53],
  );
  assert.equal(spec.ingress, [], "nobody in but the job's own policy lets in");
  const operator = one(docs, 'Deployment') as unknown as {
    spec: { template: { spec: { containers: { args: string[] }[] } } };
  };
  assert.ok(operator.spec.template.spec.containers[0]?.args.includes('--job-network-policies'));
  const clusterRole = one(docs, 'ClusterRole', 'demo-tensile') as unknown as {
    rules: { apiGroups: string[]; resources: string[]; verbs: string[] }[];
  };
  assert.ok(
    clusterRole.rules.some((r) => r.resources.includes('networkpolicies') && r.verbs.includes('create')),
    'the operator may create them',
  );
  const namespaceWide = await render('--set', 'networkPolicy.perJob=false');
  const wide = one(namespaceWide, 'NetworkPolicy', 'demo-tensile-workers').spec as { ingress: unknown[] };
  assert.equal(wide.ingress, [
    { from: [{ podSelector: { matchLabels: { 'tensile.dev/role': 'worker' } } }] },
  ]);
  const nats = one(docs, 'NetworkPolicy', 'demo-tensile-nats');
  assert.equal((nats.spec as { policyTypes: string[] }).policyTypes, ['Ingress']);
  const off = await render('--set', 'networkPolicy.enabled=false');
  assert.not.ok(off.some((d) => d.kind === 'NetworkPolicy'));
});

test('nats.auth and nats.tls: the bundled NATS trusts the Secret of tensile nats-trust and serves TLS; the operator gets seeds and CA', async () => {
  const docs = await render(
    ...['--set', 'nats.auth.trustSecret=nats-trust', '--set', 'nats.tls.secretName=nats-server-tls'],
    ...['--set', 'nats.tls.verify=true', '--set', 'nats.tls.clientSecretName=nats-client-tls'],
  );
  const conf = (one(docs, 'ConfigMap', 'demo-tensile-nats-config')['data'] as Record<string, string>)[
    'nats.conf'
  ];
  assert.match(conf ?? '', /include "trust\/trust.conf"/);
  assert.match(conf ?? '', /resolver \{ type: full, dir: "\/data\/jwt"/);
  assert.match(conf ?? '', /verify: true/);
  const nats = one(docs, 'StatefulSet') as unknown as {
    spec: {
      template: {
        spec: {
          containers: { args: string[] }[];
          volumes: { name: string; secret?: { secretName: string } }[];
        };
      };
    };
  };
  assert.equal(nats.spec.template.spec.containers[0]?.args, ['-c', '/etc/nats/nats.conf']);
  assert.equal(
    nats.spec.template.spec.volumes.flatMap((v) => (v.secret === undefined ? [] : [v.secret.secretName])),
    ['nats-trust', 'nats-server-tls'],
  );
  const operator = one(docs, 'Deployment') as unknown as {
    spec: {
      template: {
        spec: {
          containers: { args: string[] }[];
          volumes: { name: string; secret?: { secretName: string; items?: { key: string }[] } }[];
        };
      };
    };
  };
  const args = operator.spec.template.spec.containers[0]?.args ?? [];
  for (const flag of [
    '--nats-trust=/etc/tensile/nats-trust',
    '--nats-tls-ca=/etc/tensile/nats-tls/ca.crt',
    '--nats-tls-cert=/etc/tensile/nats-tls-client/tls.crt',
    '--nats-tls-key=/etc/tensile/nats-tls-client/tls.key',
  ])
    assert.ok(args.includes(flag), `${flag} in ${args.join(' ')}`);
  const trust = operator.spec.template.spec.volumes.find((v) => v.name === 'nats-trust');
  assert.equal(
    trust?.secret?.items?.map((i) => i.key),
    ['operator.nk', 'account.nk', 'system.nk'],
  );
  const serverTls = operator.spec.template.spec.volumes.find((v) => v.name === 'nats-tls');
  assert.equal(
    serverTls?.secret?.items?.map((i) => i.key),
    ['ca.crt'],
    "the server's key stays with the server",
  );
  // Off by default: the bundled NATS runs without a configuration file.
  const plain = one(await render(), 'StatefulSet') as unknown as typeof nats;
  assert.equal(plain.spec.template.spec.containers[0]?.args, ['-js', '-sd', '/data', '-m', '8222']);
  const missing = await helm([
    ...['template', 'demo', chart, '--kube-version', KUBE_VERSION],
    ...['--set', 'nats.tls.secretName=x', '--set', 'nats.tls.verify=true'],
  ]);
  assert.is(missing.code, 1);
  assert.match(missing.stderr, /nats.tls.verify needs nats.tls.clientSecretName/);
});

test('every option: external NATS with credentials, ServiceMonitor, no bundled NATS', async () => {
  const docs = await render('-f', allOptions);
  assert.is(
    docs.some((d) => d.kind === 'StatefulSet'),
    false,
  );
  one(docs, 'ServiceMonitor');
  const deployment = one(docs, 'Deployment') as unknown as {
    spec: {
      replicas: number;
      template: { spec: { containers: { args: string[]; image: string }[]; volumes: { name: string }[] } };
    };
  };
  assert.is(deployment.spec.replicas, 3);
  const container = deployment.spec.template.spec.containers[0];
  assert.is(container?.image, 'registry.example.com/tensile-operator:0.1.0-rc1');
  assert.ok(container?.args.includes('--nats=nats://nats.messaging.svc:4222'));
  assert.ok(container?.args.includes('--worker-gpu-image=registry.example.com/tensile-worker:0.1.0-rc1-gpu'));
  assert.ok(deployment.spec.template.spec.volumes.some((v) => v.name === 'nats-credentials'));
  one(docs, 'ServiceAccount', 'tensile-controller');
  assert.is(one(docs, 'PriorityClass', 'spot-training')['preemptionPolicy'], 'PreemptLowerPriority');
  // fullnameOverride names everything, nameOverride labels it.
  const named = one(docs, 'Deployment', 'ml-trainer-operator') as unknown as {
    metadata: { labels: Record<string, string> };
    spec: { template: { spec: Record<string, unknown> } };
  };
  assert.is(named.metadata.labels['app.kubernetes.io/name'], 'trainer');
  one(docs, 'ConfigMap', 'ml-trainer-worker-defaults');
  const pod = named.spec.template.spec;
  assert.equal(pod['imagePullSecrets'], [{ name: 'regcred' }]);
  assert.equal(pod['topologySpreadConstraints'], [
    {
      maxSkew: 1,
      topologyKey: 'topology.kubernetes.io/zone',
      whenUnsatisfiable: 'ScheduleAnyway',
      labelSelector: {
        matchLabels: {
          'app.kubernetes.io/name': 'trainer',
          'app.kubernetes.io/instance': 'demo',
          'app.kubernetes.io/component': 'operator',
        },
      },
    },
  ]);
  const defaults = WorkerDefaultsSchema.parse(
    parse(
      (one(docs, 'ConfigMap', 'ml-trainer-worker-defaults')['data'] as Record<string, string>)[
        'worker-defaults.yaml'
      ] as string,
    ),
  );
  assert.equal(defaults.imagePullSecrets, [{ name: 'worker-regcred' }]);
  const worker = effectiveWorker(ownedJob().spec.worker, defaults);
  assert.equal(worker.nodeSelector, { 'cloud.google.com/gke-spot': 'true' }, 'spot for every job here');
});

test('operator.podAntiAffinity hard requires different nodes; none leaves affinity out', async () => {
  const spec = async (value: string) =>
    (
      one(await render('--set', `operator.podAntiAffinity=${value}`), 'Deployment') as unknown as {
        spec: { template: { spec: Record<string, unknown> } };
      }
    ).spec.template.spec;
  const hard = (await spec('hard'))['affinity'] as { podAntiAffinity: Record<string, unknown> };
  assert.ok(hard.podAntiAffinity['requiredDuringSchedulingIgnoredDuringExecution']);
  assert.is((await spec('none'))['affinity'], undefined);
});

test('monitoring: a PodMonitor of the operator, and a Grafana dashboard of metrics the operator serves', async () => {
  const docs = await render('-f', allOptions);
  const monitor = one(docs, 'PodMonitor') as unknown as {
    metadata: { labels: Record<string, string> };
    spec: { podMetricsEndpoints: { port: string; path: string; interval: string }[] };
  };
  assert.equal(monitor.spec.podMetricsEndpoints, [{ port: 'http', path: '/metrics', interval: '15s' }]);
  assert.is(monitor.metadata.labels['release'], 'prometheus');
  const board = one(docs, 'ConfigMap', 'ml-trainer-dashboard') as unknown as {
    metadata: { labels: Record<string, string> };
    data: Record<string, string>;
  };
  assert.is(board.metadata.labels['grafana_dashboard'], '1');
  const dashboard = JSON.parse(board.data['tensile-training.json'] as string) as {
    panels: { targets: { expr: string }[] }[];
  };
  const exprs = dashboard.panels.flatMap((p) => p.targets.map((t) => t.expr));
  const used = new Set(exprs.flatMap((e) => [...e.matchAll(/\btensile_[a-z_]+/g)].map((m) => m[0])));
  const served = new Set(
    (await new OperatorMetrics().registry.getMetricsAsJSON()).flatMap((m) =>
      String(m.type) === 'histogram' ? [`${m.name}_bucket`, m.name] : [m.name],
    ),
  );
  for (const name of used)
    assert.ok(served.has(name), `the dashboard uses ${name}, which the operator does not serve`);
  assert.ok(used.has('tensile_trainingjob_goodput_ratio'));
  // Off by default.
  const defaults = await render();
  assert.not.ok(
    defaults.some((d) => d.kind === 'PodMonitor' || d.metadata.name === 'demo-tensile-dashboard'),
  );
});

test('one replica: no leader election, no PodDisruptionBudget', async () => {
  const docs = await render('--set', 'operator.replicas=1');
  assert.is(
    docs.some((d) => d.kind === 'PodDisruptionBudget'),
    false,
  );
  const args = (
    one(docs, 'Deployment') as unknown as {
      spec: { template: { spec: { containers: { args: string[] }[] } } };
    }
  ).spec.template.spec.containers[0]?.args;
  assert.ok(args?.includes('--no-leader-elect'));
});

const badValues: [string, string, RegExp][] = [
  ['zero operator replicas', 'operator:\n  replicas: 0\n', /'\/operator\/replicas': minimum: got 0, want 1/],
  ['a typo in a key', 'operatr:\n  replicas: 2\n', /operatr/],
  [
    'an http NATS URL',
    'nats:\n  bundled: { enabled: false }\n  external: { url: "http://nats:4222" }\n',
    /\/nats\/external\/url/,
  ],
  [
    'a memory limit that is not a quantity',
    'workers:\n  resources: { limits: { memory: lots } }\n',
    /'\/workers\/resources\/limits\/memory'.*does not match pattern/,
  ],
  [
    'a preempting policy spelled wrong',
    'workers:\n  priorityClass: { preemptionPolicy: Always }\n',
    /'\/workers\/priorityClass\/preemptionPolicy'/,
  ],
  [
    'a podAntiAffinity preset that does not exist',
    'operator:\n  podAntiAffinity: maybe\n',
    /podAntiAffinity/,
  ],
  ['an unknown log level', 'operator:\n  logLevel: loud\n', /'\/operator\/logLevel': value must be one of/],
  [
    'a toleration with an unknown operator',
    'workers:\n  tolerations: [{ key: a, operator: Maybe }]\n',
    /'\/workers\/tolerations\/0\/operator'/,
  ],
];

for (const [name, values, field] of badValues) {
  test(`values.schema.json rejects ${name}, naming the field`, async () => {
    const file = join(dir, `${name.replace(/\W+/g, '-')}.yaml`);
    writeFileSync(file, values);
    const r = await helm(['template', 'demo', chart, '--kube-version', KUBE_VERSION, '-f', file]);
    assert.is.not(r.code, 0, 'helm must refuse');
    assert.match(r.stderr, field);
  });
}

test('helm template works offline without --kube-version', async () => {
  const r = await helm(['template', 'demo', chart]);
  assert.is(r.code, 0, r.stderr);
  assert.match(r.stdout, 'kind: Deployment');
});

test('a Kubernetes below 1.30: the error says to pass --kube-version', async () => {
  const r = await helm(['template', 'demo', chart, '--kube-version', '1.20.0']);
  assert.is.not(r.code, 0);
  assert.match(r.stderr, 'Tensile needs Kubernetes 1.30 or later');
  assert.match(r.stderr, 'and helm sees v1.20.0');
  assert.match(
    r.stderr,
    'pass --kube-version, e.g. helm template tensile charts/tensile --kube-version 1.31',
  );
});

test('bundled NATS off without an external URL: a clear error', async () => {
  const r = await helm([
    'template',
    'demo',
    chart,
    '--kube-version',
    KUBE_VERSION,
    '--set',
    'nats.bundled.enabled=false',
  ]);
  assert.is.not(r.code, 0);
  assert.match(r.stderr, 'nats.external.url is required');
});

test.run();
