#!/usr/bin/env bash
# Set up a machine for stoicc: a virtual environment with the build and test requirements, and
# the CUDA extension built and installed (editable) into it. Idempotent: a second run with
# nothing changed only checks and returns within seconds.
#
# Usage: bash scripts/setup_env.sh
#
# Environment:
#   STOICC_VENV         venv location (default: <repo>/.venv); created if missing
#   STOICC_PYTHON       interpreter that creates the venv (default: python3)
#   STOICC_CUDA_ARCHS   archs to compile (default "80;86;89;90a": every shipped arch)
#   STOICC_INSTANCES    comma list of instance-name substrings to compile (default: all)
#   MAX_JOBS            parallel compile jobs (default: the number of cores)
#   CUDA_HOME           CUDA toolkit (default /usr/local/cuda; see below)
#   STOICC_FORCE_BUILD  1: rebuild even if the build looks up to date
#
# After it, `source "${STOICC_VENV:-.venv}/bin/activate"` gives the environment the tests use.
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$REPO"
VENV="${STOICC_VENV:-$REPO/.venv}"
PY_CREATE="${STOICC_PYTHON:-python3}"
TORCH_VERSION="2.14.1"

log() { echo "[stoicc] $*"; }
die() { echo "[stoicc] ERROR: $*" >&2; exit 1; }
trap 'echo "[stoicc] ERROR: setup failed at scripts/setup_env.sh line $LINENO: $BASH_COMMAND" >&2' ERR

# nvcc is also on PATH at /usr/local/bin on these machines; without CUDA_HOME torch derives the
# toolkit from that nvcc and looks for libcudart under /usr/local/lib, and the link fails
# (`cannot find -lcudart`). Pin the toolkit explicitly.
export CUDA_HOME="${CUDA_HOME:-/usr/local/cuda}"
[ -x "$CUDA_HOME/bin/nvcc" ] || die "no nvcc at $CUDA_HOME/bin/nvcc: install the CUDA 13 toolkit or set CUDA_HOME"
export PATH="$CUDA_HOME/bin:$PATH"
export STOICC_CUDA_ARCHS="${STOICC_CUDA_ARCHS:-80;86;89;90a}"
export STOICC_INSTANCES="${STOICC_INSTANCES:-}"
export MAX_JOBS="${MAX_JOBS:-$(nproc)}"

# ---- 1. the virtual environment
if [ ! -x "$VENV/bin/python" ]; then
  command -v "$PY_CREATE" >/dev/null || die "$PY_CREATE not found (set STOICC_PYTHON)"
  log "creating the virtual environment $VENV ($("$PY_CREATE" --version 2>&1))"
  "$PY_CREATE" -m venv "$VENV"
fi
PY="$VENV/bin/python"
"$PY" -c 'import sys; assert sys.version_info >= (3, 10), sys.version' \
  || die "$VENV has Python $("$PY" --version 2>&1); stoicc needs >= 3.10"
export PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_ROOT_USER_ACTION=ignore
PIP=("$PY" -m pip)

# ---- 2. the requirements (skipped when present)
have() {  # have MODULE [VERSION_PREFIX]: the module imports (and its version starts so)
  "$PY" - "$@" <<'EOF' 2>/dev/null
import importlib, importlib.util, sys
mod = sys.argv[1]
want = sys.argv[2] if len(sys.argv) > 2 else None
if want is None:
    sys.exit(0 if importlib.util.find_spec(mod) else 1)
v = getattr(importlib.import_module(mod), "__version__", "")
sys.exit(0 if str(v).split("+")[0] == want else 1)
EOF
}
have_dist() {  # have_dist NAME VERSION: installed distribution at that version (no import)
  "$PY" - "$1" "$2" <<'EOF' 2>/dev/null
import sys
from importlib.metadata import version
sys.exit(0 if version(sys.argv[1]) == sys.argv[2] else 1)
EOF
}

if ! have torch "$TORCH_VERSION"; then
  log "installing torch $TORCH_VERSION ..."
  "${PIP[@]}" install "torch==$TORCH_VERSION"
fi
missing=()
have numpy || missing+=(numpy)
have pytest || missing+=(pytest)
have ninja || missing+=(ninja)
have wheel || missing+=(wheel)
have safetensors || missing+=(safetensors)   # stoicc_ext.save_compressed / load_compressed
have accelerate || missing+=(accelerate)     # transformers' from_pretrained(tp_plan=...) (tests/parallel)
# the main job (bench/e2e.py builds transformers' Llama from a config: nothing is downloaded)
"$PY" -c 'import sys, transformers as t; v = tuple(int(x) for x in t.__version__.split(".")[:2]); sys.exit(not (5, 0) <= v < (5, 40))' 2>/dev/null \
  || missing+=("transformers>=5,<5.40")
"$PY" -c 'import setuptools, sys; sys.exit(int(setuptools.__version__.split(".")[0]) < 77)' 2>/dev/null \
  || missing+=("setuptools>=77")   # pyproject.toml's SPDX license field
if [ ${#missing[@]} -gt 0 ]; then
  log "installing ${missing[*]} ..."
  "${PIP[@]}" install "${missing[@]}"
fi
[ -x "$VENV/bin/ninja" ] || die "ninja is installed but $VENV/bin/ninja is missing"
export PATH="$VENV/bin:$PATH"   # the ninja that torch's BuildExtension runs

# ---- 3. the extension
# The build is up to date when a stamp of its inputs (sources, build files, archs, instance
# subset, toolchain, interpreter) matches the one written by the last successful build here.
stamp_of_inputs() {
  {
    find csrc setup.py pyproject.toml CMakeLists.txt stoicc_ext/instances.json -type f \
      ! -path '*/__pycache__/*' 2>/dev/null | LC_ALL=C sort | xargs -r sha256sum || true
    echo "archs=$STOICC_CUDA_ARCHS instances=$STOICC_INSTANCES repo=$REPO"
    "$PY" -c 'import sys, torch; print(sys.version, torch.__version__, torch.version.cuda)'
    "$CUDA_HOME/bin/nvcc" --version | tail -2
  } | sha256sum | cut -d' ' -f1
}
STAMP_FILE="$VENV/.stoicc-build-stamp"
want_stamp="$(stamp_of_inputs)"
installed_ok() {  # the package imports from this checkout with its extension loaded
  (cd / && "$PY" - "$REPO" <<'EOF' 2>/dev/null
import os, sys
import stoicc_ext
here = os.path.dirname(os.path.abspath(stoicc_ext.__file__))
sys.exit(0 if stoicc_ext.extension_loaded and here == os.path.join(os.path.abspath(sys.argv[1]), "stoicc_ext") else 1)
EOF
  )
}

if [ "${STOICC_FORCE_BUILD:-0}" != 1 ] && [ -f "$STAMP_FILE" ] && [ "$(cat "$STAMP_FILE")" = "$want_stamp" ] \
   && installed_ok; then
  log "the CUDA extension is up to date (archs $STOICC_CUDA_ARCHS${STOICC_INSTANCES:+, instances $STOICC_INSTANCES}); nothing to build"
else
  rm -f "$STAMP_FILE"
  log "building the CUDA extension for archs $STOICC_CUDA_ARCHS${STOICC_INSTANCES:+ (instances: $STOICC_INSTANCES)} with MAX_JOBS=$MAX_JOBS (this takes a few minutes on $(nproc) cores)"
  # An editable install puts stoicc_ext/_C.abi3.so into the checkout, so the tests (run from the
  # repo root, where ./stoicc_ext shadows any installed copy) and `python examples/demo.py`
  # use the build. (setuptools compiles editable builds in a fresh temp folder, so a rebuild is
  # a full one; the stamp above skips it when nothing changed.)
  t0=$(date +%s)
  "${PIP[@]}" install --no-build-isolation --no-deps -v -e "$REPO"
  t1=$(date +%s)
  installed_ok || die "the build finished but stoicc_ext does not load its extension: \
$(cd / && "$PY" -c 'import stoicc_ext; print(stoicc_ext.__file__, stoicc_ext.extension_error)' 2>&1 | tail -3)"
  echo "$want_stamp" > "$STAMP_FILE"
  log "built and installed in $((t1 - t0)) s"
fi
"$PY" -c 'import torch, stoicc_ext as S; print("[stoicc] ready: stoicc", S.__version__, "| torch", torch.__version__, "| CUDA available:", torch.cuda.is_available(), "| compiled instances:", len(S.list_instances()))'
