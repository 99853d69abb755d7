/**
 * The node agent process, started by hack/cluster/launcher.ts:
 *
 *   node --import tsx hack/node-agent/main.ts <config.json>
 *
 * SIGTERM or SIGINT: the pods' processes are stopped (SIGTERM, SIGKILL two seconds later), then it
 * exits 0. If it dies any other way, its exit handler still SIGKILLs every pod process group.
 */

import { type CommandSpec, commandLine, UsageError } from '../../operator/commands/args.ts';
import { agentLogger, type RunningAgent, startAgent } from './agent.ts';
import { type AgentConfig, AgentConfigError, loadAgentConfig } from './config.ts';

const NODE_AGENT_COMMAND = {
  command: 'node --import tsx hack/node-agent/main.ts',
  synopsis: 'CONFIG.json [options]',
  description: `The node agent of the local cluster (hack/cluster/launcher.ts starts it): registers fake nodes and
runs their pods as local processes, as CONFIG.json says (hack/node-agent/config.ts).`,
  options: {},
  positionals: true,
} as const satisfies CommandSpec;

const line = commandLine(
  NODE_AGENT_COMMAND,
  process.argv.slice(2),
  { out: console.log, err: console.error },
  (_values, files) => {
    const [file, other] = files;
    if (file === undefined) throw new UsageError('missing CONFIG.json');
    if (other !== undefined) throw new UsageError(`one configuration at a time (got ${file} and ${other})`);
    return file;
  },
);
if ('exit' in line) process.exit(line.exit);
const path = line.parsed;
let config: AgentConfig;
try {
  config = loadAgentConfig(path);
} catch (error) {
  console.error(error instanceof AgentConfigError ? error.message : String(error));
  process.exit(2);
}
const log = agentLogger(config);
if (config.umask !== undefined) process.umask(config.umask);
const abort = new AbortController();
let agent: RunningAgent | undefined;
let stopping = false;

async function stop(signal: string): Promise<void> {
  if (stopping) return;
  stopping = true;
  log.info('stopping', { signal });
  abort.abort();
  await agent?.[Symbol.asyncDispose]();
  log.info('stopped');
  process.exit(0);
}
process.on('SIGTERM', () => void stop('SIGTERM'));
process.on('SIGINT', () => void stop('SIGINT'));
process.on('exit', () => agent?.pods.killAll());
process.on('uncaughtException', (error) => {
  log.error('uncaught exception; exiting', { error: error.stack ?? String(error) });
  agent?.pods.killAll();
  process.exit(1);
});

try {
  agent = await startAgent(config, log, abort.signal);
} catch (error) {
  if (!stopping) {
    log.error('node agent failed to start', {
      error: error instanceof Error ? (error.stack ?? error.message) : String(error),
    });
    process.exit(1);
  }
}
