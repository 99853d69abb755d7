"""A plain PyTorch training loop on the CPU: the peer of Tensile's worker runtime in the benchmarks.

    python torch_train.py --data /usr/share/datasets/fashion-mnist --threads 2 --steps 60,20

Trains the benchmarks' two models with Adam (lr 0.001) on Fashion-MNIST, the way a careful torch
user writes it (data normalised once into a tensor, contiguous batches, zero_grad/backward/step, the
loss read every step), after a warm-up, and prints one JSON line: per model, the median and the best
(minimum) ms/step over rounds, the median CPU time per step of the process (all its threads), and
samples/s at the median.
  mlp: 784-256-128-10 ReLU, batch 128 (test/bench/training-fixture.ts MLP)
  cnn: conv3x3(32, same)-maxpool2-conv3x3(64, same)-maxpool2-dropout.25-dense128-dropout.25-dense10,
       batch 64 (test/bench/training-fixture.ts CNN, the worker's cnn defaults)
"""

import argparse
import gzip
import json
import statistics
import time


def images(path: str, count: int):
    import torch

    raw = gzip.open(path).read()
    pixels = torch.frombuffer(bytearray(raw[16 : 16 + count * 784]), dtype=torch.uint8)
    return pixels.float().div_(255.0).reshape(count, 784)


def labels(path: str, count: int):
    import torch

    raw = gzip.open(path).read()
    return torch.frombuffer(bytearray(raw[8 : 8 + count]), dtype=torch.uint8).long()


def models():
    from torch import nn

    mlp = nn.Sequential(nn.Linear(784, 256), nn.ReLU(), nn.Linear(256, 128), nn.ReLU(), nn.Linear(128, 10))
    cnn = nn.Sequential(
        nn.Unflatten(1, (1, 28, 28)),
        nn.Conv2d(1, 32, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(32, 64, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Flatten(), nn.Dropout(0.25), nn.Linear(7 * 7 * 64, 128), nn.ReLU(), nn.Dropout(0.25),
        nn.Linear(128, 10),
    )
    return {"mlp": (mlp, 128), "cnn": (cnn, 64)}


def measure(model, batch: int, x, y, steps: int, rounds: int) -> tuple[list[float], list[float]]:
    import torch

    optimizer = torch.optim.Adam(model.parameters(), lr=0.001)
    loss_fn = torch.nn.CrossEntropyLoss()
    n = x.shape[0]
    start = 0

    def step():
        nonlocal start
        if start + batch > n:
            start = 0
        xb, yb = x[start : start + batch], y[start : start + batch]
        optimizer.zero_grad(set_to_none=True)
        loss = loss_fn(model(xb), yb)
        loss.backward()
        optimizer.step()
        loss.item()
        start += batch

    model.train()
    for _ in range(5):
        step()
    times, cpu = [], []
    for _ in range(rounds):
        t, c = time.perf_counter(), time.process_time()
        for _ in range(steps):
            step()
        times.append((time.perf_counter() - t) * 1000 / steps)
        cpu.append((time.process_time() - c) * 1000 / steps)
    return times, cpu


def main() -> None:
    import torch

    parser = argparse.ArgumentParser()
    parser.add_argument("--data", required=True)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--samples", type=int, default=8192)
    parser.add_argument("--steps", default="60,20", help="steps per round: mlp,cnn")
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.set_num_interop_threads(args.threads)
    torch.manual_seed(1)
    x = images(f"{args.data}/train-images-idx3-ubyte.gz", args.samples)
    y = labels(f"{args.data}/train-labels-idx1-ubyte.gz", args.samples)
    x = (x - x.mean()) / x.std()
    steps = dict(zip(["mlp", "cnn"], (int(s) for s in args.steps.split(","))))
    out = {"torch": torch.__version__, "threads": args.threads}
    for name, (model, batch) in models().items():
        times, cpu = measure(model, batch, x, y, steps[name], args.rounds)
        ms = statistics.median(times)
        out[name] = {
            "batch": batch,
            "msPerStep": round(ms, 3),
            "bestMsPerStep": round(min(times), 3),
            "cpuMsPerStep": round(statistics.median(cpu), 3),
            "samplesPerSecond": round(batch * 1000 / ms),
        }
    print(json.dumps(out))


if __name__ == "__main__":
    main()
