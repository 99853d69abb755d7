/**
 * What a chaos run that was killed (SIGKILL, a lost terminal) left behind, removed when the next one
 * starts: its iptables chain and the jump to it from OUTPUT (which would go on dropping loopback
 * traffic on ports that other processes get next), and its tmpfs over a checkpoint claim. Both are
 * named by a fixed prefix and the pid of the run that made them (faults.ts); only those of a pid that
 * no longer runs are removed, so a run going on at the same time keeps its own.
 */
import { execFile } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { promisify } from 'node:util';
import { isAlive, readPidFiles } from '../lib/processes.ts';
import { CHAOS_CHAIN_PREFIX, CHAOS_TMPFS_PREFIX } from './faults.ts';

const run = promisify(execFile);

export interface Leftovers {
  /** Rules to delete, as `iptables` arguments (`-D OUTPUT -o lo -j TENSILE-CHAOS-12`). */
  readonly jumps: readonly (readonly string[])[];
  /** Chains to flush and delete. */
  readonly chains: readonly string[];
  /** Mount points to unmount. */
  readonly mounts: readonly string[];
}

export interface LeftoverInput {
  /** `iptables -S` (the filter table). */
  readonly rules: string;
  /** /proc/mounts. */
  readonly mounts: string;
  /** Whether the run of this pid still goes on. */
  readonly alive: (pid: number) => boolean;
  /**
   * For a tmpfs named without a pid (made before the pid was part of the name): whether the cluster it
   * lies in still runs.
   */
  readonly clusterAlive: (mountPoint: string) => boolean;
}

const ownerPid = (name: string, prefix: string): number | undefined => {
  const m = new RegExp(`^${prefix}-?(\\d+)$`).exec(name);
  return m?.[1] === undefined ? undefined : Number(m[1]);
};

/** /proc/mounts escapes blanks, tabs, newlines and backslashes as octal. */
const unescapeMount = (field: string) =>
  field.replace(/\\([0-7]{3})/g, (_, octal: string) => String.fromCharCode(Number.parseInt(octal, 8)));

/** Pure: which chains, jumps and mounts of earlier chaos runs are stale. */
export function staleLeftovers(input: LeftoverInput): Leftovers {
  const stale = (chain: string) => {
    const pid = ownerPid(chain, CHAOS_CHAIN_PREFIX.replace(/-$/, ''));
    return pid === undefined || !input.alive(pid);
  };
  const chains = new Set<string>();
  const jumps: string[][] = [];
  for (const line of input.rules.split('\n')) {
    const f = line.trim().split(/\s+/);
    if (f[0] === '-N' && f[1]?.startsWith(CHAOS_CHAIN_PREFIX) && stale(f[1])) chains.add(f[1]);
    const target = f[f.indexOf('-j') + 1];
    if (f[0] === '-A' && f.includes('-j') && target?.startsWith(CHAOS_CHAIN_PREFIX) && stale(target))
      jumps.push(['-D', ...f.slice(1)]);
  }
  const mounts: string[] = [];
  for (const line of input.mounts.split('\n')) {
    const [source, point, type] = line.split(' ');
    if (source === undefined || point === undefined || type !== 'tmpfs') continue;
    if (source !== CHAOS_TMPFS_PREFIX && !source.startsWith(`${CHAOS_TMPFS_PREFIX}-`)) continue;
    const where = unescapeMount(point);
    const pid = ownerPid(source, CHAOS_TMPFS_PREFIX);
    if (pid === undefined ? !input.clusterAlive(where) : !input.alive(pid)) mounts.push(where);
  }
  return { jumps, chains: [...chains], mounts };
}

function pidRuns(pid: number): boolean {
  return isAlive({ pid, startTime: '' });
}

/** A cluster state folder (the part of a claim's path before `/volumes/`) with a live process in it. */
function clusterRuns(mountPoint: string): boolean {
  const at = mountPoint.indexOf('/volumes/');
  if (at < 0) return false;
  return readPidFiles(mountPoint.slice(0, at)).some((r) => isAlive(r));
}

/** Removes what killed chaos runs left; returns one line per thing removed, for the log. */
export async function removeLeftovers(): Promise<string[]> {
  const rules = await run('iptables', ['-S']).then(
    (r) => r.stdout,
    () => '',
  );
  let mounts = '';
  try {
    mounts = readFileSync('/proc/mounts', 'utf8');
  } catch {
    // No /proc/mounts: nothing of ours can be mounted either.
  }
  const found = staleLeftovers({ rules, mounts, alive: pidRuns, clusterAlive: clusterRuns });
  const done: string[] = [];
  for (const jump of found.jumps) {
    await run('iptables', [...jump]).catch(() => {});
    done.push(`iptables ${jump.join(' ')}`);
  }
  for (const chain of found.chains) {
    await run('iptables', ['-F', chain]).catch(() => {});
    await run('iptables', ['-X', chain]).catch(() => {});
    done.push(`iptables chain ${chain} removed`);
  }
  for (const point of found.mounts) {
    await run('umount', ['-l', point]).catch(() => {});
    done.push(`tmpfs on ${point} unmounted`);
  }
  return done;
}
