/**
 * `npm run bench -- collective`: the collective itself, every figure a ratio measured in this run:
 *  - all-reduce of the MLP example's 235,148 floats and of 4M, at 2 and 3 ranks (worker processes on
 *    loopback): Tensile's ring ÷ a raw TCP ring of the same processes moving the same bytes
 *    (target ≥ 0.8), and ÷ torch.distributed gloo (target ≥ 1; null without the torch venv); the
 *    ring as it was before (its reduction in a JavaScript loop, not WebAssembly SIMD) in the same run;
 *    and the CPU milliseconds all ranks spent per all-reduce against the raw ring's, a ratio a loaded
 *    machine disturbs far less than the times (it counts work, not waiting to be scheduled);
 *  - recovery: kill -9 of a worker → the first step of the new world, against the 0.5 s target;
 *  - topology: 4 workers on 2 fake nodes in 2 zones, joined alternately; one all-reduce in the join
 *    order and in the topology-aware order, bytes counted on every link, the cross-zone ones summed.
 * `TENSILE_BENCH_SKIP=recovery,gloo` leaves parts out (their figures are then null).
 */
import { RingGroup } from '../../worker/collective/group.ts';
import { type Placement, ringOrder } from '../../worker/collective/topology.ts';
import { CollectiveServer } from '../../worker/collective/transport.ts';
import {
  KILL_TO_FIRST_STEP_TARGET_SECONDS,
  rawRingCost,
  recovery,
  ringBytes,
  ringCost,
} from './elastic.bench.ts';
import { glooAllReduce, install, unavailable } from './torch-peer.bench.ts';

const round = (x: number, digits = 3) => Math.round(x * 10 ** digits) / 10 ** digits;
const MLP = 235_146 + 2;
const LARGE = 4 * 1024 * 1024;
const ROUNDS = 15;
const skip = new Set((process.env['TENSILE_BENCH_SKIP'] ?? '').split(',').filter(Boolean));

async function gloo(workers: number): Promise<Map<number, number> | string> {
  const why = skip.has('gloo') ? 'TENSILE_BENCH_SKIP=gloo' : unavailable();
  if (why !== undefined) return why;
  const cases = await glooAllReduce(workers, [MLP, LARGE], ROUNDS);
  return new Map(cases.map((c) => [c.elements, c.ms]));
}

/** Bytes each link carried in one all-reduce of the MLP's gradients over a ring in `order`. */
async function bytesPerLink(order: readonly (Placement & { id: string })[]) {
  const servers = await Promise.all(order.map(() => CollectiveServer.listen('topology', '127.0.0.1')));
  const members = servers.map((s) => ({ address: s.address }));
  const groups = await Promise.all(
    servers.map((server, rank) =>
      RingGroup.connect({
        job: 'topology',
        generation: 1,
        rank,
        members,
        server,
        token: 'bench-link-token-0123',
      }),
    ),
  );
  await Promise.all(groups.map((g) => g.allReduce(new Float32Array(MLP).fill(1))));
  const links = groups.map((g, rank) => {
    const from = order[rank] as Placement & { id: string };
    const to = order[(rank + 1) % order.length] as Placement & { id: string };
    return { from: from.id, to: to.id, crossZone: from.zone !== to.zone, bytes: g.bytesSent };
  });
  for (const g of groups) await g[Symbol.asyncDispose]();
  for (const s of servers) await s[Symbol.asyncDispose]();
  return {
    links,
    crossZoneLinks: links.filter((l) => l.crossZone).length,
    crossZoneBytes: links.filter((l) => l.crossZone).reduce((a, l) => a + l.bytes, 0),
  };
}

export async function topology() {
  const joined = [0, 1, 2, 3].map((i) => ({
    id: `worker-${i}`,
    node: `fake-node-${i % 2}`,
    zone: `fake-zone-${i % 2}`,
  }));
  return { joinOrder: await bytesPerLink(joined), topologyOrder: await bytesPerLink(ringOrder(joined)) };
}

export default async function bench() {
  const placed = await topology();
  const cases: Record<string, number | null>[] = [];
  let glooSkipped: string | undefined;
  for (const workers of [2, 3]) {
    const glooMs = await gloo(workers);
    if (typeof glooMs === 'string') glooSkipped = glooMs;
    for (const elements of [MLP, LARGE]) {
      const raw = await rawRingCost(workers, ringBytes(workers, elements), ROUNDS);
      const now = await ringCost(workers, elements, ROUNDS);
      // The ring as it was: the reduction in a JavaScript loop.
      const before = await ringCost(workers, elements, ROUNDS, { reducer: 'js' });
      const g = typeof glooMs === 'string' ? undefined : glooMs.get(elements);
      cases.push({
        workers,
        elements,
        ms: round(now.ms, 2),
        rawRingMs: round(raw.ms, 2),
        jsReducerMs: round(before.ms, 2),
        jsReducerVsRawRing: round(raw.ms / before.ms),
        glooMs: g === undefined ? null : round(g, 2),
        vsRawRing: round(raw.ms / now.ms),
        vsGloo: g === undefined ? null : round(g / now.ms),
        cpuMs: round(now.cpuMs, 2),
        rawRingCpuMs: round(raw.cpuMs, 2),
        jsReducerCpuMs: round(before.cpuMs, 2),
        cpuVsRawRing: round(raw.cpuMs / now.cpuMs),
        jsReducerCpuVsRawRing: round(raw.cpuMs / before.cpuMs),
      });
    }
  }
  if (glooSkipped !== undefined)
    process.stderr.write(`collective: gloo skipped: ${glooSkipped} (${install})\n`);
  const recovered = skip.has('recovery') ? undefined : await recovery();
  const figure = (
    workers: number,
    elements: number,
    key: 'vsRawRing' | 'vsGloo' | 'cpuVsRawRing' | 'jsReducerVsRawRing' | 'jsReducerCpuVsRawRing',
  ) => cases.find((c) => c['workers'] === workers && c['elements'] === elements)?.[key] ?? null;
  return {
    figures: {
      allReduceVsRawRingMlp2: figure(2, MLP, 'vsRawRing'),
      allReduceVsRawRingMlp3: figure(3, MLP, 'vsRawRing'),
      allReduceVsRawRing4M2: figure(2, LARGE, 'vsRawRing'),
      allReduceVsRawRing4M3: figure(3, LARGE, 'vsRawRing'),
      allReduceVsGlooMlp2: figure(2, MLP, 'vsGloo'),
      allReduceVsGlooMlp3: figure(3, MLP, 'vsGloo'),
      allReduceVsGloo4M2: figure(2, LARGE, 'vsGloo'),
      allReduceVsGloo4M3: figure(3, LARGE, 'vsGloo'),
      jsReducerVsRawRing: [MLP, LARGE].flatMap((e) => [2, 3].map((w) => figure(w, e, 'jsReducerVsRawRing'))),
      cpuVsRawRing: [MLP, LARGE].flatMap((e) => [2, 3].map((w) => figure(w, e, 'cpuVsRawRing'))),
      jsReducerCpuVsRawRing: [MLP, LARGE].flatMap((e) =>
        [2, 3].map((w) => figure(w, e, 'jsReducerCpuVsRawRing')),
      ),
      killToFirstStepVsTarget:
        recovered === undefined ? null : round(recovered.seconds / KILL_TO_FIRST_STEP_TARGET_SECONDS),
      crossZoneLinksTopologyOrder: placed.topologyOrder.crossZoneLinks,
      crossZoneLinksJoinOrder: placed.joinOrder.crossZoneLinks,
      crossZoneBytesTopologyVsJoinOrder: round(
        placed.topologyOrder.crossZoneBytes / placed.joinOrder.crossZoneBytes,
      ),
    },
    targets: {
      allReduceVsRawRing: '≥ 0.8: raw TCP ring time ÷ Tensile all-reduce time, same processes, same bytes',
      allReduceVsGloo: '≥ 1: gloo time ÷ Tensile time, same sizes and ranks',
      cpuVsRawRing:
        'no target: raw ring CPU ÷ Tensile CPU per all-reduce, all ranks (235K 2 / 3 ranks, 4M 2 / 3); jsReducer*: the ring before, same run',
      killToFirstStepVsTarget: `≤ 1: kill -9 → first step of the new world ÷ ${KILL_TO_FIRST_STEP_TARGET_SECONDS} s`,
      crossZoneLinks:
        '4 workers, 2 nodes, 2 zones: the topology order crosses zones twice, the join order four times',
    },
    measured: {
      allReduce: cases,
      topology: placed,
      ...(glooSkipped === undefined ? {} : { glooSkipped }),
      ...(recovered === undefined
        ? {}
        : { killToFirstStepSeconds: recovered.perKill, rendezvousTimeoutSeconds: recovered.timeoutSeconds }),
    },
  };
}
