"""torch DDP on two CPU processes (gloo), with and without its PowerSGD communication hook: the peer of
`npm run bench -- compression`.

    python torch_ddp_powersgd.py --data /usr/share/datasets/fashion-mnist --epochs 3 --train 60000 --target 0.85

The same setup as the bench's own runs: MLP 784-256-128-10 ReLU, Adam lr 0.001, a global batch of 128
split 64/64 over the ranks from one shuffled order per epoch, evaluation on the 10000 test samples every
100 steps. PowerSGD as torch documents it: rank 4, warm start, error feedback, plain all-reduce for the
first 10 steps. Bytes per step are what one rank sends in a ring all-reduce of the buffers the hook
hands to gloo (2(n-1)/n per element), computed with the hook's own should-compress rule; gloo's own
algorithm may differ. Prints one JSON line.
"""

import argparse
import gzip
import json
import os
import socket
import time


def load(path: str, kind: str, count: int):
    import torch

    raw = gzip.open(os.path.join(path, f"{kind}-images-idx3-ubyte.gz")).read()
    x = torch.frombuffer(bytearray(raw[16 : 16 + count * 784]), dtype=torch.uint8).float().div_(255.0)
    raw = gzip.open(os.path.join(path, f"{kind}-labels-idx1-ubyte.gz")).read()
    y = torch.frombuffer(bytearray(raw[8 : 8 + count]), dtype=torch.uint8).long()
    return x.reshape(count, 784), y


def wire_bytes(model, mode: str, step: int, rank: int = 4) -> float:
    ring = 2 * (2 - 1) / 2
    elements = 0
    for p in model.parameters():
        n = p.numel()
        if mode == "powersgd" and step >= 10 and p.dim() > 1:
            rows, cols = p.shape[0], n // p.shape[0]
            r = min(rank, rows, cols)
            if (rows + cols) * r * 2 < rows * cols:
                elements += (rows + cols) * r
                continue
        elements += n
    return ring * elements * 4


def worker(rank: int, args, port: int, mode: str, out):
    import torch
    import torch.distributed as dist
    from torch import nn
    from torch.distributed.algorithms.ddp_comm_hooks import powerSGD_hook as powersgd

    torch.set_num_threads(1)
    os.environ["MASTER_ADDR"] = "127.0.0.1"
    os.environ["MASTER_PORT"] = str(port)
    dist.init_process_group("gloo", rank=rank, world_size=2)
    torch.manual_seed(1)
    model = nn.Sequential(nn.Linear(784, 256), nn.ReLU(), nn.Linear(256, 128), nn.ReLU(), nn.Linear(128, 10))
    ddp = nn.parallel.DistributedDataParallel(model)
    if mode == "powersgd":
        state = powersgd.PowerSGDState(
            process_group=None, matrix_approximation_rank=4, start_powerSGD_iter=10,
            use_error_feedback=True, warm_start=True,
        )
        ddp.register_comm_hook(state, powersgd.powerSGD_hook)
    x, y = load(args.data, "train", args.train)
    tx, ty = load(args.data, "t10k", 10000)
    mean, std = x.mean(), x.std()
    x, tx = (x - mean) / std, (tx - mean) / std
    optimizer = torch.optim.Adam(ddp.parameters(), lr=0.001)
    loss_fn = nn.CrossEntropyLoss()
    step, seconds, sent, hit, curve = 0, 0.0, 0.0, None, []
    generator = torch.Generator().manual_seed(1)
    for epoch in range(args.epochs):
        order = torch.randperm(args.train, generator=generator)
        for start in range(0, args.train - 127, 128):
            idx = order[start + 64 * rank : start + 64 * rank + 64]
            t = time.perf_counter()
            optimizer.zero_grad(set_to_none=True)
            loss_fn(ddp(x[idx]), y[idx]).backward()
            optimizer.step()
            seconds += time.perf_counter() - t
            sent += wire_bytes(model, mode, step)
            step += 1
            if rank == 0 and step % 100 == 0:
                with torch.no_grad():
                    acc = (model(tx).argmax(1) == ty).float().mean().item()
                curve.append([step, round(acc, 4)])
                if hit is None and acc >= args.target:
                    hit = (step, seconds)
    if rank == 0:
        with torch.no_grad():
            acc = (model(tx).argmax(1) == ty).float().mean().item()
        out.put({
            "accuracy": round(acc, 4), "steps": step, "trainSeconds": round(seconds, 2),
            "bytesPerStep": round(sent / step), "stepsToTarget": hit[0] if hit else None,
            "secondsToTarget": round(hit[1], 2) if hit else None, "curve": curve,
        })
    dist.destroy_process_group()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def main():
    import torch
    import torch.multiprocessing as mp

    parser = argparse.ArgumentParser()
    parser.add_argument("--data", required=True)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--train", type=int, default=60000)
    parser.add_argument("--target", type=float, default=0.85)
    args = parser.parse_args()
    result = {"torch": torch.__version__}
    ctx = mp.get_context("spawn")
    for mode in ["none", "powersgd"]:
        out = ctx.Queue()
        port = free_port()
        procs = [ctx.Process(target=worker, args=(r, args, port, mode, out)) for r in range(2)]
        for p in procs:
            p.start()
        result[mode] = out.get()
        for p in procs:
            p.join()
    print(json.dumps(result))

if __name__ == "__main__":
    main()
