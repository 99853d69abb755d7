/**
 * The one error classification (operator/api/errors.ts): errors classified where they are made, from
 * codes and statuses, and `classify` following `cause` to find what an error stands for.
 */
import { ApiException } from '@kubernetes/client-node';
import { ErrorCode, NatsError } from 'nats';
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { classify, httpStatusClass, isTerminal, natsErrorClass } from '../../operator/api/errors.ts';
import { isAlreadyExists, isConflict, isNotFound, toKubeError } from '../../operator/api/kube-errors.ts';
import { UsageError } from '../../operator/commands/args.ts';
import { PeerLostError } from '../../worker/collective/transport.ts';
import { WorkerConfigError } from '../../worker/config.ts';
import {
  CheckpointError,
  DatasetError,
  EXIT_RETRYABLE,
  EXIT_TERMINAL,
  exitCodeFor,
} from '../../worker/errors.ts';
import { RevisionConflictError, StoreUnavailableError } from '../../worker/rendezvous/store.ts';

/** A JetStream API error as nats.js makes it from the server's answer. */
function jetStreamError(code: number, errCode: number, description: string): NatsError {
  const error = new NatsError(description, ErrorCode.ApiError);
  error.api_error = { code, err_code: errCode, description };
  return error;
}

test('NATS errors are classified by their codes, whatever the message says', () => {
  assert.is(natsErrorClass(jetStreamError(400, 10071, 'wrong last sequence: 7')), 'conflict');
  assert.is(natsErrorClass(jetStreamError(400, 10071, 'something else entirely')), 'conflict');
  assert.is(natsErrorClass(jetStreamError(404, 10059, 'stream not found')), 'terminal');
  assert.is(
    natsErrorClass(jetStreamError(503, 10008, 'JetStream system temporarily unavailable')),
    'retryable',
  );
  assert.is(natsErrorClass(new NatsError('conn closed', ErrorCode.ConnectionClosed)), 'retryable');
  assert.is(natsErrorClass(new NatsError('wrong last sequence', ErrorCode.Timeout)), 'retryable');
  assert.is(natsErrorClass(new NatsError('no responders', ErrorCode.NoResponders)), 'retryable');
  assert.is(natsErrorClass(new NatsError('x', ErrorCode.JetStream404NoMessages)), 'terminal');
  assert.is(natsErrorClass(new NatsError('x', ErrorCode.PermissionsViolation)), 'terminal');
  assert.is(natsErrorClass(new Error('timeout')), undefined, 'not a NATS error: not judged by its text');
});

test('API server statuses: 409 conflict, 429 and 5xx retryable, other 4xx terminal', () => {
  assert.is(httpStatusClass(409), 'conflict');
  for (const status of [0, 429, 500, 502, 503, 504])
    assert.is(httpStatusClass(status), 'retryable', `${status}`);
  for (const status of [400, 401, 403, 404, 422]) assert.is(httpStatusClass(status), 'terminal', `${status}`);
});

test('an ApiException becomes a KubeApiError classified once from its code', () => {
  const conflict = toKubeError(
    new ApiException(409, 'x', { reason: 'Conflict', message: 'stale' }, {}),
    'patch',
  );
  assert.is(conflict.classification, 'conflict');
  assert.ok(isConflict(conflict));
  const exists = toKubeError(new ApiException(409, 'x', { reason: 'AlreadyExists' }, {}), 'create');
  assert.ok(isAlreadyExists(exists));
  assert.not.ok(isConflict(exists));
  const missing = toKubeError(new ApiException(404, 'x', { reason: 'NotFound' }, {}), 'get');
  assert.ok(isNotFound(missing));
  assert.is(missing.classification, 'terminal');
  assert.is(toKubeError(new ApiException(503, 'x', '', {}), 'get').classification, 'retryable');
  assert.is(toKubeError(new ApiException(429, 'x', '', {}), 'get').classification, 'retryable');
  assert.is(toKubeError(new Error('ECONNREFUSED'), 'get').classification, 'retryable');
});

test('the errors of worker/ and operator/ carry their class', () => {
  assert.is(classify(new DatasetError('a.csv', 'no such file')), 'terminal');
  assert.is(classify(new WorkerConfigError(['TENSILE_JOB_NAME: missing'])), 'terminal');
  assert.is(classify(new UsageError('--workers needs a number')), 'terminal');
  assert.is(classify(new CheckpointError('disk full', false)), 'retryable');
  assert.is(classify(new CheckpointError('another model', true)), 'terminal');
  assert.is(classify(new PeerLostError('rank 1 closed')), 'retryable');
  assert.is(classify(new RevisionConflictError('update k@3')), 'conflict');
  assert.is(classify(new StoreUnavailableError('get k')), 'retryable');
});

test('classify follows cause: a wrapped terminal error stays terminal, and exits so', () => {
  const wrapped = new Error('training failed', {
    cause: new Error('loading', { cause: new DatasetError('a', 'b') }),
  });
  assert.ok(isTerminal(wrapped));
  assert.is(exitCodeFor(wrapped), EXIT_TERMINAL);
  const nats = new Error('rendezvous', { cause: jetStreamError(400, 10071, 'wrong last sequence') });
  assert.is(classify(nats), 'conflict');
  assert.is(exitCodeFor(new Error('unknown')), EXIT_RETRYABLE, 'the unknown is retried');
  assert.is(exitCodeFor('a string'), EXIT_RETRYABLE);
  const cycle = new Error('a') as Error & { cause?: unknown };
  cycle.cause = cycle;
  assert.is(classify(cycle), 'retryable', 'a cycle of causes ends');
});

test.run();
