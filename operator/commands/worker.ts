/**
 * `tensile worker`: the container entry of a training worker. Configured entirely from the
 * environment (or TENSILE_CONFIG_FILE) written by the operator's pod builder or by `tensile run`.
 *
 * Exit codes: 0 finished or stopped cleanly (SIGTERM → checkpoint → exit), 1 a failure a restart may
 * fix, 2 bad configuration or input (a restart cannot fix it; the operator fails the job).
 */
import { createWriteStream, mkdirSync, type WriteStream } from 'node:fs';
import { dirname, join } from 'node:path';
import { Writable } from 'node:stream';
import { loadWorkerConfig, type WorkerConfig, WorkerConfigError } from '../../worker/config.ts';
import { EXIT_OK, EXIT_TERMINAL, exitCodeFor } from '../../worker/errors.ts';
import { createWorkerLogger, emit, errorMessage, type WorkerLogger } from '../../worker/log.ts';
import { isTerminal } from '../api/errors.ts';
import { WORKER_LOGS_DIR } from '../api/model-output.ts';
import { takeEarlySignal } from '../early-signal.ts';
import { type CommandIo, type CommandSpec, commandLine } from './args.ts';
import { stopSignals } from './worker-signals.ts';

export interface WorkerCommandIo extends CommandIo {
  readonly env: NodeJS.ProcessEnv;
}

export const WORKER_COMMAND = {
  command: 'tensile worker',
  synopsis: '[options]',
  description: `Runs one training worker, configured by the TENSILE_* environment variables (or the JSON file
TENSILE_CONFIG_FILE names) that the operator's pods and tensile run set; see worker/config.ts.
SIGTERM checkpoints at the next step boundary and exits 0; exit 1 is a failure a restart may fix,
2 bad configuration or input.`,
  options: {},
} as const satisfies CommandSpec;

async function flush(log: WorkerLogger): Promise<void> {
  await new Promise<void>((resolve) => {
    log.on('finish', () => resolve());
    log.end();
    setTimeout(resolve, 1000).unref();
  });
}

export async function runWorkerCommand(args: readonly string[], io: WorkerCommandIo): Promise<number> {
  const line = commandLine(WORKER_COMMAND, args, io, () => undefined);
  if ('exit' in line) return line.exit;
  let config: WorkerConfig;
  try {
    config = loadWorkerConfig(io.env);
  } catch (error) {
    if (!(error instanceof WorkerConfigError)) throw error;
    io.err('tensile worker: invalid configuration');
    for (const problem of error.problems) io.err(`  ${problem}`);
    return EXIT_TERMINAL;
  }
  const events = eventFile(config, io);
  const log = createWorkerLogger(
    { job: config.jobName, namespace: config.namespace, worker: config.workerId },
    config.logLevel,
    events?.stream ?? process.stdout,
  );
  const stop = stopSignals({ log, graceSeconds: config.spec.worker.terminationGracePeriodSeconds });
  const onSignal = (signal: NodeJS.Signals) => stop.handle(signal);
  const onFatal = (error: unknown) => {
    emit(log, 'error', 'unexpected failure', { event: 'failed', error: errorMessage(error) });
    process.exit(1);
  };
  process.on('SIGTERM', onSignal);
  process.on('SIGINT', onSignal);
  process.on('uncaughtException', onFatal);
  process.on('unhandledRejection', onFatal);
  try {
    const early = takeEarlySignal();
    if (early !== undefined) {
      // Deleted while it loaded: nothing has started, so there is nothing to checkpoint.
      emit(log, 'info', 'signal received before the work started; stopping', {
        event: 'signal',
        signal: early,
        graceSeconds: config.spec.worker.terminationGracePeriodSeconds,
      });
      return EXIT_OK;
    }
    const { runWorker } = await import('../../worker/runtime.ts');
    await runWorker({ config, log, stop: stop.signal });
    return EXIT_OK;
  } catch (error) {
    const terminal = isTerminal(error);
    emit(log, 'error', errorMessage(error), { event: 'failed', error: errorMessage(error), terminal });
    return exitCodeFor(error);
  } finally {
    // A signal from now on (the job ended, its pods are being deleted) must not make a worker that is
    // done exit 143, as the default action would: the listeners stay, inert, for the rest of the
    // process's life — the exit that follows (cli.ts) takes a while too (worker threads, the native
    // runtime), and a SIGTERM without a listener then still kills it (seen on chaos seed 1).
    stop.finished();
    await flush(log);
    await events?.close();
    process.off('uncaughtException', onFatal);
    process.off('unhandledRejection', onFatal);
  }
}

/**
 * In a pod (no output folder of `tensile run`) the worker also appends its log to the checkpoint
 * volume, `logs/<worker>.jsonl`, so that `tensile report` can be run on the volume after the pods
 * are gone. A volume that cannot take it costs the file, never the training.
 */
function eventFile(
  config: WorkerConfig,
  io: WorkerCommandIo,
): { stream: NodeJS.WritableStream; close(): Promise<void> } | undefined {
  if (config.outDir !== undefined) return undefined;
  const file = join(config.checkpointDir, WORKER_LOGS_DIR, `${config.workerId}.jsonl`);
  let out: WriteStream;
  try {
    mkdirSync(dirname(file), { recursive: true });
    out = createWriteStream(file, { flags: 'a' });
  } catch (error) {
    io.err(`tensile worker: not keeping the log in ${file}: ${(error as Error).message}`);
    return undefined;
  }
  let failed = false;
  out.on('error', (error) => {
    failed = true;
    io.err(`tensile worker: stopped keeping the log in ${file}: ${error.message}`);
  });
  const stream = new Writable({
    write(chunk: Buffer, _encoding, callback) {
      if (!failed) out.write(chunk);
      process.stdout.write(chunk, () => callback());
    },
  });
  return {
    stream,
    close: () => new Promise<void>((resolve) => (failed ? resolve() : out.end(() => resolve()))),
  };
}
