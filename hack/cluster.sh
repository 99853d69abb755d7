#!/usr/bin/env bash
# A local Kubernetes control plane (etcd, kube-apiserver, kube-controller-manager, kube-scheduler) on
# 127.0.0.1 with free ports, the TrainingJob CRD, and the node agent that registers fake GPU nodes and
# runs their pods as local processes. See "Local Kubernetes cluster" in README.md.
#
#   hack/cluster.sh up [--nodes N] [--gpus N] [--taint key=value:Effect]... [--image-map FILE] [--real-node]
#                                 start it (detached); the LAST line printed is the kubeconfig path:
#                                 export KUBECONFIG=$(hack/cluster.sh up | tail -1)
#                                 --real-node: also real-node-0, a real kubelet with containerd, runc,
#                                 CNI and kube-proxy in a network namespace (root; hack/cluster/real-node.ts)
#   hack/cluster.sh down          stop every process it started and remove its state
#   hack/cluster.sh status        say whether it runs, and where
#
# State (certificates, etcd data, logs, pod volumes, pid files) lives in $TENSILE_CLUSTER_DIR,
# default ${TMPDIR:-/tmp}/tensile-cluster. Binaries come from hack/install-tools.sh.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
export TENSILE_CLUSTER_DIR="${TENSILE_CLUSTER_DIR:-${TMPDIR:-/tmp}/tensile-cluster}"
cd "$here/.."
exec node --import tsx "$here/cluster/cli.ts" "$@"
