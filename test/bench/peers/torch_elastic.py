"""A torchrun elastic job's recovery from a killed worker: the peer of Tensile's `recovery` benchmark.

    python torch_elastic.py drive --out DIR [--nodes 3] [--kills 2] [--data /usr/share/datasets/fashion-mnist]

Starts NODES torchrun agents on this machine (`--nnodes=1:NODES --nproc-per-node=1`, c10d rendezvous
on 127.0.0.1, stock monitor interval), each running this file's `train`: the MLP of Tensile's recovery
benchmark (784-64-10, Adam 0.003, global batch 60 over 6,000 Fashion-MNIST samples) under DDP/gloo,
checkpointing every CKPT_EVERY steps and resuming from the checkpoint, as torchrun jobs must. Once the
full world has trained STEPS_BEFORE_KILL steps, it kill -9s one worker process (not its agent) and
measures the time from the kill to the first step completed by the restarted world; KILLS times.
Prints one JSON line.
"""

import argparse
import gzip
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import time

STEPS_BEFORE_KILL = 40


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def log(out: str, node: str, record: dict) -> None:
    with open(os.path.join(out, f"node-{node}.jsonl"), "a", encoding="utf8") as f:
        f.write(json.dumps(record) + "\n")


def load_idx(path: str, samples: int):
    import numpy as np

    # Only the samples used: a restarted worker should not pay for decompressing all 60,000.
    with gzip.open(os.path.join(path, "train-images-idx3-ubyte.gz"), "rb") as f:
        images = np.frombuffer(f.read(16 + samples * 784), dtype=np.uint8, offset=16).reshape(-1, 784)
    with gzip.open(os.path.join(path, "train-labels-idx1-ubyte.gz"), "rb") as f:
        labels = np.frombuffer(f.read(8 + samples), dtype=np.uint8, offset=8)
    return images.astype(np.float32) / 255.0, labels.astype(np.int64)


def train(args: argparse.Namespace) -> None:
    started = time.time()
    import numpy as np
    import torch
    import torch.distributed as dist
    from torch.nn.parallel import DistributedDataParallel

    torch.set_num_threads(1)
    node = os.environ["TENSILE_PEER_NODE"]
    dist.init_process_group("gloo")
    rank, world = dist.get_rank(), dist.get_world_size()
    formed = time.time()
    log(args.out, node, {"event": "start", "pid": os.getpid(), "rank": rank, "world": world, "since": started, "time": formed})
    images, labels = load_idx(args.data, args.samples)
    x, y = torch.from_numpy(images), torch.from_numpy(labels)
    torch.manual_seed(1)
    model = torch.nn.Sequential(torch.nn.Linear(784, 64), torch.nn.ReLU(), torch.nn.Linear(64, 10))
    optimizer = torch.optim.Adam(model.parameters(), lr=0.003)
    step = 0
    checkpoint = os.path.join(args.out, "checkpoint.pt")
    if os.path.exists(checkpoint):
        state = torch.load(checkpoint)
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        step = state["step"]
    ddp = DistributedDataParallel(model)
    per_rank = args.batch // world
    steps_per_epoch = len(x) // args.batch
    order, order_epoch = None, -1
    while step < args.steps:
        epoch, index = divmod(step, steps_per_epoch)
        if epoch != order_epoch:
            order, order_epoch = torch.from_numpy(np.random.default_rng(epoch).permutation(len(x))), epoch
        first = index * args.batch + rank * per_rank
        batch = order[first : first + per_rank]
        loss = torch.nn.functional.cross_entropy(ddp(x[batch]), y[batch])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        step += 1
        if rank == 0:
            if step % args.ckpt_every == 0:
                state = {"model": model.state_dict(), "optimizer": optimizer.state_dict(), "step": step}
                torch.save(state, checkpoint + ".tmp")
                os.replace(checkpoint + ".tmp", checkpoint)
            log(
                args.out,
                node,
                {"event": "step", "step": step, "world": world, "pid": os.getpid(), "since": started, "time": time.time()},
            )
    dist.destroy_process_group()


def read_events(out: str) -> list:
    events = []
    for name in os.listdir(out):
        if name.startswith("node-") and name.endswith(".jsonl"):
            node = name[len("node-") : -len(".jsonl")]
            with open(os.path.join(out, name), encoding="utf8") as f:
                for line in f:
                    if line.endswith("\n"):
                        events.append({**json.loads(line), "node": node})
    return events


def drive(args: argparse.Namespace) -> None:
    import torch

    os.makedirs(args.out, exist_ok=True)
    port = free_port()
    agents = []
    for node in range(args.nodes):
        command = [
            sys.executable,
            "-m",
            "torch.distributed.run",
            f"--nnodes=1:{args.nodes}",
            "--nproc-per-node=1",
            "--rdzv-backend=c10d",
            f"--rdzv-endpoint=127.0.0.1:{port}",
            "--rdzv-id=tensile-peer",
            # One agent hosts the rendezvous store; killing a worker never takes it down.
            f"--rdzv-conf=is_host={'true' if node == 0 else 'false'}",
            f"--max-restarts={args.kills + 2}",
            __file__,
            "train",
            "--out",
            args.out,
            "--data",
            args.data,
            "--steps",
            str(args.steps),
            "--ckpt-every",
            str(args.ckpt_every),
        ]
        with open(os.path.join(args.out, f"agent-{node}.log"), "w", encoding="utf8") as agent_log:
            agents.append(
                subprocess.Popen(
                    command,
                    env={
                        **os.environ,
                        "TENSILE_PEER_NODE": str(node),
                        "GLOO_SOCKET_IFNAME": "lo",
                        # torch 2.15 shares the first round's store with the workers of later rounds; when
                        # rank 0 moves to another node after a restart, nodes disagree on which store that
                        # is and gloo never connects. Its documented opt-out gives each round its own.
                        "TORCH_DISABLE_SHARE_RDZV_TCP_STORE": "1",
                    },
                    stdout=agent_log,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,
                )
            )
    deadline = time.time() + args.timeout
    kills = []
    try:
        for _ in range(args.kills):
            # Wait for the whole world to train STEPS_BEFORE_KILL steps in the current session.
            victim = None
            while victim is None:
                if time.time() > deadline:
                    raise TimeoutError("the torchrun job did not reach the next kill in time")
                if any(a.poll() is not None for a in agents):
                    raise RuntimeError("a torchrun agent exited early")
                events = read_events(args.out)
                after = kills[-1]["killedAt"] if kills else 0
                steps = [e for e in events if e["event"] == "step" and e["since"] > after and e["world"] == args.nodes]
                if len(steps) >= STEPS_BEFORE_KILL:
                    # The newest worker of the last node: never rank 0's, never the store's agent.
                    starts = [e for e in events if e["event"] == "start" and e["node"] == str(args.nodes - 1)]
                    victim = max(starts, key=lambda e: e["time"])
                    step_at_kill = max(e["step"] for e in steps)
                else:
                    time.sleep(0.02)
            killed_at = time.time()
            os.kill(victim["pid"], signal.SIGKILL)
            first = None
            while first is None:
                if time.time() > deadline:
                    raise TimeoutError("the torchrun job did not recover in time")
                after_kill = [e for e in read_events(args.out) if e["event"] == "step" and e["since"] > killed_at]
                if after_kill:
                    first = min(after_kill, key=lambda e: e["time"])
                else:
                    time.sleep(0.02)
            formed = next(e for e in read_events(args.out) if e["event"] == "start" and e["pid"] == first["pid"])
            kills.append(
                {
                    "killedAt": killed_at,
                    "seconds": round(first["time"] - killed_at, 3),
                    # Where the time went: until the agent had started the new worker process, until
                    # that process had joined the new process group (import torch, gloo), until the
                    # first step (data, model, checkpoint load, one step).
                    "processStartedAfter": round(first["since"] - killed_at, 3),
                    "groupFormedAfter": round(formed["time"] - killed_at, 3),
                    "stepAtKill": step_at_kill,
                    "resumedAtStep": first["step"] - 1,
                    "world": first["world"],
                }
            )
    finally:
        for agent in agents:
            if agent.poll() is None:
                os.killpg(agent.pid, signal.SIGTERM)
        for agent in agents:
            try:
                agent.wait(timeout=10)
            except subprocess.TimeoutExpired:
                os.killpg(agent.pid, signal.SIGKILL)
                agent.wait()
    seconds = [k["seconds"] for k in kills]
    print(
        json.dumps(
            {
                "torch": torch.__version__,
                "nodes": args.nodes,
                "checkpointEverySteps": args.ckpt_every,
                "killToFirstStepSeconds": seconds,
                "medianSeconds": statistics.median(seconds),
                "kills": kills,
            }
        ),
        flush=True,
    )


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("mode", choices=["drive", "train"])
    parser.add_argument("--out", required=True)
    parser.add_argument("--data", default="/usr/share/datasets/fashion-mnist")
    parser.add_argument("--nodes", type=int, default=3)
    parser.add_argument("--kills", type=int, default=2)
    parser.add_argument("--samples", type=int, default=6000)
    parser.add_argument("--batch", type=int, default=60)
    # Far more than the kills need: the driver stops the job once it has measured them.
    parser.add_argument("--steps", type=int, default=1_000_000)
    parser.add_argument("--ckpt-every", type=int, default=20)
    parser.add_argument("--timeout", type=float, default=300)
    args = parser.parse_args()
    if args.mode == "drive":
        drive(args)
    else:
        train(args)


if __name__ == "__main__":
    main()
