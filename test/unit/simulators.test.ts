import type { V1Node, V1Pod } from '@kubernetes/client-node';
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import {
  type AutoscalerMemory,
  chooseReclaimVictim,
  decideAutoscale,
  LABEL_SIMULATED,
} from '../../hack/simulators/decide.ts';

const config = {
  provisionDelayMs: 10_000,
  scaleDownAfterMs: 60_000,
  maxNodes: 4,
  gpusPerNode: 2,
  podsPerNode: 16,
};
const memory = (): AutoscalerMemory => ({ unschedulableSince: new Map(), emptySince: new Map() });

function pendingPod(name: string, gpus = 1): V1Pod {
  return {
    metadata: { name, namespace: 'ns', labels: { 'tensile.dev/role': 'worker' } },
    spec: { containers: [{ name: 'w', resources: { limits: { 'nvidia.com/gpu': String(gpus) } } }] },
    status: {
      phase: 'Pending',
      conditions: [{ type: 'PodScheduled', status: 'False', reason: 'Unschedulable' }],
    },
  };
}
function runningPod(name: string, node: string): V1Pod {
  return {
    metadata: { name, namespace: 'ns', labels: { 'tensile.dev/role': 'worker' } },
    spec: { nodeName: node, containers: [] },
    status: { phase: 'Running' },
  };
}
function node(name: string, ours = true, spot = true): V1Node {
  return {
    metadata: {
      name,
      labels: {
        ...(ours ? { [LABEL_SIMULATED]: 'autoscaler' } : {}),
        ...(spot ? { 'karpenter.sh/capacity-type': 'spot' } : {}),
      },
    },
  };
}
const ours = (n: V1Node) => n.metadata?.labels?.[LABEL_SIMULATED] === 'autoscaler';

test('unschedulable pods get nodes only after the provision delay', () => {
  const m = memory();
  const pods = [pendingPod('a'), pendingPod('b'), pendingPod('c')];
  const first = decideAutoscale(pods, [], ours, 0, 0, config, m);
  assert.is(first.addNodes, 0);
  assert.is(first.wakeInMs, 10_000);
  const later = decideAutoscale(pods, [], ours, 0, 10_000, config, m);
  assert.is(later.addNodes, 2, '3 GPUs on nodes of 2');
});

test('never more than maxNodes; a pod no node can hold buys nothing', () => {
  const m = memory();
  const pods = Array.from({ length: 20 }, (_, i) => pendingPod(`p${i}`));
  decideAutoscale(pods, [], ours, 0, 0, config, m);
  assert.is(decideAutoscale(pods, [node('n1')], ours, 0, 20_000, config, m).addNodes, 3);
  const huge = memory();
  decideAutoscale([pendingPod('big', 8)], [], ours, 0, 0, config, huge);
  assert.is(decideAutoscale([pendingPod('big', 8)], [], ours, 0, 20_000, config, huge).addNodes, 0);
});

test('empty nodes of ours go after scaleDownAfter; busy and foreign ones stay', () => {
  const m = memory();
  const nodes = [node('empty'), node('busy'), node('foreign', false)];
  const pods = [runningPod('w', 'busy')];
  assert.equal(decideAutoscale(pods, nodes, ours, 0, 0, config, m).removeNodes, []);
  assert.equal(decideAutoscale(pods, nodes, ours, 0, 60_000, config, m).removeNodes, ['empty']);
});

test('the reclaimer hits spot nodes running workers, repeatably, never twice', () => {
  const nodes = [node('n-b'), node('n-a'), node('od', false, false), node('idle')];
  const pods = [runningPod('w1', 'n-b'), runningPod('w2', 'n-a'), runningPod('w3', 'od')];
  assert.is(chooseReclaimVictim(pods, nodes, new Set()), 'n-a');
  assert.is(chooseReclaimVictim(pods, nodes, new Set(['n-a'])), 'n-b');
  assert.is(
    chooseReclaimVictim(pods, nodes, new Set(['n-a', 'n-b'])),
    undefined,
    'on-demand and idle nodes are not targets',
  );
});

test.run();
