/**
 * The spot-churn scenario across both kinds of node (`hack/e2e.sh --real-node`): one worker in a
 * container of the built worker image on the real kubelet node (hack/cluster/real-node.ts), the others
 * as processes on fake nodes, reclaims on both kinds. What differs from the fake-only run lives here:
 * the image, which node a reclaim takes, reading the kubelet's container logs, the spread check.
 *
 * Pure: `REAL_NODE_CHURN`, `nodeOfKind`, `CriLogReader.push`, `judgeSpread`. I/O: `builtWorkerImage`,
 * `loadImage`.
 */
import { execFile } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { readImagesEnv } from '../cluster/launcher.ts';
import { REPO_ROOT } from '../node-agent/config.ts';
import type { Check } from './analysis.ts';
import { check } from './analysis.ts';
import type { ChurnStep, NodeKind } from './scenario.ts';

/**
 * Two reclaims with notice, then one without, as the fake-only run; the second takes the real node,
 * whose worker leaves its container gracefully (SIGTERM from a real kubelet). Its replacement lands
 * on a node the simulated autoscaler adds (a fake one: there is one real node).
 */
export const REAL_NODE_CHURN: readonly ChurnStep[] = [
  { kind: 'notice', atFraction: 0.08, on: 'fake' },
  { kind: 'notice', atFraction: 0.2, on: 'real' },
  { kind: 'abrupt', atFraction: 0.32, on: 'fake' },
];

/** The reclaimer's pick among spot nodes running a worker: the first of the wanted kind. */
export function nodeOfKind(
  on: NodeKind | undefined,
  realNode: string | undefined,
): (candidates: readonly string[]) => string | undefined {
  return (candidates) => candidates.find((c) => on === undefined || (c === realNode) === (on === 'real'));
}

/**
 * The kubelet's container log format (CRI): `<time> <stream> <P|F> <text>` per line, a long line cut
 * into P(artial) pieces ended by an F(ull) one. `push` takes the file's next bytes and returns the
 * application's complete lines, joined by newlines.
 */
export class CriLogReader {
  /** The bytes after the last newline: a line still being written (cut anywhere, even in a character). */
  private rest: Buffer = Buffer.alloc(0);
  private partial = '';

  push(chunk: Buffer): string {
    const bytes = Buffer.concat([this.rest, chunk]);
    const cut = bytes.lastIndexOf(0x0a) + 1;
    this.rest = bytes.subarray(cut);
    const out: string[] = [];
    for (const line of bytes.subarray(0, cut).toString('utf8').split('\n')) {
      if (line === '') continue;
      const m = /^\S+ (?:stdout|stderr) ([PF]) ?(.*)$/.exec(line);
      if (m === null) {
        out.push(line);
        continue;
      }
      this.partial += m[2] ?? '';
      if (m[1] === 'F') {
        out.push(this.partial);
        this.partial = '';
      }
    }
    return out.length === 0 ? '' : `${out.join('\n')}\n`;
  }
}

export interface Placement {
  /** Node names that ran a worker (Running), by kind. */
  readonly real: readonly string[];
  readonly fake: readonly string[];
  /** The reclaims carried out: the node and its kind. */
  readonly reclaims: readonly { readonly node: string; readonly kind: NodeKind }[];
  /** Worker events read from the real node's container logs (progress: training steps logged there, `progress` or `rank-progress`). */
  readonly containerLines: { readonly events: number; readonly progress: number };
}

/** Workers ran on both kinds of node (the real node's trained: its log shows progress), reclaims took both kinds. */
export function judgeSpread(placement: Placement): Check {
  const hit = (kind: NodeKind) => placement.reclaims.filter((r) => r.kind === kind).map((r) => r.node);
  return check(
    'spread',
    placement.real.length > 0 &&
      placement.containerLines.progress > 0 &&
      placement.fake.length > 0 &&
      hit('real').length > 0 &&
      hit('fake').length > 0,
    `workers ran on the real node (${placement.real.join(', ') || 'none'}; ${placement.containerLines.events} events in its container logs, ${placement.containerLines.progress} of them training steps) and on ${placement.fake.length} fake nodes; ` +
      `reclaims took the real node ${hit('real').length} times (${hit('real').join(', ') || 'none'}) and fake nodes ${hit('fake').length} (${hit('fake').join(', ') || 'none'})`,
  );
}

function sh(command: string, args: readonly string[]): Promise<string> {
  return new Promise((resolve, reject) => {
    execFile(command, args, { cwd: REPO_ROOT, maxBuffer: 64 << 20 }, (error, stdout, stderr) => {
      if (error) reject(new Error(`${command} ${args.join(' ')}: ${stderr.trim() || error.message}`));
      else resolve(stdout);
    });
  });
}

const imagesScript = join(REPO_ROOT, 'hack', 'images.sh');

/** The worker image of this checkout (hack/images.sh builds it unless cached): its reference. */
export async function builtWorkerImage(): Promise<string> {
  await sh('bash', [imagesScript, '--only', 'worker']);
  const env = readImagesEnv(readFileSync((await sh('bash', [imagesScript, '--print'])).trim(), 'utf8'));
  const ref = env.get('WORKER');
  if (ref === undefined) throw new Error('hack/images.sh --only worker recorded no WORKER image');
  return ref;
}

/** Imports the worker image into the real node's containerd. */
export async function loadWorkerImage(containerdSocket: string): Promise<void> {
  await sh('bash', [imagesScript, '--only', 'worker', '--load', containerdSocket]);
}
