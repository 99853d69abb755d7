/**
 * The records a run leaves behind, shared by who writes them and who reads them: a worker's result
 * (worker/result.ts) and `tensile run`'s summary.json (operator/local-run), read back by
 * `tensile report` (operator/report) and the tests.
 */
import { z } from 'zod';

const count = z.int().min(0);

export const CheckpointRefSchema = z.object({ step: count, path: z.string() });

export const EvalRecordSchema = z.object({
  step: count,
  epoch: count,
  loss: z.number(),
  accuracy: z.number(),
  samples: count,
});

/** One world of the run: who trained in it, with what batch and rate, from which step. */
export const GenerationRecordSchema = z.object({
  generation: count,
  worldSize: z.int().min(1),
  globalBatch: z.int().min(1),
  learningRate: z.number(),
  firstStep: count,
  /** Scale-invariant iterations when it began (AdaScale); absent in earlier versions. */
  firstProgress: z.number().min(0).optional(),
  specRevision: count.optional(),
});

/** One epoch as the audit saw it: every sample once is seen = the epoch's size, nothing else. */
export const EpochRecordSchema = z.object({
  epoch: count,
  seen: count,
  duplicated: count,
  missing: count,
  complete: z.boolean(),
});

/** A scripted chaos event of `tensile run --chaos` and the step and worker it hit. */
export const ChaosRecordSchema = z.object({
  action: z.string(),
  step: count,
  percent: z.number().optional(),
  seconds: z.number().optional(),
  worker: z.string().optional(),
  time: z.string(),
});

export const RunSummarySchema = z.object({
  job: z.string(),
  status: z.enum(['completed', 'stopped', 'left']),
  reason: z.string(),
  step: count,
  epoch: count,
  eval: EvalRecordSchema.nullable(),
  wallSeconds: z.number(),
  trainSeconds: z.number(),
  samplesPerSecond: z.number(),
  backend: z.string(),
  workers: count,
  epochs: z.array(EpochRecordSchema),
  generations: z.array(GenerationRecordSchema),
  checkpoint: CheckpointRefSchema.nullable(),
  resumedFrom: CheckpointRefSchema.nullable(),
  /** Time on steps that count / wall time of this session (absent for a single worker). */
  goodput: z.number().optional(),
  chaos: z.array(ChaosRecordSchema).optional(),
});

export type RunSummary = z.output<typeof RunSummarySchema>;
export type GenerationRecord = z.output<typeof GenerationRecordSchema>;
