/**
 * `tensile export DIR [--out DIR] [--file MANIFEST]`: the trained model of a run, from its newest valid
 * checkpoint, in the folder layout of worker/export/model-export.ts. DIR is the output folder of
 * `tensile run` or a checkpoint volume's folder (where a pod wrote `job.json` beside its checkpoints).
 * The preprocessing is fitted again from the dataset: fitting is deterministic, so it is the one the
 * workers trained with.
 */
import { existsSync, readdirSync, readFileSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { checkpointClaimName, JOB_RECORD, modelLocation } from '../api/model-output.ts';
import {
  API_GROUP,
  API_VERSION,
  BACKENDS,
  type BackendChoice,
  PLURAL,
  type TrainingJob,
  type TrainingJobSpec,
  TrainingJobSpecSchema,
} from '../api/training-job.ts';
import { formatManifestProblem, validateManifestText } from '../api/validate.ts';
import { type CommandIo, type CommandSpec, commandLine, UsageError } from './args.ts';
import { ExportError } from './export-error.ts';

export const EXPORT_COMMAND = {
  command: 'tensile export',
  synopsis: 'DIR|JOB [options]',
  description: `Writes the trained model of the run in DIR (the --out directory of tensile run, or the folder of a
checkpoint volume) from its newest valid checkpoint: model.json and weights.bin (tfjs Layers format),
preprocessing.json, labels.json and tensile.json (job, spec, step, evaluation). Needs the dataset the
job trained on, to fit the preprocessing again.
With the name of a TrainingJob instead of a folder: copies the cluster job's model (status.model) to
--out (default ./JOB-model), from the volume's folder when it is on this machine, else through a
short-lived pod that mounts the claim read-only; before the job completed, says where the model will
be and how to export the newest checkpoint.`,
  options: {
    namespace: {
      type: 'string',
      short: 'n',
      value: 'NS',
      help: "the namespace of JOB (default: the kubeconfig's, else default)",
    },
    kubeconfig: {
      type: 'string',
      value: 'FILE',
      help: 'kubeconfig for JOB (default: $KUBECONFIG, then ~/.kube/config)',
    },
    out: {
      type: 'string',
      value: 'DIR',
      help: 'where to write the model (default DIR/model; ./JOB-model for a job)',
    },
    image: {
      type: 'string',
      value: 'IMAGE',
      help: "JOB: the image of the pod that reads the claim (default: the job's worker image)",
    },
    backend: {
      type: 'string',
      value: 'NAME',
      help: 'auto|tensorflow|wasm|cpu: fit the preprocessing on the backend the workers used (default spec.worker.backend)',
    },
    file: {
      type: 'string',
      value: 'MANIFEST',
      help: 'the TrainingJob, when DIR holds no job.json (paths relative to the manifest)',
    },
  },
  positionals: true,
} as const satisfies CommandSpec;

export { ExportError } from './export-error.ts';

interface JobRecord {
  readonly name: string;
  readonly namespace: string;
  readonly uid?: string;
  readonly spec: TrainingJobSpec;
}

/** The folder holding ckpt-* folders: DIR/checkpoints of a local run, or DIR itself. */
export function checkpointFolder(dir: string): string {
  const nested = join(dir, 'checkpoints');
  const hasCheckpoints = (d: string) => existsSync(d) && readdirSync(d).some((n) => n.startsWith('ckpt-'));
  if (hasCheckpoints(nested) || (!hasCheckpoints(dir) && existsSync(nested))) return nested;
  return dir;
}

function readJobRecord(checkpoints: string, manifest: string | undefined): JobRecord {
  if (manifest !== undefined) {
    const report = validateManifestText(readFileSync(manifest, 'utf8'), manifest);
    const errors = report.problems.filter((p) => p.severity === 'error');
    if (errors.length > 0) throw new ExportError(errors.map(formatManifestProblem).join('\n'));
    const [job] = report.jobs;
    if (job === undefined || report.jobs.length > 1)
      throw new ExportError(`${manifest}: expected exactly one TrainingJob`);
    // Paths in a manifest are relative to its folder, as for tensile run.
    const given = job.spec.dataset.path;
    const path = /^[a-z][a-z0-9+.-]*:\/\//i.test(given) ? given : resolve(dirname(manifest), given);
    return {
      name: job.metadata.name,
      namespace: job.metadata.namespace ?? 'default',
      spec: { ...job.spec, dataset: { ...job.spec.dataset, path } },
    };
  }
  const file = join(checkpoints, JOB_RECORD);
  if (!existsSync(file))
    throw new ExportError(`${file} is missing (written by workers of this version); pass --file MANIFEST`);
  const raw = JSON.parse(readFileSync(file, 'utf8')) as Partial<JobRecord> & { spec?: unknown };
  const spec = TrainingJobSpecSchema.safeParse(raw.spec);
  if (!spec.success || typeof raw.name !== 'string')
    throw new ExportError(`${file} does not hold a TrainingJob record; pass --file MANIFEST`);
  return {
    name: raw.name,
    namespace: typeof raw.namespace === 'string' ? raw.namespace : 'default',
    ...(typeof raw.uid === 'string' ? { uid: raw.uid } : {}),
    spec: spec.data,
  };
}

/** Exports the model of the run in `dir`; returns where it went, the step and the accuracy. */
export async function exportRun(
  dir: string,
  options: { out?: string | undefined; file?: string | undefined; backend?: BackendChoice | undefined } = {},
): Promise<{ dir: string; step: number; accuracy: number | undefined; checkpoint: string; backend: string }> {
  const checkpoints = checkpointFolder(resolve(dir));
  const job = readJobRecord(checkpoints, options.file === undefined ? undefined : resolve(options.file));
  const { CheckpointStore } = await import('../../worker/checkpoint/store.ts');
  const store = new CheckpointStore(checkpoints, job.spec.checkpoint.keep);
  const skipped: string[] = [];
  const latest = await store.latest((ref, reason) => skipped.push(`${ref.path}: ${reason}`));
  if (latest === undefined)
    throw new ExportError(
      `no valid checkpoint in ${checkpoints}${skipped.length > 0 ? ` (skipped ${skipped.join('; ')})` : ''}`,
    );
  // PCA's covariance is a matMul on the backend: the workers' backend refits exactly what they fitted.
  const { selectBackend } = await import('../../worker/backend/select.ts');
  const backend = await selectBackend(options.backend ?? job.spec.worker.backend);
  const { loadDataset } = await import('../../worker/data/dataset.ts');
  const { writeModelExport } = await import('../../worker/export/model-export.ts');
  const dataset = await loadDataset(job.spec.dataset, () => undefined);
  try {
    const fp = latest.snapshot.state.dataset;
    if (
      fp.trainSamples !== dataset.fingerprint.trainSamples ||
      fp.featureSize !== dataset.fingerprint.featureSize
    )
      throw new ExportError(
        `the checkpoint was trained on ${fp.trainSamples} samples of ${fp.featureSize} features, ${job.spec.dataset.path} has ${dataset.fingerprint.trainSamples} of ${dataset.fingerprint.featureSize}`,
      );
    const out = resolve(options.out ?? join(dir, 'model'));
    // Checkpoints carry the fit they were trained with; older ones get the (deterministic) refit.
    const saved = latest.snapshot.state.preprocessing;
    const { decodePreprocessing } = await import('../../worker/data/preprocess.ts');
    const fit = saved === undefined ? {} : decodePreprocessing(saved);
    const written = writeModelExport(out, {
      snapshot: latest.snapshot,
      dataset: { ...dataset, ...fit },
      job,
      spec: job.spec,
    });
    return {
      dir: out,
      step: written.step,
      accuracy: written.accuracy,
      checkpoint: latest.ref.path,
      backend: backend.backend,
    };
  } finally {
    dataset.close();
  }
}

export async function runExport(args: readonly string[], io: CommandIo): Promise<number> {
  const line = commandLine(EXPORT_COMMAND, args, io, (values, positionals) => {
    const [dir, other] = positionals;
    if (dir === undefined)
      throw new UsageError('missing DIR (a tensile run directory or a checkpoint folder)');
    if (other !== undefined) throw new UsageError(`one run at a time (got ${dir} and ${other})`);
    const backend = values.backend;
    if (backend !== undefined && !(BACKENDS as readonly string[]).includes(backend))
      throw new UsageError(`--backend must be one of ${BACKENDS.join(', ')}, got ${backend}`);
    return {
      dir,
      out: values.out,
      file: values.file,
      backend: backend as BackendChoice | undefined,
      namespace: values.namespace,
      kubeconfig: values.kubeconfig,
      image: values.image,
    };
  });
  if ('exit' in line) return line.exit;
  const { dir, out, file, backend } = line.parsed;
  if (!existsSync(dir)) {
    if (!/^[a-z0-9]([-a-z0-9]*[a-z0-9])?$/.test(dir)) {
      io.err(`tensile export: ${dir}: no such directory (nor a TrainingJob name)`);
      return 1;
    }
    return clusterModel(dir, line.parsed, io);
  }
  try {
    const result = await exportRun(dir, { out, file, backend });
    const accuracy =
      result.accuracy === undefined ? 'no evaluation' : `accuracy ${result.accuracy.toFixed(4)}`;
    io.out(
      `${result.dir} (step ${result.step}, ${accuracy}, from ${result.checkpoint}; preprocessing on ${result.backend})`,
    );
    return 0;
  } catch (error) {
    io.err(`tensile export: ${(error as Error).message}`);
    return 1;
  }
}

/** Where a cluster job's model is: status.model, or where it will be written and how to get it sooner. */
async function clusterModel(
  name: string,
  options: {
    namespace?: string | undefined;
    kubeconfig?: string | undefined;
    out?: string | undefined;
    image?: string | undefined;
  },
  io: CommandIo,
): Promise<number> {
  const { CustomObjectsApi, KubeConfig } = await import('@kubernetes/client-node');
  const config = new KubeConfig();
  try {
    const file = options.kubeconfig ?? process.env['KUBECONFIG'];
    if (file !== undefined && file !== '') config.loadFromFile(file);
    else config.loadFromDefault();
  } catch (error) {
    io.err(
      `tensile export: ${name} is no folder here, and no kubeconfig could be read: ${(error as Error).message}`,
    );
    return 1;
  }
  const namespace =
    options.namespace ?? config.getContextObject(config.getCurrentContext())?.namespace ?? 'default';
  let job: TrainingJob;
  try {
    job = (await config.makeApiClient(CustomObjectsApi).getNamespacedCustomObject({
      group: API_GROUP,
      version: API_VERSION,
      namespace,
      plural: PLURAL,
      name,
    })) as TrainingJob;
  } catch (error) {
    const code = (error as { code?: number }).code;
    io.err(
      `tensile export: ${code === 404 ? `no TrainingJob ${namespace}/${name} (and no folder ${name} here)` : `cannot read TrainingJob ${namespace}/${name}: ${(error as Error).message}`}`,
    );
    return 1;
  }
  const model = job.status?.model;
  if (model !== undefined) {
    const accuracy = model.accuracy === undefined ? 'no evaluation' : `accuracy ${model.accuracy.toFixed(4)}`;
    const { copyClusterModel } = await import('./export-cluster.ts');
    try {
      const copied = await copyClusterModel(config, job, options, io);
      io.out(
        `${copied.dir} (step ${model.step}, ${accuracy}, ${model.uri} via ${copied.via}; ${copied.files} files checked)`,
      );
      return 0;
    } catch (error) {
      io.err(`tensile export: ${namespace}/${name}: ${(error as Error).message}`);
      return 1;
    }
  }
  const where = modelLocation({ name, namespace }, job.spec);
  io.err(
    `tensile export: ${namespace}/${name} has no model yet (phase ${job.status?.phase ?? 'Pending'}); it is written to ${where.uri} when the job completes. To export its newest checkpoint now, run \`tensile export ${job.spec.checkpoint.path}\` in a pod that mounts the claim ${checkpointClaimName(name, job.spec)} at ${job.spec.checkpoint.path} (the worker image has tensile and the dataset).`,
  );
  return 1;
}
