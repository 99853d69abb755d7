/**
 * Elastic training's costs, each as a ratio to a baseline measured in the same run:
 *  - ring all-reduce of a fused buffer (the MLP example's 235,146 gradients, and 4M) in worker
 *    processes, against the bandwidth bound 2(n−1)/n · S / B where B is a raw TCP stream between two
 *    processes on the same loopback;
 *  - recovery: from a kill -9 to the first completed step of the new world (tensile run --chaos), and
 *    that time against the rendezvous timeout (the floor of detection when a peer dies silently).
 */
import { type ChildProcess, fork } from 'node:child_process';
import { mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { createServer, Socket } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { stringify } from 'yaml';
import { RingGroup } from '../../worker/collective/group.ts';
import { CollectiveServer } from '../../worker/collective/transport.ts';
import { finished, tensileRun, workerEvents } from '../helpers/tensile-run.ts';

const self = fileURLToPath(import.meta.url);
const round = (x: number, digits = 3) => Math.round(x * 10 ** digits) / 10 ** digits;
const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)] as number;

/** Child: one rank of a ring; measures `rounds` all-reduces of `elements` floats and reports the times. */
async function rankMain(): Promise<void> {
  const [rank, size, elements, rounds] = process.argv.slice(3).map(Number) as [
    number,
    number,
    number,
    number,
  ];
  const server = await CollectiveServer.listen('bench', '127.0.0.1');
  process.send?.({ address: server.address });
  const members = await new Promise<{ address: string }[]>((resolve) =>
    process.once('message', (m) => resolve(m as { address: string }[])),
  );
  const group = await RingGroup.connect({ job: 'bench', generation: 1, rank, members, server });
  const buffer = new Float32Array(elements).fill(rank + 1);
  const times: number[] = [];
  for (let i = 0; i < rounds + 2; i++) {
    await group.barrier();
    const t = performance.now();
    await group.allReduce(buffer);
    if (i >= 2) times.push(performance.now() - t);
    buffer.fill(rank + 1);
  }
  process.send?.({ times });
  await group[Symbol.asyncDispose]();
  await server[Symbol.asyncDispose]();
  process.exit(0);
}

async function ring(size: number, elements: number, rounds: number): Promise<number> {
  const children: ChildProcess[] = Array.from({ length: size }, (_, rank) =>
    fork(self, ['--rank', String(rank), String(size), String(elements), String(rounds)], {
      execArgv: ['--import', 'tsx'],
      stdio: ['ignore', 'ignore', 'inherit', 'ipc'],
    }),
  );
  const addresses = await Promise.all(
    children.map(
      (c) => new Promise<string>((r) => c.once('message', (m) => r((m as { address: string }).address))),
    ),
  );
  const times = children.map(
    (c) => new Promise<number[]>((r) => c.once('message', (m) => r((m as { times: number[] }).times))),
  );
  for (const c of children) c.send(addresses.map((address) => ({ address })));
  const all = await Promise.all(times);
  // A step waits for the slowest rank.
  const per = (all[0] as number[]).map((_, i) => Math.max(...all.map((t) => t[i] as number)));
  return median(per);
}

/** Bytes per millisecond of one TCP stream between two processes on loopback. */
async function rawTcp(bytes: number): Promise<number> {
  const server = createServer();
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', () => r()));
  const port = (server.address() as { port: number }).port;
  const child = fork(self, ['--sink', String(port), String(bytes)], {
    execArgv: ['--import', 'tsx'],
    stdio: ['ignore', 'ignore', 'inherit', 'ipc'],
  });
  const socket = await new Promise<Socket>((r) => server.once('connection', r));
  const payload = Buffer.alloc(bytes, 1);
  const times: number[] = [];
  for (let i = 0; i < 7; i++) {
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
  const socket = new Socket();
  await new Promise<void>((r) => socket.connect(port, '127.0.0.1', () => r()));
  let received = 0;
  socket.on('data', (chunk: Buffer) => {
    received += chunk.length;
    while (received >= bytes) {
      received -= bytes;
      process.send?.('done');
    }
  });
}

async function recovery(): Promise<{ seconds: number; timeoutSeconds: number; perKill: number[] }> {
  const dir = mkdtempSync(join(tmpdir(), 'tensile-bench-recovery-'));
  const file = join(dir, 'job.yaml');
  const timeoutMillis = 3000;
  writeFileSync(
    file,
    stringify({
      apiVersion: 'tensile.dev/v1alpha1',
      kind: 'TrainingJob',
      metadata: { name: 'recovery' },
      spec: {
        replicas: 3,
        minReplicas: 1,
        maxReplicas: 3,
        model: { mlp: { hiddenUnits: [64] } },
        dataset: { format: 'idx', path: '/usr/share/datasets/fashion-mnist', maxTrainSamples: 6000 },
        optimizer: { type: 'adam', learningRate: 0.003 },
        batch: { global: 60 },
        stopping: { epochs: 3 },
        rendezvous: { heartbeatMillis: 500, timeoutMillis, lastCallMillis: 1000 },
      },
    }),
  );
  const out = join(dir, 'out');
  await finished(tensileRun(file, out, ['--workers', '3', '--chaos', 'kill:60,kill:160']));
  const kills = readFileSync(join(out, 'events.jsonl'), 'utf8')
    .split('\n')
    .filter(Boolean)
    .map((l) => JSON.parse(l) as { time: string; type: string })
    .filter((e) => e.type === 'kill')
    .map((e) => Date.parse(e.time));
  const events = workerEvents(out);
  const formed = events.filter((e) => e['event'] === 'generation');
  const progress = events.filter((e) => e['event'] === 'progress');
  const perKill = kills.map((killed) => {
    const world = formed
      .filter((e) => Date.parse(String(e['timestamp'])) > killed)
      .sort((a, b) => Date.parse(String(a['timestamp'])) - Date.parse(String(b['timestamp'])))[0];
    const first = progress
      .filter((e) => e['generation'] === world?.['generation'])
      .map((e) => Date.parse(String(e['timestamp'])))
      .sort((a, b) => a - b)[0];
    return round(((first ?? Number.NaN) - killed) / 1000, 2);
  });
  return { seconds: median(perKill), timeoutSeconds: timeoutMillis / 1000, perKill };
}

export default async function bench() {
  const mlp = 235_146 + 2;
  const large = 4 * 1024 * 1024;
  const bandwidth = await rawTcp(large * 4);
  const cases = [];
  for (const [size, elements] of [
    [2, mlp],
    [3, mlp],
    [3, large],
  ] as const) {
    const ms = await ring(size, elements, 9);
    const boundMs = ((2 * (size - 1)) / size) * ((elements * 4) / bandwidth);
    cases.push({
      workers: size,
      elements,
      ms: round(ms, 2),
      boundMs: round(boundMs, 2),
      efficiency: round(boundMs / ms),
    });
  }
  const recovered = await recovery();
  return {
    figures: {
      allReduceEfficiencyMlp3: cases[1]?.efficiency,
      allReduceEfficiency4M3: cases[2]?.efficiency,
      killToFirstStepVsTimeout: round(recovered.seconds / recovered.timeoutSeconds),
    },
    targets: {
      allReduceEfficiency: 'higher is better, 1 = the bandwidth bound',
      killToFirstStepSeconds: '≤ 5 detection',
    },
    measured: {
      rawTcpMBps: round((bandwidth * 1000) / 1e6, 1),
      allReduce: cases,
      killToFirstStepSeconds: recovered.perKill,
      rendezvousTimeoutSeconds: recovered.timeoutSeconds,
    },
  };
}

if (process.argv[2] === '--rank') await rankMain();
if (process.argv[2] === '--sink') await sinkMain();
