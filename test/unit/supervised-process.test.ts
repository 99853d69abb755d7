/**
 * hack/lib/processes.ts Supervised: the e2e and chaos drivers keep the operator replicas running as
 * their Deployment would. Chaos seed 1 (20 minutes) lost both replicas to two kube-apiserver restarts
 * (a leader that cannot renew exits) and nobody replaced a killed worker for the rest of the run.
 * Real processes, so that the exits are real.
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { type StartedProcess, Supervised, startProcess } from '../../hack/lib/processes.ts';
import { consistently, eventually } from '../helpers/eventually.ts';

const dir = mkdtempSync(join(tmpdir(), 'tensile-supervised-'));
const starter = (script: string) => {
  const started: StartedProcess[] = [];
  const start = async () => {
    const p = await startProcess(dir, 'p', process.execPath, ['-e', script]);
    started.push(p);
    return p;
  };
  return { started, start };
};

test('a process that exits on its own is started again', async () => {
  const { started, start } = starter('process.exit(1)');
  const exits: string[] = [];
  const s = await Supervised.start(start, { delayMs: 50, onExit: (how) => exits.push(how) });
  await eventually('two restarts', () => s.restarts >= 2);
  s.stop();
  assert.ok(started.length >= 3);
  assert.is(exits[0], 'exit code 1');
  assert.is.not(s.current.pid, started[0]?.pid);
  await Promise.all(started.map((p) => p.exited));
});

test('an exit asked for (kill) is not followed by a restart; restart() starts it at once', async () => {
  const { started, start } = starter('setInterval(() => {}, 1000)');
  const s = await Supervised.start(start, { delayMs: 50 });
  const first = s.current;
  s.kill('SIGKILL');
  assert.is(await first.exited, 'SIGKILL');
  await consistently('no restart after a kill', () => s.restarts === 0 && started.length === 1, {
    forMs: 500,
  });
  const second = await s.restart();
  assert.is.not(second.pid, first.pid);
  assert.is(s.current, second);
  // A process killed by someone else (not through kill()) is an exit on its own.
  second.child.kill('SIGKILL');
  await eventually('restarted after an outside kill', () => s.restarts === 1 && started.length === 3);
  s.stop();
  s.kill('SIGTERM');
  await s.current.exited;
  await consistently('nothing after stop', () => started.length === 3, { forMs: 300 });
});

test.after(() => rmSync(dir, { recursive: true, force: true }));
test.run();
