#!/usr/bin/env bash
# Compile the op layer (csrc/ops.cpp, the only file that includes torch) against the headers of
# the OLDEST torch the README claims, with setup.py's flags, syntax only: a source build must
# work on every torch >= 2.10, not only on the one installed here.
#
# Usage: bash scripts/check_torch_headers.sh [TORCH_VERSION ...]    (default: 2.10)
#
# The headers come from the torch wheel on PyPI (`pip download torch==V.* --no-deps`, about a
# gigabyte, downloaded once); only torch/include/** is unpacked and kept, in
# ${STOICC_HEADER_CACHE:-~/.cache/stoicc/torch-headers}/<version>. A second run reuses it.
# Needs: a C++20 compiler (g++ or $CXX), the CUDA toolkit headers ($CUDA_HOME, default
# /usr/local/cuda; ops.cpp includes cuda_runtime_api.h), python3 with pip.
# Exit status: 0 if ops.cpp compiles against every version asked for.
set -euo pipefail
REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
CACHE="${STOICC_HEADER_CACHE:-$HOME/.cache/stoicc/torch-headers}"
CUDA_HOME="${CUDA_HOME:-/usr/local/cuda}"
CXX="${CXX:-g++}"
PY="${PYTHON:-python3}"
# setup.py's TORCH_TARGET and its "cxx" flags for the op layer
TARGET="$(sed -n 's/^TORCH_TARGET = "\(0x[0-9a-f]*\)".*/\1/p' "$REPO/setup.py")"
[ -n "$TARGET" ] || { echo "[headers] cannot read TORCH_TARGET from setup.py" >&2; exit 2; }
versions=("$@")
[ ${#versions[@]} -gt 0 ] || versions=(2.10)

fetch_headers() {  # fetch_headers VERSION -> prints the include directory
  local v="$1" dest="$CACHE/$1"
  if [ ! -f "$dest/.complete" ]; then
    local tmp
    tmp="$(mktemp -d)"
    echo "[headers] downloading torch==$v.* (once; cached in $dest)" >&2
    # --no-deps, binary only; the constraint file some machines set caps torch, so bypass it
    PIP_CONSTRAINT= "$PY" -m pip download --quiet --no-deps --only-binary=:all: \
      --dest "$tmp" "torch==$v.*" >&2
    local whl
    whl="$(ls "$tmp"/torch-*.whl | head -1)"
    rm -rf "$dest" && mkdir -p "$dest"
    "$PY" - "$whl" "$dest" <<'PYEOF'
import sys, zipfile
whl, dest = sys.argv[1], sys.argv[2]
with zipfile.ZipFile(whl) as z:
    names = [n for n in z.namelist() if n.startswith("torch/include/")]
    z.extractall(dest, names)
    version = next(n for n in z.namelist() if n.endswith(".dist-info/METADATA"))
    open(f"{dest}/VERSION", "w").write(version.split("/")[0].removesuffix(".dist-info") + "\n")
print(f"[headers] unpacked {len(names)} files of {whl.rsplit('/', 1)[-1]}", file=sys.stderr)
PYEOF
    rm -rf "$tmp"
    touch "$dest/.complete"
  fi
  echo "$dest/torch/include"
}

rc=0
for v in "${versions[@]}"; do
  inc="$(fetch_headers "$v")"
  what="$(cat "$CACHE/$v/VERSION")"
  cmd=("$CXX" -fsyntax-only -std=c++20 -DTORCH_STABLE_ONLY "-DTORCH_TARGET_VERSION=$TARGET" -DUSE_CUDA
       -I"$REPO/csrc" -I"$inc" -I"$inc/torch/csrc/api/include" -I"$CUDA_HOME/include"
       "$REPO/csrc/ops.cpp")
  if "${cmd[@]}"; then
    echo "[headers] csrc/ops.cpp compiles against $what (TORCH_TARGET_VERSION=$TARGET)"
  else
    echo "[headers] FAILED: csrc/ops.cpp does not compile against $what: ${cmd[*]}" >&2
    rc=1
  fi
done
exit $rc
