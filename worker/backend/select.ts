/**
 * The TensorFlow.js backend, chosen once at start (design 4.1): tensorflow through tfjs-node-gpu,
 * tensorflow through tfjs-node, wasm, cpu — the first that loads wins, and the reason each earlier
 * one was skipped is reported. The native bindings are optional dependencies that only
 * hack/install-tensorflow.sh makes usable (npm alone drops them, or leaves their addon unbuilt), so
 * they are imported dynamically and a missing one is a skip, not a crash. tfjs-node-gpu is tried only
 * where an NVIDIA driver is present: loaded, it would run on the CPU without a GPU and, sharing
 * libtensorflow's SONAME, shadow tfjs-node for the rest of the process. A forced backend that cannot
 * be loaded is a terminal BackendError.
 */
import { existsSync } from 'node:fs';
import * as tf from '@tensorflow/tfjs';
import type { BackendChoice } from '../../operator/api/training-job.ts';
import { BackendError } from '../errors.ts';
import { applyTensorflowFixes } from './tensorflow-fixes.ts';
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
  /**
   * Kernels this process registered or replaced for the backend: wasm's gradient kernels, natively or
   * by delegation; the tensorflow backend's corrections (tensorflow-fixes.ts).
   */
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

const GPU_PACKAGE = '@tensorflow/tfjs-node-gpu';
/** Device files the NVIDIA kernel driver creates; without them no CUDA device can be opened. */
export const NVIDIA_DRIVER_FILES = ['/dev/nvidiactl', '/proc/driver/nvidia/version'] as const;

const CPU_PACKAGE = '@tensorflow/tfjs-node';

/** Whether a package resolves from here, without loading it (through any module hooks). */
function resolvable(specifier: string): boolean {
  try {
    import.meta.resolve(specifier);
    return true;
  } catch {
    return false;
  }
}

/**
 * Why a candidate must not even be loaded on this machine, or undefined; pure given its probes.
 * Without a GPU the GPU package is passed over for tfjs-node; where tfjs-node is absent (the GPU
 * image on a CPU node) it is still the best backend: libtensorflow runs on the CPU.
 */
export function precheck(
  candidate: BackendCandidate,
  exists: (path: string) => boolean = existsSync,
  installed: (specifier: string) => boolean = resolvable,
): string | undefined {
  if (candidate.via !== GPU_PACKAGE || NVIDIA_DRIVER_FILES.some(exists) || !installed(CPU_PACKAGE))
    return undefined;
  return `no NVIDIA GPU driver on this machine (${NVIDIA_DRIVER_FILES.join(' and ')} are absent); ${CPU_PACKAGE} runs TensorFlow on the CPU`;
}

function installHint(via: string): string {
  return `bash hack/install-tensorflow.sh${via === GPU_PACKAGE ? ' --gpu' : ''}`;
}

/** The reason a backend's package failed to load, with the fix where there is one; pure. */
export function describeLoadFailure(via: string, error: unknown): string {
  const code = (error as { code?: unknown } | null)?.code;
  if (code === 'ERR_MODULE_NOT_FOUND' || code === 'MODULE_NOT_FOUND')
    return `not installed (the optional dependency ${via} is absent; install it with ${installHint(via)})`;
  const message = error instanceof Error ? error.message : String(error);
  if (message.includes('tfjs_binding.node'))
    return `installed without its native addon (npm does not build it); build it with ${installHint(via)}`;
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

function registerBackendKernels(backend: BackendName): string[] {
  if (backend === 'wasm') return registerWasmTrainingKernels();
  if (backend === 'tensorflow') {
    applyTensorflowFixes();
    return ['Round (int32)', 'histogram buckets'];
  }
  return [];
}

/**
 * Loads and activates the first working backend of the chain for `choice`. Throws BackendError when
 * none works (only possible when a backend is forced).
 */
export async function selectBackend(choice: BackendChoice): Promise<SelectedBackend> {
  const skipped: SkippedBackend[] = [];
  for (const candidate of backendCandidates(choice)) {
    const refusal = precheck(candidate);
    if (refusal !== undefined) {
      skipped.push({ ...candidate, reason: refusal });
      continue;
    }
    try {
      await load(candidate);
    } catch (error) {
      skipped.push({ ...candidate, reason: describeLoadFailure(candidate.via, error) });
      continue;
    }
    return { ...candidate, skipped, addedKernels: registerBackendKernels(candidate.backend) };
  }
  const reasons = skipped.map((s) => `${s.via}: ${s.reason}`).join('; ');
  const fix =
    choice === 'tensorflow'
      ? 'install it with bash hack/install-tensorflow.sh (--gpu for tfjs-node-gpu; the worker images carry it), or set spec.worker.backend / TENSILE_BACKEND to auto, wasm or cpu'
      : 'set spec.worker.backend / TENSILE_BACKEND to auto';
  throw new BackendError(`backend "${choice}" is not available (${reasons}); ${fix}`);
}
