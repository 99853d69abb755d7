/**
 * Volumes as local folders, and the PersistentVolumes that make claims bindable.
 *
 *   persistentVolumeClaim → <state>/volumes/<namespace>/<claim>  (shared by every pod of that claim)
 *   emptyDir              → <state>/pods/<pod uid>/volumes/<volume>  (removed with the pod)
 *   hostPath              → the path itself
 *   configMap, secret, downwardAPI, projected → files written to <state>/pods/<pod uid>/volumes/<volume>
 *
 * There is no storage provisioner in the local cluster: for every unbound claim the agent creates a
 * hostPath PersistentVolume pre-bound to it (claimRef), with the claim's class, access modes and size,
 * so kube-controller-manager binds it and the scheduler accepts pods that use it. When the claim is
 * deleted the volume is Released; the agent then deletes it and, unless a new claim of the same name
 * exists, its folder.
 */
import { chmodSync, mkdirSync, rmSync, writeFileSync } from 'node:fs';
import { dirname, join, normalize } from 'node:path';
import {
  CoreV1Api,
  type KubeConfig,
  type V1PersistentVolume,
  type V1PersistentVolumeClaim,
  type V1Pod,
  type V1Volume,
} from '@kubernetes/client-node';
import type winston from 'winston';
import { kubeconfigYaml } from '../lib/kubeconfig.ts';
import type { AgentConfig } from './config.ts';
import { LABEL_NODE_AGENT } from './config.ts';
import { ContainerConfigError, fieldRefValue, type MountMapping } from './container.ts';
import { call, type ResourceWatch, watchResource } from './kube.ts';

export function claimFolder(stateDir: string, namespace: string, claim: string): string {
  return join(stateDir, 'volumes', namespace, claim);
}

export function podFolder(stateDir: string, uid: string): string {
  return join(stateDir, 'pods', uid);
}

/** A file path inside a volume folder; `..` that would escape it is refused. */
function inside(dir: string, relative: string): string {
  const path = normalize(join(dir, relative));
  if (!path.startsWith(`${dir}/`))
    throw new ContainerConfigError(`volume item path ${relative} leaves the volume`);
  return path;
}

function writeItem(dir: string, relative: string, content: string | Buffer, mode?: number): void {
  const path = inside(dir, relative);
  mkdirSync(dirname(path), { recursive: true });
  writeFileSync(path, content, { mode: mode ?? 0o644 });
}

export interface PreparedVolumes {
  readonly mounts: MountMapping[];
  /** A kubeconfig for the pod's service account, when the pod mounts a service-account token. */
  readonly kubeconfig?: string;
}

export class VolumePreparer {
  private readonly core: CoreV1Api;

  constructor(
    kc: KubeConfig,
    private readonly config: AgentConfig,
  ) {
    this.core = kc.makeApiClient(CoreV1Api);
  }

  async configMapData(namespace: string, name: string): Promise<Record<string, string | Buffer> | undefined> {
    const cm = await call(
      `read configmap ${namespace}/${name}`,
      () => this.core.readNamespacedConfigMap({ namespace, name }),
      {
        notFound: true,
      },
    );
    if (cm === undefined) return undefined;
    const out: Record<string, string | Buffer> = { ...(cm.data ?? {}) };
    for (const [k, v] of Object.entries(cm.binaryData ?? {})) out[k] = Buffer.from(v, 'base64');
    return out;
  }

  async secretData(namespace: string, name: string): Promise<Record<string, Buffer> | undefined> {
    const secret = await call(
      `read secret ${namespace}/${name}`,
      () => this.core.readNamespacedSecret({ namespace, name }),
      {
        notFound: true,
      },
    );
    if (secret === undefined) return undefined;
    const out: Record<string, Buffer> = {};
    for (const [k, v] of Object.entries(secret.data ?? {})) out[k] = Buffer.from(v, 'base64');
    for (const [k, v] of Object.entries(secret.stringData ?? {})) out[k] = Buffer.from(v);
    return out;
  }

  private async writeKeys(
    dir: string,
    what: string,
    name: string,
    data: Record<string, string | Buffer> | undefined,
    items: readonly { key: string; path: string; mode?: number }[] | undefined,
    optional: boolean | undefined,
    defaultMode: number | undefined,
  ): Promise<void> {
    if (data === undefined) {
      if (optional) return;
      throw new ContainerConfigError(`${what} "${name}" not found`, 'ContainerCreating');
    }
    const selected: readonly { key: string; path: string; mode?: number }[] =
      items ?? Object.keys(data).map((key) => ({ key, path: key }));
    for (const item of selected) {
      const value = data[item.key];
      if (value === undefined) {
        if (optional) continue;
        throw new ContainerConfigError(`${what} "${name}" has no key ${item.key}`, 'ContainerCreating');
      }
      writeItem(dir, item.path, value, item.mode ?? defaultMode);
    }
  }

  private async serviceAccountToken(
    pod: V1Pod,
    audience: string | undefined,
    expirationSeconds: number | undefined,
  ) {
    const namespace = pod.metadata?.namespace ?? 'default';
    const name = pod.spec?.serviceAccountName ?? 'default';
    const response = await call(`token for serviceaccount ${namespace}/${name}`, () =>
      this.core.createNamespacedServiceAccountToken({
        namespace,
        name,
        body: {
          spec: {
            audiences: audience === undefined ? [] : [audience],
            expirationSeconds: expirationSeconds ?? 3607,
            boundObjectRef: {
              apiVersion: 'v1',
              kind: 'Pod',
              name: pod.metadata?.name ?? '',
              uid: pod.metadata?.uid ?? '',
            },
          },
        },
      }),
    );
    const token = response?.status?.token;
    if (token === undefined)
      throw new ContainerConfigError(`no token for serviceaccount ${namespace}/${name}`);
    return token;
  }

  private async volumeFolder(
    pod: V1Pod,
    volume: V1Volume,
    scratch: string,
    tokens: string[],
  ): Promise<string> {
    const namespace = pod.metadata?.namespace ?? 'default';
    const dir = join(scratch, 'volumes', volume.name);
    if (volume.persistentVolumeClaim !== undefined) {
      const folder = claimFolder(this.config.stateDir, namespace, volume.persistentVolumeClaim.claimName);
      mkdirSync(folder, { recursive: true });
      return folder;
    }
    if (volume.hostPath !== undefined) {
      const type = volume.hostPath.type ?? '';
      if (type === 'DirectoryOrCreate') mkdirSync(volume.hostPath.path, { recursive: true });
      return volume.hostPath.path;
    }
    if (volume.emptyDir !== undefined) {
      mkdirSync(dir, { recursive: true });
      return dir;
    }
    if (volume.configMap !== undefined) {
      mkdirSync(dir, { recursive: true });
      const name = volume.configMap.name ?? '';
      await this.writeKeys(
        dir,
        'configmap',
        name,
        await this.configMapData(namespace, name),
        volume.configMap.items,
        volume.configMap.optional,
        volume.configMap.defaultMode,
      );
      return dir;
    }
    if (volume.secret !== undefined) {
      mkdirSync(dir, { recursive: true });
      const name = volume.secret.secretName ?? '';
      await this.writeKeys(
        dir,
        'secret',
        name,
        await this.secretData(namespace, name),
        volume.secret.items,
        volume.secret.optional,
        volume.secret.defaultMode ?? 0o600,
      );
      return dir;
    }
    if (volume.downwardAPI !== undefined) {
      mkdirSync(dir, { recursive: true });
      for (const item of volume.downwardAPI.items ?? []) {
        if (item.fieldRef !== undefined)
          writeItem(dir, item.path, fieldRefValue(pod, item.fieldRef.fieldPath, this.config.podIp));
      }
      return dir;
    }
    if (volume.projected !== undefined) {
      mkdirSync(dir, { recursive: true });
      for (const source of volume.projected.sources ?? []) {
        if (source.configMap !== undefined) {
          const name = source.configMap.name ?? '';
          await this.writeKeys(
            dir,
            'configmap',
            name,
            await this.configMapData(namespace, name),
            source.configMap.items,
            source.configMap.optional,
            volume.projected.defaultMode,
          );
        } else if (source.secret !== undefined) {
          const name = source.secret.name ?? '';
          await this.writeKeys(
            dir,
            'secret',
            name,
            await this.secretData(namespace, name),
            source.secret.items,
            source.secret.optional,
            volume.projected.defaultMode,
          );
        } else if (source.downwardAPI !== undefined) {
          for (const item of source.downwardAPI.items ?? []) {
            if (item.fieldRef !== undefined)
              writeItem(dir, item.path, fieldRefValue(pod, item.fieldRef.fieldPath, this.config.podIp));
          }
        } else if (source.serviceAccountToken !== undefined) {
          const token = await this.serviceAccountToken(
            pod,
            source.serviceAccountToken.audience,
            source.serviceAccountToken.expirationSeconds,
          );
          writeItem(dir, source.serviceAccountToken.path, token, 0o600);
          tokens.push(token);
        }
        // clusterTrustBundle and podCertificate sources are not supported; they are left out.
      }
      return dir;
    }
    throw new ContainerConfigError(
      `volume ${volume.name}: this volume type is not supported by the node agent (use persistentVolumeClaim, emptyDir, hostPath, configMap, secret, downwardAPI or projected)`,
    );
  }

  /** Creates or fills every volume the first container mounts and maps its mount paths. */
  async prepare(pod: V1Pod): Promise<PreparedVolumes> {
    const scratch = podFolder(this.config.stateDir, pod.metadata?.uid ?? 'unknown');
    mkdirSync(scratch, { recursive: true });
    const container = pod.spec?.containers[0];
    const volumes = new Map((pod.spec?.volumes ?? []).map((v) => [v.name, v]));
    const folders = new Map<string, string>();
    const tokens: string[] = [];
    const mounts: MountMapping[] = [];
    for (const mount of container?.volumeMounts ?? []) {
      const volume = volumes.get(mount.name);
      if (volume === undefined)
        throw new ContainerConfigError(`volume mount ${mount.name}: no such volume in the pod`);
      let folder = folders.get(mount.name);
      if (folder === undefined) {
        folder = await this.volumeFolder(pod, volume, scratch, tokens);
        folders.set(mount.name, folder);
      }
      const subPath = mount.subPath ?? '';
      const localPath = subPath === '' ? folder : inside(folder, subPath);
      if (
        subPath !== '' &&
        volume.configMap === undefined &&
        volume.secret === undefined &&
        volume.projected === undefined
      )
        mkdirSync(localPath, { recursive: true });
      mounts.push({ mountPath: mount.mountPath, localPath });
    }
    const token = tokens[0];
    if (token === undefined) return { mounts };
    // Processes cannot read /var/run/secrets/...: a kubeconfig (KUBECONFIG) carries the same identity.
    const kubeconfig = join(scratch, 'kubeconfig');
    writeFileSync(
      kubeconfig,
      kubeconfigYaml({
        server: `https://${this.config.apiServer.host}:${this.config.apiServer.port}`,
        caFile: this.config.caFile,
        credentials: { token },
        name: `${pod.metadata?.namespace}-${pod.spec?.serviceAccountName ?? 'default'}`,
        namespace: pod.metadata?.namespace ?? 'default',
      }),
      { mode: 0o600 },
    );
    return { mounts, kubeconfig };
  }

  removePodFolder(uid: string): void {
    rmSync(podFolder(this.config.stateDir, uid), { recursive: true, force: true });
  }
}

/** Creates the PersistentVolume that binds an unbound claim, and cleans up released ones. */
export class VolumeProvisioner implements AsyncDisposable {
  private readonly core: CoreV1Api;
  private claims?: ResourceWatch<V1PersistentVolumeClaim>;
  private volumes?: ResourceWatch<V1PersistentVolume>;

  constructor(
    private readonly kc: KubeConfig,
    private readonly config: AgentConfig,
    private readonly log: winston.Logger,
  ) {
    this.core = kc.makeApiClient(CoreV1Api);
  }

  async start(): Promise<void> {
    const selector = `${LABEL_NODE_AGENT}=${this.config.agentName}`;
    this.volumes = await watchResource<V1PersistentVolume>(
      this.kc,
      '/api/v1/persistentvolumes',
      () => this.core.listPersistentVolume({ labelSelector: selector }),
      { add: (pv) => void this.onVolume(pv), update: (pv) => void this.onVolume(pv) },
      { labelSelector: selector, log: this.log },
    );
    this.claims = await watchResource<V1PersistentVolumeClaim>(
      this.kc,
      '/api/v1/persistentvolumeclaims',
      () => this.core.listPersistentVolumeClaimForAllNamespaces(),
      { add: (c) => void this.onClaim(c), update: (c) => void this.onClaim(c) },
      { log: this.log },
    );
  }

  private async onClaim(claim: V1PersistentVolumeClaim): Promise<void> {
    const meta = claim.metadata ?? {};
    if (meta.deletionTimestamp || claim.spec?.volumeName || claim.status?.phase === 'Bound') return;
    const namespace = meta.namespace ?? 'default';
    const name = meta.name ?? '';
    const folder = claimFolder(this.config.stateDir, namespace, name);
    mkdirSync(folder, { recursive: true });
    // Writable by any uid: the real node's containers run as their images' non-root users.
    chmodSync(folder, 0o777);
    const volume: V1PersistentVolume = {
      apiVersion: 'v1',
      kind: 'PersistentVolume',
      metadata: {
        name: `pvc-${meta.uid}`,
        labels: { [LABEL_NODE_AGENT]: this.config.agentName },
        annotations: { 'tensile.dev/claim': `${namespace}/${name}` },
      },
      spec: {
        capacity: { storage: claim.spec?.resources?.requests?.['storage'] ?? '1Gi' },
        accessModes: claim.spec?.accessModes?.length ? claim.spec.accessModes : ['ReadWriteOnce'],
        hostPath: { path: folder, type: 'DirectoryOrCreate' },
        persistentVolumeReclaimPolicy: 'Retain',
        storageClassName: claim.spec?.storageClassName ?? '',
        ...(claim.spec?.volumeMode === undefined ? {} : { volumeMode: claim.spec.volumeMode }),
        claimRef: { apiVersion: 'v1', kind: 'PersistentVolumeClaim', namespace, name, uid: meta.uid ?? '' },
      },
    };
    try {
      const created = await call(
        `create persistentvolume for ${namespace}/${name}`,
        () => this.core.createPersistentVolume({ body: volume }),
        { alreadyExists: true },
      );
      if (created !== undefined)
        this.log.info('provisioned volume', { claim: `${namespace}/${name}`, folder });
    } catch (error) {
      this.log.warn('cannot provision volume', { claim: `${namespace}/${name}`, error: String(error) });
    }
  }

  private async onVolume(volume: V1PersistentVolume): Promise<void> {
    const phase = volume.status?.phase;
    if (phase !== 'Released' && phase !== 'Failed') return;
    const ref = volume.spec?.claimRef;
    const name = volume.metadata?.name ?? '';
    try {
      await call(`delete persistentvolume ${name}`, () => this.core.deletePersistentVolume({ name }), {
        notFound: true,
      });
      const path = volume.spec?.hostPath?.path;
      const successor = this.claims
        ?.list()
        .find(
          (c) =>
            c.metadata?.namespace === ref?.namespace &&
            c.metadata?.name === ref?.name &&
            c.metadata?.uid !== ref?.uid,
        );
      if (
        path !== undefined &&
        successor === undefined &&
        path.startsWith(join(this.config.stateDir, 'volumes'))
      )
        rmSync(path, { recursive: true, force: true });
      this.log.info('released volume deleted', { volume: name, claim: `${ref?.namespace}/${ref?.name}` });
    } catch (error) {
      this.log.warn('cannot delete released volume', { volume: name, error: String(error) });
    }
  }

  async [Symbol.asyncDispose](): Promise<void> {
    await this.claims?.stop();
    await this.volumes?.stop();
  }
}
