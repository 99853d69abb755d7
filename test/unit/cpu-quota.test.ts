/** `tensile run --cpu-quota`: finding the cgroup hierarchy with the cpu controller, quotas, the wrapper. */
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import {
  cfsBandwidth,
  findCpuHierarchy,
  inCgroup,
  parseCpuQuota,
} from '../../operator/local-run/cpu-quota.ts';

// Abridged /proc/self/mountinfo of a hybrid host (v1 controllers beside an empty unified hierarchy).
const HYBRID = [
  '30 25 0:26 / /sys/fs/cgroup ro,nosuid - tmpfs tmpfs ro,mode=755',
  '31 30 0:27 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw',
  '33 30 0:29 / /sys/fs/cgroup/cpu,cpuacct rw,relatime - cgroup cgroup rw,cpu,cpuacct',
  '34 30 0:30 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory',
].join('\n');
const HYBRID_SELF =
  '4:memory:/user.slice\n2:cpu,cpuacct:/user.slice/session-3.scope\n0::/user.slice/session-3.scope';

const V2 = '29 23 0:26 / /sys/fs/cgroup rw,nosuid - cgroup2 cgroup2 rw,nsdelegate';

test('hybrid host: the v1 hierarchy mounted with cpu, at this process cgroup', () => {
  const found = findCpuHierarchy(HYBRID, HYBRID_SELF, () => 'memory pids');
  assert.equal(found, { version: 1, parent: '/sys/fs/cgroup/cpu,cpuacct/user.slice/session-3.scope' });
});

test('v2 with cpu offered to this process cgroup: the run goes beside it, in its parent', () => {
  const asked: string[] = [];
  const found = findCpuHierarchy(V2, '0::/user.slice/session-3.scope\n', (dir) => {
    asked.push(dir);
    return 'cpuset cpu io memory pids';
  });
  assert.equal(found, { version: 2, parent: '/sys/fs/cgroup/user.slice' });
  assert.equal(asked, ['/sys/fs/cgroup/user.slice/session-3.scope']);
  // In the root cgroup the run's group is the root's child.
  assert.equal(
    findCpuHierarchy(V2, '0::/\n', () => 'cpu'),
    { version: 2, parent: '/sys/fs/cgroup' },
  );
});

test('v2 without cpu for this process falls back to v1, and without either there is none', () => {
  assert.equal(findCpuHierarchy(HYBRID, HYBRID_SELF, () => undefined)?.version, 1);
  assert.is(
    findCpuHierarchy(V2, '0::/a\n', () => 'memory pids'),
    undefined,
  );
  assert.is(
    findCpuHierarchy('', '', () => 'cpu'),
    undefined,
  );
});

test('in a container the mount root is its own cgroup: the path below it is what is left', () => {
  const mountinfo = '40 30 0:29 /docker/abc /sys/fs/cgroup/cpu rw - cgroup cgroup rw,cpu';
  assert.equal(
    findCpuHierarchy(mountinfo, '3:cpu:/docker/abc/inner\n', () => undefined),
    {
      version: 1,
      parent: '/sys/fs/cgroup/cpu/inner',
    },
  );
});

test('quotas: the shortest period whose quota is at least the kernel minimum of 1 ms', () => {
  assert.equal(cfsBandwidth(0.3), { quotaUs: 1000, periodUs: 3334 });
  assert.equal(cfsBandwidth(0.6), { quotaUs: 1000, periodUs: 1667 });
  assert.equal(cfsBandwidth(1.5), { quotaUs: 1500, periodUs: 1000 });
  assert.equal(cfsBandwidth(0.005), { quotaUs: 1000, periodUs: 100_000 });
  for (const cores of [0.05, 0.12, 0.3, 0.45, 0.6, 1, 2]) {
    const { quotaUs, periodUs } = cfsBandwidth(cores);
    assert.ok(Math.abs(quotaUs / periodUs - cores) < 0.001, `${cores}: ${quotaUs}/${periodUs}`);
  }
  assert.is(parseCpuQuota('1.5', 2), 1.5);
  assert.is(parseCpuQuota('.25', 2), 0.25);
  for (const bad of ['', '-1', '0', '1e3', 'x', '0.5.1'])
    assert.match(String(parseCpuQuota(bad, 2)), /needs a positive number of cores/, bad);
  assert.match(String(parseCpuQuota('3', 2)), /more than the 2 CPU\(s\)/);
  assert.match(String(parseCpuQuota('0.001', 2)), /below the kernel's smallest quota \(0.01 of a core\)/);
});

test('the wrapper joins the cgroup and execs the command as it is', () => {
  const command = inCgroup('/sys/fs/cgroup/cpu/g/w/cgroup.procs', ['node', 'a b', '$HOME']);
  assert.equal(command.slice(0, 2), ['/bin/sh', '-c']);
  assert.equal(command.slice(3), ['/sys/fs/cgroup/cpu/g/w/cgroup.procs', 'node', 'a b', '$HOME']);
});

test.run();
