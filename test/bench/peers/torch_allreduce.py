"""torch.distributed all-reduce (gloo, CPU, loopback): the peer of Tensile's ring in the benchmarks.

    python torch_allreduce.py --ranks 3 --elements 235148,4194304 --rounds 15 [--warmup 10]

Starts RANKS processes on 127.0.0.1, all-reduces a float32 tensor of each size ROUNDS times (after
WARMUP rounds, each round after a barrier, as test/bench/elastic.bench.ts does for Tensile's ring) and
prints one JSON line: per size, the median over rounds of the slowest rank's time, in milliseconds.
"""

import argparse
import json
import os
import socket
import statistics
import subprocess
import sys
import time


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def rank_main(args: argparse.Namespace) -> None:
    import torch
    import torch.distributed as dist

    # One compute thread per rank, like a Tensile worker: the ranks share the machine's cores.
    torch.set_num_threads(1)
    dist.init_process_group(
        "gloo",
        init_method=f"tcp://127.0.0.1:{args.port}",
        rank=args.rank,
        world_size=args.ranks,
    )
    out = {}
    for elements in args.elements:
        tensor = torch.empty(elements, dtype=torch.float32)
        want = float(args.ranks * (args.ranks + 1) // 2)
        times = []
        for i in range(args.rounds + args.warmup):
            tensor.fill_(args.rank + 1)
            dist.barrier()
            started = time.perf_counter()
            dist.all_reduce(tensor)
            took = (time.perf_counter() - started) * 1000
            if tensor[0].item() != want or tensor[-1].item() != want:
                raise SystemExit(f"wrong sum {tensor[0].item()}, expected {want}")
            if i >= args.warmup:
                times.append(took)
        out[str(elements)] = times
    dist.destroy_process_group()
    print(json.dumps({"rank": args.rank, "times": out}), flush=True)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--ranks", type=int, required=True)
    parser.add_argument("--elements", type=lambda s: [int(x) for x in s.split(",")], required=True)
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--warmup", type=int, default=10)
    parser.add_argument("--rank", type=int)
    parser.add_argument("--port", type=int)
    args = parser.parse_args()
    if args.rank is not None:
        rank_main(args)
        return
    port = free_port()
    env = {**os.environ, "GLOO_SOCKET_IFNAME": "lo"}
    children = [
        subprocess.Popen(
            [
                sys.executable,
                __file__,
                "--ranks",
                str(args.ranks),
                "--elements",
                ",".join(map(str, args.elements)),
                "--rounds",
                str(args.rounds),
                "--warmup",
                str(args.warmup),
                "--rank",
                str(rank),
                "--port",
                str(port),
            ],
            stdout=subprocess.PIPE,
            env=env,
            text=True,
        )
        for rank in range(args.ranks)
    ]
    reports = []
    for child in children:
        stdout, _ = child.communicate(timeout=600)
        if child.returncode != 0:
            raise SystemExit(f"rank exited with {child.returncode}")
        reports.append(json.loads(stdout.strip().splitlines()[-1]))
    import torch

    result = {"torch": torch.__version__, "ranks": args.ranks, "cases": []}
    for elements in args.elements:
        per_rank = [r["times"][str(elements)] for r in reports]
        # A collective ends for the job when its slowest rank is done.
        slowest = [max(times) for times in zip(*per_rank)]
        result["cases"].append({"elements": elements, "ms": round(statistics.median(slowest), 3)})
    print(json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
