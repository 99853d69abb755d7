/**
 * The chaos schedule (issue 24): which fault, when, on which target, for how long — a pure function of
 * a seed and the run's length, so that `hack/chaos.sh --seed S` injects the same faults in the same
 * order on any machine. The driver (hack/chaos/disturbance.ts) carries each one out at its offset or
 * at the same share of the job's steps, whichever comes first (`faultDue`), and never before the job
 * converged from the previous one: a slow machine shifts faults later, a fast one earlier, and neither
 * drops nor reorders them.
 */
import { uint32Stream } from '../../worker/data/sampler.ts';

export const FAULT_KINDS = [
  /** SIGKILL to one worker's process group: the pod fails, the operator replaces it (a restart). */
  'kill-worker',
  /** A spot reclaim with notice: taint, then the node is deleted after the notice. */
  'reclaim-notice',
  /** The node is deleted at once; its processes die with it. */
  'reclaim-abrupt',
  /** SIGKILL to the operator replica that holds the lease; it is started again afterwards. */
  'kill-operator-leader',
  /** nats-server stopped with SIGTERM and started again on the same port and JetStream store. */
  'restart-nats',
  /** nats-server killed with SIGKILL (JetStream on disk, no clean shutdown), then started again. */
  'kill-nats',
  /** kube-apiserver stopped and started again with the same flags. */
  'restart-apiserver',
  /** One worker's TCP connections to its peers dropped (iptables on loopback) for `seconds`. */
  'partition-worker',
  /** The checkpoint volume (a small tmpfs) filled until a write fails, freed after `seconds`. */
  'fill-checkpoint-volume',
  /** SIGKILL to the checkpoint writer (rank 0) while a checkpoint is in its temporary directory. */
  'kill-checkpoint-writer',
  /** One worker stopped and continued (SIGSTOP/SIGCONT, half the time stopped) for `seconds`. */
  'slow-worker',
] as const;
export type FaultKind = (typeof FAULT_KINDS)[number];

export interface Fault {
  /** Position in the schedule, from 0. */
  readonly index: number;
  /** Seconds after training started at which the fault is due. */
  readonly atSeconds: number;
  readonly kind: FaultKind;
  /** Picks the victim among the candidates at the time (`pickTarget`): in [0, 1). */
  readonly target: number;
  /** How long a lasting fault (partition, full volume, slow worker) holds; 0 for the others. */
  readonly seconds: number;
}

export interface ScheduleOptions {
  readonly seed: number;
  /** Length of the run: no fault is due after it. */
  readonly seconds: number;
  /** Kinds to draw from (default all), in this order for the first round. */
  readonly kinds?: readonly FaultKind[];
  /** No fault before this offset: the job first has to train. Default 10. */
  readonly warmupSeconds?: number;
  /** Gaps between faults are drawn uniformly from this range. Default [15, 40]. */
  readonly gapSeconds?: readonly [number, number];
  /** Lasting faults hold for a time drawn from this range. Default [3, 8]. */
  readonly holdSeconds?: readonly [number, number];
}

const LASTING: ReadonlySet<FaultKind> = new Set([
  'partition-worker',
  'fill-checkpoint-volume',
  'slow-worker',
]);

/**
 * Every kind once, in a seeded order, before any repeats (a short run still covers each kind it has
 * room for), then kinds drawn at random; offsets with seeded gaps until `seconds`.
 */
export function chaosSchedule(options: ScheduleOptions): Fault[] {
  const kinds = options.kinds ?? FAULT_KINDS;
  if (kinds.length === 0) return [];
  const [gapLow, gapHigh] = options.gapSeconds ?? [15, 40];
  const [holdLow, holdHigh] = options.holdSeconds ?? [3, 8];
  if (!(gapLow > 0 && gapHigh >= gapLow)) throw new RangeError('gapSeconds: expected 0 < low <= high');
  if (!(holdLow >= 0 && holdHigh >= holdLow)) throw new RangeError('holdSeconds: expected 0 <= low <= high');
  const next = uint32Stream(options.seed >>> 0);
  const unit = () => next() / 2 ** 32;
  const between = (low: number, high: number) => low + (high - low) * unit();
  const round = shuffle(kinds, unit);
  const faults: Fault[] = [];
  let at = options.warmupSeconds ?? 10;
  while (at < options.seconds) {
    const index = faults.length;
    const kind =
      index < round.length
        ? (round[index] as FaultKind)
        : (kinds[Math.floor(unit() * kinds.length)] as FaultKind);
    const target = unit();
    const seconds = LASTING.has(kind) ? round1(between(holdLow, holdHigh)) : 0;
    faults.push({ index, atSeconds: round1(at), kind, target, seconds });
    at += between(gapLow, gapHigh);
  }
  return faults;
}

/** Where the job is when the driver asks whether the next fault is due. */
export interface FaultClock {
  /** Seconds of training so far. */
  readonly since: number;
  readonly step: number;
  readonly plannedSteps: number | undefined;
}

/**
 * The share of the job's planned steps by which every fault of the window is due: the rest of the job
 * is room to converge from the last one and to finish.
 */
export const FAULT_STEP_SHARE = 0.8;

/**
 * A fault is due at its offset in seconds or at the same share of the job's steps, whichever comes
 * first: on a machine fast enough to train the whole job inside the window, the faults still land
 * inside the job (in the same order), instead of after its end.
 */
export function faultDue(fault: Fault, windowSeconds: number, clock: FaultClock): boolean {
  if (clock.since >= fault.atSeconds) return true;
  if (clock.plannedSteps === undefined || !(windowSeconds > 0)) return false;
  const share = (fault.atSeconds / windowSeconds) * FAULT_STEP_SHARE;
  return clock.step >= share * clock.plannedSteps;
}

function shuffle<T>(items: readonly T[], unit: () => number): T[] {
  const out = [...items];
  for (let i = out.length - 1; i > 0; i--) {
    const j = Math.floor(unit() * (i + 1));
    [out[i], out[j]] = [out[j] as T, out[i] as T];
  }
  return out;
}

const round1 = (x: number) => Math.round(x * 10) / 10;

/** The candidate a fault's `target` picks; candidates are sorted first so that the pick is stable. */
export function pickTarget<T extends string>(candidates: readonly T[], target: number): T | undefined {
  if (candidates.length === 0) return undefined;
  const sorted = [...candidates].sort();
  return sorted[Math.min(sorted.length - 1, Math.floor(target * sorted.length))];
}

/** Parses `--kinds a,b,c`; names the unknown kind and the known ones. */
export function parseKinds(text: string): FaultKind[] {
  const out: FaultKind[] = [];
  for (const raw of text
    .split(',')
    .map((s) => s.trim())
    .filter((s) => s !== '')) {
    if (!(FAULT_KINDS as readonly string[]).includes(raw))
      throw new RangeError(`unknown fault kind "${raw}"; known: ${FAULT_KINDS.join(', ')}`);
    out.push(raw as FaultKind);
  }
  return out;
}
