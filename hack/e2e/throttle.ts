/**
 * Slows the worker pods of a local cluster, so that the e2e can show it holds on a slower machine
 * (`hack/e2e.sh --worker-cpus 1`: the workers get one core between them). Every process of a pod (its
 * process group; children inherit the cgroup) goes into a cgroup whose CPU quota is `cpus` cores for
 * all of them together: cgroup v2 `cpu.max` or v1 `cpu.cfs_quota_us` (root). Where no cgroup can be
 * written it falls back to a SIGSTOP/SIGCONT duty cycle of the pods' process groups, running for
 * `cpus / cores` of every 100 ms. The control plane, the operator and nats-server run at full speed.
 */
import { existsSync, mkdirSync, readdirSync, readFileSync, rmdirSync, writeFileSync } from 'node:fs';
import { availableParallelism } from 'node:os';
import { join } from 'node:path';
import { readPidFiles } from '../lib/processes.ts';

export interface WorkerThrottle extends AsyncDisposable {
  /** How the workers are slowed, for the summary. */
  readonly how: string;
  /** Processes moved into the cgroup (or signalled) so far. */
  readonly processes: () => number;
}

const PERIOD_US = 100_000;

/** The pids whose process group is `leader` (a pod's process and whatever it started). */
function groupMembers(leader: number): number[] {
  const out: number[] = [];
  for (const entry of readdirSync('/proc')) {
    if (!/^\d+$/.test(entry)) continue;
    try {
      const stat = readFileSync(`/proc/${entry}/stat`, 'utf8');
      const [state, , pgrp] = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
      if (Number(pgrp) === leader && state !== 'Z') out.push(Number(entry));
    } catch {
      // Gone while we looked.
    }
  }
  return out;
}

function podLeaders(stateDir: string): number[] {
  return readPidFiles(stateDir)
    .filter((r) => /\/pod-[^/]+\.pid$/.test(r.file))
    .map((r) => r.pid);
}

/** A cgroup this process may create beside its own, with the file that caps its CPU. */
function makeCgroup(cpus: number): { dir: string; parent: string; how: string } | undefined {
  const name = `tensile-e2e-${process.pid}`;
  const quota = Math.max(1000, Math.round(cpus * PERIOD_US));
  const own = readFileSync('/proc/self/cgroup', 'utf8').split('\n');
  const v2Root = '/sys/fs/cgroup';
  const v2Path = own.find((l) => l.startsWith('0::'))?.slice(3);
  const candidates: { parent: string; write: (dir: string) => void; how: string }[] = [];
  if (v2Path !== undefined && existsSync(join(v2Root, 'cgroup.controllers'))) {
    const controllers = readFileSync(join(v2Root, 'cgroup.controllers'), 'utf8');
    if (controllers.split(/\s+/).includes('cpu'))
      candidates.push({
        parent: join(v2Root, v2Path),
        write: (dir) => writeFileSync(join(dir, 'cpu.max'), `${quota} ${PERIOD_US}`),
        how: `cgroup v2 cpu.max ${quota} ${PERIOD_US}`,
      });
  }
  const v1Path = own.map((l) => l.split(':')).find((f) => f[1]?.split(',').includes('cpu'))?.[2];
  if (v1Path !== undefined && existsSync('/sys/fs/cgroup/cpu/cpu.cfs_quota_us'))
    candidates.push({
      parent: join('/sys/fs/cgroup/cpu', v1Path),
      write: (dir) => {
        writeFileSync(join(dir, 'cpu.cfs_period_us'), String(PERIOD_US));
        writeFileSync(join(dir, 'cpu.cfs_quota_us'), String(quota));
      },
      how: `cgroup v1 cpu.cfs_quota_us ${quota} of ${PERIOD_US}`,
    });
  for (const c of candidates) {
    const dir = join(c.parent, name);
    try {
      mkdirSync(dir);
      c.write(dir);
      return { dir, parent: c.parent, how: `${c.how} (${cpus} CPUs for all workers)` };
    } catch {
      try {
        rmdirSync(dir);
      } catch {
        // Never made.
      }
    }
  }
  return undefined;
}

export function throttleWorkers(stateDir: string, cpus: number, log: (line: string) => void): WorkerThrottle {
  const seen = new Set<number>();
  const cgroup = makeCgroup(cpus);
  if (cgroup !== undefined) {
    const move = () => {
      for (const leader of podLeaders(stateDir))
        for (const pid of groupMembers(leader)) {
          if (seen.has(pid)) continue;
          try {
            writeFileSync(join(cgroup.dir, 'cgroup.procs'), String(pid));
            seen.add(pid);
          } catch {
            // Exited before it could be moved.
          }
        }
    };
    const timer = setInterval(move, 200);
    log(`slowing the workers: ${cgroup.how}`);
    return {
      how: cgroup.how,
      processes: () => seen.size,
      async [Symbol.asyncDispose]() {
        clearInterval(timer);
        // A cgroup with processes cannot be removed: hand the survivors back to the parent first.
        const left = readFileSync(join(cgroup.dir, 'cgroup.procs'), 'utf8').split('\n').filter(Boolean);
        for (const pid of left) {
          try {
            writeFileSync(join(cgroup.parent, 'cgroup.procs'), pid);
          } catch {
            // Gone meanwhile.
          }
        }
        try {
          rmdirSync(cgroup.dir);
        } catch (error) {
          log(`could not remove ${cgroup.dir}: ${(error as Error).message}`);
        }
      },
    };
  }
  // No cgroup to write: stop and continue the pods' process groups, running `share` of the time.
  const share = Math.min(1, cpus / availableParallelism());
  const runMs = Math.max(5, Math.round(share * 100));
  const signalAll = (signal: NodeJS.Signals) => {
    for (const leader of podLeaders(stateDir)) {
      try {
        process.kill(-leader, signal);
        seen.add(leader);
      } catch {
        // The pod has ended.
      }
    }
  };
  let stopTimer: NodeJS.Timeout | undefined;
  const cycle = setInterval(() => {
    signalAll('SIGCONT');
    stopTimer = setTimeout(() => signalAll('SIGSTOP'), runMs);
  }, 100);
  const how = `SIGSTOP/SIGCONT duty cycle: running ${runMs} ms of every 100 ms (no writable cgroup)`;
  log(`slowing the workers: ${how}`);
  return {
    how,
    processes: () => seen.size,
    async [Symbol.asyncDispose]() {
      clearInterval(cycle);
      clearTimeout(stopTimer);
      signalAll('SIGCONT');
    },
  };
}
