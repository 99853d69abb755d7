/** Taking a local cluster down: its process groups in order, then what the real node leaves behind. */
import { rmSync } from 'node:fs';
import { readPidFiles, stopGroups } from '../lib/processes.ts';
import { cleanupRealNode } from './real-node.ts';

/**
 * Stops everything recorded in `<dir>/pids`: the node agent first (SIGTERM: it stops its pods' processes),
 * then the control plane and whatever pod process is left (SIGKILL: its state is thrown away).
 */
export async function stopClusterDir(dir: string, options: { removeDir?: boolean } = {}): Promise<void> {
  const records = readPidFiles(dir);
  const isAgent = (file: string) => file.endsWith('/node-agent.pid');
  const isWatchdog = (file: string) => file.endsWith('/watchdog.pid');
  await stopGroups(
    records.filter((r) => isAgent(r.file)),
    { signal: 'SIGTERM', graceMs: 5000 },
  );
  // Pod processes first (the agent normally took care of them), then the control plane, top down.
  const order = ['pod-', 'kube-scheduler', 'kube-controller-manager', 'kube-apiserver', 'etcd'];
  const rank = (file: string) => {
    const base = file.slice(file.lastIndexOf('/') + 1);
    const i = order.findIndex((prefix) => base.startsWith(prefix));
    return i < 0 ? order.length : i;
  };
  const rest = readPidFiles(dir)
    .filter((r) => !isAgent(r.file) && !isWatchdog(r.file))
    .sort((a, b) => rank(a.file) - rank(b.file));
  await stopGroups(rest);
  // The real node's containers, mounts, cgroups and network namespace outlive its processes.
  cleanupRealNode(dir);
  await stopGroups(readPidFiles(dir).filter((r) => isWatchdog(r.file)));
  if (options.removeDir ?? true)
    rmSync(dir, { recursive: true, force: true, maxRetries: 5, retryDelay: 100 });
}
