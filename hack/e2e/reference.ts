/**
 * The accuracy the end-to-end run is judged against: the same manifest (so the same seeds), trained
 * undisturbed by `tensile run` with the job's own number of workers on this machine. The same run
 * reaches another accuracy on another backend or with another seed, never because the machine is
 * faster, so the result is cached in $TENSILE_CACHE/e2e-reference (default ~/.cache/tensile) under a
 * key of the manifest's bytes, the worker count, the backend that the manifest's choice resolves to on
 * this machine (for `auto`: tensorflow where the native addon is installed, wasm where not) and the
 * platform. The reference is forced onto that backend, recorded with it and checked against the one
 * the pods used.
 */
import { execFile, spawn } from 'node:child_process';
import { createHash } from 'node:crypto';
import {
  createWriteStream,
  existsSync,
  mkdirSync,
  mkdtempSync,
  readdirSync,
  readFileSync,
  renameSync,
  rmSync,
  writeFileSync,
} from 'node:fs';
import { homedir, tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { z } from 'zod';
import { decodeWorkerLog } from '../../operator/api/worker-events.ts';
import { REPO_ROOT } from '../node-agent/config.ts';
import { type Evaluation, evaluations } from './analysis.ts';

export const ReferenceSchema = z.object({
  key: z.string(),
  manifestSha256: z.string(),
  workers: z.int().positive(),
  backendChoice: z.string(),
  /** The backend the reference's workers ended up on. */
  backend: z.string(),
  accuracy: z.number(),
  /** Every evaluation of the run: the verdict compares the mean of the last fifth (tailAccuracy). */
  evaluations: z.array(z.object({ step: z.int(), accuracy: z.number() })).min(1),
  step: z.int(),
  epoch: z.int(),
  seconds: z.number(),
  createdAt: z.string(),
});
export type Reference = z.infer<typeof ReferenceSchema>;

export interface ReferenceOptions {
  readonly manifestFile: string;
  readonly workers: number;
  /** `spec.worker.backend` of the manifest ('auto' when it leaves it out). */
  readonly backendChoice: string;
  /** Run it again even when a cached result exists. */
  readonly refresh?: boolean;
  readonly cacheDir?: string;
  readonly signal?: AbortSignal;
  readonly log?: (line: string) => void;
}

export function referenceCacheDir(): string {
  return join(process.env['TENSILE_CACHE'] ?? join(homedir(), '.cache', 'tensile'), 'e2e-reference');
}

/**
 * The backend `choice` resolves to here, by the workers' own selection (in a child process: loading a
 * backend cannot be undone in this one).
 */
export async function resolveBackend(choice: string, signal?: AbortSignal): Promise<string> {
  const script = `const { selectBackend } = await import(${JSON.stringify(join(REPO_ROOT, 'worker', 'backend', 'select.ts'))});
process.stdout.write((await selectBackend(${JSON.stringify(choice)})).backend);`;
  const { stdout } = await promisify(execFile)(
    process.execPath,
    ['--import', 'tsx', '--input-type=module', '-e', script],
    { cwd: REPO_ROOT, ...(signal === undefined ? {} : { signal }) },
  );
  return stdout.trim();
}

/** The cache key: whatever changes the undisturbed run's result, and nothing that only changes its speed. */
export function referenceKey(manifestText: string, workers: number, backend: string): string {
  const version = (JSON.parse(readFileSync(join(REPO_ROOT, 'package.json'), 'utf8')) as { version: string })
    .version;
  return createHash('sha256')
    .update(
      JSON.stringify({
        manifest: createHash('sha256').update(manifestText).digest('hex'),
        workers,
        backend,
        platform: `${process.platform}-${process.arch}`,
        tensile: version,
      }),
    )
    .digest('hex')
    .slice(0, 16);
}

/** The cached reference for this manifest, or a new undisturbed run (about as long as the job itself). */
export async function referenceRun(options: ReferenceOptions): Promise<Reference & { cached: boolean }> {
  const say = options.log ?? (() => {});
  const text = readFileSync(options.manifestFile, 'utf8');
  const backend = await resolveBackend(options.backendChoice, options.signal);
  const key = referenceKey(text, options.workers, backend);
  const dir = options.cacheDir ?? referenceCacheDir();
  const file = join(dir, `${key}.json`);
  if (!options.refresh && existsSync(file)) {
    const parsed = ReferenceSchema.safeParse(JSON.parse(readFileSync(file, 'utf8')));
    if (parsed.success) return { ...parsed.data, cached: true };
    say(`running the reference again: ${file} is malformed or older than its evaluation series`);
  }
  const out = mkdtempSync(join(process.env['TMPDIR'] ?? tmpdir(), 'tensile-e2e-reference-'));
  say(
    `reference: tensile run ${options.manifestFile} --workers ${options.workers} --backend ${backend} (undisturbed, same seeds; cached as ${file})`,
  );
  const started = performance.now();
  try {
    const code = await runTensile(
      ['run', options.manifestFile, '--workers', String(options.workers), '--backend', backend, '--out', out],
      join(out, 'run.log'),
      options.signal,
    );
    const summaryFile = join(out, 'summary.json');
    if (code !== 0 || !existsSync(summaryFile))
      throw new Error(`the reference run exited with ${code}; its output: ${join(out, 'run.log')}`);
    const summary = JSON.parse(readFileSync(summaryFile, 'utf8')) as {
      status?: string;
      step?: number;
      epoch?: number;
      backend?: string;
      eval?: { accuracy?: number } | null;
    };
    const accuracy = summary.eval?.accuracy;
    if (summary.status !== 'completed' || typeof accuracy !== 'number')
      throw new Error(`the reference run did not complete with an evaluation: ${summaryFile}`);
    const reference: Reference = {
      key,
      manifestSha256: createHash('sha256').update(text).digest('hex'),
      workers: options.workers,
      backendChoice: options.backendChoice,
      backend: summary.backend ?? 'unknown',
      accuracy,
      evaluations: referenceEvaluations(out),
      step: summary.step ?? 0,
      epoch: summary.epoch ?? 0,
      seconds: (performance.now() - started) / 1000,
      createdAt: new Date().toISOString(),
    };
    mkdirSync(dir, { recursive: true });
    writeFileSync(`${file}.tmp`, `${JSON.stringify(reference, null, 2)}\n`);
    renameSync(`${file}.tmp`, file);
    rmSync(out, { recursive: true, force: true });
    return { ...reference, cached: false };
  } catch (error) {
    say(`reference: failed; its files are in ${out}`);
    throw error;
  }
}

/** The evaluations in the workers' logs of a `tensile run` folder (`worker-<i>.log`). */
function referenceEvaluations(out: string): Evaluation[] {
  const lines = readdirSync(out)
    .filter((name) => /^worker-\d+\.log$/.test(name))
    .flatMap((name) => decodeWorkerLog(readFileSync(join(out, name), 'utf8')).events);
  const found = evaluations(lines);
  if (found.length === 0) throw new Error(`the reference run logged no evaluation: ${out}`);
  return found;
}

function runTensile(args: readonly string[], logFile: string, signal?: AbortSignal): Promise<number | null> {
  return new Promise((resolve, reject) => {
    const log = createWriteStream(logFile);
    const child = spawn(process.execPath, [join(REPO_ROOT, 'operator', 'bin', 'tensile.mjs'), ...args], {
      cwd: REPO_ROOT,
      stdio: ['ignore', 'pipe', 'pipe'],
      signal,
      killSignal: 'SIGINT',
    });
    child.stdout.pipe(log, { end: false });
    child.stderr.pipe(log, { end: false });
    child.once('error', (error) => {
      log.end();
      reject(error);
    });
    child.once('close', (code) => {
      log.end();
      resolve(code);
    });
  });
}
