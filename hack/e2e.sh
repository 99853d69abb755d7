#!/usr/bin/env bash
# End to end on the local cluster (issue 6): the control plane with fake spot GPU nodes, a nats-server,
# the operator, a simulated autoscaler and a scripted spot reclaimer; `kubectl apply -f
# examples/fashion-mnist-mlp.yaml` unchanged; two nodes reclaimed with notice and one without while it
# trains; then a summary (accuracy, preemptions, restarts, per-epoch audit, goodput, events).
# See "End to end on the local cluster" in README.md.
#
#   hack/e2e.sh [--manifest FILE] [--notice SECONDS] [--autoscaler-delay SECONDS] [--worker-cpus N]
#               [--timeout SECONDS] [--artifacts DIR]
#
# Exit 0 when every expectation holds, 1 when one fails, 2 when it could not run, 130 on Ctrl-C.
# Everything it starts is stopped on the way out (a watchdog reaps it even if this process is killed).
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
cd "$here/.."
exec node --import tsx "$here/e2e/main.ts" "$@"
