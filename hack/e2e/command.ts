/**
 * The shell of `hack/e2e.sh` and `hack/chaos.sh`: one scenario run with timestamped progress on
 * standard error, the verdict on standard output, and a signal stopping everything the run started.
 * Exit codes: 0 the verdict passed, 1 it failed, 2 the run could not run, 130 interrupted.
 */
import { runScenario, ScenarioAborted, type ScenarioOptions } from './scenario.ts';
import { formatSummary } from './summary.ts';

export async function runScenarioCommand(
  what: string,
  options: Omit<ScenarioOptions, 'signal' | 'log'>,
): Promise<void> {
  const started = performance.now();
  const stamp = () => `[${((performance.now() - started) / 1000).toFixed(1).padStart(6)} s]`;
  const controller = new AbortController();
  let interrupted = false;
  for (const signal of ['SIGINT', 'SIGTERM', 'SIGHUP'] as const)
    process.on(signal, () => {
      if (interrupted) return;
      interrupted = true;
      process.stderr.write(`\n${stamp()} ${signal}: stopping everything this run started…\n`);
      controller.abort();
    });
  try {
    const result = await runScenario({
      ...options,
      signal: controller.signal,
      log: (line) => process.stderr.write(`${stamp()} ${line}\n`),
    });
    process.stdout.write(`\n${formatSummary(result)}\n`);
    process.exitCode = result.ok ? 0 : 1;
  } catch (error) {
    if (error instanceof ScenarioAborted || interrupted) {
      process.stderr.write(`${stamp()} interrupted; everything it started is stopped\n`);
      process.exitCode = 130;
    } else {
      process.stderr.write(`${stamp()} ${what} could not run: ${(error as Error).stack ?? error}\n`);
      process.stderr.write(`logs (if any) in ${options.artifactsDir}\n`);
      process.exitCode = 2;
    }
  }
}
