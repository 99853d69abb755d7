#!/usr/bin/env bash
# Chaos on the local cluster (issue 24): the e2e's driver (hack/e2e/) with faults at seeded times
# instead of the scripted reclaims — kill -9 of a worker, of the operator leader, of nats-server and of
# the checkpoint writer mid-write; node deletion with and without notice; nats-server and
# kube-apiserver restarts; a worker cut off from its peers; a full checkpoint volume; a slowed worker.
# See "Chaos" in README.md.
#
#   hack/chaos.sh [--seed S] [--minutes M] [--kinds a,b,…] [--epochs N] [--artifacts DIR] [--print-schedule]
#
# Exit 0 when every expectation holds, 1 when one fails, 2 when it could not run, 130 on Ctrl-C.
# Needs root (iptables on loopback, a tmpfs under the checkpoint volume).
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
cd "$here/.."
exec node --import tsx "$here/chaos/main.ts" "$@"
