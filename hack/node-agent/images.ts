/**
 * What an image "is" on this machine: the image map gives each image pattern an entrypoint and a cmd,
 * and the container's command/args combine with them as Docker and Kubernetes do. Pure.
 */
import type { ImageEntry, ImageMap } from './config.ts';

export interface ImageMatch {
  readonly pattern: string;
  readonly entry: ImageEntry;
}

/** An exact pattern wins; otherwise the longest `prefix*` pattern the image starts with. */
export function findImage(map: ImageMap, image: string): ImageMatch | undefined {
  const exact = map[image];
  if (exact !== undefined) return { pattern: image, entry: exact };
  let best: ImageMatch | undefined;
  for (const [pattern, entry] of Object.entries(map)) {
    if (!pattern.endsWith('*')) continue;
    const prefix = pattern.slice(0, -1);
    if (image.startsWith(prefix) && (best === undefined || prefix.length > best.pattern.length - 1))
      best = { pattern, entry };
  }
  return best;
}

/** A container's argv, and which of its words the pod spec gave (the rest are the image map's). */
export interface ContainerArgv {
  readonly argv: readonly string[];
  readonly fromPod: readonly boolean[];
}

/**
 * The argv of a container (Kubernetes rules): `command` replaces the entrypoint and drops the image's
 * cmd; `args` replaces the cmd. An image missing from the map has neither, like `FROM scratch`.
 */
export function containerArgv(
  entry: Pick<ImageEntry, 'entrypoint' | 'cmd'> | undefined,
  container: { command?: readonly string[] | undefined; args?: readonly string[] | undefined },
): ContainerArgv {
  const entrypoint = entry?.entrypoint ?? [];
  const cmd = entry?.cmd ?? [];
  const args = container.args !== undefined && container.args.length > 0 ? container.args : undefined;
  if (container.command !== undefined && container.command.length > 0) {
    const argv = [...container.command, ...(args ?? [])];
    return { argv, fromPod: argv.map(() => true) };
  }
  const tail = args ?? cmd;
  return {
    argv: [...entrypoint, ...tail],
    fromPod: [...entrypoint.map(() => false), ...tail.map(() => args !== undefined)],
  };
}
