/** Entry of the compiled images (dist/operator/main.js); `tensile` in a checkout runs cli.ts through tsx. */
import { main } from './cli.ts';

process.exitCode = await main(process.argv.slice(2));
