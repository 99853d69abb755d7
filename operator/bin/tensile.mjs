#!/usr/bin/env node
// The `tensile` command. Runs the TypeScript sources directly through tsx, so the repository,
// the npm package and the container images share one entry point with no build step.
import { register } from 'tsx/esm/api';

register();
// First, before the rest loads: a worker signalled while it loads stops cleanly (early-signal.ts).
const { listenEarly } = await import('../early-signal.ts');
listenEarly(process.argv.slice(2));
const { main } = await import('../cli.ts');
process.exitCode = await main(process.argv.slice(2));
