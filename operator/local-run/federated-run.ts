/**
 * `tensile run` of a federated TrainingJob (spec.federation): each site is a group of local worker
 * processes with its own rendezvous, ring, checkpoints and data (its own path, or its part of the
 * job's dataset); one local nats-server carries both the sites' own rendezvous and the rounds between
 * the sites. Writes DIR/<site>/ (logs, checkpoints), DIR/summary.json with accuracy and time per
 * round, and DIR/federation/ with the test audit when asked. A federated run always starts over.
 */
import { type ChildProcess, spawn } from 'node:child_process';
import { randomUUID } from 'node:crypto';
import { createWriteStream, mkdirSync, rmSync, writeFileSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { createInterface } from 'node:readline';
import { newSiteSigningKey, siteJobName } from '../api/federation.ts';
import { gaussianEpsilon } from '../api/privacy-accountant.ts';
import type { TrainingJob } from '../api/training-job.ts';
import { workerEnvironment } from '../api/worker-env.ts';
import { decodeWorkerLine, type WorkerEvent, type WorkerEventOf } from '../api/worker-events.ts';
import type { CommandIo } from '../commands/args.ts';
import { startNatsServer } from './nats-server.ts';

export interface FederatedRunOptions {
  readonly out: string | undefined;
  readonly backend: string | undefined;
  /** Tests: the plain deltas and applied means under DIR/federation (TENSILE_FEDERATION_AUDIT). */
  readonly audit?: boolean;
}

export interface FederatedRoundSummary {
  readonly round: number;
  readonly step: number;
  /** Accuracy on the evaluation split after the round's aggregation (the first site's leader). */
  readonly accuracy: number | null;
  readonly loss: number | null;
  /** Wall time from the end of the previous round to the end of this one, first site's leader. */
  readonly seconds: number;
  /** Bytes the site leaders wrote to NATS in the round (advertise, shares, masked input, unmask). */
  readonly bytes: number;
  readonly sites: readonly number[];
  readonly dropped: readonly number[];
  /** Whether every rank of every site applied the same mean. */
  readonly agreed: boolean;
  /** differentialPrivacy: the ε each site has spent after this round. */
  readonly epsilon?: number;
}

export interface FederatedSummary {
  readonly job: string;
  /** completed: every round ran (sites may have dropped out of some); failed: the rounds stopped short. */
  readonly status: 'completed' | 'failed';
  readonly reason: string;
  readonly sites: readonly {
    readonly name: string;
    readonly workers: number;
    readonly samples: number | null;
  }[];
  readonly secure: boolean;
  readonly aggregation: string;
  /** differentialPrivacy: the settings and the ε each site spent over the run, at δ. */
  readonly privacy?: {
    readonly clipNorm: number;
    readonly noiseMultiplier: number;
    readonly delta: number;
    readonly epsilon: number;
  };
  readonly rounds: readonly FederatedRoundSummary[];
  readonly exitCodes: readonly (number | null)[];
  readonly wallSeconds: number;
}

interface Spawned {
  readonly site: number;
  readonly child: ChildProcess;
  readonly exited: Promise<number | null>;
}

/**
 * What the workers reported, gathered into rounds. After a round every rank of every site holds the
 * same weights, so the first evaluation of a step (any rank of the first site) stands for all.
 */
class RoundBook {
  readonly samples = new Map<number, number>();
  private readonly rounds = new Map<number, WorkerEventOf<'federation-round'>[]>();
  private readonly evals = new Map<number, WorkerEventOf<'eval'>>();
  private readonly ends = new Map<number, number>();

  add(site: number, event: WorkerEvent, at: number): void {
    if (event.event === 'dataset' && !this.samples.has(site)) this.samples.set(site, event.trainSamples);
    if (event.event === 'federation-round') {
      this.rounds.set(event.round, [...(this.rounds.get(event.round) ?? []), event]);
      if (site === 0 && !this.ends.has(event.round)) this.ends.set(event.round, at);
    }
    if (event.event === 'eval' && site === 0 && !this.evals.has(event.step))
      this.evals.set(event.step, event);
  }

  firstEval(step: number): boolean {
    return !this.evals.has(step);
  }

  summary(localSteps: number, started: number): FederatedRoundSummary[] {
    const out: FederatedRoundSummary[] = [];
    let previous = started;
    for (const [round, events] of [...this.rounds].sort((a, b) => a[0] - b[0])) {
      const step = round * localSteps;
      const evaluation = this.evals.get(step);
      const ended = this.ends.get(round) ?? previous;
      out.push({
        round,
        step,
        accuracy: evaluation?.accuracy ?? null,
        loss: evaluation?.loss ?? null,
        seconds: Math.round(ended - previous) / 1000,
        bytes: events.reduce((n, e) => n + e.bytesSent, 0),
        sites: events[0]?.sites ?? [],
        dropped: events[0]?.dropped ?? [],
        agreed: new Set(events.map((e) => e.checksum)).size === 1,
        ...(events[0]?.epsilon === undefined ? {} : { epsilon: events[0].epsilon }),
      });
      previous = ended;
    }
    return out;
  }
}

function startSiteWorker(
  env: Record<string, string>,
  log: string,
  bin: string,
  onEvent: (event: WorkerEvent) => void,
  io: CommandIo,
): { child: ChildProcess; exited: Promise<number | null> } {
  const file = createWriteStream(log, { flags: 'a' });
  const child = spawn(process.execPath, [bin, 'worker'], {
    env: { ...process.env, ...env },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  createInterface({ input: child.stdout as NodeJS.ReadableStream }).on('line', (text) => {
    file.write(`${text}\n`);
    const line = decodeWorkerLine(text);
    if (line.kind === 'event') onEvent(line.event);
    else if (line.kind === 'message' && line.level === 'error')
      io.err(`${line.worker ?? '?'}: ${line.message ?? ''}`);
  });
  createInterface({ input: child.stderr as NodeJS.ReadableStream }).on('line', (text) =>
    file.write(`${text}\n`),
  );
  const exited = new Promise<number | null>((done) =>
    child.on('close', (code) => {
      file.end();
      done(code);
    }),
  );
  return { child, exited };
}

/**
 * Secure aggregation: an Ed25519 identity key per site, made for this run (a local run is one
 * machine, so the launcher is trusted to hand the keys out); each private key goes to its site's
 * folder only (mode 0600), the public keys to every worker (runFederated refuses pinned keys first).
 */
function siteKeys(job: TrainingJob, out: string): Record<string, string> | undefined {
  const federation = job.spec.federation;
  if (federation === undefined || !federation.secureAggregation.enabled) return undefined;
  const keys: Record<string, string> = {};
  for (const site of federation.sites) {
    const key = newSiteSigningKey();
    const dir = join(out, site.name);
    mkdirSync(dir, { recursive: true });
    writeFileSync(join(dir, 'signing-key.pem'), key.privatePem, { mode: 0o600 });
    keys[site.name] = key.public;
  }
  return keys;
}

/** summary.json of a federated run: per round, per site, the privacy spent, how the run ended. */
function summarize(
  job: TrainingJob,
  book: RoundBook,
  codes: readonly (number | null)[],
  started: number,
): FederatedSummary {
  const federation = job.spec.federation as NonNullable<TrainingJob['spec']['federation']>;
  const name = job.metadata.name;
  const rounds = book.summary(federation.localSteps, started);
  const dp = federation.differentialPrivacy;
  const privacy =
    dp === undefined
      ? undefined
      : {
          clipNorm: dp.clipNorm,
          noiseMultiplier: dp.noiseMultiplier,
          delta: dp.delta,
          epsilon: gaussianEpsilon(dp.noiseMultiplier, rounds.length, dp.delta).epsilon,
        };
  const complete = rounds.length === federation.rounds;
  return {
    job: name,
    status: complete ? 'completed' : 'failed',
    reason: `${rounds.length} of ${federation.rounds} rounds${codes.some((c) => c !== 0) ? `; ${codes.filter((c) => c !== 0).length} of ${codes.length} workers failed` : ''}`,
    sites: federation.sites.map((s, i) => ({
      name: s.name,
      workers: s.replicas,
      samples: book.samples.get(i) ?? null,
    })),
    secure: federation.secureAggregation.enabled,
    aggregation: federation.aggregation,
    rounds,
    ...(privacy === undefined ? {} : { privacy }),
    exitCodes: codes,
    wallSeconds: Math.round(performance.now() - started) / 1000,
  };
}

export async function runFederated(
  job: TrainingJob,
  options: FederatedRunOptions,
  io: CommandIo,
  cwd: string,
  bin: string,
): Promise<number> {
  const federation = job.spec.federation;
  if (federation === undefined) throw new RangeError('runFederated needs spec.federation');
  const name = job.metadata.name;
  const namespace = job.metadata.namespace ?? 'default';
  const out = resolve(cwd, options.out ?? join('.tensile', 'runs', name));
  for (const sub of ['nats', 'federation', ...federation.sites.map((s) => s.name)])
    rmSync(join(out, sub), { recursive: true, force: true });
  mkdirSync(out, { recursive: true });
  // Before anything starts: a spec this run cannot serve fails here, not after the nats-server is up.
  const pinned = federation.sites.findIndex((s) => s.signingKey !== undefined);
  if (federation.secureAggregation.enabled && pinned >= 0) {
    io.err(
      `tensile run: spec.federation.sites[${pinned}].signingKey: site "${federation.sites[pinned]?.name}" pins its public key, but its private key is the site's own and tensile run makes every site's key itself; drop the pin for a local run`,
    );
    return 1;
  }
  const remote = federation.sites.findIndex((s) => s.remote);
  if (remote >= 0) {
    io.err(
      `tensile run: spec.federation.sites[${remote}].remote: tensile run runs every site itself; drop remote for a local run`,
    );
    return 1;
  }
  const keys = siteKeys(job, out);
  const started = performance.now();
  await using nats = await startNatsServer({ storeDir: join(out, 'nats') });
  const jobUid = randomUUID();
  io.out(
    `${name}: federated over ${federation.sites.length} sites (${federation.sites.map((s) => `${s.name}×${s.replicas}`).join(', ')}), ${federation.rounds} rounds of ${federation.localSteps} steps, ${federation.aggregation}${federation.secureAggregation.enabled ? ' with secure aggregation' : ''}; nats-server at ${nats.url}; output in ${out}`,
  );
  const book = new RoundBook();
  const spawned: Spawned[] = [];
  federation.sites.forEach((site, s) => {
    const dir = join(out, site.name);
    mkdirSync(dir, { recursive: true });
    for (let r = 0; r < site.replicas; r++) {
      const workerId = `${siteJobName(name, site.name)}-worker-${r}`;
      const env = workerEnvironment({
        jobName: name,
        namespace,
        jobUid,
        spec: job.spec,
        workerId,
        replicaIndex: r,
        checkpointDir: join(dir, 'checkpoints'),
        outDir: out,
        modelDir: join(dir, 'model'),
        natsUrl: nats.url,
        federationSite: site.name,
        ...(keys === undefined
          ? {}
          : { federationSigningKey: join(dir, 'signing-key.pem'), federationSiteKeys: keys }),
        ...(options.audit === true ? { federationAudit: true } : {}),
        ...(options.backend === undefined ? {} : { backend: options.backend }),
      });
      const onEvent = (event: WorkerEvent) => {
        if (event.event === 'eval' && s === 0 && book.firstEval(event.step))
          io.out(
            `round ${event.step / federation.localSteps}: accuracy ${event.accuracy?.toFixed(4) ?? '?'} loss ${event.loss?.toFixed(4) ?? '?'}`,
          );
        book.add(s, event, performance.now());
        if (event.event === 'failed') io.err(`${workerId}: ${event.error}`);
      };
      const { child, exited } = startSiteWorker(env, join(dir, `worker-${r}.log`), bin, onEvent, io);
      spawned.push({ site: s, child, exited });
      io.out(`${workerId}: pid ${child.pid ?? '?'}`);
    }
  });
  const stop = () => {
    for (const w of spawned) w.child.kill('SIGTERM');
  };
  process.once('SIGINT', stop);
  const codes = await Promise.all(spawned.map((w) => w.exited));
  process.removeListener('SIGINT', stop);
  const summary = summarize(job, book, codes, started);
  const { rounds, privacy } = summary;
  writeFileSync(join(out, 'summary.json'), `${JSON.stringify(summary, null, 2)}\n`);
  const failed = codes.filter((c) => c !== 0).length;
  io.out(
    `${name}: ${summary.rounds.length} rounds in ${summary.wallSeconds} s; summary in ${join(out, 'summary.json')}`,
  );
  if (privacy !== undefined)
    io.out(
      `${name}: differential privacy ε = ${privacy.epsilon.toFixed(3)} at δ = ${privacy.delta} per site after ${rounds.length} rounds (clip ${privacy.clipNorm}, noise multiplier ${privacy.noiseMultiplier}; RDP accountant)`,
    );
  if (failed > 0) io.err(`${name}: ${failed} of ${codes.length} workers failed (logs in ${out}/<site>/)`);
  return failed > 0 ? 1 : 0;
}
