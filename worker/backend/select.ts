/**
 * The TensorFlow.js backend, chosen once at start (design 4.1): tensorflow through tfjs-node-gpu,
 * tensorflow through tfjs-node, wasm, cpu — the first that loads wins, and the reason each earlier
 * one was skipped is reported. The native bindings are optional dependencies whose install may have
 * failed (no libtensorflow download), so they are imported dynamically and a missing one is a skip,
 * not a crash. A forced backend that cannot be loaded is a terminal BackendError.
 */
import * as tf from '@tensorflow/tfjs';
import type { BackendChoice } from '../../operator/api/training-job.ts';
import { BackendError } from '../errors.ts';
import { registerWasmTrainingKernels } from './wasm-kernels.ts';

export type BackendName = 'tensorflow' | 'wasm' | 'cpu';

export interface BackendCandidate {
  readonly backend: BackendName;
  /** The package that provides it, as reported in logs. */
  readonly via: string;
}

export interface SkippedBackend extends BackendCandidate {
  readonly reason: string;
}

export interface SelectedBackend extends BackendCandidate {
  readonly skipped: readonly SkippedBackend[];
  /** Gradient kernels this process registered for the backend (wasm), natively or by delegation. */
  readonly addedKernels: readonly string[];
}

const CHAIN: readonly BackendCandidate[] = [
  { backend: 'tensorflow', via: '@tensorflow/tfjs-node-gpu' },
  { backend: 'tensorflow', via: '@tensorflow/tfjs-node' },
  { backend: 'wasm', via: '@tensorflow/tfjs-backend-wasm' },
  { backend: 'cpu', via: '@tensorflow/tfjs (cpu)' },
];

/** The candidates tried, in order, for a choice; pure. */
export function backendCandidates(choice: BackendChoice): BackendCandidate[] {
  if (choice === 'auto') return [...CHAIN];
  return CHAIN.filter((c) => c.backend === choice);
}

function describeLoadFailure(via: string, error: unknown): string {
  const code = (error as { code?: unknown } | null)?.code;
  if (code === 'ERR_MODULE_NOT_FOUND' || code === 'MODULE_NOT_FOUND')
    return `not installed (the optional dependency ${via} is absent)`;
  const message = error instanceof Error ? error.message : String(error);
  return `failed to load: ${message.split('\n')[0]}`;
}

const PROCESS_EVENTS = ['uncaughtException', 'unhandledRejection'] as const;
type ProcessEvent = (typeof PROCESS_EVENTS)[number];
type AnyListener = (...args: unknown[]) => void;
const listenersOf = (event: ProcessEvent) => process.listeners(event as 'uncaughtException') as AnyListener[];

/**
 * Emscripten's wasm loader installs process handlers that rethrow every uncaught error, which makes
 * Node print the whole minified loader as the error location. The worker handles its own errors, so
 * the handlers added while a backend loads are removed again.
 */
async function withoutLoaderHandlers(work: () => Promise<void>): Promise<void> {
  const before = new Map(PROCESS_EVENTS.map((event) => [event, new Set(listenersOf(event))]));
  try {
    await work();
  } finally {
    for (const event of PROCESS_EVENTS) {
      for (const listener of listenersOf(event)) {
        if (!before.get(event)?.has(listener)) process.removeListener(event, listener);
      }
    }
  }
}

async function load(candidate: BackendCandidate): Promise<void> {
  await withoutLoaderHandlers(() => activate(candidate));
}

async function activate(candidate: BackendCandidate): Promise<void> {
  switch (candidate.backend) {
    case 'tensorflow': {
      // A variable specifier: these packages are optional and usually absent at type-check time.
      const specifier: string = candidate.via;
      await import(specifier);
      break;
    }
    case 'wasm':
      await import('@tensorflow/tfjs-backend-wasm');
      break;
    case 'cpu':
      break;
  }
  if (!(await tf.setBackend(candidate.backend)))
    throw new Error(`tf.setBackend('${candidate.backend}') failed`);
  await tf.ready();
}

/**
 * Loads and activates the first working backend of the chain for `choice`. Throws BackendError when
 * none works (only possible when a backend is forced).
 */
export async function selectBackend(choice: BackendChoice): Promise<SelectedBackend> {
  const skipped: SkippedBackend[] = [];
  for (const candidate of backendCandidates(choice)) {
    try {
      await load(candidate);
    } catch (error) {
      skipped.push({ ...candidate, reason: describeLoadFailure(candidate.via, error) });
      continue;
    }
    const addedKernels = candidate.backend === 'wasm' ? registerWasmTrainingKernels() : [];
    return { ...candidate, skipped, addedKernels };
  }
  const reasons = skipped.map((s) => `${s.via}: ${s.reason}`).join('; ');
  const fix =
    choice === 'tensorflow'
      ? 'install @tensorflow/tfjs-node (or -gpu) in the image, or set spec.worker.backend / TENSILE_BACKEND to auto, wasm or cpu'
      : 'set spec.worker.backend / TENSILE_BACKEND to auto';
  throw new BackendError(`backend "${choice}" is not available (${reasons}); ${fix}`);
}
