/**
 * Starts a real Kubernetes control plane on 127.0.0.1 with free ports — etcd, kube-apiserver,
 * kube-controller-manager, kube-scheduler — applies `crds/`, and starts the node agent
 * (hack/node-agent), which registers fake GPU nodes and runs the pods bound to them as local processes.
 * Used by `hack/cluster.sh` (detached: the processes outlive the launcher) and by the test fixture
 * test/helpers/cluster.ts (attached: hack/cluster/watchdog.sh kills the cluster when the test process
 * dies, however it dies).
 *
 * State directory layout: pki/, etcd/, logs/<component>.log and logs/<ns>_<pod>.log, pids/*.pid,
 * volumes/<ns>/<claim>/, pods/<uid>/, kubeconfig, node-agent.json, cluster.json.
 */
import { execFile, spawn } from 'node:child_process';
import {
  existsSync,
  mkdirSync,
  mkdtempSync,
  readdirSync,
  readFileSync,
  rmSync,
  writeFileSync,
} from 'node:fs';
import { request } from 'node:https';
import type { Socket } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { parseAllDocuments } from 'yaml';
import { writeKubeconfig } from '../lib/kubeconfig.ts';
import { freePorts, logTail, type StartedProcess, startProcess, writePidFile } from '../lib/processes.ts';
import {
  type AgentConfigInput,
  defaultImageMap,
  GPU_RESOURCE,
  type ImageMapInput,
  LABEL_NODE_AGENT,
  type NodeTaint,
  REPO_ROOT,
} from '../node-agent/config.ts';
import { type ClusterPki, createNodeCredentials, createPki } from './certificates.ts';

import { inNetns, prepareRealNode, REAL_NODE_NAME, realNodePlan } from './real-node.ts';
import { stopClusterDir } from './stop.ts';
import { type ClusterTools, findClusterTools, findNodeTools } from './tools.ts';

export { cleanupRealNode } from './real-node.ts';
export { stopClusterDir } from './stop.ts';

export class ClusterStartError extends Error {
  override readonly name = 'ClusterStartError';
  constructor(
    message: string,
    /** A process died because another took its port between our check and its bind: start again. */
    readonly portTaken = false,
    options?: ErrorOptions,
  ) {
    super(message, options);
  }
}

export interface ClusterOptions {
  /** State directory; default: a new directory under $TMPDIR (removed again by `stop`). */
  readonly dir?: string;
  /** Fake nodes the node agent registers: node-0, node-1, … Default 2. */
  readonly nodes?: number;
  readonly gpusPerNode?: number;
  readonly cpuPerNode?: string;
  readonly memoryPerNode?: string;
  readonly podsPerNode?: number;
  /** Taints put on every registered node. */
  readonly taints?: readonly NodeTaint[];
  /** Extra image → command entries; they win over the defaults (see hack/node-agent/config.ts). */
  readonly imageMap?: ImageMapInput;
  /** Start the node agent (default true); without it there are no nodes and pods stay Pending. */
  readonly nodeAgent?: boolean;
  /** Value of the `tensile.dev/node-agent` label of the agent's nodes. Default `local`. */
  readonly agentName?: string;
  /** How long a node may miss heartbeats before node-lifecycle marks it NotReady. Default 15 s. */
  readonly nodeMonitorGracePeriodSeconds?: number;
  /** Apply the CRDs in crds/ (default true). */
  readonly crds?: boolean;
  /** Processes outlive this process (hack/cluster.sh). Default false: a watchdog reaps them. */
  readonly detached?: boolean;
  /** Progress lines while starting. */
  readonly progress?: (line: string) => void;
  /**
   * Also start one real node (`real-node-0`): kubelet, containerd, runc, CNI and kube-proxy in a network
   * namespace of its own (hack/cluster/real-node.ts). Needs root and hack/install-tools.sh. Default false.
   */
  readonly realNode?: boolean;
  /**
   * CPUs the real node offers to pods (the rest of the machine's is reserved for the system in the
   * kubelet's configuration), e.g. 1 so that one worker fits as on each fake node. Default: all.
   */
  readonly realNodeCpus?: number;
}

export interface ClusterInfo {
  readonly dir: string;
  readonly kubeconfigPath: string;
  readonly server: string;
  readonly port: number;
  readonly caFile: string;
  readonly kubectl: string;
  readonly agentName: string;
  readonly nodeNames: readonly string[];
  readonly startSeconds: number;
  /** The real node's name and containerd socket, when there is one. */
  readonly realNode?: RealNodeInfo;
}

export interface RealNodeInfo {
  readonly name: string;
  readonly containerdSocket: string;
  /**
   * The host side of its veth: reached from its containers and from this machine. The fake nodes'
   * pods report it as their pod IP (and listen on it), so that both kinds of pod reach each other.
   */
  readonly hostIp: string;
  /** Where the kubelet writes its containers' logs: `<namespace>_<pod>_<uid>/<container>/<n>.log`. */
  readonly podLogsDir: string;
}

export interface LaunchedCluster extends ClusterInfo {
  /** Stops every process of the cluster and removes its state directory. */
  stop(): Promise<void>;
}

const CLUSTER_FILE = 'cluster.json';
const SERVICE_ACCOUNT_ISSUER = 'https://kubernetes.default.svc.cluster.local';

interface Tls {
  readonly ca?: Buffer;
  readonly cert?: Buffer;
  readonly key?: Buffer;
}

function httpsRequest(
  port: number,
  method: string,
  path: string,
  tls: Tls,
  body?: unknown,
): Promise<{ status: number; body: string }> {
  return new Promise((resolve, reject) => {
    const payload = body === undefined ? undefined : JSON.stringify(body);
    const req = request(
      {
        host: '127.0.0.1',
        port,
        path,
        method,
        ...tls,
        rejectUnauthorized: tls.ca !== undefined,
        timeout: 5000,
        headers: payload === undefined ? {} : { 'content-type': 'application/json' },
      },
      (res) => {
        let text = '';
        res.setEncoding('utf8');
        res.on('data', (chunk: string) => {
          text += chunk;
        });
        res.on('end', () => resolve({ status: res.statusCode ?? 0, body: text }));
      },
    );
    req.on('timeout', () => req.destroy(new Error('timeout')));
    req.on('error', reject);
    req.end(payload);
  });
}

const httpsGet = (port: number, path: string, tls: Tls) => httpsRequest(port, 'GET', path, tls);

/**
 * The launcher's few API calls as plain HTTPS requests: the client library takes seconds of CPU to
 * import, which `hack/cluster.sh up` would pay on every start.
 */
class AdminApi {
  constructor(
    private readonly port: number,
    private readonly tls: Tls,
  ) {}

  async call<T>(
    method: string,
    path: string,
    body?: unknown,
    okStatus: readonly number[] = [],
  ): Promise<T | undefined> {
    const res = await httpsRequest(this.port, method, path, this.tls, body);
    if (res.status >= 200 && res.status < 300) return JSON.parse(res.body) as T;
    if (okStatus.includes(res.status)) return undefined;
    throw new ClusterStartError(`${method} ${path}: HTTP ${res.status}: ${res.body.slice(0, 500)}`);
  }
}

interface Condition {
  readonly type: string;
  readonly status: string;
}

class Supervisor {
  private readonly exits = new Map<StartedProcess, string>();
  private readonly restarts = new Map<
    StartedProcess,
    { left: number; start: () => Promise<StartedProcess> }
  >();
  readonly processes: StartedProcess[] = [];

  add(p: StartedProcess): StartedProcess {
    this.processes.push(p);
    void p.exited.then((reason) => this.exits.set(p, reason));
    return p;
  }

  /**
   * A component that may give up while the API server is still busy starting (kube-controller-manager
   * exits when its first request times out): started again, up to `retries` times, during the launch.
   */
  async addRestartable(start: () => Promise<StartedProcess>, retries = 2): Promise<StartedProcess> {
    const p = this.add(await start());
    this.restarts.set(p, { left: retries, start });
    return p;
  }

  private checking: Promise<void> | undefined;
  private aborted = false;

  /** Ends every wait (the launch failed elsewhere). */
  abort(): void {
    this.aborted = true;
  }

  /** Fails fast when a component died instead of waiting for a timeout. */
  check(): Promise<void> {
    // Waits run side by side: one check at a time, so a component is restarted once, not per wait.
    this.checking ??= this.checkOnce().finally(() => {
      this.checking = undefined;
    });
    return this.checking;
  }

  private async checkOnce(): Promise<void> {
    if (this.aborted) throw new ClusterStartError('the launch was aborted');
    for (const p of [...this.processes]) {
      const reason = this.exits.get(p);
      if (reason === undefined) continue;
      const restart = this.restarts.get(p);
      if (restart !== undefined && restart.left > 0) {
        this.processes.splice(this.processes.indexOf(p), 1);
        this.exits.delete(p);
        this.restarts.delete(p);
        const again = this.add(await restart.start());
        this.restarts.set(again, { left: restart.left - 1, start: restart.start });
        continue;
      }
      const tail = logTail(p.logFile);
      // The process's own log is the only place that says why it exited.
      throw new ClusterStartError(
        `${p.name} exited (${reason}); last lines of ${p.logFile}:\n${tail}`,
        /address already in use/.test(tail),
      );
    }
  }

  async waitFor(what: string, timeoutMs: number, ready: () => Promise<boolean>, logs: string[] = []) {
    const deadline = Date.now() + timeoutMs;
    let lastError: unknown;
    while (Date.now() < deadline) {
      await this.check();
      try {
        if (await ready()) return;
      } catch (error) {
        lastError = error;
      }
      await sleep(100);
    }
    const tails = logs.map((f) => `--- ${f}\n${logTail(f)}`).join('\n');
    throw new ClusterStartError(
      `timed out after ${timeoutMs / 1000} s waiting for ${what}${lastError === undefined ? '' : ` (last error: ${String(lastError)})`}\n${tails}`,
      /address already in use/.test(tails),
    );
  }
}

const execFileText = (command: string, args: readonly string[]) =>
  new Promise<string>((resolve, reject) => {
    execFile(command, args, { encoding: 'utf8', maxBuffer: 16 << 20 }, (error, stdout, stderr) => {
      if (error)
        reject(new ClusterStartError(`${command} ${args.join(' ')}: ${stderr.trim() || error.message}`));
      else resolve(stdout);
    });
  });

/** Reads NAME=VALUE lines of hack/images.sh's images.env. */
export function readImagesEnv(text: string): Map<string, string> {
  const out = new Map<string, string>();
  for (const line of text.split('\n')) {
    const m = /^([A-Z0-9_]+)=(.*)$/.exec(line.trim());
    if (m?.[1] !== undefined && m[2] !== undefined) out.set(m[1], m[2]);
  }
  return out;
}

/**
 * The real node: namespace and files (real-node.ts), then the API forwarder, containerd, the pause
 * image, kubelet and kube-proxy as cluster processes (their pid files make `down` stop them).
 */
async function startRealNode(ctx: {
  dir: string;
  apiPort: number;
  api: AdminApi;
  supervisor: Supervisor;
  tools: ClusterTools;
  pki: ClusterPki;
  progress: (line: string) => void;
  cpus: number | undefined;
}): Promise<RealNodeInfo> {
  const { dir, apiPort, api, supervisor, pki, progress } = ctx;
  const node = findNodeTools();
  const started = performance.now();
  progress('real node: pause image (hack/images.sh --only pause)');
  const imagesScript = join(REPO_ROOT, 'hack', 'images.sh');
  await execFileText('bash', [imagesScript, '--only', 'pause']);
  const images = readImagesEnv(
    readFileSync((await execFileText('bash', [imagesScript, '--print'])).trim(), 'utf8'),
  );
  const pauseImage = images.get('PAUSE');
  const pauseTar = images.get('PAUSE_TAR');
  if (pauseImage === undefined || pauseTar === undefined)
    throw new ClusterStartError('hack/images.sh --only pause did not record the pause image');
  const plan = realNodePlan(dir, apiPort);
  const files = prepareRealNode(plan, {
    pauseImage,
    dnsIp: plan.hostIp,
    ...(ctx.cpus === undefined ? {} : { cpus: ctx.cpus }),
    ca: pki.caCert,
    ...(await createNodeCredentials(pki, REAL_NODE_NAME)),
  });
  progress(`real node: network namespace ${plan.netns}, node address ${plan.nodeIp}, pods ${plan.podCidr}`);
  supervisor.add(
    await startProcess(
      dir,
      'real-node-forwarder',
      process.execPath,
      [
        '--import',
        'tsx',
        join(REPO_ROOT, 'hack', 'cluster', 'tcp-forward.ts'),
        `${plan.hostIp}:${apiPort}`,
        `127.0.0.1:${apiPort}`,
      ],
      { cwd: REPO_ROOT },
    ),
  );
  supervisor.add(
    await startProcess(
      dir,
      'real-node-dns',
      process.execPath,
      [
        '--import',
        'tsx',
        join(REPO_ROOT, 'hack', 'cluster', 'cluster-dns.ts'),
        plan.hostIp,
        join(dir, 'pki'),
        String(apiPort),
      ],
      { cwd: REPO_ROOT },
    ),
  );
  const [nsenter, containerdArgs] = inNetns(plan, node.containerd, ['--config', files.containerdConfig]);
  const containerd = supervisor.add(await startProcess(dir, 'real-node-containerd', nsenter, containerdArgs));
  await supervisor.waitFor(
    'containerd of the real node',
    30_000,
    async () => existsSync(plan.containerdSocket),
    [containerd.logFile],
  );
  await execFileText(node.ctr, [
    '--address',
    plan.containerdSocket,
    '-n',
    'k8s.io',
    'images',
    'import',
    pauseTar,
  ]);
  // The `kubernetes` Service (10.0.0.1:443) for pods: the API server through the forwarder. The API
  // server keeps no endpoints itself (--endpoint-reconciler-type=none).
  await api.call(
    'POST',
    '/apis/discovery.k8s.io/v1/namespaces/default/endpointslices',
    {
      apiVersion: 'discovery.k8s.io/v1',
      kind: 'EndpointSlice',
      metadata: {
        name: 'kubernetes-real-node',
        labels: {
          'kubernetes.io/service-name': 'kubernetes',
          'endpointslice.kubernetes.io/managed-by': 'real-node.tensile.dev',
        },
      },
      addressType: 'IPv4',
      endpoints: [{ addresses: [plan.hostIp], conditions: { ready: true } }],
      ports: [{ name: 'https', port: apiPort, protocol: 'TCP' }],
    },
    [409],
  );
  const [, kubeletArgs] = inNetns(plan, node.kubelet, [
    `--config=${files.kubeletConfig}`,
    `--kubeconfig=${files.kubeconfig}`,
    `--root-dir=${join(plan.stateDir, 'kubelet')}`,
    `--cert-dir=${join(plan.stateDir, 'kubelet', 'pki')}`,
    `--hostname-override=${REAL_NODE_NAME}`,
    `--node-ip=${plan.nodeIp}`,
    '--node-labels=tensile.dev/real-node=true',
    '--v=1',
  ]);
  const kubelet = supervisor.add(await startProcess(dir, 'real-node-kubelet', nsenter, kubeletArgs));
  const [, proxyArgs] = inNetns(plan, node.kubeProxy, [`--config=${files.kubeProxyConfig}`, '--v=1']);
  const proxy = supervisor.add(await startProcess(dir, 'real-node-kube-proxy', nsenter, proxyArgs));
  await supervisor.waitFor(
    `node ${REAL_NODE_NAME} Ready`,
    90_000,
    async () => {
      const n = await api.call<{ status?: { conditions?: Condition[] } }>(
        'GET',
        `/api/v1/nodes/${REAL_NODE_NAME}`,
        undefined,
        [404],
      );
      return n?.status?.conditions?.some((c) => c.type === 'Ready' && c.status === 'True') ?? false;
    },
    [kubelet.logFile, containerd.logFile, proxy.logFile],
  );
  progress(`real node ${REAL_NODE_NAME} Ready (${((performance.now() - started) / 1000).toFixed(1)} s)`);
  return {
    name: REAL_NODE_NAME,
    containerdSocket: plan.containerdSocket,
    hostIp: plan.hostIp,
    podLogsDir: join(plan.stateDir, 'pod-logs'),
  };
}

function startWatchdog(dir: string): void {
  const child = spawn('bash', [join(REPO_ROOT, 'hack', 'cluster', 'watchdog.sh'), dir], {
    stdio: ['pipe', 'ignore', 'ignore'],
    detached: true,
  });
  if (child.pid !== undefined) writePidFile(dir, 'watchdog', child.pid);
  // The pipe stays open as long as this process lives; EOF tells the watchdog to reap the cluster.
  child.unref();
  (child.stdin as unknown as Socket | null)?.unref();
}

function nodeShape(options: ClusterOptions, agentName: string) {
  const gpus = options.gpusPerNode ?? 1;
  return {
    capacity: {
      cpu: options.cpuPerNode ?? '8',
      memory: options.memoryPerNode ?? '32Gi',
      pods: String(options.podsPerNode ?? 110),
      [GPU_RESOURCE]: String(gpus),
      'ephemeral-storage': '100Gi',
    },
    labels: {
      'karpenter.sh/capacity-type': 'spot',
      'node.kubernetes.io/instance-type': `fake-gpu-${gpus}x`,
      'kubernetes.io/os': 'linux',
      'kubernetes.io/arch': 'amd64',
      [LABEL_NODE_AGENT]: agentName,
    },
    taints: [...(options.taints ?? [])],
  };
}

async function applyCrds(api: AdminApi): Promise<string[]> {
  const dir = join(REPO_ROOT, 'crds');
  const names: string[] = [];
  for (const file of readdirSync(dir).filter((f) => /\.ya?ml$/.test(f))) {
    for (const doc of parseAllDocuments(readFileSync(join(dir, file), 'utf8'))) {
      const crd = doc.toJS() as { kind?: string; metadata?: { name?: string } } | null;
      if (crd?.kind !== 'CustomResourceDefinition') continue;
      await api.call('POST', '/apis/apiextensions.k8s.io/v1/customresourcedefinitions', crd);
      names.push(crd.metadata?.name ?? '');
    }
  }
  return names;
}

export interface KubectlResult {
  readonly code: number;
  readonly stdout: string;
  readonly stderr: string;
}

/** kubectl against `cluster` as admin, with its own cache folder; never throws for a failed command. */
export function runKubectl(
  cluster: Pick<ClusterInfo, 'kubectl' | 'kubeconfigPath' | 'dir'>,
  args: readonly string[],
  input?: string,
): Promise<KubectlResult> {
  return new Promise((resolve) => {
    const child = execFile(
      cluster.kubectl,
      [
        `--kubeconfig=${cluster.kubeconfigPath}`,
        `--cache-dir=${join(cluster.dir, 'kubectl-cache')}`,
        ...args,
      ],
      { maxBuffer: 64 * 1024 * 1024 },
      (error, stdout, stderr) => {
        const code = error === null ? 0 : typeof error.code === 'number' ? error.code : 1;
        resolve({ code, stdout, stderr });
      },
    );
    child.stdin?.end(input ?? '');
  });
}

export function clusterInfo(dir: string): ClusterInfo | undefined {
  try {
    return JSON.parse(readFileSync(join(dir, CLUSTER_FILE), 'utf8')) as ClusterInfo;
  } catch {
    return undefined;
  }
}

/**
 * Starts a cluster. A port found free can be taken by another launch before our process binds it;
 * such a start is retried once on fresh ports.
 */
export async function launchCluster(options: ClusterOptions = {}): Promise<LaunchedCluster> {
  try {
    return await launchOnce(options);
  } catch (error) {
    if (!(error instanceof ClusterStartError && error.portTaken)) throw error;
    options.progress?.('a port was taken meanwhile; starting again on other ports');
    if (options.dir !== undefined) rmSync(options.dir, { recursive: true, force: true });
    return launchOnce(options);
  }
}

async function launchOnce(options: ClusterOptions): Promise<LaunchedCluster> {
  const started = performance.now();
  const progress = options.progress ?? (() => {});
  const tools: ClusterTools = findClusterTools();
  const ownDir = options.dir === undefined;
  const dir = options.dir ?? mkdtempSync(join(process.env['TMPDIR'] ?? tmpdir(), 'tensile-cluster-'));
  mkdirSync(dir, { recursive: true });
  if (!options.detached) startWatchdog(dir);
  const supervisor = new Supervisor();
  const agentName = options.agentName ?? 'local';
  const nodeCount = options.nodeAgent === false ? 0 : (options.nodes ?? 2);
  const nodeNames = Array.from({ length: nodeCount }, (_, i) => `node-${i}`);

  try {
    const [etcdPort, etcdPeerPort, apiPort, kcmPort, schedulerPort] = (await freePorts(5)) as [
      number,
      number,
      number,
      number,
      number,
    ];
    progress(`state directory ${dir}`);
    const etcdDir = join(dir, 'etcd');
    const etcd = supervisor.add(
      await startProcess(dir, 'etcd', tools.etcd, [
        '--name=tensile',
        `--data-dir=${etcdDir}`,
        `--listen-client-urls=http://127.0.0.1:${etcdPort}`,
        `--advertise-client-urls=http://127.0.0.1:${etcdPort}`,
        `--listen-peer-urls=http://127.0.0.1:${etcdPeerPort}`,
        `--initial-advertise-peer-urls=http://127.0.0.1:${etcdPeerPort}`,
        `--initial-cluster=tensile=http://127.0.0.1:${etcdPeerPort}`,
        '--log-level=warn',
        '--logger=zap',
      ]),
    );
    progress(`etcd on 127.0.0.1:${etcdPort}`);
    const pki = await createPki(dir);
    const server = `https://127.0.0.1:${apiPort}`;
    const kubeconfigPath = writeKubeconfig(join(dir, 'kubeconfig'), {
      server,
      caFile: pki.caCert,
      credentials: { clientCertFile: pki.adminCert, clientKeyFile: pki.adminKey },
      name: 'tensile-admin',
    });
    const apiserver = supervisor.add(
      await startProcess(dir, 'kube-apiserver', tools.kubeApiserver, [
        `--etcd-servers=http://127.0.0.1:${etcdPort}`,
        '--bind-address=127.0.0.1',
        '--advertise-address=127.0.0.1',
        `--secure-port=${apiPort}`,
        `--cert-dir=${join(dir, 'pki', 'kube-apiserver')}`,
        `--tls-cert-file=${pki.servingCert}`,
        `--tls-private-key-file=${pki.servingKey}`,
        `--client-ca-file=${pki.caCert}`,
        `--service-account-key-file=${pki.serviceAccountPublicKey}`,
        `--service-account-signing-key-file=${pki.serviceAccountKey}`,
        `--service-account-issuer=${SERVICE_ACCOUNT_ISSUER}`,
        '--authorization-mode=Node,RBAC',
        // A kubelet may change only its own Node and the pods bound to it (kubeadm's default).
        '--enable-admission-plugins=NodeRestriction',
        `--kubelet-client-certificate=${pki.kubeletClientCert}`,
        `--kubelet-client-key=${pki.kubeletClientKey}`,
        '--service-cluster-ip-range=10.0.0.0/24',
        // Loopback is not a valid endpoint address for the `kubernetes` Service; pods reach the API
        // server through KUBERNETES_SERVICE_HOST=127.0.0.1 set by the node agent instead.
        '--endpoint-reconciler-type=none',
        '--allow-privileged=true',
        // The real node's name does not resolve; every node reports its InternalIP.
        '--kubelet-preferred-address-types=InternalIP,Hostname',
        '--profiling=false',
      ]),
    );
    progress(`kube-apiserver on ${server}`);
    let agentLog: string | undefined;
    if (nodeCount > 0) {
      const shape = nodeShape(options, agentName);
      const config: AgentConfigInput = {
        agentName,
        kubeconfig: kubeconfigPath,
        stateDir: dir,
        apiServer: { host: '127.0.0.1', port: apiPort },
        caFile: pki.caCert,
        // Beside a real node, pods on both kinds of node must reach each other (realNodePlan).
        ...(options.realNode ? { podIp: realNodePlan(dir, apiPort).hostIp, umask: 0 } : {}),
        nodes: nodeNames.map((name) => ({ name, ...shape, labels: { ...shape.labels } })),
        defaultNode: shape,
        imageMap: { ...defaultImageMap(), ...options.imageMap },
      };
      const configPath = join(dir, 'node-agent.json');
      writeFileSync(configPath, `${JSON.stringify(config, null, 2)}\n`);
      const agent = supervisor.add(
        await startProcess(
          dir,
          'node-agent',
          process.execPath,
          ['--import', 'tsx', join(REPO_ROOT, 'hack', 'node-agent', 'main.ts'), configPath],
          { cwd: REPO_ROOT },
        ),
      );
      agentLog = agent.logFile;
      progress(`node agent started (${nodeCount} nodes)`);
    }

    const tls: Tls = {
      ca: readFileSync(pki.caCert),
      cert: readFileSync(pki.adminCert),
      key: readFileSync(pki.adminKey),
    };
    await supervisor.waitFor(
      'kube-apiserver /readyz',
      90_000,
      async () => {
        return (await httpsGet(apiPort, '/readyz', tls)).status === 200;
      },
      [apiserver.logFile, etcd.logFile],
    );
    progress(`kube-apiserver ready (${((performance.now() - started) / 1000).toFixed(1)} s)`);

    const api = new AdminApi(apiPort, tls);
    const componentArgs = (port: number, name: string) => [
      `--kubeconfig=${kubeconfigPath}`,
      `--authentication-kubeconfig=${kubeconfigPath}`,
      `--authorization-kubeconfig=${kubeconfigPath}`,
      '--bind-address=127.0.0.1',
      `--secure-port=${port}`,
      `--cert-dir=${join(dir, 'pki', name)}`,
      '--leader-elect=false',
    ];
    const grace = options.nodeMonitorGracePeriodSeconds ?? 15;
    await supervisor.addRestartable(() =>
      startProcess(dir, 'kube-controller-manager', tools.kubeControllerManager, [
        ...componentArgs(kcmPort, 'kube-controller-manager'),
        '--controllers=*,-node-ipam-controller',
        '--allocate-node-cidrs=false',
        `--root-ca-file=${pki.caCert}`,
        `--service-account-private-key-file=${pki.serviceAccountKey}`,
        '--use-service-account-credentials=true',
        `--cluster-signing-cert-file=${pki.caCert}`,
        `--cluster-signing-key-file=${pki.caKey}`,
        '--node-monitor-period=1s',
        `--node-monitor-grace-period=${grace}s`,
        '--pvclaimbinder-sync-period=2s',
      ]),
    );
    await supervisor.addRestartable(() =>
      startProcess(
        dir,
        'kube-scheduler',
        tools.kubeScheduler,
        componentArgs(schedulerPort, 'kube-scheduler'),
      ),
    );
    progress('kube-controller-manager and kube-scheduler started');

    // The rest happens side by side: CRDs, the default ServiceAccount, controllers, nodes.
    const crds = (async () => {
      const crdNames = options.crds === false ? [] : await applyCrds(api);
      await supervisor.waitFor(`CRDs established (${crdNames.join(', ')})`, 30_000, async () => {
        for (const name of crdNames) {
          const crd = await api.call<{ status?: { conditions?: Condition[] } }>(
            'GET',
            `/apis/apiextensions.k8s.io/v1/customresourcedefinitions/${name}`,
          );
          const established = crd?.status?.conditions?.find((c) => c.type === 'Established');
          if (established?.status !== 'True') return false;
        }
        return true;
      });
      progress('CRDs established');
    })();
    // Pods cannot be created before the namespace's `default` ServiceAccount exists; the serviceaccount
    // controller would make it a few seconds later, so it is made here (other namespaces get theirs
    // from the controller).
    const serviceAccount = api.call(
      'POST',
      '/api/v1/namespaces/default/serviceaccounts',
      { apiVersion: 'v1', kind: 'ServiceAccount', metadata: { name: 'default' } },
      [409],
    );
    const controllers = supervisor.waitFor(
      'kube-scheduler /healthz and the controllers of kube-controller-manager',
      60_000,
      async () => {
        const [a, b] = await Promise.all([
          httpsGet(kcmPort, '/healthz', {}),
          httpsGet(schedulerPort, '/healthz', {}),
        ]);
        if (a.status !== 200 || b.status !== 200) return false;
        // /healthz answers seconds before the controller manager starts its controllers. Until then
        // claims stay unbound and the first pods fail to schedule and wait out the scheduler's
        // back-off. The root CA publisher starts with the others and leaves a visible trace.
        const ca = await api.call(
          'GET',
          '/api/v1/namespaces/default/configmaps/kube-root-ca.crt',
          undefined,
          [404],
        );
        return ca !== undefined;
      },
      [join(dir, 'logs', 'kube-controller-manager.log'), join(dir, 'logs', 'kube-scheduler.log')],
    );
    const nodes = (async () => {
      if (nodeCount === 0) return;
      await supervisor.waitFor(
        `${nodeCount} Ready nodes`,
        60_000,
        async () => {
          const list = await api.call<{ items: { status?: { conditions?: Condition[] } }[] }>(
            'GET',
            `/api/v1/nodes?labelSelector=${encodeURIComponent(`${LABEL_NODE_AGENT}=${agentName}`)}`,
          );
          // node-lifecycle lifts the not-ready taint of a new node a little later; the scheduler
          // retries a pod on that node update, so it is not waited for here.
          const ready = (list?.items ?? []).filter((n) =>
            n.status?.conditions?.some((c) => c.type === 'Ready' && c.status === 'True'),
          );
          return ready.length >= nodeCount;
        },
        agentLog === undefined ? [] : [agentLog],
      );
      progress(`${nodeCount} nodes Ready`);
    })();
    const realNode = options.realNode
      ? startRealNode({ dir, apiPort, api, supervisor, tools, pki, progress, cpus: options.realNodeCpus })
      : Promise.resolve(undefined);
    const [, , , , real] = await Promise.all([crds, serviceAccount, controllers, nodes, realNode]);

    const startSeconds = (performance.now() - started) / 1000;
    const info: ClusterInfo = {
      dir,
      kubeconfigPath,
      server,
      port: apiPort,
      caFile: pki.caCert,
      kubectl: tools.kubectl,
      agentName,
      nodeNames: real === undefined ? nodeNames : [...nodeNames, real.name],
      startSeconds,
      ...(real === undefined ? {} : { realNode: real }),
    };
    writeFileSync(join(dir, CLUSTER_FILE), `${JSON.stringify(info, null, 2)}\n`);
    if (options.detached) for (const p of supervisor.processes) p.child.unref();
    progress(`cluster up in ${startSeconds.toFixed(1)} s`);
    let stopped: Promise<void> | undefined;
    return {
      ...info,
      stop: () => {
        stopped ??= stopClusterDir(dir, { removeDir: true });
        return stopped;
      },
    };
  } catch (error) {
    supervisor.abort();
    await stopClusterDir(dir, { removeDir: ownDir && !process.env['TENSILE_KEEP_CLUSTER'] });
    if (existsSync(dir)) progress(`state kept in ${dir}`);
    throw error;
  }
}
