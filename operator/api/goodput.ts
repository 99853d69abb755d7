/**
 * Goodput: the time spent on steps that count over the wall time, for `tensile run`'s summary and
 * the end-to-end verdict alike. Pure, over the workers' `generation-end` events and the generations
 * that own steps in the final state.
 */
import { eventsOf, type WorkerEvent } from './worker-events.ts';

/** One worker's part of a generation; `lastStep` is exclusive (steps 0..299: firstStep 0, lastStep 300). */
export interface GenerationEnd {
  readonly generation: number;
  readonly firstStep: number;
  readonly lastStep: number;
  readonly stepSeconds: number;
}

export interface GenerationStart {
  readonly generation: number;
  readonly firstStep: number;
}

export interface GenerationGoodput {
  readonly generation: number;
  readonly firstStep: number;
  /** First step not kept: the next generation's first step, or where this one ended. */
  readonly keptUntil: number;
  /** Workers that reported the end of this generation. */
  readonly reporters: number;
  readonly stepSeconds: number;
  readonly usefulSeconds: number;
}

export interface GoodputReport {
  readonly goodput: number;
  readonly usefulSeconds: number;
  readonly wallSeconds: number;
  readonly generations: readonly GenerationGoodput[];
}

/** The generation ends the workers logged (a line outside any generation has none). */
export function generationEnds(events: readonly WorkerEvent[]): GenerationEnd[] {
  const out: GenerationEnd[] = [];
  for (const e of eventsOf(events, 'generation-end'))
    if (e.generation !== undefined)
      out.push({
        generation: e.generation,
        firstStep: e.firstStep,
        lastStep: e.lastStep,
        stepSeconds: e.stepSeconds,
      });
  return out;
}

/**
 * Every worker of a generation runs the same steps in lockstep, so a generation contributes the
 * longest `stepSeconds` any of its workers reported, scaled down to the steps no later generation
 * redid (steps are taken to last alike within a generation). A generation missing from `history`
 * contributes nothing: its work was lost with its world.
 */
export function goodputReport(
  ends: readonly GenerationEnd[],
  history: readonly GenerationStart[],
  wallSeconds: number,
): GoodputReport {
  const sorted = [...history].sort((a, b) => a.generation - b.generation);
  const cutOf = (generation: number) =>
    Math.min(
      ...sorted.filter((g) => g.generation > generation).map((g) => g.firstStep),
      Number.POSITIVE_INFINITY,
    );
  const generations = sorted.map((g): GenerationGoodput => {
    const reports = ends.filter((e) => e.generation === g.generation);
    const cut = cutOf(g.generation);
    let usefulSeconds = 0;
    let stepSeconds = 0;
    let keptUntil = g.firstStep;
    for (const r of reports) {
      const done = r.lastStep - r.firstStep;
      const kept = Math.max(0, Math.min(r.lastStep, cut) - r.firstStep);
      usefulSeconds = Math.max(usefulSeconds, done > 0 ? r.stepSeconds * (kept / done) : 0);
      stepSeconds = Math.max(stepSeconds, r.stepSeconds);
      keptUntil = Math.max(keptUntil, Math.min(r.lastStep, cut));
    }
    return {
      generation: g.generation,
      firstStep: g.firstStep,
      keptUntil,
      reporters: reports.length,
      stepSeconds,
      usefulSeconds,
    };
  });
  const usefulSeconds = generations.reduce((sum, g) => sum + g.usefulSeconds, 0);
  return {
    goodput: wallSeconds > 0 ? Math.min(1, usefulSeconds / wallSeconds) : 0,
    usefulSeconds,
    wallSeconds,
    generations,
  };
}

/** The ratio alone. */
export function goodput(
  ends: readonly GenerationEnd[],
  history: readonly GenerationStart[],
  wallSeconds: number,
): number {
  return goodputReport(ends, history, wallSeconds).goodput;
}
