/**
 * A container's process as the node agent runs it: environment (values, field references, ConfigMap
 * and Secret keys, `$(VAR)` expansion), and the mapping of container paths to local folders.
 *
 * A local process cannot see the container's filesystem, so every env value and argument that starts
 * with a volume's mountPath (or is `--flag=<that path>`) is rewritten to the folder the volume maps to.
 * Paths buried inside a value (JSON, a URL, the middle of a string) are not rewritten.
 */
import type { V1Container, V1EnvVar, V1Pod } from '@kubernetes/client-node';
import type { ContainerArgv } from './images.ts';

export class ContainerConfigError extends Error {
  override readonly name = 'ContainerConfigError';
  /** The waiting reason the kubelet would report, e.g. CreateContainerConfigError. */
  constructor(
    message: string,
    readonly reason = 'CreateContainerConfigError',
  ) {
    super(message);
  }
}

export interface MountMapping {
  readonly mountPath: string;
  readonly localPath: string;
}

function normalizeMount(path: string): string {
  return path.length > 1 ? path.replace(/\/+$/, '') : path;
}

/** `value` rewritten when it is a mountPath or lies under one (longest mountPath wins). */
export function rewritePath(value: string, mounts: readonly MountMapping[]): string {
  let best: MountMapping | undefined;
  for (const m of mounts) {
    const mount = normalizeMount(m.mountPath);
    const under = value === mount || value.startsWith(mount === '/' ? '/' : `${mount}/`);
    if (under && (best === undefined || mount.length > normalizeMount(best.mountPath).length)) best = m;
  }
  if (best === undefined) return value;
  const mount = normalizeMount(best.mountPath);
  const rest = value.slice(mount === '/' ? 0 : mount.length);
  return rest === '' ? best.localPath : `${best.localPath.replace(/\/+$/, '')}/${rest.replace(/^\/+/, '')}`;
}

/** Like rewritePath, and also the value part of `--flag=/path` or `-f=/path`. */
export function rewriteArgument(arg: string, mounts: readonly MountMapping[]): string {
  const flag = /^(--?[^=\s]+=)(\/.*)$/.exec(arg);
  if (flag?.[1] !== undefined && flag[2] !== undefined) return flag[1] + rewritePath(flag[2], mounts);
  return rewritePath(arg, mounts);
}

/** Kubernetes `$(VAR)` expansion: unknown references stay as written, `$$(VAR)` escapes to `$(VAR)`. */
export function expandReferences(text: string, vars: ReadonlyMap<string, string>): string {
  return text.replace(/\$\$|\$\(([^)]*)\)/g, (match, name: string | undefined) => {
    if (match === '$$') return '$';
    if (name !== undefined && vars.has(name)) return vars.get(name) as string;
    return match;
  });
}

/** The value of a downward-API field path, as the kubelet reports it. */
export function fieldRefValue(pod: V1Pod, fieldPath: string, podIP: string): string {
  const meta = pod.metadata ?? {};
  const keyed = /^metadata\.(labels|annotations)\['([^']+)'\]$/.exec(fieldPath);
  if (keyed !== null) {
    const source = keyed[1] === 'labels' ? meta.labels : meta.annotations;
    return source?.[keyed[2] ?? ''] ?? '';
  }
  const mapText = (m: Record<string, string> | undefined) =>
    Object.entries(m ?? {})
      .sort(([a], [b]) => a.localeCompare(b))
      .map(([k, v]) => `${k}="${v}"`)
      .join('\n');
  switch (fieldPath) {
    case 'metadata.name':
      return meta.name ?? '';
    case 'metadata.namespace':
      return meta.namespace ?? '';
    case 'metadata.uid':
      return meta.uid ?? '';
    case 'metadata.labels':
      return mapText(meta.labels);
    case 'metadata.annotations':
      return mapText(meta.annotations);
    case 'spec.nodeName':
      return pod.spec?.nodeName ?? '';
    case 'spec.serviceAccountName':
      return pod.spec?.serviceAccountName ?? '';
    case 'status.podIP':
    case 'status.podIPs':
    case 'status.hostIP':
    case 'status.hostIPs':
      return podIP;
    default:
      throw new ContainerConfigError(`unsupported fieldRef ${fieldPath}`);
  }
}

const QUANTITY = /^\+?([0-9.]+)(m|k|M|G|T|P|E|Ki|Mi|Gi|Ti|Pi|Ei)?$/;
const SCALE: Record<string, number> = {
  '': 1,
  m: 1e-3,
  k: 1e3,
  M: 1e6,
  G: 1e9,
  T: 1e12,
  P: 1e15,
  E: 1e18,
  Ki: 2 ** 10,
  Mi: 2 ** 20,
  Gi: 2 ** 30,
  Ti: 2 ** 40,
  Pi: 2 ** 50,
  Ei: 2 ** 60,
};

export function parseQuantity(text: string | number): number {
  if (typeof text === 'number') return text;
  const trimmed = text.trim();
  if (/^\+?[0-9.]+[eE][+-]?[0-9]+$/.test(trimmed)) return Number(trimmed);
  const match = QUANTITY.exec(trimmed);
  if (match === null) throw new ContainerConfigError(`cannot read the quantity ${text}`);
  return Number(match[1]) * (SCALE[match[2] ?? ''] ?? 1);
}

/** resourceFieldRef: the container's limit (or request), divided by the divisor and rounded up. */
export function resourceFieldValue(
  container: V1Container,
  resource: string,
  divisor: string | number | undefined,
  nodeAllocatable: Record<string, string>,
): string {
  const [kind, name] = resource.split('.') as [string, string];
  const list = kind === 'requests' ? container.resources?.requests : container.resources?.limits;
  const raw = list?.[name] ?? (kind === 'limits' ? nodeAllocatable[name] : undefined) ?? '0';
  const value = parseQuantity(raw) / parseQuantity(divisor ?? 1);
  return String(Math.ceil(value));
}

export interface EnvSources {
  /** A ConfigMap's data, or undefined when it does not exist. */
  configMap(name: string): Promise<Record<string, string> | undefined>;
  /** A Secret's decoded data, or undefined when it does not exist. */
  secret(name: string): Promise<Record<string, string> | undefined>;
}

export interface EnvContext {
  readonly pod: V1Pod;
  readonly container: V1Container;
  readonly podIP: string;
  readonly nodeAllocatable: Record<string, string>;
  readonly mounts: readonly MountMapping[];
  readonly sources: EnvSources;
}

async function envVarValue(variable: V1EnvVar, ctx: EnvContext, vars: Map<string, string>) {
  const from = variable.valueFrom;
  if (from === undefined) return expandReferences(variable.value ?? '', vars);
  if (from.fieldRef !== undefined) return fieldRefValue(ctx.pod, from.fieldRef.fieldPath, ctx.podIP);
  if (from.resourceFieldRef !== undefined)
    return resourceFieldValue(
      ctx.container,
      from.resourceFieldRef.resource,
      from.resourceFieldRef.divisor,
      ctx.nodeAllocatable,
    );
  const ref = from.configMapKeyRef ?? from.secretKeyRef;
  if (ref !== undefined) {
    const what = from.configMapKeyRef !== undefined ? 'configmap' : 'secret';
    const data = await (what === 'configmap'
      ? ctx.sources.configMap(ref.name ?? '')
      : ctx.sources.secret(ref.name ?? ''));
    const value = data?.[ref.key];
    if (value === undefined) {
      if (ref.optional) return undefined;
      throw new ContainerConfigError(
        data === undefined
          ? `${what} "${ref.name}" not found`
          : `couldn't find key ${ref.key} in ${what} ${ctx.pod.metadata?.namespace}/${ref.name}`,
      );
    }
    return value;
  }
  throw new ContainerConfigError(`env ${variable.name}: unsupported valueFrom`);
}

/**
 * The container's environment in Kubernetes order: envFrom sources, then env entries (later ones win),
 * each value expanded against what came before, then rewritten for the volume mounts.
 */
export async function containerEnvironment(
  ctx: EnvContext,
  base: Record<string, string>,
): Promise<Map<string, string>> {
  const vars = new Map<string, string>(Object.entries(base));
  for (const source of ctx.container.envFrom ?? []) {
    const ref = source.configMapRef ?? source.secretRef;
    if (ref === undefined) continue;
    const what = source.configMapRef !== undefined ? 'configmap' : 'secret';
    const data = await (what === 'configmap'
      ? ctx.sources.configMap(ref.name ?? '')
      : ctx.sources.secret(ref.name ?? ''));
    if (data === undefined) {
      if (ref.optional) continue;
      throw new ContainerConfigError(`${what} "${ref.name}" not found`);
    }
    for (const [key, value] of Object.entries(data)) vars.set(`${source.prefix ?? ''}${key}`, value);
  }
  for (const variable of ctx.container.env ?? []) {
    const value = await envVarValue(variable, ctx, vars);
    if (value !== undefined) vars.set(variable.name, value);
  }
  // Only what the pod set: PATH, HOME and the like describe this machine already.
  for (const [name, value] of vars) if (base[name] !== value) vars.set(name, rewritePath(value, ctx.mounts));
  return vars;
}

/**
 * argv after `$(VAR)` expansion with the container's environment and the mount rewrite, both applied
 * to the words the pod gave only: as in Kubernetes, the image's entrypoint and cmd are taken as they
 * are, and here they are paths on this machine that may well lie below a mount path (a checkout in
 * /tmp, a pod with an emptyDir at /tmp).
 */
export function finalArgv(
  { argv, fromPod }: ContainerArgv,
  env: ReadonlyMap<string, string>,
  mounts: readonly MountMapping[],
) {
  return argv.map((arg, i) => {
    if (fromPod[i] !== true) return arg;
    const expanded = expandReferences(arg, env);
    // The executable itself: a path on this machine unless it lies in a volume.
    return i === 0 ? rewritePath(expanded, mounts) : rewriteArgument(expanded, mounts);
  });
}
