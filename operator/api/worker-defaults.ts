/**
 * Cluster-wide defaults for worker pods (the Helm chart's `workers` values, read by `tensile operator
 * --worker-defaults FILE`). A job's own setting always wins. GPUs and spot nodes are opt-in profiles:
 * a job that says nothing gets neither, so it schedules on a plain CPU cluster.
 */
import { z } from 'zod';
import { TolerationSchema, WorkerSpecSchema } from './training-job.ts';

export const GPU_RESOURCE = 'nvidia.com/gpu';

const GpuProfileSchema = z.strictObject({
  default: z.int().min(0).max(64).default(0).describe('GPUs of a job that does not set spec.worker.gpus.'),
  tolerations: z
    .array(TolerationSchema)
    .default([{ key: GPU_RESOURCE, operator: 'Exists', effect: 'NoSchedule' }])
    .describe('Added to the tolerations of GPU workers.'),
});

const SpotProfileSchema = z.strictObject({
  default: z
    .boolean()
    .default(false)
    .describe('Whether a job that does not set spec.worker.spot runs on spot.'),
  nodeSelector: z
    .record(z.string(), z.string())
    .default({ 'karpenter.sh/capacity-type': 'spot' })
    .describe('Merged into the node selector of spot workers (the job’s own keys win).'),
  tolerations: z
    .array(TolerationSchema)
    .default([{ key: 'karpenter.sh/capacity-type', operator: 'Equal', value: 'spot', effect: 'NoSchedule' }])
    .describe('Added to the tolerations of spot workers.'),
});

const picked = WorkerSpecSchema.pick({
  nodeSelector: true,
  tolerations: true,
  resources: true,
  priorityClassName: true,
}).partial();

export const WorkerDefaultsSchema = z.strictObject({
  ...picked.shape,
  gpu: GpuProfileSchema.prefault({}),
  spot: SpotProfileSchema.prefault({}),
  imagePullSecrets: z
    .array(z.strictObject({ name: z.string().min(1) }))
    .optional()
    .describe('Secrets every worker pod pulls its image with (added to the job’s own).'),
});

export type WorkerDefaults = z.output<typeof WorkerDefaultsSchema>;
export type WorkerDefaultsInput = z.input<typeof WorkerDefaultsSchema>;
