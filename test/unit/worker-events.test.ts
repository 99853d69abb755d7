/**
 * The worker's log protocol (operator/api/worker-events.ts): what decodes as an event, what is a plain
 * message, and what is invalid and must be counted by the consumers.
 */
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import {
  decodeWorkerLine,
  decodeWorkerLog,
  decodeWorkerRecords,
  eventsOf,
} from '../../operator/api/worker-events.ts';

const envelope = { timestamp: '2026-01-01T12:00:00.000Z', level: 'info', job: 'j', worker: 'j-worker-0' };

// [name, line, expected kind, the problem's start when invalid]
const lines: [string, string, 'event' | 'message' | 'text' | 'invalid', string?][] = [
  [
    'a progress event',
    JSON.stringify({
      ...envelope,
      message: 'progress',
      generation: 2,
      event: 'progress',
      step: 10,
      loss: 0.5,
    }),
    'event',
  ],
  [
    'a generation end',
    JSON.stringify({ ...envelope, event: 'generation-end', firstStep: 0, lastStep: 10, stepSeconds: 1.5 }),
    'event',
  ],
  ['a plain message', JSON.stringify({ ...envelope, message: 'tensors left', numTensors: 3 }), 'message'],
  ['a stack trace', 'Error: boom', 'text', undefined],
  ['a line torn by SIGKILL', '{"level":"info","mess', 'text', undefined],
  ['JSON that is not an object', '[1,2]', 'invalid', 'not a JSON object'],
  [
    'an event nobody knows',
    JSON.stringify({ ...envelope, event: 'teleported' }),
    'invalid',
    'event "teleported"',
  ],
  [
    'a known event of the wrong shape',
    JSON.stringify({ ...envelope, event: 'progress', step: 'x' }),
    'invalid',
    'event "progress": step',
  ],
  [
    'a renamed field is a missing field',
    JSON.stringify({ ...envelope, event: 'generation-end', first: 0, lastStep: 10, stepSeconds: 1 }),
    'invalid',
    'event "generation-end": firstStep',
  ],
];
for (const [name, text, kind, problem] of lines) {
  test(`decodeWorkerLine: ${name}`, () => {
    const line = decodeWorkerLine(text);
    assert.is(line.kind, kind);
    if (problem !== undefined)
      assert.ok(line.kind === 'invalid' && line.problem.startsWith(problem), JSON.stringify(line));
  });
}

test('a decoded event keeps its envelope and its fields, typed', () => {
  const line = decodeWorkerLine(
    JSON.stringify({ ...envelope, generation: 3, event: 'generation', worldSize: 2, firstStep: 40, rank: 1 }),
  );
  assert.ok(line.kind === 'event' && line.event.event === 'generation');
  if (line.kind !== 'event' || line.event.event !== 'generation') return;
  assert.equal(
    [line.event.generation, line.event.worldSize, line.event.firstStep, line.event.rank, line.event.worker],
    [3, 2, 40, 1, 'j-worker-0'],
  );
});

test('decodeWorkerLog counts what it cannot read; empty lines are nothing', () => {
  const text = [
    JSON.stringify({ event: 'checkpoint', step: 10, path: '/c/ckpt-10' }),
    '',
    'Error: not json',
    JSON.stringify({ message: 'reading dataset' }),
    JSON.stringify({ event: 'eval', step: 10, loss: 0.3, accuracy: 0.9 }),
    '   ',
  ].join('\n');
  const log = decodeWorkerLog(text);
  assert.equal(
    log.events.map((e) => e.event),
    ['checkpoint', 'eval'],
  );
  assert.equal([log.invalid, log.text], [0, 1], 'the stack trace is standard error, not a broken protocol');
  assert.equal(
    eventsOf(log.events, 'eval').map((e) => e.accuracy),
    [0.9],
  );
});

test('decodeWorkerRecords decodes records a test or a reader already parsed', () => {
  const log = decodeWorkerRecords([{ event: 'backend', backend: 'tensorflow' }, { event: 'backend' }, 42]);
  assert.equal(
    eventsOf(log.events, 'backend').map((e) => e.backend),
    ['tensorflow'],
  );
  assert.is(log.invalid, 2);
});

test.run();
