/**
 * The goodput autoscaler's decision: how many workers (and which global batch) a job should run,
 * from the fitted throughput model and the measured noise scale. Pure: a function of its input and
 * `now`; the operator (and `tensile run`) carry it out and record it.
 */
import {
  predictStepSeconds,
  statisticalEfficiency,
  type ThroughputModel,
  type ThroughputSample,
} from './goodput-model.ts';

/** How the global batch follows the world size: the job's rescale policy, or a range to choose in. */
export type BatchRule =
  | { readonly kind: 'fixed'; readonly global: number }
  | { readonly kind: 'perWorker'; readonly perWorker: number }
  | { readonly kind: 'range'; readonly min: number; readonly max: number };

export interface GoodputSettings {
  readonly minIntervalSeconds: number;
  /** A change must promise at least this much more goodput than staying (hysteresis). */
  readonly threshold: number;
  /** Worlds up to this many times the largest measured one are considered (Pollux bounds it too). */
  readonly explorationFactor: number;
}

export interface GoodputInput {
  /** Workers the job runs now (the desired count in effect). */
  readonly current: number;
  readonly min: number;
  readonly max: number;
  /** The base batch M₀ that efficiency is relative to (spec.batch.global). */
  readonly baseBatch: number;
  readonly batch: BatchRule;
  readonly model: ThroughputModel | undefined;
  readonly samples: readonly ThroughputSample[];
  readonly noiseScale: number | undefined;
  readonly settings: GoodputSettings;
  /** When the last change was decided (ms); the interval counts from it. */
  readonly lastChangeMs: number | undefined;
  readonly nowMs: number;
  /** Workers asked for but not running yet: while any are, the job does not grow further. */
  readonly pending: number;
  /** The most workers the cluster can hold for this job now, when known. */
  readonly capacity?: number;
  /**
   * The global batch the job trains at now, with a `range` rule: staying is judged at it, and a
   * better batch at the same size is a change too. Without, staying is the size's best batch.
   */
  readonly currentBatch?: number;
}

export interface GoodputOption {
  readonly replicas: number;
  readonly globalBatch: number;
  readonly stepSeconds: number;
  /** Samples per second. */
  readonly throughput: number;
  readonly efficiency: number;
  /** throughput × efficiency: base-batch-equivalent samples per second. */
  readonly goodput: number;
}

export interface GoodputDecision {
  readonly replicas: number;
  readonly globalBatch: number | undefined;
  readonly changed: boolean;
  readonly reason: string;
  readonly options: readonly GoodputOption[];
  /** When a held decision may be taken again (the minimum interval), if that is what holds it. */
  readonly retryAtMs?: number;
}

/** The global batch range of spec.autoscaling, when the operator chooses the batch. */
export function batchBounds(autoscaling: {
  readonly minGlobalBatch?: number | undefined;
  readonly maxGlobalBatch?: number | undefined;
}): { readonly min: number; readonly max: number } | undefined {
  const { minGlobalBatch: min, maxGlobalBatch: max } = autoscaling;
  return min === undefined || max === undefined ? undefined : { min, max };
}

/** A global batch for `replicas` workers within the bounds (at least one sample each). */
export function clampBatch(batch: number, replicas: number, bounds: { min: number; max: number }): number {
  return Math.max(replicas, Math.min(bounds.max, Math.max(bounds.min, Math.round(batch))));
}

/** The global batches a world of `replicas` may train at: a range is tried at powers of two in it. */
export function candidateBatches(rule: BatchRule, replicas: number): number[] {
  if (rule.kind === 'fixed') return rule.global >= replicas ? [rule.global] : [];
  if (rule.kind === 'perWorker') return [rule.perWorker * replicas];
  const out = new Set<number>();
  const low = Math.max(rule.min, replicas);
  if (low > rule.max) return [];
  out.add(low);
  for (let b = 2 ** Math.ceil(Math.log2(low)); b < rule.max; b *= 2) out.add(b);
  out.add(rule.max);
  return [...out].sort((a, b) => a - b);
}

/** The predicted goodput of `replicas` workers at `globalBatch`; undefined where the model predicts no time. */
export function optionAt(
  input: Pick<GoodputInput, 'model' | 'noiseScale' | 'baseBatch'>,
  replicas: number,
  globalBatch: number,
): GoodputOption | undefined {
  if (input.model === undefined) return undefined;
  const stepSeconds = predictStepSeconds(input.model, replicas, globalBatch / replicas);
  if (!(stepSeconds > 0)) return undefined;
  const throughput = globalBatch / stepSeconds;
  const efficiency = statisticalEfficiency(input.noiseScale, globalBatch, input.baseBatch);
  return { replicas, globalBatch, stepSeconds, throughput, efficiency, goodput: throughput * efficiency };
}

/** Batches whose predicted goodput is this close to the best are ties. */
const BATCH_TIE = 0.01;

/**
 * The predicted goodput of every world size in [min, cap] at its best batch, in replica order. Ties
 * go to the batch nearest (by ratio) the current one, else the base batch: where the model cannot
 * tell batches apart (one measured, so what is fixed and what per sample is a guess) the batch
 * stays, instead of jumping to a bound on a rounding error.
 */
export function goodputOptions(input: GoodputInput, cap: number): GoodputOption[] {
  if (input.model === undefined) return [];
  const reference = input.currentBatch ?? input.baseBatch;
  const distance = (o: GoodputOption) => Math.abs(Math.log(o.globalBatch / reference));
  const options: GoodputOption[] = [];
  for (let n = input.min; n <= cap; n++) {
    const all = candidateBatches(input.batch, n).flatMap((b) => optionAt(input, n, b) ?? []);
    const top = Math.max(...all.map((o) => o.goodput));
    const best = all
      .filter((o) => o.goodput >= top * (1 - BATCH_TIE))
      .reduce<GoodputOption | undefined>(
        (a, o) => (a === undefined || distance(o) < distance(a) ? o : a),
        undefined,
      );
    if (best !== undefined) options.push(best);
  }
  return options;
}

/** The largest world worth predicting: the range, the cluster, and how far the model is trusted. */
export function replicaCap(input: GoodputInput): number {
  const trusted = Math.ceil(input.settings.explorationFactor * (input.model?.maxObservedReplicas ?? 1));
  let cap = Math.min(input.max, Math.max(trusted, input.current));
  if (input.capacity !== undefined) cap = Math.min(cap, Math.max(input.capacity, input.min));
  // Workers still pending: what was asked for is not there yet, so asking for more is no use.
  if (input.pending > 0) cap = Math.min(cap, input.current);
  return Math.max(cap, input.min);
}

const round = (x: number) => (x >= 100 ? Math.round(x) : Math.round(x * 10) / 10);

/**
 * At most `limit` options, so that a reason or a status stays small with thousands of replicas: the
 * best ones and the current size, in replica order.
 */
export function notableOptions(
  options: readonly GoodputOption[],
  current: number,
  limit = 12,
): GoodputOption[] {
  if (options.length <= limit) return [...options];
  const best = [...options].sort((a, b) => b.goodput - a.goodput).slice(0, limit);
  const here = options.find((o) => o.replicas === current);
  const kept = here === undefined || best.includes(here) ? best : [...best.slice(0, limit - 1), here];
  return kept.sort((a, b) => a.replicas - b.replicas);
}

export function describeOptions(options: readonly GoodputOption[], current = 0): string {
  const shown = notableOptions(options, current);
  const more = options.length - shown.length;
  return `${shown.map((o) => `${o.replicas}: ${round(o.goodput)}`).join(', ')}${more > 0 ? ` (and ${more} more)` : ''}`;
}

/**
 * Stay, or move to the best world size: only when the minimum interval has passed since the last
 * change, the current size has been measured (a decision needs its baseline), and the best option
 * beats it by `threshold`. Ties go to fewer workers.
 */
export function decideGoodput(input: GoodputInput): GoodputDecision {
  const hold = (reason: string, options: readonly GoodputOption[] = [], retryAtMs?: number) => ({
    replicas: Math.min(input.max, Math.max(input.min, input.current)),
    globalBatch: undefined,
    changed: false,
    reason,
    options,
    ...(retryAtMs === undefined ? {} : { retryAtMs }),
  });
  if (input.current < input.min || input.current > input.max)
    return { ...hold(`outside [${input.min}, ${input.max}]`), changed: true };
  if (input.model === undefined) return hold('no step times measured yet');
  if (!input.samples.some((s) => s.replicas === input.current && s.steps > 0))
    return hold(`waiting for step times of ${input.current} worker(s)`);
  const options = goodputOptions(input, replicaCap(input));
  const over = overShare(input, options);
  if (over !== undefined) return over;
  const here = currentOption(input, options);
  const best = options.reduce<GoodputOption | undefined>(
    (a, o) => (a === undefined || o.goodput > a.goodput * (1 + 1e-9) ? o : a),
    undefined,
  );
  if (here === undefined || best === undefined) return hold('no prediction for the current size', options);
  const gain = here.goodput > 0 ? best.goodput / here.goodput - 1 : Number.POSITIVE_INFINITY;
  const listed = `predicted goodput by workers: ${describeOptions(options, input.current)}`;
  const same = best.replicas === input.current && best.globalBatch === here.globalBatch;
  if (same || gain < input.settings.threshold)
    return {
      ...hold(
        `${input.current} worker(s)${input.batch.kind === 'range' ? ` at global batch ${here.globalBatch}` : ''} is best within the threshold; ${listed}`,
        options,
      ),
      globalBatch: here.globalBatch,
    };
  const retryAtMs =
    input.lastChangeMs === undefined
      ? undefined
      : input.lastChangeMs + input.settings.minIntervalSeconds * 1000;
  if (retryAtMs !== undefined && input.nowMs < retryAtMs)
    return hold(
      `${best.replicas} worker(s) would be better, but the minimum interval holds; ${listed}`,
      options,
      retryAtMs,
    );
  return {
    replicas: best.replicas,
    globalBatch: best.globalBatch,
    changed: true,
    reason: `${input.current} → ${best.replicas} worker(s), global batch ${here.globalBatch === best.globalBatch ? best.globalBatch : `${here.globalBatch} → ${best.globalBatch}`}: goodput ${round(here.goodput)} → ${round(best.goodput)} (+${Math.round(gain * 100)} %); ${listed}`,
    options,
  };
}

/** Staying: the current size at the batch it trains at (a range rule), else at the size's best batch. */
function currentOption(input: GoodputInput, options: readonly GoodputOption[]): GoodputOption | undefined {
  const best = options.find((o) => o.replicas === input.current);
  if (input.batch.kind !== 'range' || input.currentBatch === undefined) return best;
  return optionAt(input, input.current, input.currentBatch) ?? best;
}

/**
 * Above its share of the cluster (capacity, from the cluster division): the job goes down to the
 * best size within it at once, neither threshold nor interval holding it, since the GPUs are
 * another job's now.
 */
function overShare(input: GoodputInput, options: readonly GoodputOption[]): GoodputDecision | undefined {
  if (input.capacity === undefined || input.current <= Math.max(input.capacity, input.min)) return undefined;
  const best = options.reduce<GoodputOption | undefined>(
    (a, o) => (a === undefined || o.goodput > a.goodput * (1 + 1e-9) ? o : a),
    undefined,
  );
  const replicas = best?.replicas ?? Math.max(input.capacity, input.min);
  return {
    replicas,
    globalBatch: best?.globalBatch,
    changed: true,
    reason: `${input.current} → ${replicas} worker(s): over its share of the cluster (${input.capacity}); predicted goodput by workers: ${describeOptions(options, replicas)}`,
    options,
  };
}
