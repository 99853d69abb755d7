#!/usr/bin/env node
// The `tensile` command. Runs the TypeScript sources directly through tsx, so the repository,
// the npm package and the container images share one entry point with no build step.
import { register } from 'tsx/esm/api';

register();
const { main } = await import('../cli.ts');
process.exitCode = await main(process.argv.slice(2));
