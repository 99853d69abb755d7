/**
 * What a killed chaos run left (hack/chaos/leftovers.ts): its iptables chain, the jump to it and its
 * tmpfs are removed by the next run, and a run that still goes on keeps its own.
 */
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { staleLeftovers } from '../../hack/chaos/leftovers.ts';

const rules = `-P INPUT ACCEPT
-P OUTPUT ACCEPT
-N DOCKER
-N TENSILE-CHAOS-111
-N TENSILE-CHAOS-222
-A OUTPUT -o lo -j TENSILE-CHAOS-222
-A OUTPUT -o lo -j TENSILE-CHAOS-111
-A OUTPUT -j DOCKER
-A TENSILE-CHAOS-111 -p tcp -m tcp --sport 40001 -j DROP
-A TENSILE-CHAOS-111 -p tcp -m tcp --dport 40001 -j DROP
`;

const mounts = `proc /proc proc rw,nosuid 0 0
tensile-chaos-111 /tmp/tensile-cluster-a/volumes/default/job-checkpoints tmpfs rw,size=262144k 0 0
tensile-chaos-222 /tmp/tensile-cluster-b/volumes/default/job-checkpoints tmpfs rw,size=262144k 0 0
tensile-chaos /tmp/tensile-cluster-old/volumes/default/x\\040y tmpfs rw,size=262144k 0 0
tensile-chaos /tmp/tensile-cluster-live/volumes/default/z tmpfs rw,size=262144k 0 0
tmpfs /dev/shm tmpfs rw 0 0
tensile-chaos-111 /elsewhere ext4 rw 0 0
`;

test('the chain, its jump and the tmpfs of a run that is gone are stale; those of a live run are not', () => {
  const found = staleLeftovers({
    rules,
    mounts,
    alive: (pid) => pid === 222,
    clusterAlive: (point) => point.includes('cluster-live'),
  });
  assert.equal(found.jumps, [['-D', 'OUTPUT', '-o', 'lo', '-j', 'TENSILE-CHAOS-111']]);
  assert.equal(found.chains, ['TENSILE-CHAOS-111']);
  assert.equal(found.mounts, [
    '/tmp/tensile-cluster-a/volumes/default/job-checkpoints',
    // Named without a pid (an older run): removed when its cluster no longer runs.
    '/tmp/tensile-cluster-old/volumes/default/x y',
  ]);
});

test('nothing of ours: nothing to remove', () => {
  const found = staleLeftovers({
    rules: '-P OUTPUT ACCEPT\n-N DOCKER\n-A OUTPUT -j DOCKER\n',
    mounts: 'tmpfs /dev/shm tmpfs rw 0 0\n',
    alive: () => false,
    clusterAlive: () => false,
  });
  assert.equal(found, { jumps: [], chains: [], mounts: [] });
});

test.run();
