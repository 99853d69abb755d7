#!/usr/bin/env node
// A stand-in for the worker process in the operator's integration tests, which test the operator, not
// training (the end-to-end test runs real workers). Plain JS so it starts in milliseconds.
//   run              stay up until SIGTERM, then exit 0 (like a worker that leaves gracefully)
//   fail:CODE:MS     exit with CODE after MS milliseconds
//   complete:MS      exit 0 after MS milliseconds (training finished)
//   complete-when:PATH  exit 0 once PATH exists (training finished when the test says so)
import { existsSync } from 'node:fs';

const [mode = 'run', a = '0', b = '0'] = (process.argv[2] ?? 'run').split(':');
process.on('SIGTERM', () => process.exit(0));
console.log(
  JSON.stringify({
    fakeWorker: mode,
    pod: process.env.TENSILE_WORKER_ID,
    index: process.env.TENSILE_REPLICA_INDEX,
  }),
);
if (mode === 'fail') setTimeout(() => process.exit(Number(a)), Number(b));
else if (mode === 'complete') setTimeout(() => process.exit(0), Number(a));
else if (mode === 'complete-when')
  setInterval(() => {
    if (existsSync(a)) process.exit(0);
  }, 100);
else setInterval(() => {}, 1 << 30);
