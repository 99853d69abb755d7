/**
 * `tensile export JOB`: a cluster job's trained model, copied from the claim `status.model` names to a
 * local folder. When the claim's PersistentVolume is a hostPath or local volume whose folder is on this
 * machine (a single-node or local cluster), the files are copied from there; otherwise a short-lived
 * pod mounts the claim read-only and the files come out through `exec` (what `kubectl cp` does), and the
 * pod is deleted. Either way every file is checked against the SHA-256 in the model's tensile.json.
 */
import { createHash, randomBytes } from 'node:crypto';
import { cpSync, existsSync, mkdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { dirname, join, posix, resolve } from 'node:path';
import { Writable } from 'node:stream';
import type { CoreV1Api, KubeConfig, V1Pod, V1Status } from '@kubernetes/client-node';
import type { TrainingJob } from '../api/training-job.ts';
import type { CommandIo } from './args.ts';
import { ExportError } from './export-error.ts';

export interface ClusterExportOptions {
  readonly out?: string | undefined;
  readonly image?: string | undefined;
  /** How long to wait for the export pod to run (default 5 minutes). */
  readonly podTimeoutMs?: number;
}

/** `pvc://<claim>/<path>` → the claim and the folder inside it. */
export function parseModelUri(uri: string): { claim: string; path: string } {
  const match = /^pvc:\/\/([a-z0-9]([-.a-z0-9]*[a-z0-9])?)\/(.+)$/.exec(uri);
  if (match === null) throw new ExportError(`status.model.uri ${uri} is not pvc://<claim>/<path>`);
  const path = posix.normalize(match[3] ?? '');
  if (path.startsWith('..') || path.startsWith('/'))
    throw new ExportError(`status.model.uri ${uri}: the path leaves the claim`);
  return { claim: match[1] ?? '', path };
}

interface ModelManifest {
  readonly files?: Record<string, { sha256?: string }>;
}

/** Checks every file tensile.json lists against its SHA-256; returns how many were checked. */
export function verifyModelFolder(dir: string): number {
  const file = join(dir, 'tensile.json');
  if (!existsSync(file)) throw new ExportError(`${file} is missing: not a Tensile model folder`);
  const manifest = JSON.parse(readFileSync(file, 'utf8')) as ModelManifest;
  const files = Object.entries(manifest.files ?? {});
  for (const [name, { sha256 }] of files) {
    const path = join(dir, name);
    if (!existsSync(path)) throw new ExportError(`${name} is missing from the copied model`);
    const actual = createHash('sha256').update(readFileSync(path)).digest('hex');
    if (actual !== sha256) throw new ExportError(`${name}: SHA-256 ${actual}, tensile.json says ${sha256}`);
  }
  return files.length;
}

/** The claim's folder on this machine, when its volume is a hostPath or local one that is here. */
async function localFolder(core: CoreV1Api, namespace: string, claim: string): Promise<string | undefined> {
  try {
    const pvc = await core.readNamespacedPersistentVolumeClaim({ namespace, name: claim });
    const volume = pvc.spec?.volumeName;
    if (volume === undefined || volume === '') return undefined;
    const pv = await core.readPersistentVolume({ name: volume });
    const path = pv.spec?.hostPath?.path ?? pv.spec?.local?.path;
    return path !== undefined && existsSync(path) ? path : undefined;
  } catch {
    // No right to read PersistentVolumes (cluster-scoped), or none: the pod way works without.
    return undefined;
  }
}

/** Prints every file under a folder as JSON lines {path, data (base64)}; runs in the export pod. */
const DUMP_SCRIPT = `const fs=require('fs'),p=require('path');const root=process.argv[1];
const walk=(d)=>{for(const e of fs.readdirSync(d,{withFileTypes:true})){const f=p.join(d,e.name);
if(e.isDirectory())walk(f);else if(e.isFile())process.stdout.write(JSON.stringify({path:p.relative(root,f),
data:fs.readFileSync(f).toString('base64')})+'\\n');}};walk(root);`;

function exportPod(job: TrainingJob, claim: string, image: string): V1Pod {
  const name = `${job.metadata.name}-export-${randomBytes(3).toString('hex')}`.slice(0, 63);
  return {
    apiVersion: 'v1',
    kind: 'Pod',
    metadata: {
      name,
      namespace: job.metadata.namespace ?? 'default',
      // Not the worker labels: the operator must not take this pod for one of the job's workers.
      labels: { 'tensile.dev/export-of': job.metadata.name },
    },
    spec: {
      restartPolicy: 'Never',
      // Gone by itself should this command be interrupted before it deletes the pod.
      activeDeadlineSeconds: 1800,
      ...(job.spec.worker.nodeSelector === undefined ? {} : { nodeSelector: job.spec.worker.nodeSelector }),
      ...(job.spec.worker.tolerations === undefined ? {} : { tolerations: job.spec.worker.tolerations }),
      securityContext: { runAsNonRoot: true, runAsUser: 1000, seccompProfile: { type: 'RuntimeDefault' } },
      containers: [
        {
          name: 'export',
          image,
          command: ['sleep', '1800'],
          volumeMounts: [{ name: 'model', mountPath: '/model', readOnly: true }],
          securityContext: { allowPrivilegeEscalation: false, capabilities: { drop: ['ALL'] } },
          resources: { requests: { cpu: '100m', memory: '128Mi' }, limits: { memory: '512Mi' } },
        },
      ],
      volumes: [{ name: 'model', persistentVolumeClaim: { claimName: claim, readOnly: true } }],
    },
  };
}

async function waitRunning(
  core: CoreV1Api,
  namespace: string,
  name: string,
  timeoutMs: number,
): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const pod = await core.readNamespacedPod({ namespace, name });
    const phase = pod.status?.phase;
    if (phase === 'Running') return;
    if (phase === 'Failed' || phase === 'Succeeded')
      throw new ExportError(`export pod ${namespace}/${name} ended (${phase}) before it could be read`);
    if (Date.now() > deadline) {
      const why = pod.status?.conditions?.find((c) => c.status === 'False')?.message ?? phase ?? 'Pending';
      throw new ExportError(
        `export pod ${namespace}/${name} is not running after ${timeoutMs / 1000} s: ${why}`,
      );
    }
    await new Promise((r) => setTimeout(r, 1000));
  }
}

/** Runs the dump script in the pod through exec and writes what it prints under `out`. */
async function copyThroughExec(config: KubeConfig, namespace: string, pod: string, dir: string, out: string) {
  const { Exec } = await import('@kubernetes/client-node');
  const chunks: Buffer[] = [];
  const errors: Buffer[] = [];
  const sink = (into: Buffer[]) =>
    new Writable({
      write(chunk: Buffer, _encoding, done) {
        into.push(chunk);
        done();
      },
    });
  const status = await new Promise<V1Status>((resolveStatus, reject) => {
    new Exec(config)
      .exec(
        namespace,
        pod,
        'export',
        ['node', '-e', DUMP_SCRIPT, dir],
        sink(chunks),
        sink(errors),
        null,
        false,
        resolveStatus,
      )
      .catch(reject);
  });
  if (status.status !== 'Success')
    throw new ExportError(
      `reading ${dir} in pod ${namespace}/${pod} failed: ${status.message ?? ''} ${Buffer.concat(errors).toString().trim()}`,
    );
  for (const line of Buffer.concat(chunks).toString('utf8').split('\n')) {
    if (line === '') continue;
    const entry = JSON.parse(line) as { path: string; data: string };
    const target = resolve(out, entry.path);
    if (!target.startsWith(`${resolve(out)}/`))
      throw new ExportError(`${entry.path} leaves the output folder`);
    mkdirSync(dirname(target), { recursive: true });
    writeFileSync(target, Buffer.from(entry.data, 'base64'));
  }
}

/** Copies the model of a job with status.model into `out`; returns how it went. */
export async function copyClusterModel(
  config: KubeConfig,
  job: TrainingJob,
  options: ClusterExportOptions,
  io: CommandIo,
): Promise<{ dir: string; via: string; files: number }> {
  const { CoreV1Api } = await import('@kubernetes/client-node');
  const core = config.makeApiClient(CoreV1Api);
  const namespace = job.metadata.namespace ?? 'default';
  const model = job.status?.model;
  if (model === undefined) throw new ExportError(`${namespace}/${job.metadata.name} has no status.model`);
  const { claim, path } = parseModelUri(model.uri);
  const out = resolve(options.out ?? `${job.metadata.name}-model`);
  if (existsSync(join(out, 'tensile.json')))
    throw new ExportError(`${out} holds a model already; remove it or pass another --out`);
  const created = !existsSync(out);
  mkdirSync(out, { recursive: true });
  const local = await localFolder(core, namespace, claim);
  if (local !== undefined && existsSync(join(local, path))) {
    cpSync(join(local, path), out, { recursive: true });
    return { dir: out, via: `the volume's folder ${join(local, path)}`, files: verifyModelFolder(out) };
  }
  const pods = await core.listNamespacedPod({
    namespace,
    labelSelector: `tensile.dev/job-name=${job.metadata.name}`,
  });
  const image =
    options.image ?? job.spec.worker.image ?? pods.items.flatMap((p) => p.spec?.containers ?? [])[0]?.image;
  if (image === undefined)
    throw new ExportError(
      'no image to read the claim with (the job names none and its pods are gone): pass --image (the worker image)',
    );
  const pod = exportPod(job, claim, image);
  const name = pod.metadata?.name ?? '';
  io.err(`starting pod ${namespace}/${name} (${image}) to read ${model.uri}`);
  await core.createNamespacedPod({ namespace, body: pod });
  try {
    await waitRunning(core, namespace, name, options.podTimeoutMs ?? 300_000);
    await copyThroughExec(config, namespace, name, posix.join('/model', path), out);
    return { dir: out, via: `pod ${namespace}/${name}`, files: verifyModelFolder(out) };
  } catch (error) {
    if (created) rmSync(out, { recursive: true, force: true });
    throw error;
  } finally {
    await core.deleteNamespacedPod({ namespace, name, gracePeriodSeconds: 0 }).catch(() => undefined);
  }
}
