/**
 * The simulators on their own, against a cluster from `hack/cluster.sh up`:
 *
 *   npx tsx hack/simulators/cli.ts autoscaler --kubeconfig K [--agent local] [--delay 10] [--scale-down 60]
 *                                             [--max-nodes 8] [--gpus 2] [--pods 16]
 *   npx tsx hack/simulators/cli.ts reclaimer  --kubeconfig K [--notice 30] [--every 60-180] [--abrupt 0.3]
 *
 * Both run until Ctrl-C and print what they do.
 */
import { parseArgs } from 'node:util';
import { KubeConfig } from '@kubernetes/client-node';
import { SimulatedAutoscaler, SpotReclaimer } from './simulators.ts';

const [command, ...argv] = process.argv.slice(2);
const { values } = parseArgs({
  args: argv,
  options: {
    kubeconfig: { type: 'string' },
    agent: { type: 'string', default: 'local' },
    delay: { type: 'string', default: '10' },
    'scale-down': { type: 'string', default: '60' },
    'max-nodes': { type: 'string', default: '8' },
    gpus: { type: 'string', default: '2' },
    pods: { type: 'string', default: '16' },
    notice: { type: 'string', default: '30' },
    every: { type: 'string', default: '60-180' },
    abrupt: { type: 'string', default: '0.3' },
  },
});
const kubeconfig = values.kubeconfig ?? process.env['KUBECONFIG'];
if (kubeconfig === undefined || (command !== 'autoscaler' && command !== 'reclaimer')) {
  console.error(
    'usage: tsx hack/simulators/cli.ts autoscaler|reclaimer --kubeconfig FILE [options] (see the top of this file)',
  );
  process.exit(2);
}
const kc = new KubeConfig();
kc.loadFromFile(kubeconfig);
const log = (line: string) => console.log(`${new Date().toISOString()} ${line}`);
const stop = new AbortController();
process.once('SIGINT', () => stop.abort());
process.once('SIGTERM', () => stop.abort());
const done = new Promise((resolve) => stop.signal.addEventListener('abort', resolve, { once: true }));

if (command === 'autoscaler') {
  await using autoscaler = new SimulatedAutoscaler(kc, {
    agentName: values.agent ?? 'local',
    config: {
      provisionDelayMs: Number(values.delay) * 1000,
      scaleDownAfterMs: Number(values['scale-down']) * 1000,
      maxNodes: Number(values['max-nodes']),
      gpusPerNode: Number(values.gpus),
      podsPerNode: Number(values.pods),
    },
    log,
  });
  autoscaler.start();
  log('autoscaler running');
  await done;
} else {
  const [min = 60, max = 180] = (values.every ?? '60-180').split('-').map(Number);
  await using reclaimer = new SpotReclaimer(kc, { noticeMs: Number(values.notice) * 1000, log });
  void reclaimer.runRandomly(min * 1000, max * 1000, Number(values.abrupt));
  log('reclaimer running');
  await done;
}
