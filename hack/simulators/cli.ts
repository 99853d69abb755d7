/**
 * The simulators on their own, against a cluster from `hack/cluster.sh up`:
 *
 *   npx tsx hack/simulators/cli.ts autoscaler --kubeconfig K [--agent local] [--delay 10] [--scale-down 60]
 *                                             [--max-nodes 8] [--gpus 2] [--pods 16]
 *   npx tsx hack/simulators/cli.ts reclaimer  --kubeconfig K [--notice 30] [--every 60-180] [--abrupt 0.3]
 *
 * Both run until Ctrl-C and print what they do.
 */
import { KubeConfig } from '@kubernetes/client-node';
import { type CommandSpec, commandLine, UsageError } from '../../operator/commands/args.ts';
import { SimulatedAutoscaler, SpotReclaimer } from './simulators.ts';

const kubeconfig = {
  type: 'string',
  value: 'FILE',
  help: 'the cluster (default: $KUBECONFIG)',
} as const;

const AUTOSCALER = {
  command: 'hack/simulators/cli.ts autoscaler',
  synopsis: '[options]',
  description: 'Adds a fake spot node for Pending workers and removes idle ones, until Ctrl-C.',
  options: {
    kubeconfig,
    agent: { type: 'string', value: 'NAME', help: 'node agent that runs the new nodes (default local)' },
    delay: { type: 'string', value: 'SECONDS', help: 'time the cloud takes to add a node (default 10)' },
    'scale-down': { type: 'string', value: 'SECONDS', help: 'remove a node idle this long (default 60)' },
    'max-nodes': { type: 'string', value: 'N', help: 'at most this many nodes (default 8)' },
    gpus: { type: 'string', value: 'N', help: 'GPUs per node (default 2)' },
    pods: { type: 'string', value: 'N', help: 'pods per node (default 16)' },
  },
} as const satisfies CommandSpec;

const RECLAIMER = {
  command: 'hack/simulators/cli.ts reclaimer',
  synopsis: '[options]',
  description: 'Reclaims random spot nodes, with notice or without, until Ctrl-C.',
  options: {
    kubeconfig,
    notice: { type: 'string', value: 'SECONDS', help: 'from the taint to the deletion (default 30)' },
    every: { type: 'string', value: 'MIN-MAX', help: 'seconds between reclaims (default 60-180)' },
    abrupt: { type: 'string', value: 'RATIO', help: 'share of reclaims without notice (default 0.3)' },
  },
} as const satisfies CommandSpec;

const SIMULATORS = {
  command: 'hack/simulators/cli.ts',
  synopsis: 'autoscaler|reclaimer [options]',
  description: `The simulators of the local cluster on their own, against a cluster from hack/cluster.sh up:
  autoscaler   a cloud autoscaler with spot nodes
  reclaimer    spot reclaims
hack/simulators/cli.ts COMMAND --help shows the options of each.`,
  options: {},
  positionals: true,
} as const satisfies CommandSpec;

const io = { out: console.log, err: console.error };

function number(flag: string, value: string | undefined, fallback: number): number {
  if (value === undefined) return fallback;
  const n = Number(value);
  if (!Number.isFinite(n) || n < 0)
    throw new UsageError(`--${flag}: expected a non-negative number, got ${value}`);
  return n;
}

function kubeconfigFile(value: string | undefined): string {
  const file = value ?? process.env['KUBECONFIG'];
  if (file === undefined || file === '') throw new UsageError('missing --kubeconfig FILE (or $KUBECONFIG)');
  return file;
}

const [command, ...argv] = process.argv.slice(2);
type Plan =
  | {
      readonly kind: 'autoscaler';
      readonly kubeconfig: string;
      readonly agent: string;
      readonly config: ConstructorParameters<typeof SimulatedAutoscaler>[1]['config'];
    }
  | {
      readonly kind: 'reclaimer';
      readonly kubeconfig: string;
      readonly noticeMs: number;
      readonly minMs: number;
      readonly maxMs: number;
      readonly abrupt: number;
    };

let line: { readonly parsed: Plan } | { readonly exit: number };
if (command === 'autoscaler') {
  line = commandLine(AUTOSCALER, argv, io, (values) => ({
    kind: 'autoscaler',
    kubeconfig: kubeconfigFile(values.kubeconfig),
    agent: values.agent ?? 'local',
    config: {
      provisionDelayMs: number('delay', values.delay, 10) * 1000,
      scaleDownAfterMs: number('scale-down', values['scale-down'], 60) * 1000,
      maxNodes: number('max-nodes', values['max-nodes'], 8),
      gpusPerNode: number('gpus', values.gpus, 2),
      podsPerNode: number('pods', values.pods, 16),
    },
  }));
} else if (command === 'reclaimer') {
  line = commandLine(RECLAIMER, argv, io, (values) => {
    const every = values.every ?? '60-180';
    const match = /^(\d+(?:\.\d+)?)-(\d+(?:\.\d+)?)$/.exec(every);
    if (match === null || Number(match[1]) > Number(match[2]))
      throw new UsageError(`--every: expected MIN-MAX seconds with MIN <= MAX, got ${every}`);
    return {
      kind: 'reclaimer',
      kubeconfig: kubeconfigFile(values.kubeconfig),
      noticeMs: number('notice', values.notice, 30) * 1000,
      minMs: Number(match[1]) * 1000,
      maxMs: Number(match[2]) * 1000,
      abrupt: number('abrupt', values.abrupt, 0.3),
    };
  });
} else {
  line = commandLine(SIMULATORS, command === undefined ? [] : [command, ...argv], io, () => {
    throw new UsageError(command === undefined ? 'missing COMMAND' : `unknown command "${command}"`);
  });
}
if ('exit' in line) process.exit(line.exit);
const plan = line.parsed;

const kc = new KubeConfig();
kc.loadFromFile(plan.kubeconfig);
const log = (line: string) => console.log(`${new Date().toISOString()} ${line}`);
const stop = new AbortController();
process.once('SIGINT', () => stop.abort());
process.once('SIGTERM', () => stop.abort());
const done = new Promise((resolve) => stop.signal.addEventListener('abort', resolve, { once: true }));

if (plan.kind === 'autoscaler') {
  await using autoscaler = new SimulatedAutoscaler(kc, { agentName: plan.agent, config: plan.config, log });
  autoscaler.start();
  log('autoscaler running');
  await done;
} else {
  await using reclaimer = new SpotReclaimer(kc, { noticeMs: plan.noticeMs, log });
  void reclaimer.runRandomly(plan.minMs, plan.maxMs, plan.abrupt);
  log('reclaimer running');
  await done;
}
