/**
 * The checkpoint writer thread: takes encoded checkpoints from the training thread and writes them
 * durably (fsync, rename), so that file-system latency never stalls a training step.
 */
import { parentPort } from 'node:worker_threads';
import { serveWriteRequest } from './store.ts';

parentPort?.on('message', (request: Parameters<typeof serveWriteRequest>[0]) => {
  parentPort?.postMessage(serveWriteRequest(request));
});
