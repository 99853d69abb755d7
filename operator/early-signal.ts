/**
 * A worker pod deleted while its process still loads (the job completed as the replacement started)
 * gets SIGTERM before `tensile worker` has its listeners: the default action would end it with 143, a
 * Failed pod after a Succeeded job (found by the chaos test, seed 24). The entry points listen from
 * their first line for the worker command; the command takes the signal over and stops before it
 * starts any work.
 */
const SIGNAL = Symbol.for('tensile.early-signal');
const LISTENER = Symbol.for('tensile.early-signal-listener');
const SIGNALS = ['SIGTERM', 'SIGINT'] as const;

type Slots = Record<symbol, unknown>;

/** For `tensile worker` (the first word of argv that is not an option): remember a signal. */
export function listenEarly(argv: readonly string[]): void {
  if (argv.find((arg) => !arg.startsWith('-')) !== 'worker') return;
  const slots = globalThis as unknown as Slots;
  const remember = (signal: NodeJS.Signals) => {
    slots[SIGNAL] ??= signal;
  };
  slots[LISTENER] = remember;
  for (const name of SIGNALS) process.on(name, remember);
}

/** Stops listening early; the signal that came meanwhile, if any. */
export function takeEarlySignal(): NodeJS.Signals | undefined {
  const slots = globalThis as unknown as Slots;
  const remember = slots[LISTENER];
  if (typeof remember === 'function')
    for (const name of SIGNALS) process.off(name, remember as (signal: NodeJS.Signals) => void);
  const signal = slots[SIGNAL];
  delete slots[LISTENER];
  delete slots[SIGNAL];
  return SIGNALS.find((name) => name === signal);
}
