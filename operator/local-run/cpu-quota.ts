/**
 * CPU budgets for local workers (`tensile run --cpu-quota CORES`): each worker runs in a cgroup of its
 * own whose CFS quota is CORES of CPU time per period, as a Kubernetes CPU limit is. On a small machine
 * a worker's speed is then its own and well defined (the workers do not take cores from each other as
 * long as their budgets sum to no more than the machine), and `--chaos slow:N:F` sets worker-N's
 * budget to F × CORES instead of a SIGSTOP/SIGCONT duty cycle.
 *
 * cgroup v2 (`cpu.max`) where the unified hierarchy has the cpu controller, else cgroup v1
 * (`cpu.cfs_quota_us`); either needs write access to the hierarchy (root, or a delegated subtree).
 * The run's group also gets the largest CPU weight, so that each budget is a reservation as well as a
 * cap (Kubernetes' Guaranteed QoS on a node of its own), whatever else the machine runs.
 */

import { existsSync, mkdirSync, readFileSync, rmdirSync, writeFileSync } from 'node:fs';
import { availableParallelism } from 'node:os';
import { dirname, join } from 'node:path';

/** The kernel's bounds of a CFS period (1 ms to 1 s; Kubernetes uses 100 ms) and smallest quota. */
const MIN_PERIOD_US = 1000;
const MAX_PERIOD_US = 100_000;
const MIN_QUOTA_US = 1000;

/** The kernel's largest CPU weights (cgroup v2 cpu.weight, v1 cpu.shares). */
const MAX_WEIGHT_V2 = 10_000;
const MAX_SHARES_V1 = 262_144;

/** Parses `--cpu-quota CORES`: a positive number of cores, at most the machine's; a message when wrong. */
export function parseCpuQuota(text: string, cpus = availableParallelism()): number | string {
  const cores = Number(text);
  if (!/^\d*\.?\d+$/.test(text) || !(cores > 0))
    return `--cpu-quota needs a positive number of cores per worker (e.g. 0.5 or 1), got ${text}`;
  if (cores > cpus) return `--cpu-quota ${text}: more than the ${cpus} CPU(s) of this machine`;
  if (cores * MAX_PERIOD_US < MIN_QUOTA_US)
    return `--cpu-quota ${text}: below the kernel's smallest quota (${MIN_QUOTA_US / MAX_PERIOD_US} of a core)`;
  return cores;
}

/**
 * The CFS quota and period for `cores`: the shortest period whose quota the kernel takes. A throttled
 * process stalls for the rest of each period once its quota is spent, and a ring all-reduce waits
 * for every stall of every rank in each of its phases: with Kubernetes' 100 ms period a worker at 0.3
 * of a core would stall 70 ms at a time, and a step of tens of ms would measure where in the period
 * it fell rather than the worker's speed. A short period spreads the budget evenly, like a slower CPU.
 */
export function cfsBandwidth(cores: number): { quotaUs: number; periodUs: number } {
  const periodUs = Math.min(MAX_PERIOD_US, Math.max(MIN_PERIOD_US, Math.ceil(MIN_QUOTA_US / cores)));
  return { quotaUs: Math.max(MIN_QUOTA_US, Math.round(cores * periodUs)), periodUs };
}

/** Where cgroups with a cpu controller can be made: the hierarchy's version and the parent directory. */
export interface CpuHierarchy {
  readonly version: 1 | 2;
  /**
   * Where the run's group goes. v1: this process's own cgroup. v2: its parent (a cgroup with
   * processes cannot pass controllers on to children, its parent already passes cpu to it), or the
   * root when this process is in the root cgroup.
   */
  readonly parent: string;
}

/**
 * Finds the cpu controller's hierarchy from /proc/self/mountinfo and /proc/self/cgroup, pure but for
 * `controllersOf` (the cgroup.controllers of a v2 directory, undefined when unreadable): the unified
 * hierarchy when its cgroup of this process offers cpu, else the v1 hierarchy mounted with cpu.
 */
export function findCpuHierarchy(
  mountinfo: string,
  selfCgroup: string,
  controllersOf: (dir: string) => string | undefined,
): CpuHierarchy | undefined {
  const mounts = mountinfo
    .split('\n')
    .map((line) => {
      const [left, right] = line.split(' - ');
      const fields = left?.split(' ') ?? [];
      const [type, , options] = right?.split(' ') ?? [];
      return { root: fields[3] ?? '/', point: fields[4], type, options: options?.split(',') ?? [] };
    })
    .filter((m) => m.point !== undefined);
  const paths = selfCgroup
    .split('\n')
    .map((line) => /^(\d+):([^:]*):(.*)$/.exec(line.trim()))
    .filter((m) => m !== null)
    .map((m) => ({ controllers: (m[2] as string).split(','), path: m[3] as string }));
  // A container sees its own cgroup as the mount's root: the path below the root is what is left.
  const under = (mount: { root: string; point: string }, path: string) =>
    join(
      mount.point,
      mount.root !== '/' && path.startsWith(mount.root) ? path.slice(mount.root.length) : path,
    ).replace(/(.)\/$/, '$1');
  const unified = mounts.find((m) => m.type === 'cgroup2');
  const v2Path = paths.find((p) => p.controllers.length === 1 && p.controllers[0] === '')?.path;
  if (unified?.point !== undefined && v2Path !== undefined) {
    const own = under({ root: unified.root, point: unified.point }, v2Path);
    if ((controllersOf(own) ?? '').split(/\s+/).includes('cpu'))
      return { version: 2, parent: own === unified.point ? own : dirname(own) };
  }
  const v1 = mounts.find((m) => m.type === 'cgroup' && m.options.includes('cpu'));
  const v1Path = paths.find((p) => p.controllers.includes('cpu'))?.path;
  if (v1?.point !== undefined && v1Path !== undefined)
    return { version: 1, parent: under({ root: v1.root, point: v1.point }, v1Path) };
  return undefined;
}

/** The budgets of one run's workers: one cgroup each under a group of the run's own. */
export class CpuBudgets implements Disposable {
  private readonly groups = new Map<string, string>();

  private constructor(
    private readonly hierarchy: CpuHierarchy,
    private readonly root: string,
  ) {}

  /**
   * Makes the run's group, or throws an Error saying why it cannot (no cpu controller, no write
   * access). In v2 the group passes cpu on to the workers' cgroups (it holds no process itself).
   */
  static create(name: string, hierarchy = detectCpuHierarchy()): CpuBudgets {
    if (hierarchy === undefined)
      throw new Error('no cgroup hierarchy with the cpu controller is mounted (see /proc/self/mountinfo)');
    const parent = hierarchy.parent;
    const root = join(parent, `tensile-${name}-${process.pid}`);
    try {
      if (hierarchy.version === 2) passCpuOn(parent);
      // Not recursive: the parent exists, and a recursive mkdir under /proc or /sys can loop forever.
      if (!existsSync(root)) mkdirSync(root);
      if (hierarchy.version === 2) writeFileSync(join(root, 'cgroup.subtree_control'), '+cpu');
      // The largest weight: other load on the machine does not eat into the budgets (as on a node
      // of their own); the quotas still cap every worker.
      if (hierarchy.version === 2) writeFileSync(join(root, 'cpu.weight'), String(MAX_WEIGHT_V2));
      else writeFileSync(join(root, 'cpu.shares'), String(MAX_SHARES_V1));
    } catch (error) {
      throw new Error(
        `cannot make a cgroup with a CPU quota in ${parent} (${(error as NodeJS.ErrnoException).code ?? String(error)}): run as root or in a delegated cgroup`,
      );
    }
    return new CpuBudgets(hierarchy, root);
  }

  /** Makes (or re-sets) `worker`'s cgroup with `cores`; returns the file a process joins it by. */
  assign(worker: string, cores: number): string {
    const dir = this.groups.get(worker) ?? join(this.root, worker);
    if (!existsSync(dir)) mkdirSync(dir);
    this.groups.set(worker, dir);
    this.set(worker, cores);
    return join(dir, 'cgroup.procs');
  }

  /** Changes `worker`'s budget (a slow-down and its end); false when it has no cgroup. */
  set(worker: string, cores: number): boolean {
    const dir = this.groups.get(worker);
    if (dir === undefined) return false;
    const { quotaUs, periodUs } = cfsBandwidth(cores);
    if (this.hierarchy.version === 2) writeFileSync(join(dir, 'cpu.max'), `${quotaUs} ${periodUs}`);
    else {
      // No quota while the period changes: the kernel checks each write against the other value.
      writeFileSync(join(dir, 'cpu.cfs_quota_us'), '-1');
      writeFileSync(join(dir, 'cpu.cfs_period_us'), String(periodUs));
      writeFileSync(join(dir, 'cpu.cfs_quota_us'), String(quotaUs));
    }
    return true;
  }

  /** The directory of `worker`'s cgroup (its cpu.stat says how often the kernel throttled it). */
  dirOf(worker: string): string | undefined {
    return this.groups.get(worker);
  }

  /** The budget of `worker` as the kernel holds it, in cores; undefined without a cgroup. */
  cores(worker: string): number | undefined {
    const dir = this.groups.get(worker);
    if (dir === undefined) return undefined;
    const [quota, period] =
      this.hierarchy.version === 2
        ? readFileSync(join(dir, 'cpu.max'), 'utf8').trim().split(' ').map(Number)
        : ['cpu.cfs_quota_us', 'cpu.cfs_period_us'].map((f) => Number(readFileSync(join(dir, f), 'utf8')));
    return quota === undefined || period === undefined ? undefined : quota / period;
  }

  /** Removes the cgroups (a cgroup goes once its processes have exited; one still in use is left). */
  [Symbol.dispose](): void {
    for (const dir of [...this.groups.values(), this.root]) {
      try {
        if (existsSync(dir)) rmdirSync(dir);
      } catch {
        // Still holding a process (one that outlived the run): the kernel keeps it until it exits.
      }
    }
    this.groups.clear();
  }
}

/** Asks a v2 cgroup to pass cpu on to its children; a refusal is left to the child's own check. */
function passCpuOn(dir: string): void {
  try {
    const control = join(dir, 'cgroup.subtree_control');
    if (!readFileSync(control, 'utf8').split(/\s+/).includes('cpu')) writeFileSync(control, '+cpu');
  } catch {
    // Not ours to change (a delegated subtree passes cpu already, or the group's creation says why not).
  }
}

/** The command that runs `command` inside the cgroup whose membership file is `procs`, as itself (exec). */
export function inCgroup(procs: string, command: readonly string[]): string[] {
  // The shell joins the cgroup and execs the command in place: the pid, signals and exit are its own.
  return ['/bin/sh', '-c', 'echo $$ > "$0" && exec "$@"', procs, ...command];
}

export function detectCpuHierarchy(): CpuHierarchy | undefined {
  const read = (file: string) => {
    try {
      return readFileSync(file, 'utf8');
    } catch {
      return undefined;
    }
  };
  return findCpuHierarchy(read('/proc/self/mountinfo') ?? '', read('/proc/self/cgroup') ?? '', (dir) =>
    read(join(dir, 'cgroup.controllers')),
  );
}
