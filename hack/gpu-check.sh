#!/usr/bin/env bash
# Proves the GPU path on a machine with an NVIDIA GPU and driver, in under five minutes (most of it
# the first download of ~3.9 GB of wheels from PyPI; a second run takes about a minute):
#   1. installs the GPU backend: hack/install-tensorflow.sh --gpu (tensorflow + nvidia-*-cu12 wheels,
#      the tfjs-node-gpu addon built against them);
#   2. trains the CNN of examples/fashion-mnist-cnn.yaml for STEPS steps (default 300, batch 64) with
#      the GPU visible, then again with CUDA_VISIBLE_DEVICES=-1 (the same libtensorflow on the CPU);
#   3. prints the devices TensorFlow created and placed the work on (its own log, and the process
#      nvidia-smi saw on the GPU), samples/s of each run and GPU ÷ CPU.
# Exits non-zero when TensorFlow did not run on a GPU.
#
#   hack/gpu-check.sh [STEPS]
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
steps="${1:-300}"
say() { printf '[gpu-check] %s\n' "$*"; }
fail() {
  printf '[gpu-check] ERROR: %s\n' "$*" >&2
  exit 1
}

command -v nvidia-smi >/dev/null || fail "nvidia-smi is not on PATH: no NVIDIA driver here (in a pod: request nvidia.com/gpu and use the NVIDIA container runtime)"
say "GPU: $(nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader | head -1)"
[[ -d "$root/node_modules/tsx" ]] || (cd "$root" && npm install --no-audit --no-fund --no-save)
bash "$root/hack/install-tensorflow.sh" --gpu

work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
leg() { # leg NAME [ENV...]: one training run, its stderr kept for TensorFlow's device log
  local name=$1
  shift
  say "training the CNN for $steps steps ($name)"
  (cd "$root" && env TF_CPP_MIN_LOG_LEVEL=0 "$@" node --import tsx hack/gpu-check.ts "$steps" 64 \
    >"$work/$name.json" 2>"$work/$name.err") &
  local pid=$!
  # Sample which processes hold GPU memory while the run is going (after its warm-up).
  (sleep 20 && nvidia-smi --query-compute-apps=pid,process_name,used_memory --format=csv,noheader \
    >"$work/$name.smi" 2>&1) &
  wait "$pid" || { tail -20 "$work/$name.err" >&2; fail "the $name run failed"; }
  tail -1 "$work/$name.json"
}
leg gpu
leg cpu CUDA_VISIBLE_DEVICES=-1

say "devices TensorFlow created (GPU run):"
grep -E 'Created device|Loaded cuDNN|StreamExecutor|compute capability' "$work/gpu.err" | sed 's/^/    /' | head -10 || true
say "processes on the GPU while it trained (nvidia-smi): $(tr '\n' ';' <"$work/gpu.smi")"
grep -q 'device:GPU:0' "$work/gpu.err" ||
  fail "TensorFlow created no GPU device; its log follows:$(printf '\n'; grep -iE 'cuda|cudnn|gpu' "$work/gpu.err" | head -20)"
node -e '
  const [gpu, cpu] = process.argv.slice(1).map((f) => JSON.parse(require("fs").readFileSync(f, "utf8").trim().split("\n").pop()));
  console.log(`[gpu-check] samples/s: GPU ${gpu.samplesPerSecond}, CPU ${cpu.samplesPerSecond} (same libtensorflow, CUDA_VISIBLE_DEVICES=-1): GPU ÷ CPU = ${(gpu.samplesPerSecond / cpu.samplesPerSecond).toFixed(2)}`);
' "$work/gpu.json" "$work/cpu.json"
say "ok: the GPU path works"
