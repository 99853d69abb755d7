/** Entry of the compiled images (dist/operator/main.js); `tensile` in a checkout runs cli.ts through tsx. */
import { listenEarly } from './early-signal.ts';

// Before cli.ts and the commands load: a worker signalled while it loads stops cleanly.
listenEarly(process.argv.slice(2));
const { main } = await import('./cli.ts');
process.exitCode = await main(process.argv.slice(2));
