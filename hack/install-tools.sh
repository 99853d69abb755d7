#!/usr/bin/env bash
# Installs everything the tests, `npm start` and hack/cluster.sh need, idempotently:
#   - Debian packages: nats-server, etcd-server, dataset-fashion-mnist, chromium (report screenshots);
#     for the real node and the images (hack/cluster.sh up --real-node, hack/images.sh): containerd,
#     runc, containernetworking-plugins, iptables, iproute2, mmdebstrap, jq
#   - kube-apiserver, kube-controller-manager, kube-scheduler, kubectl, and the real node's kubelet and
#     kube-proxy at KUBE_VERSION, built from the Go module proxy through hack/k8s/go.mod
#     (k8s.io/kubernetes + replace directives for its staging modules)
#   - helm v3 from the Go module proxy
#   - Kueue's controller manager and its CRDs, from the Go module proxy (test/integration/kueue.test.ts)
#   - tensile-s3, an in-memory S3-compatible server (gofakes3, hack/s3/go.mod) for the s3:// tests
#   - ferretdb (MongoDB wire protocol on SQLite) from the Go module proxy, for the mongodb:// tests
# Built binaries are cached OUTSIDE the checkout in $TENSILE_CACHE (default ~/.cache/tensile), so a fresh
# clone on the same machine reuses them; a warm run takes a second or two.
#
#   hack/install-tools.sh            install what is missing
#   hack/install-tools.sh --print    print the bin directory (for PATH=...)
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# shellcheck source=hack/versions.sh
source "$here/versions.sh"

cache="${TENSILE_CACHE:-$HOME/.cache/tensile}"
kube_bin="$cache/kubernetes-$KUBE_VERSION/bin"
helm_bin="$cache/helm-$HELM_VERSION/bin"
kueue_dir="$cache/kueue-$KUEUE_VERSION"
ferretdb_bin="$cache/ferretdb-$FERRETDB_VERSION/bin"
# Keyed by the contents of the module's go.sum and source (not their paths): a change builds anew, another clone does not.
s3_bin="$cache/s3-$(cat "$here/s3/go.sum" "$here/s3/main.go" | sha256sum | cut -c1-12)/bin"

if [[ "${1:-}" == "--print" ]]; then
  echo "$kube_bin:$helm_bin:$kueue_dir/bin:$s3_bin:$ferretdb_bin"
  exit 0
fi

step() { printf '[install-tools] %s\n' "$*"; }
fail() { printf '[install-tools] ERROR: %s\n' "$*" >&2; exit 1; }

# ---------------------------------------------------------------------------------------- Debian packages
missing=()
command -v nats-server >/dev/null || missing+=(nats-server)
command -v etcd >/dev/null || missing+=(etcd-server)
[[ -f /usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz ]] || missing+=(dataset-fashion-mnist)
# The real node and the local image build.
for tool in containerd:containerd runc:runc iptables:iptables ip:iproute2 mmdebstrap:mmdebstrap jq:jq; do
  command -v "${tool%%:*}" >/dev/null || [[ -x /usr/sbin/${tool%%:*} ]] || missing+=("${tool#*:}")
done
[[ -x /usr/lib/cni/bridge ]] || missing+=(containernetworking-plugins)
if [[ "${TENSILE_SKIP_CHROMIUM:-}" != 1 ]]; then
  command -v chromium >/dev/null || missing+=(chromium)
fi
if ((${#missing[@]} > 0)); then
  if [[ $(id -u) -ne 0 ]]; then
    fail "missing Debian packages: ${missing[*]}. Install them with: sudo apt-get update && sudo apt-get install -y ${missing[*]}"
  fi
  command -v apt-get >/dev/null || fail "missing ${missing[*]} and there is no apt-get here; install them by hand"
  step "apt-get install ${missing[*]}"
  # `apt-get update` only when the package lists are absent or the install cannot find a package.
  if ! DEBIAN_FRONTEND=noninteractive apt-get install -y -q "${missing[@]}" >/tmp/tensile-apt.log 2>&1; then
    step "apt-get update"
    apt-get update -q >/tmp/tensile-apt.log 2>&1 || fail "apt-get update failed; see /tmp/tensile-apt.log"
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q "${missing[@]}" >>/tmp/tensile-apt.log 2>&1 ||
      fail "apt-get install ${missing[*]} failed; see /tmp/tensile-apt.log"
  fi
fi
step "nats-server $(nats-server --version 2>&1 | awk '{print $2}'), etcd $(etcd --version 2>&1 | awk 'NR==1{print $3}')"

# ------------------------------------------------------------------------------------------- Kubernetes
command -v go >/dev/null || fail "Go is needed to build the Kubernetes control plane; install Go >= 1.26"
stamp="$kube_bin/.built-from"
want="$(cat "$here/k8s/go.mod" "$here/k8s/go.sum" | sha256sum | cut -c1-16) $(go env GOVERSION)"
if [[ ! -f "$stamp" || "$(cat "$stamp")" != "$want" ]]; then
  step "building Kubernetes $KUBE_VERSION (kube-apiserver, kube-controller-manager, kube-scheduler, kubectl, kubelet, kube-proxy) into $kube_bin"
  step "a cold build takes 10-25 minutes on 2 cores; progress follows"
  mkdir -p "$kube_bin"
  minor="${KUBE_VERSION#v1.}"; minor="${minor%%.*}"
  ldflags="-s -w"
  for pkg in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
    ldflags+=" -X $pkg.gitVersion=$KUBE_VERSION -X $pkg.gitMajor=1 -X $pkg.gitMinor=$minor -X $pkg.gitTreeState=clean"
  done
  started=$(date +%s)
  for cmd in kube-apiserver kube-controller-manager kube-scheduler kubectl kubelet kube-proxy; do
    step "  go build $cmd ($(($(date +%s) - started)) s so far)"
    # kube-apiserver alone compiles for minutes without a word: say that it is still going.
    (while sleep 30; do step "  ... still building $cmd ($(($(date +%s) - started)) s so far)"; done) &
    ticker=$!
    if ! (cd "$here/k8s" && CGO_ENABLED=0 go build -mod=readonly -trimpath -ldflags "$ldflags" \
      -o "$kube_bin/$cmd.tmp" "k8s.io/kubernetes/cmd/$cmd"); then
      kill "$ticker" 2>/dev/null
      fail "go build $cmd failed"
    fi
    kill "$ticker" 2>/dev/null
    mv "$kube_bin/$cmd.tmp" "$kube_bin/$cmd"
  done
  echo "$want" >"$stamp"
  step "Kubernetes built in $(($(date +%s) - started)) s"
fi
step "kubernetes $("$kube_bin/kube-apiserver" --version 2>&1 | awk '{print $2}') in $kube_bin"

# ----------------------------------------------------------------------------------------------- Helm
# `go install` leaves helm's default Kubernetes version at v1.20 (release builds set it with -ldflags from
# their client-go), so an offline `helm template` would fail the chart's Kubernetes check. The same
# -X flags as helm's Makefile, from the client-go version in helm's go.mod; the stamp file says the
# binary was built so (one built before without them is rebuilt once).
helm_stamp="$helm_bin/.kube-version-ldflags"
if [[ ! -x "$helm_bin/helm" || ! -f "$helm_stamp" ]]; then
  helm_mod="$(go mod download -json "helm.sh/helm/v3@$HELM_VERSION" | sed -n 's/.*"GoMod": "\(.*\)".*/\1/p')"
  client_go="$(awk '$1 == "k8s.io/client-go" {print $2}' "$helm_mod")"
  [[ "$client_go" =~ ^v0\.([0-9]+)\. ]] || fail "cannot read k8s.io/client-go from helm's go.mod ($helm_mod)"
  k8s_minor="${BASH_REMATCH[1]}"
  step "building helm $HELM_VERSION into $helm_bin (default Kubernetes 1.$k8s_minor, from client-go $client_go)"
  mkdir -p "$helm_bin"
  (while sleep 30; do step "  ... still building helm"; done) &
  ticker=$!
  chartutil="helm.sh/helm/v3/pkg/chartutil"
  GOBIN="$helm_bin" CGO_ENABLED=0 go install -trimpath \
    -ldflags "-s -w -X $chartutil.k8sVersionMajor=1 -X $chartutil.k8sVersionMinor=$k8s_minor" \
    "helm.sh/helm/v3/cmd/helm@$HELM_VERSION" ||
    { kill "$ticker" 2>/dev/null; fail "go install helm failed"; }
  kill "$ticker" 2>/dev/null
  echo "1.$k8s_minor" >"$helm_stamp"
fi
step "helm $HELM_VERSION in $helm_bin"

# ---------------------------------------------------------------------------------------------- Kueue
if [[ ! -x "$kueue_dir/bin/kueue" || ! -d "$kueue_dir/crds" ]]; then
  step "building kueue $KUEUE_VERSION into $kueue_dir"
  mkdir -p "$kueue_dir/bin" "$kueue_dir/crds"
  (while sleep 30; do step "  ... still building kueue"; done) &
  ticker=$!
  GOBIN="$kueue_dir/bin" CGO_ENABLED=0 go install -trimpath -ldflags "-s -w" "sigs.k8s.io/kueue/cmd/kueue@$KUEUE_VERSION" ||
    { kill "$ticker" 2>/dev/null; fail "go install kueue failed"; }
  kill "$ticker" 2>/dev/null
  kueue_src="$(go mod download -json "sigs.k8s.io/kueue@$KUEUE_VERSION" | sed -n 's/.*"Dir": "\(.*\)".*/\1/p')"
  cp "$kueue_src"/config/components/crd/bases/*.yaml "$kueue_dir/crds/"
  chmod u+w "$kueue_dir/crds/"*.yaml
fi
step "kueue $KUEUE_VERSION in $kueue_dir"

# -------------------------------------------------------------------------------------------- tensile-s3
if [[ ! -x "$s3_bin/tensile-s3" ]]; then
  step "building tensile-s3 (gofakes3) into $s3_bin"
  mkdir -p "$s3_bin"
  (cd "$here/s3" && CGO_ENABLED=0 go build -mod=readonly -trimpath -ldflags "-s -w" -o "$s3_bin/tensile-s3" .) ||
    fail "go build tensile-s3 failed"
fi
step "tensile-s3 in $s3_bin"

# ----------------------------------------------------------------------------------------------- FerretDB
if [[ ! -x "$ferretdb_bin/ferretdb" ]]; then
  step "building ferretdb $FERRETDB_VERSION into $ferretdb_bin"
  # The module's zip leaves build/version/version.txt empty (its release builds generate it), and
  # the binary refuses to start without it: build from a writable copy with the version written in.
  src="$(cd /tmp && go mod download -json "github.com/FerretDB/FerretDB@$FERRETDB_VERSION" | sed -n 's/^[[:space:]]*"Dir": "\(.*\)",$/\1/p')"
  [[ -n "$src" ]] || fail "go mod download FerretDB $FERRETDB_VERSION failed"
  work="$(mktemp -d)"
  cp -r "$src/." "$work" && chmod -R u+w "$work"
  echo "$FERRETDB_VERSION" >"$work/build/version/version.txt"
  mkdir -p "$ferretdb_bin"
  (cd "$work" && CGO_ENABLED=0 go build -trimpath -ldflags "-s -w" -o "$ferretdb_bin/ferretdb" ./cmd/ferretdb) ||
    { rm -rf "$work"; fail "go build ferretdb failed"; }
  rm -rf "$work"
fi
step "ferretdb $FERRETDB_VERSION in $ferretdb_bin"
step "ready"
