/**
 * What a worker reports when it ends (completed, or stopped by SIGTERM after its checkpoint), written
 * to `<outDir>/result-<worker>.json` for `tensile run`. Validated on read: the file crosses a process
 * boundary.
 */
import { readFileSync, renameSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { z } from 'zod';
import {
  CheckpointRefSchema,
  EvalRecordSchema,
  GenerationRecordSchema,
  RunSummarySchema,
} from '../operator/api/run-summary.ts';

export const WorkerResultSchema = z.object({
  /** left: this worker left the world (SIGTERM, a leave request) while the others go on. */
  status: RunSummarySchema.shape.status,
  reason: z.string(),
  worker: z.string(),
  step: z.int().min(0),
  epoch: z.int().min(0),
  samples: z.int().min(0),
  eval: EvalRecordSchema.nullable(),
  backend: z.string(),
  generations: z.array(GenerationRecordSchema),
  trainSeconds: z.number().min(0),
  sessionSamplesPerSecond: z.number().min(0),
  /** Time this session spent in steps that completed, and in steps thrown away by a world change. */
  stepSeconds: z.number().min(0).default(0),
  lostStepSeconds: z.number().min(0).default(0),
  checkpoint: CheckpointRefSchema.nullable(),
  resumedFrom: CheckpointRefSchema.nullable(),
  trainSamples: z.int().min(1),
  auditFile: z.string(),
});

export type WorkerResult = z.output<typeof WorkerResultSchema>;

export function resultFile(outDir: string, worker: string): string {
  return join(outDir, `result-${worker}.json`);
}

export function writeWorkerResult(outDir: string, result: WorkerResult): string {
  const file = resultFile(outDir, result.worker);
  const temporary = `${file}.tmp-${process.pid}`;
  writeFileSync(temporary, `${JSON.stringify(result, null, 2)}\n`);
  renameSync(temporary, file);
  return file;
}

export function readWorkerResult(file: string): WorkerResult {
  return WorkerResultSchema.parse(JSON.parse(readFileSync(file, 'utf8')));
}
