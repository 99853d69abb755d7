/**
 * `npm start` (hack/start.mjs) as a person uses it: Ctrl-C mid-run (SIGINT to the whole process
 * group, as a terminal sends it) checkpoints and leaves no process behind; the next start resumes.
 * A smaller manifest than the demo's keeps it short; the start-up and stopping paths are the same.
 */
import { type ChildProcess, spawn } from 'node:child_process';
import { mkdtempSync, readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { stringify } from 'yaml';
import { consistently, eventually } from '../helpers/eventually.ts';

const root = fileURLToPath(new URL('../..', import.meta.url));
const dir = mkdtempSync(join(tmpdir(), 'tensile-start-'));
const out = join(dir, 'run');
const file = join(dir, 'job.yaml');
writeFileSync(
  file,
  stringify({
    apiVersion: 'tensile.dev/v1alpha1',
    kind: 'TrainingJob',
    metadata: { name: 'start-demo' },
    spec: {
      replicas: 2,
      minReplicas: 1,
      maxReplicas: 2,
      model: { mlp: { hiddenUnits: [64] } },
      dataset: { format: 'idx', path: '/usr/share/datasets/fashion-mnist', maxTrainSamples: 20000 },
      optimizer: { type: 'adam', learningRate: 0.002 },
      batch: { global: 50 },
      stopping: { epochs: 50 },
      checkpoint: { intervalSteps: 1000 },
    },
  }),
);

interface Started {
  readonly child: ChildProcess;
  readonly lines: string[];
  readonly done: Promise<number | null>;
  waitFor(pattern: RegExp, timeoutMs: number): Promise<RegExpExecArray>;
}

function npmStart(): Started {
  const child = spawn(process.execPath, ['hack/start.mjs', '--file', file, '--out', out, '--no-chaos'], {
    cwd: root,
    detached: true,
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  const lines: string[] = [];
  const onText = (chunk: Buffer) => lines.push(...chunk.toString().split('\n').filter(Boolean));
  child.stdout?.on('data', onText);
  child.stderr?.on('data', onText);
  const done = new Promise<number | null>((resolve) => child.on('close', (code) => resolve(code)));
  return {
    child,
    lines,
    done,
    waitFor: async (pattern, timeoutMs) => {
      const found = await eventually(
        () => `a line matching ${pattern}:\n${lines.slice(-20).join('\n')}`,
        () => {
          for (const line of lines) {
            const match = pattern.exec(line);
            if (match !== null) return match;
          }
          return child.exitCode === null ? undefined : 'exited';
        },
        { timeoutMs, intervalMs: 200 },
      );
      if (found === 'exited')
        throw new Error(`npm start exited with no line matching ${pattern}:\n${lines.slice(-20).join('\n')}`);
      return found;
    },
  };
}

/** Processes that belong to this run: workers (by their environment) and nats-server (by its store). */
function processesOfRun(): string[] {
  const found: string[] = [];
  for (const pid of readdirSync('/proc').filter((n) => /^\d+$/.test(n))) {
    try {
      const environ = readFileSync(`/proc/${pid}/environ`, 'utf8');
      const cmdline = readFileSync(`/proc/${pid}/cmdline`, 'utf8').replaceAll('\0', ' ');
      if (environ.includes(`TENSILE_OUT_DIR=${out}`) || cmdline.includes(out))
        found.push(`${pid}: ${cmdline}`);
    } catch {
      // Gone already, or not ours to read.
    }
  }
  return found;
}

async function interrupt(run: Started): Promise<void> {
  // A terminal's Ctrl-C: SIGINT to every process of the foreground group.
  process.kill(-(run.child.pid as number), 'SIGINT');
  const code = await run.done;
  // 128 + SIGINT: an interrupted command, as shells report it (issue 13, item 10).
  assert.is(code, 130, run.lines.slice(-20).join('\n'));
  assert.ok(
    run.lines.some((l) => /stopped at step \d+; run the same command again to resume/.test(l)),
    run.lines.slice(-20).join('\n'),
  );
  // The exit of the parent is not the end of the children: they must all go, and stay gone.
  await eventually(
    () => `no process of the run left: ${processesOfRun().join('; ')}`,
    () => processesOfRun().length === 0,
    10_000,
  );
  await consistently('no process of the run comes back', () => processesOfRun().length === 0, {
    forMs: 1000,
  });
}

test('Ctrl-C mid-run checkpoints and leaves no process; npm start again resumes', async () => {
  // Mid-run: both workers in one world and training, however long the second takes to start here
  // (a worker interrupted before its first world is another case).
  const bothTraining = /generation \d+: 2 worker\(s\)/;
  const first = npmStart();
  await first.waitFor(bothTraining, 120_000);
  await first.waitFor(/step (\d{3,})\//, 120_000);
  await interrupt(first);
  const checkpoints = readdirSync(join(out, 'checkpoints')).filter((n) => n.startsWith('ckpt-'));
  assert.ok(checkpoints.length > 0, 'a checkpoint was written on the way out');

  const second = npmStart();
  const resumed = await second.waitFor(/resumed from \S+ at step (\d+)/, 120_000);
  assert.ok(Number(resumed[1]) >= 100, `resumed at step ${resumed[1]}`);
  await second.waitFor(bothTraining, 120_000);
  await second.waitFor(/step (\d+)\//, 60_000);
  await interrupt(second);
});

test.run();
