/**
 * `hack/e2e.sh`: the spot-churn scenario on the local control plane, for a person to watch.
 *
 *   hack/e2e.sh [--manifest FILE] [--notice SECONDS] [--autoscaler-delay SECONDS]
 *               [--min-accuracy RATIO | --accuracy-tolerance RATIO] [--refresh-reference]
 *               [--min-goodput RATIO] [--worker-cpus N] [--real-node] [--timeout SECONDS]
 *               [--artifacts DIR]
 *
 * Exit 0 when every expectation holds, 1 when one fails, 2 for bad usage or a broken setup, 130 on
 * Ctrl-C. Whatever happens, every process it started is stopped before it exits.
 */
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { REPO_ROOT } from '../node-agent/config.ts';
import { runScenarioCommand } from './command.ts';

const USAGE = `usage: hack/e2e.sh [options]

  --manifest FILE           TrainingJob to run (default examples/fashion-mnist-mlp.yaml), applied unchanged
  --notice SECONDS          spot notice: from the taint to the node's deletion (default 20)
  --autoscaler-delay SEC    time the simulated cloud takes to add a node for a Pending worker (default 5)
  --min-accuracy RATIO      an absolute final accuracy to reach instead of the reference's (below)
  --accuracy-tolerance R    how far below an undisturbed run of the same manifest (same seeds, the job's
                            replicas, \`tensile run\`; cached in ~/.cache/tensile/e2e-reference) the
                            accuracy may end (default 0.005), as the mean of the evaluations of the
                            last fifth of training on both sides
  --refresh-reference       train the reference again even if it is cached
  --min-goodput RATIO       also require this goodput (off by default: the ratio depends on the
                            machine's speed; each kind of lost time is held to a budget instead)
  --worker-cpus N           cap the worker pods together at N CPUs (a slower machine; cgroup or a
                            SIGSTOP/SIGCONT duty cycle)
  --real-node               one worker on the real kubelet node (hack/cluster.sh up --real-node) in a
                            container of the worker image hack/images.sh builds, the others on fake
                            nodes; the second reclaim (with notice) takes the real node (needs root)
  --timeout SECONDS         give up after this long (default 3600)
  --artifacts DIR           keep logs and the result there (default: a new folder under $TMPDIR)
`;

let values: ReturnType<typeof parse>['values'];
function parse() {
  return parseArgs({
    options: {
      manifest: { type: 'string' },
      notice: { type: 'string' },
      'autoscaler-delay': { type: 'string' },
      'min-accuracy': { type: 'string' },
      'accuracy-tolerance': { type: 'string' },
      'refresh-reference': { type: 'boolean' },
      'min-goodput': { type: 'string' },
      'worker-cpus': { type: 'string' },
      'real-node': { type: 'boolean' },
      timeout: { type: 'string' },
      artifacts: { type: 'string' },
      help: { type: 'boolean', short: 'h' },
    },
  });
}
try {
  values = parse().values;
} catch (error) {
  process.stderr.write(`hack/e2e.sh: ${(error as Error).message}\n${USAGE}`);
  process.exit(2);
}
if (values.help) {
  process.stdout.write(USAGE);
  process.exit(0);
}
const number = (flag: string, value: string | undefined): number | undefined => {
  if (value === undefined) return undefined;
  const n = Number(value);
  if (!Number.isFinite(n) || n < 0) {
    process.stderr.write(`hack/e2e.sh: --${flag}: expected a non-negative number, got "${value}"\n`);
    process.exit(2);
  }
  return n;
};

const artifactsDir =
  values.artifacts ??
  join(process.env['TMPDIR'] ?? tmpdir(), `tensile-e2e-${new Date().toISOString().replace(/[:.]/g, '-')}`);

const minAccuracy = number('min-accuracy', values['min-accuracy']);
const accuracyTolerance = number('accuracy-tolerance', values['accuracy-tolerance']);
const minGoodput = number('min-goodput', values['min-goodput']);
const workerCpus = number('worker-cpus', values['worker-cpus']);
await runScenarioCommand('the scenario', {
  manifestFile: values.manifest ?? join(REPO_ROOT, 'examples', 'fashion-mnist-mlp.yaml'),
  ...(minAccuracy === undefined ? {} : { minAccuracy }),
  ...(accuracyTolerance === undefined ? {} : { accuracyTolerance }),
  refreshReference: values['refresh-reference'] ?? false,
  noticeSeconds: number('notice', values.notice) ?? 20,
  autoscalerDelaySeconds: number('autoscaler-delay', values['autoscaler-delay']) ?? 5,
  ...(minGoodput === undefined ? {} : { minGoodput }),
  ...(workerCpus === undefined ? {} : { workerCpus }),
  realNode: values['real-node'] ?? false,
  timeoutSeconds: number('timeout', values.timeout) ?? 3600,
  artifactsDir,
});
