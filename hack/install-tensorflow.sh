#!/usr/bin/env bash
# Installs the native TensorFlow backend, idempotently: @tensorflow/tfjs-node (or, with --gpu,
# @tensorflow/tfjs-node-gpu) with its addon built from the npm package's own sources against
# libtensorflow taken from the pinned PyPI wheel (hack/versions.sh). No other host is contacted:
# the package's own install script would download libtensorflow 2.9.1 and a prebuilt addon from a
# host that is often unreachable, so npm drops the optional package; here it is installed with
# --ignore-scripts and built locally.
#
#   hack/install-tensorflow.sh           CPU: tensorflow-cpu wheel -> @tensorflow/tfjs-node
#   hack/install-tensorflow.sh --gpu     GPU: tensorflow wheel + nvidia-*-cu12 wheels -> tfjs-node-gpu
#   hack/install-tensorflow.sh --copy    copy libtensorflow into the package instead of linking to
#                                        the cache (images: node_modules must stand alone)
#
# Cached outside the checkout in $TENSILE_CACHE (default ~/.cache/tensile):
#   tensorflow-<TF_VERSION>-<cpu|gpu>/{lib,include[,nvidia]}   what the wheels contribute
#   tfjs-binding/<key>/tfjs_binding.node                       the built addon, keyed by the package,
#                                                              TF version, Node ABI and compiler
# `npm ci` (or an npm install that replaces the package) removes the addon; a re-run restores it from
# the cache in a few seconds. A run with nothing to do takes well under a second.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(dirname "$here")"
# shellcheck source=hack/versions.sh
source "$here/versions.sh"

variant=cpu
copy=0
for arg in "$@"; do
  case "$arg" in
  --gpu) variant=gpu ;;
  --copy) copy=1 ;;
  -h | --help)
    sed -n '2,20p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'
    exit 0
    ;;
  *)
    printf '[install-tensorflow] ERROR: unknown option %s (try --help)\n' "$arg" >&2
    exit 2
    ;;
  esac
done

cache="${TENSILE_CACHE:-$HOME/.cache/tensile}"
modules="$root/node_modules"
libdir="$cache/tensorflow-$TF_VERSION-$variant"
wheels="$cache/wheels"
if [[ $variant == gpu ]]; then
  pkg_name=@tensorflow/tfjs-node-gpu
  wheel_project=tensorflow
  wheel_sha=$TF_GPU_WHEEL_SHA256
else
  pkg_name=@tensorflow/tfjs-node
  wheel_project=tensorflow-cpu
  wheel_sha=$TF_CPU_WHEEL_SHA256
fi
pkg="$modules/$pkg_name"
started=$(date +%s)

step() { printf '[install-tensorflow] %s\n' "$*"; }
fail() {
  printf '[install-tensorflow] ERROR: %s\n' "$*" >&2
  exit 1
}

command -v node >/dev/null || fail "node is not on PATH; install Node.js 20 first"

# The addon is an N-API module: node-pre-gyp puts it under lib/napi-v<best>, the highest N-API
# version the package declares that this Node supports.
# One node start for all three (a second run must stay under a second, and a node start alone can take
# most of that on a loaded machine): the ABI, the N-API version and, when the package is there, the
# best N-API build of it ("none" otherwise).
read -r node_abi napi installed_napi <<<"$(node -e '
  const { modules, napi } = process.versions;
  let best = "none";
  try {
    const ok = require(process.argv[1]).binary.napi_versions.filter((v) => v <= Number(napi));
    best = String(Math.max(...ok));
  } catch {}
  console.log(`${modules} ${napi} ${best}`);' "$pkg/package.json")"
compiler="$(${CXX:-c++} --version 2>/dev/null | head -1 || true)"
compiler_id="${compiler:+$(printf '%s' "$compiler" | sha256sum | cut -c1-12)}"
# The project's patches of the addon's sources (hack/patches/tfjs-node-*.patch) are part of the key:
# a changed patch builds a new addon.
patches=("$here"/patches/tfjs-node-*.patch)
patches_id="$(cat "${patches[@]}" | sha256sum | cut -c1-12)"
binding_key="$variant-tfjs$TFJS_NODE_VERSION-tf$TF_VERSION-abi$node_abi-napi$napi-$(uname -m)-patches$patches_id"
stamp="$pkg/deps/.tensile-installed"
want_stamp="$binding_key libdir=$libdir copy=$copy"

best_napi() {
  node -e '
    const pkg = require(process.argv[1]);
    const ok = pkg.binary.napi_versions.filter((v) => v <= Number(process.versions.napi));
    console.log(Math.max(...ok));' "$pkg/package.json"
}

# ------------------------------------------------------------------------------------ nothing to do?
if [[ -f "$stamp" && "$(cat "$stamp")" == "$want_stamp" && $installed_napi != none ]]; then
  binding="$pkg/lib/napi-v$installed_napi/tfjs_binding.node"
  if [[ -f "$binding" ]]; then
    step "ready: $pkg_name $TFJS_NODE_VERSION on libtensorflow $TF_VERSION ($variant)"
    exit 0
  fi
fi

mkdir -p "$cache"
# Two runs at once (npm test and npm start) must not lay out the same directories together.
exec 9>"$cache/.install-tensorflow.lock"
command -v flock >/dev/null && flock 9

# ---------------------------------------------------------------------------------- the npm package
installed_version() { node -p "require('$pkg/package.json').version" 2>/dev/null || true; }
if [[ "$(installed_version)" != "$TFJS_NODE_VERSION" ]]; then
  step "installing $pkg_name@$TFJS_NODE_VERSION from the lock file with --ignore-scripts"
  command -v npm >/dev/null || fail "npm is not on PATH; it comes with Node.js"
  # --no-save: package.json and package-lock.json stay as they are (the package is already an
  # optionalDependency there). TENSILE_NPM_FLAGS carries e.g. --omit=dev for images.
  # shellcheck disable=SC2086
  (cd "$root" && npm install --no-save --ignore-scripts --no-audit --no-fund ${TENSILE_NPM_FLAGS:-} \
    "$pkg_name@$TFJS_NODE_VERSION") || fail "npm install $pkg_name failed (see above)"
  [[ "$(installed_version)" == "$TFJS_NODE_VERSION" ]] ||
    fail "$pkg_name $TFJS_NODE_VERSION is not in $modules after npm install; check package-lock.json lists it"
fi

# -------------------------------------------------------------------------------- libtensorflow
pip_download() {
  python3 -m pip download --no-deps --only-binary=:all: --no-cache-dir --progress-bar off \
    --python-version 3.11 --implementation cp --abi cp311 \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 \
    --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
    --platform manylinux_2_12_x86_64 --platform manylinux2010_x86_64 \
    -d "$1" "$2"
}

# verify_wheel DIR PROJECT VERSION SHA256 -> prints the wheel's path
verify_wheel() {
  local dir=$1 project=$2 version=$3 sha=$4 file actual
  file="$(find "$dir" -maxdepth 1 -name "${project//-/_}-$version-*.whl" | head -1)"
  [[ -n "$file" ]] || fail "pip saved no wheel for $project==$version in $dir"
  actual="$(sha256sum "$file" | cut -d' ' -f1)"
  [[ "$actual" == "$sha" ]] ||
    fail "$(basename "$file") has sha256 $actual, hack/versions.sh pins $sha; a changed upload or a wrong pin — check PyPI and update hack/versions.sh deliberately"
  printf '%s' "$file"
}

# extract WHEEL DEST KIND: tensorflow -> lib/ (the two libraries) and include/ (the headers the addon's
# sources include, with everything those include in turn); nvidia -> nvidia/<part>/{lib,bin}
extract() {
  python3 - "$1" "$2" "$3" "$pkg/binding" <<'EOF'
import glob, os, re, shutil, sys, zipfile
wheel, dest, kind, binding = sys.argv[1:]
INCLUDE = re.compile(r'#include\s+"([^"]+)"')
def headers(z):
    names = set(z.namelist())
    todo = [m for f in glob.glob(os.path.join(binding, '*')) for m in INCLUDE.findall(open(f).read())]
    seen = {}
    while todo:
        header = todo.pop()
        member = 'tensorflow/include/' + header
        if header in seen or member not in names:
            continue  # the addon's own headers are not in the wheel
        seen[header] = member
        todo += INCLUDE.findall(z.read(member).decode())
    return {member: os.path.join('include', header) for header, member in seen.items()}
def nvidia(name):
    # each nvidia/<part>/: its shared libraries, and the tools (nvcc's ptxas) that XLA calls
    parts = name.split('/')
    return name if parts[0] == 'nvidia' and len(parts) >= 4 and parts[2] in ('lib', 'bin') else None
with zipfile.ZipFile(wheel) as z:
    if kind == 'tensorflow':
        wanted = headers(z)
        for lib in ('libtensorflow_cc.so.2', 'libtensorflow_framework.so.2'):
            wanted['tensorflow/' + lib] = os.path.join('lib', lib)
    else:
        wanted = {i.filename: nvidia(i.filename) for i in z.infolist() if nvidia(i.filename)}
    for info in z.infolist():
        out = wanted.get(info.filename)
        if out is None or info.is_dir():
            continue
        path = os.path.join(dest, out)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with z.open(info) as src, open(path, 'wb') as dst:
            shutil.copyfileobj(src, dst)
        os.chmod(path, ((info.external_attr >> 16) & 0o777) or 0o644)
    if kind == 'tensorflow':
        print(f'{len(wanted) - 2} headers')
EOF
}

# wheel_for SPEC SHA256 WHAT -> the verified wheel's path; one already in $cache/wheels (kept by an
# earlier run with TENSILE_KEEP_WHEELS=1, or put there by hand) is used instead of a download.
wheel_for() {
  local spec=$1 sha=$2 what=$3 project version file
  project="${spec%%==*}" version="${spec##*==}"
  file="$(find "$wheels" -maxdepth 1 -name "${project//-/_}-$version-*.whl" 2>/dev/null | head -1)"
  if [[ -z "$file" || "$(sha256sum "$file" | cut -d' ' -f1)" != "$sha" ]]; then
    step "downloading $spec from PyPI ($what)" >&2
    pip_download "$wheels" "$spec" >&2 || fail "pip download $spec failed (see above); PyPI must be reachable"
  fi
  verify_wheel "$wheels" "$project" "$version" "$sha"
}

fetch_libtensorflow() {
  python3 -m pip --version >/dev/null 2>&1 ||
    fail "libtensorflow comes from PyPI with pip, and python3 -m pip does not run. On Debian/Ubuntu: apt-get install -y python3-pip; elsewhere install Python 3 with pip"
  local wheel spec sha headers
  rm -rf "$libdir.partial"
  mkdir -p "$wheels" "$libdir.partial"
  wheel="$(wheel_for "$wheel_project==$TF_VERSION" "$wheel_sha" "CPU wheel ~275 MB, GPU ~575 MB")"
  step "sha256 verified; extracting libtensorflow_cc.so.2, libtensorflow_framework.so.2 and the C headers"
  headers="$(extract "$wheel" "$libdir.partial" tensorflow)" || fail "extracting $(basename "$wheel") failed (see above)"
  step "  $headers (those the addon includes, transitively)"
  [[ ${TENSILE_KEEP_WHEELS:-0} == 1 ]] || rm -f "$wheel"
  if [[ $variant == gpu ]]; then
    while read -r spec sha; do
      [[ -n "$spec" ]] || continue
      wheel="$(wheel_for "$spec" "$sha" "CUDA 12 / cuDNN 9 runtime for the GPU build")"
      step "  extracting the libraries of $(basename "$wheel")"
      extract "$wheel" "$libdir.partial" nvidia || fail "extracting $(basename "$wheel") failed (see above)"
      [[ ${TENSILE_KEEP_WHEELS:-0} == 1 ]] || rm -f "$wheel"
    done <<<"$NVIDIA_CU12_WHEELS"
  fi
  printf '%s %s\n' "$wheel_project==$TF_VERSION" "$wheel_sha" >"$libdir.partial/.complete"
  rm -rf "$libdir"
  mv "$libdir.partial" "$libdir"
  step "libtensorflow $TF_VERSION ($variant) in $libdir ($(du -sh "$libdir" | cut -f1))"
}

[[ -f "$libdir/.complete" ]] || fetch_libtensorflow

# ------------------------------------------------------------------------- deps/ inside the package
# binding.gyp links -ltensorflow -ltensorflow_framework from deps/lib and sets the addon's rpath to
# $ORIGIN/../../deps/lib; the wheel's libraries carry their SONAMEs (*.so.2). The GPU library finds
# CUDA through its RUNPATH $ORIGIN/../nvidia/<part>/lib, hence deps/nvidia next to deps/lib.
# libtensorflow.so.2.9.1 is the file the package's own install script looks for before downloading.
layout_deps() {
  local deps="$pkg/deps" link="ln -s"
  ((copy)) && link="cp -RL"
  rm -rf "$deps"
  mkdir -p "$deps/lib"
  $link "$libdir/include" "$deps/include"
  $link "$libdir/lib/libtensorflow_cc.so.2" "$deps/lib/libtensorflow_cc.so.2"
  $link "$libdir/lib/libtensorflow_framework.so.2" "$deps/lib/libtensorflow_framework.so.2"
  ln -s libtensorflow_cc.so.2 "$deps/lib/libtensorflow.so"
  ln -s libtensorflow_framework.so.2 "$deps/lib/libtensorflow_framework.so"
  ln -s libtensorflow_cc.so.2 "$deps/lib/libtensorflow.so.2.9.1"
  if [[ -d "$libdir/nvidia" ]]; then $link "$libdir/nvidia" "$deps/nvidia"; fi
}
layout_deps

# ---------------------------------------------------------------------------------------- the addon
# Applies each patch to the package's binding sources unless it is applied already (an earlier run
# that failed later); a package fresh from npm gets every one.
patch_sources() {
  command -v patch >/dev/null || fail "applying hack/patches needs patch; on Debian/Ubuntu: apt-get install -y patch"
  local file
  for file in "${patches[@]}"; do
    if (cd "$pkg" && patch -p1 -R --dry-run --silent -f <"$file" >/dev/null 2>&1); then continue; fi
    step "patching the addon's sources: $(basename "$file")"
    (cd "$pkg" && patch -p1 --silent -f --no-backup-if-mismatch <"$file") ||
      fail "$(basename "$file") does not apply to $pkg_name $TFJS_NODE_VERSION's binding/; update the patch with the package"
  done
}

build_binding() {
  local out=$1 nodedir node_gyp pre_gyp log
  [[ -n "$compiler" ]] && command -v make >/dev/null ||
    fail "building the addon needs a C++ compiler and make. On Debian/Ubuntu: apt-get install -y g++ make (or set CXX)"
  python3 --version >/dev/null 2>&1 || fail "node-gyp needs python3; on Debian/Ubuntu: apt-get install -y python3"
  nodedir="${TENSILE_NODEDIR:-$(dirname "$(dirname "$(readlink -f "$(command -v node)")")")}"
  [[ -f "$nodedir/include/node/node_api.h" ]] ||
    fail "no Node headers at $nodedir/include/node (node-gyp would try to download them). Install them (Debian: apt-get install -y libnode-dev, or the nodejs package that ships include/node) or set TENSILE_NODEDIR to the prefix that holds include/node"
  pre_gyp="$(node -p "require.resolve('@mapbox/node-pre-gyp/bin/node-pre-gyp', { paths: ['$pkg'] })" 2>/dev/null)" ||
    fail "@mapbox/node-pre-gyp (a dependency of $pkg_name) is missing; re-run after npm install"
  node_gyp="$(npm prefix -g 2>/dev/null)/lib/node_modules/npm/node_modules/node-gyp/bin/node-gyp.js"
  [[ -f "$node_gyp" ]] && export npm_config_node_gyp="$node_gyp"
  log="$cache/logs/tfjs-binding-$variant.log"
  mkdir -p "$cache/logs"
  step "building the addon from $pkg_name's sources against libtensorflow $TF_VERSION ($compiler), usually under a minute; log: $log"
  (while sleep 20; do step "  ... still compiling ($(($(date +%s) - started)) s so far)"; done) &
  local ticker=$!
  if ! (cd "$pkg" && node "$pre_gyp" install --build-from-source --nodedir="$nodedir" >"$log" 2>&1); then
    kill "$ticker" 2>/dev/null
    tail -30 "$log" >&2
    fail "the addon build failed; the full log is $log"
  fi
  kill "$ticker" 2>/dev/null
  [[ -f "$out" ]] || fail "node-pre-gyp finished but $out is missing; see $log"
  rm -rf "$pkg/build"
}

binding="$pkg/lib/napi-v$(best_napi)/tfjs_binding.node"
cached=""
if [[ -n "$compiler_id" ]]; then
  cached="$cache/tfjs-binding/$binding_key-cxx$compiler_id/tfjs_binding.node"
else
  # No compiler here (a slim image stage): an addon built by any compiler for this ABI will do.
  cached="$(find "$cache/tfjs-binding" -path "*/$binding_key-cxx*/tfjs_binding.node" 2>/dev/null | head -1)"
fi
if [[ -n "$cached" && -f "$cached" ]]; then
  step "addon from the cache ($(dirname "$cached"))"
  mkdir -p "$(dirname "$binding")"
  cp "$cached" "$binding"
else
  rm -f "$binding"
  patch_sources
  build_binding "$binding"
  mkdir -p "$(dirname "$cached")"
  cp "$binding" "$cached.tmp" && mv "$cached.tmp" "$cached"
fi

# Loading libtensorflow takes a second or two; done only when something changed above.
tf_loaded="$(cd "$root" && TF_CPP_MIN_LOG_LEVEL=3 node -e "
  const tf = require('$pkg_name');
  console.log(tf.backend().binding.TF_Version);" 2>/dev/null)" ||
  fail "$pkg_name does not load after the install; run: node -e \"require('$pkg_name')\" to see why"
echo "$want_stamp" >"$stamp"
step "ready: $pkg_name $TFJS_NODE_VERSION on libtensorflow $tf_loaded ($variant) in $(($(date +%s) - started)) s"
