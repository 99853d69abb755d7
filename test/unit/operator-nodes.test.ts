import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { nodeHealth } from '../../operator/controller/nodes.ts';
import { node } from '../helpers/k8s-builders.ts';

const table: [string, Parameters<typeof nodeHealth>[0], string][] = [
  ['a Ready node', node('n'), 'ready'],
  ['no node at all', undefined, 'missing'],
  ['Ready=False', node('n', { ready: false }), 'notReady'],
  ['Ready=Unknown (kubelet silent)', node('n', { ready: 'Unknown' }), 'notReady'],
  [
    'karpenter.sh/disrupted',
    node('n', { taints: [{ key: 'karpenter.sh/disrupted', effect: 'NoSchedule' }] }),
    'disrupted',
  ],
  [
    'karpenter.sh/disruption (older Karpenter)',
    node('n', { taints: [{ key: 'karpenter.sh/disruption', value: 'disrupting', effect: 'NoSchedule' }] }),
    'disrupted',
  ],
  [
    'ToBeDeletedByClusterAutoscaler',
    node('n', {
      taints: [{ key: 'ToBeDeletedByClusterAutoscaler', value: '1700000000', effect: 'NoSchedule' }],
    }),
    'disrupted',
  ],
  [
    'aws-node-termination-handler spot ITN',
    node('n', { taints: [{ key: 'aws-node-termination-handler/spot-itn', effect: 'NoSchedule' }] }),
    'disrupted',
  ],
  [
    'aws-node-termination-handler rebalance',
    node('n', {
      taints: [{ key: 'aws-node-termination-handler/rebalance-recommendation', effect: 'PreferNoSchedule' }],
    }),
    'disrupted',
  ],
  [
    'GKE impending termination',
    node('n', { taints: [{ key: 'cloud.google.com/impending-node-termination', effect: 'NoSchedule' }] }),
    'disrupted',
  ],
  [
    'cordoned (taint)',
    node('n', { taints: [{ key: 'node.kubernetes.io/unschedulable', effect: 'NoSchedule' }] }),
    'disrupted',
  ],
  ['cordoned (spec.unschedulable)', node('n', { unschedulable: true }), 'disrupted'],
  [
    'unreachable taint on a Ready node',
    node('n', { taints: [{ key: 'node.kubernetes.io/unreachable', effect: 'NoExecute' }] }),
    'notReady',
  ],
  ['an unrelated taint', node('n', { taints: [{ key: 'nvidia.com/gpu', effect: 'NoSchedule' }] }), 'ready'],
  [
    'DeletionCandidateOfClusterAutoscaler is only a candidate',
    node('n', { taints: [{ key: 'DeletionCandidateOfClusterAutoscaler', effect: 'PreferNoSchedule' }] }),
    'ready',
  ],
];

for (const [name, input, state] of table) {
  test(name, () => assert.is(nodeHealth(input).state, state));
}

test('the disruption reason names the taint', () => {
  const health = nodeHealth(
    node('n', { taints: [{ key: 'karpenter.sh/disruption', value: 'disrupting', effect: 'NoSchedule' }] }),
  );
  assert.equal(health, { state: 'disrupted', reason: 'taint karpenter.sh/disruption=disrupting' });
});

test.run();
