/**
 * `hack/chaos.sh`: the e2e scenario on the local cluster with the seeded faults of schedule.ts.
 *
 *   hack/chaos.sh [--seed S] [--minutes M] [--kinds a,b,…] [--epochs N] [--artifacts DIR]
 *                 [--print-schedule]
 *
 * Exit 0 when every expectation holds, 1 when one fails, 2 for bad usage or a broken setup, 130 on
 * Ctrl-C. Whatever happens, every process it started is stopped and every rule it added removed.
 */
import { mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { homedir, tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { parseDocument } from 'yaml';
import { runScenarioCommand } from '../e2e/command.ts';
import { REPO_ROOT } from '../node-agent/config.ts';
import { chaosDisturbance } from './disturbance.ts';
import { chaosSchedule, FAULT_KINDS, type FaultKind, parseKinds } from './schedule.ts';

const USAGE = `usage: hack/chaos.sh [options]

  --seed S            seed of the fault schedule (default 1): the same seed, the same faults in the
                      same order at the same offsets
  --minutes M         length of the fault window, from the first training step (default 4)
  --kinds a,b,...     draw only these kinds (default all: ${FAULT_KINDS.join(', ')})
  --epochs N          train this many epochs (default: the example's 10 up to 5 minutes, else 2.5 per
                      minute, without its target accuracy, so that the job lasts the window)
  --timeout SECONDS   give up after this long (default: 3 × the window + 20 minutes)
  --artifacts DIR     keep logs and the result there (default: a new folder under $TMPDIR)
  --print-schedule    print the schedule and exit
`;

function fail(message: string): never {
  process.stderr.write(`hack/chaos.sh: ${message}\n${USAGE}`);
  process.exit(2);
}

let values: Record<string, string | boolean | undefined>;
try {
  values = parseArgs({
    options: {
      seed: { type: 'string' },
      minutes: { type: 'string' },
      kinds: { type: 'string' },
      epochs: { type: 'string' },
      timeout: { type: 'string' },
      artifacts: { type: 'string' },
      'print-schedule': { type: 'boolean' },
      help: { type: 'boolean', short: 'h' },
    },
  }).values;
} catch (error) {
  fail((error as Error).message);
}
if (values['help']) {
  process.stdout.write(USAGE);
  process.exit(0);
}
const number = (flag: string, fallback: number): number => {
  const raw = values[flag];
  if (raw === undefined) return fallback;
  const n = Number(raw);
  if (!Number.isFinite(n) || n < 0) fail(`--${flag}: expected a non-negative number, got "${raw}"`);
  return n;
};

const seed = number('seed', 1);
const minutes = number('minutes', 4);
let kinds: readonly FaultKind[] = FAULT_KINDS;
try {
  if (typeof values['kinds'] === 'string') kinds = parseKinds(values['kinds']);
} catch (error) {
  fail(`--kinds: ${(error as Error).message}`);
}
const schedule = chaosSchedule({ seed, seconds: minutes * 60, kinds });
if (values['print-schedule']) {
  for (const f of schedule)
    process.stdout.write(
      `${String(f.index).padStart(3)} ${String(f.atSeconds).padStart(7)} s  ${f.kind}${f.seconds > 0 ? ` for ${f.seconds} s` : ''} (target ${f.target.toFixed(3)})\n`,
    );
  process.exit(0);
}

const artifactsDir =
  (values['artifacts'] as string | undefined) ??
  join(
    process.env['TMPDIR'] ?? tmpdir(),
    `tensile-chaos-${seed}-${new Date().toISOString().replace(/[:.]/g, '-')}`,
  );
mkdirSync(artifactsDir, { recursive: true });

const example = join(REPO_ROOT, 'examples', 'fashion-mnist-mlp.yaml');
const epochs = number('epochs', minutes <= 5 ? 0 : Math.round(minutes * 2.5));
const manifestFile = epochs === 0 ? example : longerManifest(example, epochs, artifactsDir);

/** The example with more epochs and no target accuracy: a job that lasts the fault window. */
function longerManifest(file: string, epochs: number, dir: string): string {
  const doc = parseDocument(readFileSync(file, 'utf8'));
  doc.setIn(['spec', 'stopping', 'epochs'], epochs);
  doc.deleteIn(['spec', 'stopping', 'targetAccuracy']);
  // Every kill is a failed pod; the faults must not exhaust the job's failure budget.
  doc.setIn(['spec', 'runPolicy', 'backoffLimit'], 1000);
  // The manifest's bytes key the cached reference: the same epochs give the same file.
  const cache = join(process.env['TENSILE_CACHE'] ?? join(homedir(), '.cache', 'tensile'), 'chaos');
  mkdirSync(cache, { recursive: true });
  const out = join(cache, `fashion-mnist-mlp-${epochs}-epochs.yaml`);
  writeFileSync(out, doc.toString());
  writeFileSync(join(dir, 'manifest.yaml'), doc.toString());
  return out;
}

await runScenarioCommand('the chaos run', {
  manifestFile,
  churn: [],
  operators: 2,
  noticeSeconds: 10,
  autoscalerDelaySeconds: 5,
  timeoutSeconds: number('timeout', minutes * 180 + 1200),
  artifactsDir,
  disturbance: chaosDisturbance({ seed, schedule, windowSeconds: minutes * 60 }),
});
