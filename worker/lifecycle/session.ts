/**
 * What a worker holds for its whole life (backend, data, model, trainer, checkpoints, membership) and
 * the few facts its states share: opened once by `openSession`, released by its async dispose.
 */

import { mkdirSync, renameSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import * as tf from '@tensorflow/tfjs';
import type { GenerationEnd } from '../../operator/api/goodput.ts';
import { JOB_RECORD } from '../../operator/api/model-output.ts';
import type { FederationSpec, TrainingJobSpec } from '../../operator/api/training-job.ts';
import { type SelectedBackend, selectBackend } from '../backend/select.ts';
import { CheckpointMirror } from '../checkpoint/object-store.ts';
import { BackgroundCheckpointer, type CheckpointRef, CheckpointStore } from '../checkpoint/store.ts';
import type { WorkerConfig } from '../config.ts';
import { AuditLog } from '../data/audit.ts';
import { type Dataset, loadDataset } from '../data/dataset.ts';
import { encodePreprocessing } from '../data/preprocess.ts';
import {
  ElasticMembership,
  type JoinedWorld,
  LocalMembership,
  type Membership,
  type StateHolder,
} from '../elastic/membership.ts';
import { Federated } from '../federation/federated.ts';
import { siteDataset } from '../federation/site-data.ts';
import { emit, errorMessage, type WorkerLogger } from '../log.ts';
import { type BuiltModel, buildModel } from '../model/build.ts';
import { worldFor } from '../train/policy.ts';
import type { Snapshot, TrainingState } from '../train/snapshot.ts';
import { Trainer } from '../train/trainer.ts';
import { restoreLatest } from './restore.ts';
import { TrainingClock } from './training-clock.ts';

export interface SessionOptions {
  readonly config: WorkerConfig;
  readonly log: WorkerLogger;
  /** Aborted on SIGTERM/SIGINT: checkpoint at the next step boundary and return. */
  readonly stop: AbortSignal;
  /** Defaults to the elastic membership when TENSILE_NATS_URL is set, a world of one otherwise. */
  readonly membership?: Membership;
}

/** The facts the states share; everything else a state needs it is given or returns. */
export interface SessionFacts {
  /** The logger of the current generation (the worker's own before the first). */
  log: WorkerLogger;
  /** The trainer's state is a real one (restored, received or trained), not the initial one. */
  trained: boolean;
  resumedFrom: CheckpointRef | undefined;
  /** The operator's stop (not a leave): the whole job stops for now. */
  stopAll: boolean;
  checkpointRequested: boolean;
  /** The last world joined: its rank 0 (or a world of one) writes the final checkpoint. */
  lastWorld: JoinedWorld | undefined;
  lastLoss: number | undefined;
  lastThroughput: number | undefined;
  /** Wall time (ms) of the last snapshot taken. */
  lastCheckpointTime: number;
  /**
   * This worker's own world reached the stopping condition: its state is the final one. A standby
   * that learns of the completion holds an older state, which must not become the exported model.
   */
  reachedTheEnd: boolean;
  /** This worker's generations as `generation-end` reports them: its share of the job's useful time. */
  readonly generationEnds: GenerationEnd[];
}

export class Session implements AsyncDisposable {
  readonly spec: TrainingJobSpec;
  readonly state: Trainer['state'];
  /** Aborted by a stop, a leave request or a stop/leave control message: this worker's part ends. */
  readonly leaving: AbortSignal;
  readonly clock = new TrainingClock();
  readonly facts: SessionFacts;
  readonly checkpoints: BackgroundCheckpointer;
  /** checkpoint.objectStore: every checkpoint written is uploaded; a restore first pulls a newer one. */
  readonly mirror: CheckpointMirror | undefined;
  readonly holder: StateHolder;

  constructor(
    readonly config: WorkerConfig,
    readonly baseLog: WorkerLogger,
    readonly backend: SelectedBackend,
    readonly dataset: Dataset,
    readonly built: BuiltModel,
    readonly store: CheckpointStore,
    readonly audit: AuditLog,
    readonly trainer: Trainer,
    readonly fresh: TrainingState,
    readonly membership: Membership,
    leaving: AbortController,
  ) {
    this.spec = config.spec;
    this.state = trainer.state;
    this.leaving = leaving.signal;
    this.facts = {
      log: baseLog,
      trained: false,
      resumedFrom: undefined,
      stopAll: false,
      checkpointRequested: false,
      lastWorld: undefined,
      lastLoss: undefined,
      lastThroughput: undefined,
      lastCheckpointTime: Date.now(),
      reachedTheEnd: false,
      generationEnds: [],
    };
    const facts = this.facts;
    this.holder = {
      snapshot: () => trainer.snapshot(),
      restore: (snapshot: Snapshot) => {
        trainer.restore(snapshot);
        facts.trained = true;
      },
      get hasTrained() {
        return facts.trained;
      },
      get step() {
        return trainer.committedStep;
      },
    };
    membership.onControl((message) => {
      if (message.type === 'checkpoint') facts.checkpointRequested = true;
      // A newer spec is the rendezvous's business: the next world follows it.
      else if (message.type === 'spec') return;
      else {
        if (message.type === 'stop') facts.stopAll = true;
        leaving.abort();
      }
    });
    const objectStore = this.spec.checkpoint.objectStore;
    this.mirror =
      objectStore === undefined
        ? undefined
        : new CheckpointMirror(objectStore, {
            uploaded: (step, url, millis) =>
              emit(this.facts.log, 'info', 'checkpoint uploaded', {
                event: 'checkpoint-uploaded',
                step,
                url,
                uploadMs: Math.round(millis),
              }),
            uploadFailed: (step, error) =>
              emit(this.facts.log, 'warn', 'checkpoint upload failed; the next one is tried as usual', {
                event: 'checkpoint-upload-failed',
                step,
                error: errorMessage(error),
              }),
          });
    this.checkpoints = new BackgroundCheckpointer(
      store,
      {
        written: (ref, millis) => this.checkpointWritten(ref, millis),
        failed: (step, error) =>
          emit(this.facts.log, 'error', 'checkpoint failed; training goes on', {
            event: 'checkpoint-failed',
            step,
            error: errorMessage(error),
          }),
      },
      () => audit.descriptor,
    );
  }

  /** Loads the newest valid checkpoint into the trainer; false when there is none. */
  restore(): Promise<boolean> {
    return restoreLatest(this);
  }

  /** A snapshot of the state, with the training time up to now. */
  takeSnapshot(): { snapshot: Snapshot; blockingMs: number } {
    const t = performance.now();
    this.state.trainSeconds = this.clock.trainSeconds();
    const snapshot = this.trainer.snapshot();
    return { snapshot, blockingMs: performance.now() - t };
  }

  private checkpointWritten(ref: CheckpointRef, millis: number): void {
    emit(this.facts.log, 'info', 'checkpoint written', {
      event: 'checkpoint',
      step: ref.step,
      path: ref.path,
      writeMs: Math.round(millis),
    });
    this.membership.publish('events', {
      type: 'checkpoint',
      worker: this.config.workerId,
      step: ref.step,
      path: ref.path,
      time: new Date().toISOString(),
    });
    this.mirror?.push(ref, this.store.keep);
  }

  /** spec.federation: this site worker's part of the rounds between sites. */
  federated: Federated | undefined;

  async [Symbol.asyncDispose](): Promise<void> {
    try {
      await this.federated?.[Symbol.asyncDispose]();
    } catch (error) {
      this.facts.log.debug('federation close failed', { error: errorMessage(error) });
    }
    try {
      await this.membership[Symbol.asyncDispose]();
    } catch (error) {
      this.facts.log.debug('membership close failed', { error: errorMessage(error) });
    }
    try {
      await this.mirror?.[Symbol.asyncDispose]();
    } catch (error) {
      this.facts.log.debug('object store close failed', { error: errorMessage(error) });
    }
    this.audit.close();
    this.trainer.dispose();
    this.built.model.dispose();
    this.dataset.close();
    this.facts.log.debug('tensors left', { numTensors: tf.memory().numTensors });
  }
}

function initialState(spec: TrainingJobSpec, dataset: Dataset): TrainingState {
  const { policy } = worldFor(spec, 0, 0, 1, 0, undefined);
  return {
    step: 0,
    epoch: 0,
    cursor: 0,
    samples: 0,
    shuffleSeed: spec.dataset.shuffleSeed,
    modelSeed: spec.model.seed,
    worldSize: 1,
    generation: 0,
    generations: [],
    policy,
    lastEval: null,
    trainSeconds: 0,
    dataset: { ...dataset.fingerprint },
    preprocessing: encodePreprocessing(dataset.normalization, dataset.pca),
    completed: null,
  };
}

/** Backend, data, model, trainer and membership, in that order; what was opened is released on failure. */
export async function openSession(options: SessionOptions): Promise<Session> {
  const { config, log } = options;
  const spec = config.spec;
  // The worker reports its backend itself; tfjs's console banners ("install tfjs-node …") are noise.
  tf.enableProdMode();
  const backend = await selectBackend(config.backend ?? spec.worker.backend);
  for (const skipped of backend.skipped)
    log.info('backend skipped', { backend: skipped.backend, via: skipped.via, reason: skipped.reason });
  emit(log, 'info', 'backend selected', {
    event: 'backend',
    backend: backend.backend,
    via: backend.via,
    addedKernels: backend.addedKernels,
    skipped: backend.skipped.map(({ backend, via, reason }) => ({ backend, via, reason })),
  });
  const loaded = await loadDataset(spec.dataset, (message, fields) => log.info(message, fields));
  const member = config.federation;
  const dataset =
    member === undefined
      ? loaded
      : siteDataset(loaded, member.spec.federation as FederationSpec, member.index);
  emit(log, 'info', 'dataset ready', {
    event: 'dataset',
    ...dataset.describe,
    trainSamples: dataset.train.size,
  });
  const built = await buildModel(spec.model, dataset.sampleShape, dataset.classes);
  emit(log, 'info', 'model built', {
    event: 'model',
    kind: built.kind,
    parameters: built.parameters,
    inputShape: built.inputShape,
  });
  const store = new CheckpointStore(config.checkpointDir, spec.checkpoint.keep);
  await store.ensureDirectory();
  writeJobRecord(config, log);
  const fresh = initialState(spec, dataset);
  const auditDirectory = join(config.outDir ?? config.checkpointDir, 'audit');
  mkdirSync(auditDirectory, { recursive: true });
  const audit = new AuditLog(join(auditDirectory, `${config.workerId}.bin`));
  const trainer = new Trainer({
    model: built,
    optimizer: spec.optimizer,
    dataset,
    maxPerWorker: spec.batch.maxPerWorker,
    state: fresh,
    audit,
    onStepFallback: (reason) =>
      emit(log, 'warn', 'train step', { event: 'train-step', path: 'per-op', reason }),
  });
  emit(log, 'info', 'train step', { event: 'train-step', ...trainer.stepPath });
  // A leave request (SIGTERM in a pod, or the operator's control message before a node goes away)
  // ends this worker's part; `stop` (from the operator) ends the whole job's training for now.
  const leaving = new AbortController();
  // A signal that came while the backend, data and model loaded has already fired its event.
  if (options.stop.aborted) leaving.abort();
  else options.stop.addEventListener('abort', () => leaving.abort(), { once: true });
  let membership: Membership;
  try {
    membership =
      options.membership ??
      (config.natsUrl === undefined ? new LocalMembership() : await ElasticMembership.open(config, log));
  } catch (error) {
    audit.close();
    trainer.dispose();
    built.model.dispose();
    dataset.close();
    throw error;
  }
  const session = new Session(
    config,
    log,
    backend,
    dataset,
    built,
    store,
    audit,
    trainer,
    fresh,
    membership,
    leaving,
  );
  if (member !== undefined) {
    try {
      session.federated = await Federated.open(config, member);
    } catch (error) {
      await session[Symbol.asyncDispose]();
      throw error;
    }
  }
  return session;
}

/**
 * The job this volume belongs to, beside its checkpoints: what `tensile export` and `tensile report`
 * read (the spec, hyperparameters included) when they are given the volume's folder.
 */
function writeJobRecord(config: WorkerConfig, log: WorkerLogger): void {
  const file = join(config.checkpointDir, JOB_RECORD);
  const record = {
    name: config.jobName,
    namespace: config.namespace,
    ...(config.jobUid === undefined ? {} : { uid: config.jobUid }),
    specRevision: config.specRevision,
    spec: config.spec,
  };
  const temporary = `${file}.${config.workerId}.tmp`;
  try {
    writeFileSync(temporary, `${JSON.stringify(record, null, 1)}\n`);
    renameSync(temporary, file);
  } catch (error) {
    log.warn('could not write the job record beside the checkpoints', {
      file,
      error: (error as Error).message,
    });
  }
}
