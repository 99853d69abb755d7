/**
 * A module that starts another by its path (a worker thread, a child process) names it with its own
 * extension: `.ts` when the sources run through tsx, `.js` in the compiled dist/ of the images, where
 * no `.ts` file exists. tsc rewrites import specifiers, not paths handed to `new Worker` or `spawn`.
 */
import { extname } from 'node:path';

/** Whether the module at `moduleUrl` runs from the TypeScript sources (through tsx) rather than dist/. */
export function runsFromSources(moduleUrl: string | URL): boolean {
  return extname(new URL(moduleUrl).pathname) === '.ts';
}

/** `./writer-thread` beside `moduleUrl`, with the extension `moduleUrl` has (`.ts` or `.js`). */
export function siblingModule(specifier: string, moduleUrl: string | URL): URL {
  if (extname(specifier) !== '')
    throw new Error(`siblingModule: "${specifier}" must name the module without its extension`);
  return new URL(`${specifier}${extname(new URL(moduleUrl).pathname)}`, moduleUrl);
}
