/**
 * `tensile worker`'s answer to SIGTERM/SIGINT (operator/commands/worker-signals.ts). Found by the
 * chaos run (seed 1): a worker that had logged `completed` was deleted with the rest of the job's
 * pods, got SIGTERM while it flushed its log, exited 143 and its pod ended Failed after a job that
 * succeeded.
 */
import { Writable } from 'node:stream';
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { decodeWorkerLog } from '../../operator/api/worker-events.ts';
import { stopSignals } from '../../operator/commands/worker-signals.ts';
import { createWorkerLogger } from '../../worker/log.ts';

function harness() {
  let out = '';
  const sink = new Writable({
    write(chunk: Buffer, _encoding, callback) {
      out += chunk.toString();
      callback();
    },
  });
  const log = createWorkerLogger({ job: 'job', namespace: 'default', worker: 'job-worker-0' }, 'info', sink);
  const exits: number[] = [];
  let clock = 0;
  const stop = stopSignals({
    log,
    graceSeconds: 30,
    exit: (code) => exits.push(code),
    now: () => clock,
  });
  return {
    stop,
    exits,
    advance: (ms: number) => {
      clock += ms;
    },
    events: () => decodeWorkerLog(out).events.map((e) => e.event),
  };
}

test('the first signal while training asks for a checkpoint and a return, not an exit', () => {
  const h = harness();
  h.stop.handle('SIGTERM');
  assert.is(h.stop.signal.aborted, true);
  assert.equal(h.exits, []);
  assert.equal(h.events(), ['signal']);
  h.stop[Symbol.dispose]();
});

test('a second signal soon after is the same request; a later one exits at once', () => {
  const h = harness();
  h.stop.handle('SIGINT');
  h.advance(200);
  h.stop.handle('SIGTERM');
  assert.equal(h.exits, [], 'Ctrl-C and the forwarded SIGTERM are one request');
  h.advance(5000);
  h.stop.handle('SIGTERM');
  assert.equal(h.exits, [2]);
  h.stop[Symbol.dispose]();
});

test('a signal once the work is over changes nothing: the worker that completed exits 0', () => {
  const h = harness();
  h.stop.finished();
  h.stop.handle('SIGTERM');
  h.advance(5000);
  h.stop.handle('SIGTERM');
  assert.is(h.stop.signal.aborted, false);
  assert.equal(h.exits, []);
  assert.equal(h.events(), [], 'not even a request to checkpoint is logged');
});

test.run();
