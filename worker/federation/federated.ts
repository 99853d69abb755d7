/**
 * A site worker's side of federated training: the weights at the start of the round (the anchor),
 * and at the end of every round (every federation.localSteps steps of the site's world) the round
 * itself: Δ = anchor − weights (identical on every rank of the site, which trains synchronously), the
 * sample-weighted mean Δ̄ of the sites from client.ts, then weights = anchor − Δ̄ on every rank — the
 * same arithmetic as local SGD's plain averaging (local-sgd.ts), one level up.
 */
import { createHash } from 'node:crypto';
import { mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import * as tf from '@tensorflow/tfjs';
import { gaussianEpsilon } from '../../operator/api/privacy-accountant.ts';
import type { FederationSpec } from '../../operator/api/training-job.ts';
import type { FederationMember, WorkerConfig } from '../config.ts';
import { emit, type WorkerLogger } from '../log.ts';
import { outerStep, weightedDelta } from '../train/communication/local-sgd.ts';
import type { Trainer } from '../train/trainer.ts';
import { FederationClient } from './client.ts';
import { privatize } from './privacy.ts';

const readAll = (weights: readonly tf.LayerVariable[]): Float32Array => {
  const length = weights.reduce((n, w) => n + w.read().size, 0);
  const out = new Float32Array(length);
  let at = 0;
  for (const w of weights) {
    const values = w.read().dataSync() as Float32Array;
    out.set(values, at);
    at += values.length;
  }
  return out;
};

function writeAll(weights: readonly tf.LayerVariable[], values: Float32Array): void {
  let at = 0;
  for (const w of weights) {
    const size = w.read().size;
    const part = values.subarray(at, at + size);
    tf.tidy(() => {
      w.write(tf.tensor(part, w.read().shape));
    });
    at += size;
  }
}

export class Federated implements AsyncDisposable {
  private anchor: Float32Array | undefined;

  private constructor(
    private readonly client: FederationClient,
    private readonly member: FederationMember,
    private readonly federation: FederationSpec,
    private readonly auditDir: string | undefined,
  ) {}

  static async open(config: WorkerConfig, member: FederationMember): Promise<Federated> {
    const federation = member.spec.federation as FederationSpec;
    const client = await FederationClient.open(config, member.job, federation, member.index);
    const auditDir = config.federationAudit
      ? join(config.outDir ?? config.checkpointDir, 'federation')
      : undefined;
    if (auditDir !== undefined) mkdirSync(auditDir, { recursive: true });
    return new Federated(client, member, federation, auditDir);
  }

  /** Before a step: the round's anchor, taken once (start, resume, or the end of the last round). */
  beforeStep(weights: readonly tf.LayerVariable[], trainer: Trainer): void {
    if (this.anchor !== undefined) return;
    this.anchor = readAll(weights);
    trainer.anchorProximal(this.federation.proximalMu);
  }

  /** Whether the step just completed ends a round. */
  due(step: number): boolean {
    return step > 0 && step % this.federation.localSteps === 0;
  }

  /** The round that ends at `step`: every rank of the site calls it; `leader` (rank 0) writes. */
  async endRound(
    step: number,
    leader: boolean,
    samples: number,
    weights: readonly tf.LayerVariable[],
    trainer: Trainer,
    log: WorkerLogger,
    signal?: AbortSignal,
  ): Promise<void> {
    const anchor = this.anchor;
    if (anchor === undefined) throw new Error('a federated round ended without its anchor');
    const round = step / this.federation.localSteps;
    const started = performance.now();
    const live = readAll(weights);
    const delta = new Float32Array(live.length);
    weightedDelta(anchor, live, 1, delta);
    const privacy = this.federation.differentialPrivacy;
    // Every rank privatizes (its draws differ), but only the leader's delta leaves the site.
    if (privacy !== undefined) privatize(delta, privacy);
    let outcome: Awaited<ReturnType<FederationClient['round']>>;
    try {
      outcome = await this.client.round(round, leader, delta, samples, signal);
    } catch (error) {
      emit(log, 'error', 'federated round failed', {
        event: 'federation-round-failed',
        round,
        step,
        site: this.member.site,
        error: (error as Error).message,
      });
      throw error;
    }
    const next = anchor.slice();
    outerStep(next, outcome.mean, () => false, undefined, undefined);
    writeAll(weights, next);
    this.anchor = next;
    trainer.anchorProximal(this.federation.proximalMu);
    const checksum = createHash('sha256')
      .update(new Uint8Array(outcome.mean.buffer))
      .digest('hex')
      .slice(0, 16);
    if (this.auditDir !== undefined) this.audit(round, leader, samples, delta, outcome.mean);
    emit(log, 'info', 'federated round', {
      event: 'federation-round',
      round,
      step,
      site: this.member.site,
      attempt: outcome.attempt,
      sites: [...outcome.sites],
      dropped: [...outcome.dropped],
      secure: this.federation.secureAggregation.enabled,
      bytesSent: outcome.bytesSent,
      seconds: Math.round((performance.now() - started) / 10) / 100,
      checksum,
      ...(privacy === undefined
        ? {}
        : {
            epsilon: gaussianEpsilon(privacy.noiseMultiplier, round, privacy.delta).epsilon,
            privacyDelta: privacy.delta,
          }),
    });
  }

  /** Tests only (federationAudit): the plain delta of a leader and the mean every rank applied. */
  private audit(
    round: number,
    leader: boolean,
    samples: number,
    delta: Float32Array,
    mean: Float32Array,
  ): void {
    const dir = this.auditDir as string;
    const site = this.member.site;
    if (leader) {
      writeFileSync(join(dir, `r${round}-delta-${site}.bin`), new Uint8Array(delta.buffer));
      writeFileSync(join(dir, `r${round}-samples-${site}.json`), JSON.stringify({ samples }));
    }
    writeFileSync(
      join(dir, `r${round}-mean-${site}-${process.pid}.bin`),
      new Uint8Array(mean.buffer.slice(0)),
    );
  }

  async [Symbol.asyncDispose](): Promise<void> {
    await this.client[Symbol.asyncDispose]();
  }
}
