/**
 * `tensile run --cpu-quota` on this machine's real cgroups: a process started through the wrapper is
 * in its worker's cgroup, the kernel holds the budget (and a changed one), throttles a busy process
 * to it, and the cgroups are gone once the run's budgets are disposed. Needs write access to the
 * cgroup hierarchy (root), as `--cpu-quota` itself does.
 */
import { spawn } from 'node:child_process';
import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { CpuBudgets, inCgroup } from '../../operator/local-run/cpu-quota.ts';

function run(command: readonly string[]): Promise<{ code: number | null; out: string }> {
  const [file, ...args] = command;
  const child = spawn(file as string, args, { stdio: ['ignore', 'pipe', 'inherit'] });
  let out = '';
  child.stdout.on('data', (chunk: Buffer) => {
    out += chunk.toString();
  });
  return new Promise((done) => child.on('close', (code) => done({ code, out })));
}

const throttled = (dir: string) =>
  Number(/nr_throttled (\d+)/.exec(readFileSync(join(dir, 'cpu.stat'), 'utf8'))?.[1] ?? Number.NaN);

test('a worker runs in its cgroup at its quota, is throttled to it, and the cgroups go afterwards', async () => {
  let dirs: string[] = [];
  {
    using budgets = CpuBudgets.create('cpu-quota-test');
    const procs = budgets.assign('worker-0', 0.3);
    const dir = budgets.dirOf('worker-0') as string;
    dirs = [dir, join(dir, '..')];
    assert.ok(Math.abs((budgets.cores('worker-0') ?? 0) - 0.3) < 0.001, String(budgets.cores('worker-0')));
    // 100 ms of CPU in a budget of 0.3 of a core with a period of a few ms: throttled many times over.
    const busy =
      'const end = process.cpuUsage().user + 100e3; while (process.cpuUsage().user < end); console.log(require("fs").readFileSync("/proc/self/cgroup", "utf8"))';
    const { code, out } = await run(inCgroup(procs, [process.execPath, '-e', busy]));
    assert.is(code, 0);
    assert.ok(out.includes('/tensile-cpu-quota-test-'), out);
    assert.ok(out.includes('/worker-0'), out);
    assert.ok(throttled(dir) > 0, readFileSync(join(dir, 'cpu.stat'), 'utf8'));
    // A slow-down and its end change the same cgroup's budget.
    assert.ok(budgets.set('worker-0', 0.15));
    assert.ok(Math.abs((budgets.cores('worker-0') ?? 0) - 0.15) < 0.001);
    assert.ok(budgets.set('worker-0', 0.6));
    assert.ok(Math.abs((budgets.cores('worker-0') ?? 0) - 0.6) < 0.001);
    assert.not.ok(budgets.set('worker-9', 0.5), 'no cgroup for a worker never assigned');
  }
  for (const dir of dirs) assert.not.ok(existsSync(dir), `${dir} left behind`);
});

test('a hierarchy it cannot write to: the error names the place and the way out', () => {
  assert.throws(
    () => CpuBudgets.create('x', { version: 1, parent: '/nonexistent/cgroup' }),
    /cannot make a cgroup with a CPU quota in \/nonexistent\/cgroup \(ENOENT\): run as root or in a delegated cgroup/,
  );
});

test.run();
