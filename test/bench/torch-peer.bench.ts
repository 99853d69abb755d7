/**
 * Tensile side by side with PyTorch, both measured in this run on this machine:
 *  - all-reduce: Tensile's ring against torch.distributed's gloo backend, same sizes (the MLP
 *    example's 235,148 floats and 4M), same numbers of ranks (2 and 3), same protocol (warm-up, a
 *    barrier before each round, the slowest rank's time, the median over rounds), both against the
 *    2(n−1)/n · S/B bound with B one raw TCP stream on loopback;
 *  - recovery from a kill -9: Tensile's survivors re-forming (elastic.bench.ts's `recovery`) against a
 *    torchrun elastic job (`--nnodes=1:3`, c10d rendezvous) restarting every worker from its last
 *    checkpoint (test/bench/peers/torch_elastic.py).
 * torch is a benchmark peer, never a dependency: it lives in its own venv in the cache
 * (`${TENSILE_CACHE:-~/.cache/tensile}/torch-venv`). Without it the figures are null, with the reason
 * and the command that installs it, also printed on stderr.
 */
import { spawn, spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync } from 'node:fs';
import { homedir, tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { rawTcp, recovery, ring, ringBytes } from './elastic.bench.ts';

const round = (x: number, digits = 3) => Math.round(x * 10 ** digits) / 10 ** digits;
const venv = join(process.env['TENSILE_CACHE'] ?? join(homedir(), '.cache', 'tensile'), 'torch-venv');
const python = join(venv, 'bin', 'python');
export const install = `python3 -m venv ${venv} && ${venv}/bin/pip install torch numpy`;
const peer = (name: string) => fileURLToPath(new URL(`./peers/${name}`, import.meta.url));

/** Why torch cannot be used here, or undefined when it can. */
export function unavailable(): string | undefined {
  if (!existsSync(python)) return `no Python venv with torch at ${venv}`;
  const probe = spawnSync(
    python,
    ['-c', 'import torch, torch.distributed as d; assert d.is_gloo_available(), "no gloo"'],
    { encoding: 'utf8', timeout: 120_000 },
  );
  if (probe.status === 0) return undefined;
  const why = `${probe.stderr ?? ''}`.trim().split('\n').at(-1) ?? `exit ${probe.status}`;
  return `torch does not import from ${venv}: ${why}`;
}

/** torch.distributed gloo all-reduce of each size on `workers` ranks: ms per round, by size. */
export async function glooAllReduce(
  workers: number,
  sizes: readonly number[],
  rounds: number,
): Promise<{ elements: number; ms: number }[]> {
  const args = ['--ranks', String(workers), '--elements', sizes.join(','), '--rounds', String(rounds)];
  const result = await runPeer('torch_allreduce.py', [...args, '--warmup', '10'], 300_000);
  return result['cases'] as { elements: number; ms: number }[];
}

/** Runs a peer script; resolves with the JSON of its last stdout line. */
export function runPeer(script: string, args: string[], timeoutMs: number): Promise<Record<string, unknown>> {
  return new Promise((resolve, reject) => {
    const child = spawn(python, [peer(script), ...args], { stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    let err = '';
    child.stdout.on('data', (chunk: Buffer) => {
      out += chunk.toString();
    });
    child.stderr.on('data', (chunk: Buffer) => {
      err += chunk.toString();
    });
    const timer = setTimeout(() => child.kill('SIGKILL'), timeoutMs);
    child.on('close', (code, signal) => {
      clearTimeout(timer);
      const last = out.trim().split('\n').at(-1) ?? '';
      if (code !== 0 || !last.startsWith('{')) {
        reject(new Error(`${script} ${args.join(' ')}: ${signal ?? `exit ${code}`}\n${err.slice(-2000)}`));
        return;
      }
      resolve(JSON.parse(last) as Record<string, unknown>);
    });
  });
}

const MLP = 235_146 + 2;
const LARGE = 4 * 1024 * 1024;
const ROUNDS = 15;

export default async function bench() {
  const skipped = unavailable();
  if (skipped !== undefined) {
    process.stderr.write(
      `torch-peer: skipped: ${skipped}\n  to install torch for this benchmark: ${install}\n`,
    );
    return {
      figures: {
        allReduceSpeedVsGlooMlp2: null,
        allReduceSpeedVsGlooMlp3: null,
        allReduceSpeedVsGloo4M2: null,
        allReduceSpeedVsGloo4M3: null,
        killToFirstStepVsTorchrun: null,
      },
      skipped,
      install,
    };
  }
  const bandwidth = await rawTcp(LARGE * 4);
  const allReduce: {
    workers: number;
    elements: number;
    tensileMs: number;
    glooMs: number;
    boundMs: number;
    tensileEfficiency: number;
    glooEfficiency: number;
    speedVsGloo: number;
  }[] = [];
  for (const workers of [2, 3]) {
    const glooCases = await glooAllReduce(workers, [MLP, LARGE], ROUNDS);
    for (const elements of [MLP, LARGE]) {
      const tensileMs = await ring(workers, elements, ROUNDS);
      const glooMs = glooCases.find((c) => c.elements === elements)?.ms ?? Number.NaN;
      const boundMs = ringBytes(workers, elements) / bandwidth;
      allReduce.push({
        workers,
        elements,
        tensileMs: round(tensileMs, 2),
        glooMs: round(glooMs, 2),
        boundMs: round(boundMs, 2),
        tensileEfficiency: round(boundMs / tensileMs),
        glooEfficiency: round(boundMs / glooMs),
        speedVsGloo: round(glooMs / tensileMs),
      });
    }
  }
  const torchrun = await runPeer(
    'torch_elastic.py',
    [
      'drive',
      '--out',
      mkdtempSync(join(tmpdir(), 'tensile-bench-torchrun-')),
      '--nodes',
      '3',
      '--kills',
      '2',
    ],
    420_000,
  );
  const tensile = await recovery();
  const torchSeconds = Number(torchrun['medianSeconds']);
  const speed = (workers: number, elements: number) =>
    allReduce.find((c) => c.workers === workers && c.elements === elements)?.speedVsGloo;
  return {
    figures: {
      allReduceSpeedVsGlooMlp2: speed(2, MLP),
      allReduceSpeedVsGlooMlp3: speed(3, MLP),
      allReduceSpeedVsGloo4M2: speed(2, LARGE),
      allReduceSpeedVsGloo4M3: speed(3, LARGE),
      killToFirstStepVsTorchrun: round(tensile.seconds / torchSeconds),
    },
    targets: {
      allReduceSpeedVsGloo: 'gloo time ÷ Tensile time: 1 = as fast as torch.distributed (gloo)',
      killToFirstStepVsTorchrun: 'lower is better: Tensile re-forms, torchrun restarts every worker',
    },
    measured: {
      torch: String(torchrun['torch']),
      rawTcpMBps: round((bandwidth * 1000) / 1e6, 1),
      allReduce,
      tensileKillToFirstStepSeconds: tensile.perKill,
      torchrunKillToFirstStepSeconds: torchrun['killToFirstStepSeconds'],
      torchrunKills: torchrun['kills'],
      torchrunCheckpointEverySteps: torchrun['checkpointEverySteps'],
    },
  };
}
