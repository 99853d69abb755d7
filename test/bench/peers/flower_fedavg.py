"""Flower's FedAvg on the partition Tensile's federated bench cut, for a side-by-side run.

Each client trains the same MLP as the Tensile manifest (784-H-10, ReLU, softmax cross-entropy, plain
SGD) for `local_steps` mini-batches per round on its own indices; the server aggregates with Flower's
own `FedAvg.aggregate_fit` (weighted by num_examples) and evaluates on the same test samples. Clients
run in this process, one after another (no Ray, no gRPC): the time per round is compute plus Flower's
aggregation, and the bytes per round are what Flower's transport would carry (parameters down and up).
Prints one JSON line.
"""
import argparse
import gzip
import json
import time

import numpy as np
import torch
from flwr.common import Code, FitRes, Status, ndarrays_to_parameters, parameters_to_ndarrays
from flwr.server.strategy import FedAvg


def idx(path):
    with gzip.open(path, "rb") as f:
        data = f.read()
    dims = data[3]
    shape = [int.from_bytes(data[4 + 4 * i : 8 + 4 * i], "big") for i in range(dims)]
    return np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * dims).reshape(shape)


def model(hidden):
    return torch.nn.Sequential(torch.nn.Linear(784, hidden), torch.nn.ReLU(), torch.nn.Linear(hidden, 10))


def get(net):
    return [p.detach().numpy().copy() for p in net.parameters()]


def put(net, arrays):
    with torch.no_grad():
        for p, a in zip(net.parameters(), arrays):
            p.copy_(torch.from_numpy(np.ascontiguousarray(a)))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", required=True)
    ap.add_argument("--partition", required=True)
    ap.add_argument("--rounds", type=int, required=True)
    ap.add_argument("--local-steps", type=int, required=True)
    ap.add_argument("--batch", type=int, required=True)
    ap.add_argument("--lr", type=float, required=True)
    ap.add_argument("--hidden", type=int, required=True)
    ap.add_argument("--eval", type=int, required=True)
    args = ap.parse_args()
    torch.set_num_threads(2)
    torch.manual_seed(1)
    x = torch.from_numpy(idx(f"{args.data}/train-images-idx3-ubyte.gz").reshape(-1, 784).astype(np.float32) / 255)
    y = torch.from_numpy(idx(f"{args.data}/train-labels-idx1-ubyte.gz").astype(np.int64))
    tx = torch.from_numpy(idx(f"{args.data}/t10k-images-idx3-ubyte.gz").reshape(-1, 784).astype(np.float32) / 255)[: args.eval]
    ty = torch.from_numpy(idx(f"{args.data}/t10k-labels-idx1-ubyte.gz").astype(np.int64))[: args.eval]
    parts = [torch.tensor(p, dtype=torch.long) for p in json.load(open(args.partition))]
    net = model(args.hidden)
    strategy = FedAvg()
    weights = get(net)
    bytes_per_model = sum(a.nbytes for a in weights)
    rng = np.random.default_rng(1)
    rounds = []
    for r in range(1, args.rounds + 1):
        started = time.perf_counter()
        results = []
        for part in parts:
            put(net, weights)
            opt = torch.optim.SGD(net.parameters(), lr=args.lr)
            order = part[torch.from_numpy(rng.permutation(len(part)))]
            at = 0
            for _ in range(args.local_steps):
                if at + args.batch > len(order):
                    order = part[torch.from_numpy(rng.permutation(len(part)))]
                    at = 0
                batch = order[at : at + args.batch]
                at += args.batch
                opt.zero_grad()
                torch.nn.functional.cross_entropy(net(x[batch]), y[batch]).backward()
                opt.step()
            fit = FitRes(Status(Code.OK, ""), ndarrays_to_parameters(get(net)), len(part), {})
            results.append((None, fit))
        aggregated, _ = strategy.aggregate_fit(r, results, [])
        weights = parameters_to_ndarrays(aggregated)
        seconds = time.perf_counter() - started
        put(net, weights)
        with torch.no_grad():
            logits = net(tx)
            accuracy = float((logits.argmax(1) == ty).float().mean())
            loss = float(torch.nn.functional.cross_entropy(logits, ty))
        rounds.append({"round": r, "accuracy": accuracy, "loss": loss, "seconds": seconds, "bytes": 2 * bytes_per_model * len(parts)})
    print(json.dumps({"rounds": rounds, "parameters": sum(a.size for a in weights)}))


if __name__ == "__main__":
    main()
