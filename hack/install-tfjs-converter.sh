#!/usr/bin/env bash
# Installs the TensorFlow.js converter (tensorflowjs_converter, from PyPI) into a venv under the cache,
# for turning an exported Tensile model into a SavedModel for TensorFlow Serving
# (`npm run bench -- serving-conversion`, README "The trained model"). Not a dependency of Tensile:
# ~1.5 GB with TensorFlow and JAX, so neither `npm test` nor CI installs it. Idempotent.
#
#   hack/install-tfjs-converter.sh            install what is missing
#   hack/install-tfjs-converter.sh --print    print the venv's bin directory
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# shellcheck source=hack/versions.sh
source "$here/versions.sh"
cache="${TENSILE_CACHE:-$HOME/.cache/tensile}"
venv="$cache/tfjs-converter-venv"
if [[ "${1:-}" == "--print" ]]; then
  echo "$venv/bin"
  exit 0
fi
step() { printf '[install-tfjs-converter] %s\n' "$*"; }
marker="$venv/.installed-$(echo "$TFJS_CONVERTER_PIP" | sha256sum | cut -c1-12)"
if [[ -x "$venv/bin/tensorflowjs_converter" && -f "$marker" ]]; then
  step "ready: $venv"
  exit 0
fi
command -v python3 >/dev/null || { echo "python3 is missing: sudo apt-get install -y python3-venv" >&2; exit 1; }
step "creating $venv and installing $TFJS_CONVERTER_PIP (about 1.5 GB)"
python3 -m venv "$venv"
"$venv/bin/pip" install -q --upgrade pip
# shellcheck disable=SC2086 # a list of requirement specifiers
"$venv/bin/pip" install -q $TFJS_CONVERTER_PIP
touch "$marker"
step "ready: $venv"
