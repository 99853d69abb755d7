/**
 * Elastic training's costs, each as a ratio to a baseline measured in the same run:
 *  - ring all-reduce of a fused buffer (the MLP example's 235,146 gradients, and 4M) in worker
 *    processes, against the bandwidth bound 2(n−1)/n · S / B where B is a raw TCP stream between two
 *    processes on the same loopback, and against a raw ring: the same processes moving the same bytes
 *    to their right neighbours with nothing else to do (what this machine allows that traffic);
 *  - recovery: from a kill -9 to the first completed step of the new world (tensile run --chaos),
 *    against the 0.5 s target (the survivors see the dead peer's link break and re-form at once) and
 *    against the rendezvous timeout (the bound of detection when a peer dies silently, no RST);
 *  - join: from `--chaos join` starting a worker to the first step that includes it, against the same
 *    run's cold start, and the pause the others see, in step times of the world before;
 *  - scaling: samples/s of `tensile run --workers 2` against `--workers 1`, same manifest, same machine
 *    (the MLP example's model and the CNN of the accuracy table).
 */
import { type ChildProcess, fork, spawn } from 'node:child_process';
import { mkdtempSync, readFileSync } from 'node:fs';
import { createConnection, createServer, type Socket } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { eventsOf } from '../../operator/api/worker-events.ts';
import { RingGroup } from '../../worker/collective/group.ts';
import { CollectiveServer } from '../../worker/collective/transport.ts';
import { finished, tensileRun, workerEvents, writeJobManifest } from '../helpers/tensile-run.ts';

const self = fileURLToPath(import.meta.url);
const round = (x: number, digits = 3) => Math.round(x * 10 ** digits) / 10 ** digits;
const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)] as number;
/** Rounds before timing: the first ones run before V8 has optimised the reduction and the framer. */
const WARMUP = 10;
/**
 * `TENSILE_TESTBED_ZONES=N` (after `sudo hack/testbed.sh up N RATE`): rank r of the rings runs in
 * zone r mod N's network namespace, so every link between zones is rate-limited.
 */
const TESTBED_ZONES = Number(process.env['TENSILE_TESTBED_ZONES'] ?? 0);
/** Where a rank listens and its neighbour dials: its zone's address on the test bed, else loopback. */
const HOST = process.env['TENSILE_BENCH_HOST'] ?? '127.0.0.1';

/** A bench child for `rank`, inside its zone's namespace on the test bed. */
function rankChild(rank: number, args: string[]): ChildProcess {
  const stdio: ['ignore', 'ignore', 'inherit', 'ipc'] = ['ignore', 'ignore', 'inherit', 'ipc'];
  if (TESTBED_ZONES <= 0) return fork(self, args, { execArgv: ['--import', 'tsx'], stdio });
  const zone = rank % TESTBED_ZONES;
  return spawn(
    'ip',
    ['netns', 'exec', `tensile-tb-z${zone}`, process.execPath, '--import', 'tsx', self, ...args],
    { stdio, env: { ...process.env, TENSILE_BENCH_HOST: `10.231.0.${10 + zone}` } },
  );
}

/** Reads of the raw baselines go into one reused buffer, as the collective transport's do. */
const READ_BUFFER = 1024 * 1024;

/** Child: one rank of a ring; measures `rounds` all-reduces of `elements` floats and reports the times. */
async function rankMain(): Promise<void> {
  const [rank, , elements, rounds, inPlace = 1, segment = 0, jsReducer = 0] = process.argv
    .slice(3)
    .map(Number) as number[] as [number, number, number, number, number?, number?, number?];
  const server = await CollectiveServer.listen('bench', HOST);
  process.send?.({ address: server.address });
  const members = await new Promise<{ address: string }[]>((resolve) =>
    process.once('message', (m) => resolve(m as { address: string }[])),
  );
  const group = await RingGroup.connect({
    job: 'bench',
    generation: 1,
    rank,
    members,
    server,
    token: 'bench-link-token-0123',
    receiveInPlace: inPlace === 1,
    reducer: jsReducer === 1 ? 'js' : 'simd',
    // A fixed segment size: the ring before it cut each chunk into several.
    ...(segment > 0 ? { segmentElements: segment, segmentsPerChunk: 1 } : {}),
  });
  const buffer = new Float32Array(elements).fill(rank + 1);
  const times: number[] = [];
  const cpu: number[] = [];
  for (let i = 0; i < rounds + WARMUP; i++) {
    await group.barrier();
    const t = performance.now();
    const c = process.cpuUsage();
    await group.allReduce(buffer);
    if (i >= WARMUP) times.push(performance.now() - t);
    if (i >= WARMUP) cpu.push(cpuMs(process.cpuUsage(c)));
    buffer.fill(rank + 1);
  }
  // No rank leaves while another still finishes its last timed all-reduce (its trailing sends would
  // fail on the closed link); the barrier's own tail may, and does not count.
  await group.barrier().catch(() => undefined);
  process.send?.({ times, cpu });
  await group[Symbol.asyncDispose]();
  await server[Symbol.asyncDispose]();
  process.exit(0);
}

const cpuMs = (u: NodeJS.CpuUsage) => (u.user + u.system) / 1000;

/** Median over rounds of the slowest rank's all-reduce time, in ms. */
export async function ring(
  size: number,
  elements: number,
  rounds: number,
  options: { receiveInPlace?: boolean; segmentElements?: number; reducer?: 'simd' | 'js' } = {},
): Promise<number> {
  return (await ringCost(size, elements, rounds, options)).ms;
}

/**
 * The ring's time (as `ring`) and its CPU: the median over rounds of the CPU milliseconds all ranks
 * together spent in the round, a figure a loaded machine disturbs far less than the time.
 */
export async function ringCost(
  size: number,
  elements: number,
  rounds: number,
  options: { receiveInPlace?: boolean; segmentElements?: number; reducer?: 'simd' | 'js' } = {},
): Promise<{ ms: number; cpuMs: number }> {
  const inPlace = options.receiveInPlace === false ? '0' : '1';
  const reducer = options.reducer === 'js' ? '1' : '0';
  const segment = String(options.segmentElements ?? 0);
  const children: ChildProcess[] = Array.from({ length: size }, (_, rank) =>
    rankChild(rank, [
      '--rank',
      String(rank),
      String(size),
      String(elements),
      String(rounds),
      inPlace,
      segment,
      reducer,
    ]),
  );
  const addresses = await Promise.all(
    children.map(
      (c) => new Promise<string>((r) => c.once('message', (m) => r((m as { address: string }).address))),
    ),
  );
  type Report = { times: number[]; cpu: number[] };
  const reports = children.map((c) => new Promise<Report>((r) => c.once('message', (m) => r(m as Report))));
  for (const c of children) c.send(addresses.map((address) => ({ address })));
  const all = await Promise.all(reports);
  const first = all[0] as Report;
  // A step waits for the slowest rank; the machine pays for every rank's CPU.
  const per = first.times.map((_, i) => Math.max(...all.map((r) => r.times[i] as number)));
  const cpu = first.cpu.map((_, i) => all.reduce((sum, r) => sum + (r.cpu[i] as number), 0));
  return { ms: median(per), cpuMs: median(cpu) };
}

/** A client socket that counts what it reads into one reused buffer. */
function countingSocket(port: number, onBytes: (n: number) => void, host = '127.0.0.1'): Promise<Socket> {
  return new Promise((resolve) => {
    const socket: Socket = createConnection(
      {
        port,
        host,
        onread: {
          buffer: Buffer.allocUnsafeSlow(READ_BUFFER),
          callback: (n) => {
            onBytes(n);
            return true;
          },
        },
      },
      () => resolve(socket),
    );
  });
}

/** Bytes per millisecond of one TCP stream between two processes on loopback. */
export async function rawTcp(bytes: number): Promise<number> {
  const server = createServer();
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', () => r()));
  const port = (server.address() as { port: number }).port;
  const child = fork(self, ['--sink', String(port), String(bytes)], {
    execArgv: ['--import', 'tsx'],
    stdio: ['ignore', 'ignore', 'inherit', 'ipc'],
  });
  const socket = await new Promise<Socket>((r) => server.once('connection', r));
  socket.setNoDelay(true);
  const payload = Buffer.alloc(bytes, 1);
  const times: number[] = [];
  for (let i = 0; i < 12; i++) {
    const t = performance.now();
    await new Promise<void>((r) => socket.write(payload, () => r()));
    await new Promise<void>((r) => child.once('message', () => r()));
    if (i >= 2) times.push(performance.now() - t);
  }
  child.kill();
  socket.destroy();
  server.close();
  return bytes / median(times);
}

async function sinkMain(): Promise<void> {
  const [port, bytes] = process.argv.slice(3).map(Number) as [number, number];
  let received = 0;
  await countingSocket(port, (n) => {
    received += n;
    while (received >= bytes) {
      received -= bytes;
      process.send?.('done');
    }
  });
}

/**
 * Child: one rank of a raw ring. On each "go" from the parent it writes `bytes` to its right
 * neighbour while reading as many from its left one: a ring all-reduce's traffic with no framing,
 * no reduction and no copy in JavaScript.
 */
async function rawRankMain(): Promise<void> {
  const [rank, size, bytes] = process.argv.slice(3).map(Number) as [number, number, number];
  const server = createServer();
  await new Promise<void>((r) => server.listen(0, HOST, () => r()));
  const right = new Promise<Socket>((r) => server.once('connection', r));
  process.send?.({ port: (server.address() as { port: number }).port, host: HOST });
  const ports = await new Promise<{ host: string; port: number }[]>((resolve) =>
    process.once('message', (m) => resolve(m as { host: string; port: number }[])),
  );
  let received = 0;
  let onReceived: (() => void) | undefined;
  // As in the collective transport, each rank dials the neighbour it receives from.
  const left = ports[(rank - 1 + size) % size] as { host: string; port: number };
  await countingSocket(
    left.port,
    (n) => {
      received += n;
      if (received >= bytes) onReceived?.();
    },
    left.host,
  );
  const to = await right;
  to.setNoDelay(true);
  const payload = Buffer.alloc(bytes, rank + 1);
  process.on('message', async (m) => {
    if (m !== 'go') return;
    const t = performance.now();
    const c = process.cpuUsage();
    const all = new Promise<void>((r) => {
      onReceived = r;
      if (received >= bytes) r();
    });
    await Promise.all([new Promise<void>((r) => to.write(payload, () => r())), all]);
    received -= bytes;
    onReceived = undefined;
    process.send?.({ ms: performance.now() - t, cpuMs: cpuMs(process.cpuUsage(c)) });
  });
  process.send?.({ ready: true });
}

/** Median over rounds of the slowest rank's time to move a ring all-reduce's bytes with raw TCP. */
export async function rawRing(size: number, bytesPerRank: number, rounds: number): Promise<number> {
  return (await rawRingCost(size, bytesPerRank, rounds)).ms;
}

/** The raw ring's time (as `rawRing`) and its CPU (as `ringCost`). */
export async function rawRingCost(
  size: number,
  bytesPerRank: number,
  rounds: number,
): Promise<{ ms: number; cpuMs: number }> {
  const children: ChildProcess[] = Array.from({ length: size }, (_, rank) =>
    rankChild(rank, ['--raw-rank', String(rank), String(size), String(Math.round(bytesPerRank))]),
  );
  const next = (c: ChildProcess) =>
    new Promise<Record<string, unknown>>((r) => c.once('message', (m) => r(m as Record<string, unknown>)));
  const ports = await Promise.all(
    children.map(async (c) => {
      const m = await next(c);
      return { host: String(m['host']), port: Number(m['port']) };
    }),
  );
  const ready = children.map(next);
  for (const c of children) c.send(ports);
  await Promise.all(ready);
  const per: number[] = [];
  const cpu: number[] = [];
  for (let i = 0; i < rounds + 2; i++) {
    const done = children.map(next);
    for (const c of children) c.send('go');
    const reports = await Promise.all(done);
    if (i < 2) continue;
    per.push(Math.max(...reports.map((m) => Number(m['ms']))));
    cpu.push(reports.reduce((sum, m) => sum + Number(m['cpuMs']), 0));
  }
  for (const c of children) c.kill();
  return { ms: median(per), cpuMs: median(cpu) };
}

/** Bytes each rank sends in a ring all-reduce of `elements` floats: 2(n−1)/n · S, the bound's numerator. */
export function ringBytes(size: number, elements: number): number {
  return ((2 * (size - 1)) / size) * elements * 4;
}

const RENDEZVOUS = { heartbeatMillis: 500, timeoutMillis: 3000, lastCallMillis: 1000 };
/** Kill -9 → first step of the new world: detection at the speed of the link (issue 16). */
export const KILL_TO_FIRST_STEP_TARGET_SECONDS = 0.5;

/** The recovery and join runs' job: the MLP of the examples, small enough for a few minutes. */
function writeJob(name: string, replicas: number, extra: Record<string, unknown> = {}): string {
  const dir = mkdtempSync(join(tmpdir(), `tensile-bench-${name}-`));
  return writeJobManifest(join(dir, 'job.yaml'), name, {
    replicas,
    minReplicas: 1,
    maxReplicas: 3,
    model: { mlp: { hiddenUnits: [64] } },
    dataset: { format: 'idx', path: '/usr/share/datasets/fashion-mnist', maxTrainSamples: 6000 },
    optimizer: { type: 'adam', learningRate: 0.003 },
    batch: { global: 60 },
    stopping: { epochs: 3 },
    rendezvous: RENDEZVOUS,
    ...extra,
  });
}

/** The run's own events (events.jsonl: chaos and rescales). */
function runEvents(out: string): { time: string; type: string; worker?: string }[] {
  return readFileSync(join(out, 'events.jsonl'), 'utf8')
    .split('\n')
    .filter(Boolean)
    .map((l) => JSON.parse(l) as { time: string; type: string; worker?: string });
}

const at = (e: Record<string, unknown>) => Date.parse(String(e['timestamp']));
const byTime = (a: Record<string, unknown>, b: Record<string, unknown>) => at(a) - at(b);

export async function recovery(): Promise<{ seconds: number; timeoutSeconds: number; perKill: number[] }> {
  const file = writeJob('recovery', 3);
  const out = join(file, '..', 'out');
  await finished(tensileRun(file, out, ['--workers', '3', '--chaos', 'kill:60,kill:160']));
  const kills = runEvents(out)
    .filter((e) => e.type === 'kill')
    .map((e) => Date.parse(e.time));
  const events = workerEvents(out);
  const formed = events.filter((e) => e['event'] === 'generation');
  const progress = events.filter((e) => e['event'] === 'progress');
  const perKill = kills.map((killed) => {
    const world = formed.filter((e) => at(e) > killed).sort(byTime)[0];
    const first = progress
      .filter((e) => e['generation'] === world?.['generation'])
      .map(at)
      .sort((a, b) => a - b)[0];
    return round(((first ?? Number.NaN) - killed) / 1000, 2);
  });
  return { seconds: median(perKill), timeoutSeconds: RENDEZVOUS.timeoutMillis / 1000, perKill };
}

interface JoinMeasure {
  /** `--chaos join` started the worker → the first step of a world that includes it. */
  readonly seconds: number;
  /** Of which: the new process's start (tfjs, dataset, model) until it registered for rendezvous. */
  readonly startupSeconds: number;
  /** Registered → the new world formed (the others reach a step boundary; a last call if not full). */
  readonly formSeconds: number;
  /** Formed → first step (state broadcast from a survivor, then one step). */
  readonly syncAndStepSeconds: number;
  /** The others' last step in the old world → their first in the new one. */
  readonly pauseSeconds: number;
  /** Median step time of the world before the join. */
  readonly stepSeconds: number;
  readonly worldSize: number;
}

/**
 * Joins: one worker, then `--chaos join` twice (1 → 2 → 3 workers). The others keep training
 * while the newcomer starts; they stop only at the step boundary where the new world forms.
 */
export async function joins(): Promise<{ coldStartSeconds: number; joins: JoinMeasure[] }> {
  // Long enough that each newcomer (a few seconds to start) joins well before the end, one at a time.
  const file = writeJob('join', 1, { stopping: { epochs: 20 } });
  const out = join(file, '..', 'out');
  const started = Date.now();
  await finished(tensileRun(file, out, ['--workers', '1', '--chaos', 'join:50,join:700']));
  const events = workerEvents(out);
  const formed = events.filter((e) => e['event'] === 'generation').sort(byTime);
  const progress = events.filter((e) => e['event'] === 'progress').sort(byTime);
  const firstStepOf = (generation: unknown) => progress.find((e) => e['generation'] === generation);
  const coldStart = firstStepOf(formed[0]?.['generation']);
  const measures = runEvents(out)
    .filter((e) => e.type === 'join')
    .map((e): JoinMeasure => {
      const joinedAt = Date.parse(e.time);
      const ready = events.find((l) => l['event'] === 'rendezvous' && l['worker'] === e.worker);
      const world = formed.find(
        (l) => at(l) > joinedAt && (l['members'] as string[] | undefined)?.includes(String(e.worker)),
      );
      const first = firstStepOf(world?.['generation']);
      const before = progress.filter((l) => at(l) < at(world ?? {}));
      const last = before.at(-1);
      const previous = before.filter((l) => l['generation'] === last?.['generation']);
      const steps = previous.slice(1).flatMap((l, i) => {
        const p = previous[i] as Record<string, unknown>;
        return l['step'] === Number(p['step']) + 1 ? [at(l) - at(p)] : [];
      });
      const s = (ms: number) => round(ms / 1000, 3);
      return {
        seconds: s(at(first ?? {}) - joinedAt),
        startupSeconds: s(at(ready ?? {}) - joinedAt),
        formSeconds: s(at(world ?? {}) - at(ready ?? {})),
        syncAndStepSeconds: s(at(first ?? {}) - at(world ?? {})),
        pauseSeconds: s(at(first ?? {}) - at(last ?? {})),
        stepSeconds: s(median(steps)),
        worldSize: Number(world?.['worldSize']),
      };
    });
  return { coldStartSeconds: round((at(coldStart ?? {}) - started) / 1000, 3), joins: measures };
}

interface Scaling {
  readonly oneWorkerSamplesPerSecond: number;
  readonly twoWorkersSamplesPerSecond: number;
  /** One worker with half the global batch: what a worker of the pair computes per step, alone. */
  readonly oneWorkerHalfBatchSamplesPerSecond: number;
  readonly oneWorkerWholeRunSamplesPerSecond: number;
  readonly twoWorkersWholeRunSamplesPerSecond: number;
}

/**
 * Throughput of one manifest with one and with two workers (fixedGlobalBatch: 128 split 64 + 64),
 * in the steady state seen by the progress lines of the writer (rank 0), so that process start and
 * the final evaluation do not count; and one worker with a global batch of 64, which tells how much
 * of a step shrinks with the batch at all.
 */
export async function scaling(
  name: string,
  model: Record<string, unknown>,
  stopping: Record<string, unknown>,
): Promise<Scaling> {
  const dir = mkdtempSync(join(tmpdir(), `tensile-bench-scaling-${name}-`));
  const write = (file: string, global: number) =>
    writeJobManifest(file, name, {
      replicas: 2,
      minReplicas: 1,
      maxReplicas: 2,
      model,
      dataset: {
        format: 'idx',
        path: '/usr/share/datasets/fashion-mnist',
        normalize: 'scale',
        maxTrainSamples: 25_600,
        eval: { maxSamples: 2000 },
      },
      optimizer: { type: 'adam', learningRate: 0.001 },
      batch: { global, policy: 'fixedGlobalBatch' },
      stopping,
      checkpoint: { intervalSteps: 100_000 },
      rendezvous: RENDEZVOUS,
    });
  const measure = async (file: string, workers: number) => {
    const out = join(dir, `out-${workers}-${file.endsWith('half.yaml') ? 'half' : 'full'}`);
    const summary = await finished(
      tensileRun(file, out, ['--workers', String(workers)], { TENSILE_PROGRESS_MS: '500' }),
    );
    const events = workerEvents(out);
    const world = eventsOf(events, 'generation').sort(byTime)[0];
    const progress = eventsOf(events, 'progress')
      .filter((e) => e.generation === world?.generation)
      .sort(byTime);
    // The first window holds the first (slower) steps; the last one the final evaluation.
    const first = progress[1];
    const last = progress.at(-2);
    const samples =
      ((last?.step ?? Number.NaN) - (first?.step ?? Number.NaN)) * (world?.globalBatch ?? Number.NaN);
    return {
      steady: round(samples / ((at(last ?? {}) - at(first ?? {})) / 1000), 1),
      whole: summary.samplesPerSecond,
    };
  };
  const full = join(dir, 'job.yaml');
  const half = join(dir, 'half.yaml');
  write(full, 128);
  write(half, 64);
  const one = await measure(full, 1);
  const two = await measure(full, 2);
  const alone = await measure(half, 1);
  return {
    oneWorkerSamplesPerSecond: one.steady,
    twoWorkersSamplesPerSecond: two.steady,
    oneWorkerHalfBatchSamplesPerSecond: alone.steady,
    oneWorkerWholeRunSamplesPerSecond: one.whole,
    twoWorkersWholeRunSamplesPerSecond: two.whole,
  };
}

export default async function bench() {
  const mlp = 235_146 + 2;
  const large = 4 * 1024 * 1024;
  const bandwidth = await rawTcp(large * 4);
  const cases = [];
  for (const [size, elements] of [
    [2, mlp],
    [3, mlp],
    [2, large],
    [3, large],
  ] as const) {
    const bytes = ringBytes(size, elements);
    const rawMs = await rawRing(size, bytes, 15);
    const ms = await ring(size, elements, 15);
    const boundMs = bytes / bandwidth;
    cases.push({
      workers: size,
      elements,
      ms: round(ms, 2),
      boundMs: round(boundMs, 2),
      rawRingMs: round(rawMs, 2),
      efficiency: round(boundMs / ms),
      vsRawRing: round(rawMs / ms),
      rawRingEfficiency: round(boundMs / rawMs),
    });
  }
  const recovered = await recovery();
  const joined = await joins();
  // The MLP example's model (small steps: much of a step does not shrink with the batch) and the CNN
  // of the accuracy table (compute-bound steps), each for a bounded number of steps.
  const mlpScaling = await scaling(
    'scaling-mlp',
    { mlp: { hiddenUnits: [256, 128], activation: 'relu', dropout: 0.2 } },
    { epochs: 2 },
  );
  const cnnScaling = await scaling(
    'scaling-cnn',
    {
      cnn: {
        blocks: [
          { filters: 32, kernelSize: 3, pool: 2 },
          { filters: 64, kernelSize: 3, pool: 2 },
        ],
        dense: [128],
        dropout: 0.25,
      },
    },
    { steps: 30 },
  );
  const medianOf = (key: keyof JoinMeasure) => median(joined.joins.map((j) => j[key]));
  return {
    figures: {
      allReduceEfficiencyMlp2: cases[0]?.efficiency,
      allReduceEfficiencyMlp3: cases[1]?.efficiency,
      allReduceEfficiency4M2: cases[2]?.efficiency,
      allReduceEfficiency4M3: cases[3]?.efficiency,
      allReduceVsRawRing4M2: cases[2]?.vsRawRing,
      allReduceVsRawRing4M3: cases[3]?.vsRawRing,
      killToFirstStepVsTarget: round(recovered.seconds / KILL_TO_FIRST_STEP_TARGET_SECONDS),
      killToFirstStepVsTimeout: round(recovered.seconds / recovered.timeoutSeconds),
      joinToFirstStepVsColdStart: round(medianOf('seconds') / joined.coldStartSeconds),
      joinPauseInSteps: round(median(joined.joins.map((j) => j.pauseSeconds / j.stepSeconds)), 1),
      twoWorkersVsOneMlp: round(mlpScaling.twoWorkersSamplesPerSecond / mlpScaling.oneWorkerSamplesPerSecond),
      twoWorkersVsOneCnn: round(cnnScaling.twoWorkersSamplesPerSecond / cnnScaling.oneWorkerSamplesPerSecond),
    },
    targets: {
      allReduceEfficiency: '≥ 0.8 of the 2(n−1)/n · S/B bound (B: one raw TCP stream on loopback)',
      allReduceVsRawRing: 'higher is better, 1 = as fast as raw TCP moving the same bytes in the same ring',
      killToFirstStepVsTarget: `≤ 1: kill -9 → first step of the new world within ${KILL_TO_FIRST_STEP_TARGET_SECONDS} s (the link breaks; no heartbeat timeout)`,
      killToFirstStepVsTimeout: 'well below 1: the survivors do not wait for the rendezvous timeout',
      joinToFirstStepVsColdStart: 'lower is better: a join costs this fraction of starting the job',
      joinPauseInSteps: 'the others stall this many step times (1 = no stall); re-form ≤ 2 s',
      twoWorkersVsOne: 'samples/s, 2 workers ÷ 1 on this 2-core machine (2 = linear)',
    },
    measured: {
      rawTcpMBps: round((bandwidth * 1000) / 1e6, 1),
      allReduce: cases,
      killToFirstStepSeconds: recovered.perKill,
      rendezvousTimeoutSeconds: recovered.timeoutSeconds,
      coldStartSeconds: joined.coldStartSeconds,
      joins: joined.joins,
      scaling: { mlp: mlpScaling, cnn: cnnScaling },
    },
  };
}

if (process.argv[2] === '--rank') await rankMain();
if (process.argv[2] === '--sink') await sinkMain();
if (process.argv[2] === '--raw-rank') await rawRankMain();
