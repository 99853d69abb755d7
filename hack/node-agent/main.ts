/**
 * The node agent process, started by hack/cluster/launcher.ts:
 *
 *   node --import tsx hack/node-agent/main.ts <config.json>
 *
 * SIGTERM or SIGINT: the pods' processes are stopped (SIGTERM, SIGKILL two seconds later), then it
 * exits 0. If it dies any other way, its exit handler still SIGKILLs every pod process group.
 */

import { agentLogger, type RunningAgent, startAgent } from './agent.ts';
import { type AgentConfig, AgentConfigError, loadAgentConfig } from './config.ts';

const path = process.argv[2];
if (path === undefined) {
  console.error('usage: node --import tsx hack/node-agent/main.ts <config.json>');
  process.exit(2);
}
let config: AgentConfig;
try {
  config = loadAgentConfig(path);
} catch (error) {
  console.error(error instanceof AgentConfigError ? error.message : String(error));
  process.exit(2);
}
const log = agentLogger(config);
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
