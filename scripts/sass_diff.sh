#!/usr/bin/env bash
# Is a kernel refactor free? Compiles the generated instances at a git ref and in the working
# tree with setup.py's nvcc flags and diffs their SASS, per instance and per arch.
#
#   scripts/sass_diff.sh [REF]            REF defaults to HEAD
#
# Prints one line per instance x arch (identical / DIFFERS) and a summary line; exits 1 when any
# SASS differs (or is missing), 0 when every one is identical. The ref's objects are kept under
# $SASS_DIFF_DIR, keyed by its csrc/ tree and the flags, so a series of edits compared with one
# ref compiles the ref once; the working tree's are reused while its csrc/ is unchanged.
# -lineinfo is left out (line numbers would differ after any move of code); the dump has no other
# source references (a fatbin 'identifier =' line naming the file, if any, is dropped).
#
# Environment:
#   SASS_DIFF_GLOB   instances to compare (default 'spmm_*.cu'; 'wgmma_*.cu' or '*.cu' also work)
#   SASS_DIFF_ARCHS  archs, as in STOICC_CUDA_ARCHS (default '80;90a')
#   SASS_DIFF_JOBS   parallel nvcc processes (default 2)
#   SASS_DIFF_DIR    scratch directory (default /tmp/sass_diff)
#   SASS_DIFF_PREPARE=1  only compile REF's objects (run it before editing) and exit
#   NVCC, CUOBJDUMP  tools (default: $CUDA_HOME/bin/nvcc, as torch's build uses, else nvcc on PATH;
#                    cuobjdump on PATH, else triton's copy in .venv)
set -euo pipefail

root=$(git rev-parse --show-toplevel)
cd "$root"
ref=${1:-HEAD}
sha=$(git rev-parse --verify "$ref^{commit}")
glob=${SASS_DIFF_GLOB:-spmm_*.cu}
archs=${SASS_DIFF_ARCHS:-80;90a}
jobs=${SASS_DIFF_JOBS:-2}
work=${SASS_DIFF_DIR:-/tmp/sass_diff}
cuda_home=${CUDA_HOME:-/usr/local/cuda}
nvcc=${NVCC:-$([[ -x "$cuda_home/bin/nvcc" ]] && echo "$cuda_home/bin/nvcc" || echo nvcc)}
cuobjdump=${CUOBJDUMP:-$(command -v cuobjdump || true)}
if [[ -z "$cuobjdump" ]]; then
  cuobjdump=$(ls "$root"/.venv/lib/python3*/site-packages/triton/backends/nvidia/bin/cuobjdump 2>/dev/null | head -1)
fi
[[ -x "$cuobjdump" ]] || { echo "sass_diff: no cuobjdump (set CUOBJDUMP)" >&2; exit 2; }

# setup.py's nvcc flags (and the defines torch's CUDAExtension adds), without -lineinfo and
# -Xptxas=-warn-spills (neither changes the code).
IFS=';' read -ra arch_list <<<"$archs"
gencode=()
for a in "${arch_list[@]}"; do gencode+=("-gencode=arch=compute_$a,code=sm_$a"); done
flags=(-O3 -std=c++20 -DTORCH_TARGET_VERSION=0x020a000000000000 -DUSE_CUDA --expt-relaxed-constexpr
       -D__CUDA_NO_HALF_OPERATORS__ -D__CUDA_NO_HALF_CONVERSIONS__ -D__CUDA_NO_BFLOAT16_CONVERSIONS__
       -D__CUDA_NO_HALF2_OPERATORS__ "${gencode[@]}")

# compile SRC_ROOT OBJ_DIR: every instance matching the glob under SRC_ROOT/csrc/instances.
compile() {
  local src=$1 obj=$2
  mkdir -p "$obj"
  local todo=()
  for f in "$src"/csrc/instances/$glob; do
    [[ -e "$f" ]] || continue
    local o="$obj/$(basename "${f%.cu}").o"
    [[ -s "$o" ]] || todo+=("$f")
  done
  ((${#todo[@]})) || return 0
  echo "sass_diff: compiling ${#todo[@]} instances of $src ($jobs at a time)" >&2
  printf '%s\n' "${todo[@]}" | OBJ="$obj" SRC="$src" xargs -P "$jobs" -I{} bash -c \
    'f={}; o="$OBJ/$(basename "${f%.cu}").o"; "$0" "${@}" -I"$SRC/csrc" -c "$f" -o "$o.tmp" && mv "$o.tmp" "$o"' \
    "$nvcc" "${flags[@]}"
}

# The ref's csrc/ is extracted once and its objects kept, keyed by the tree of csrc/ (commits
# that leave csrc/ alone share them) and the flags.
tree=$(git rev-parse "$sha:csrc")
key=$(printf '%s\n' "$tree" "${flags[@]}" | sha1sum | cut -c1-12)
before=$work/before-${tree:0:12}-$key
if [[ ! -d "$before/src/csrc" ]]; then
  mkdir -p "$before/src"
  git archive "$sha" csrc | tar -x -C "$before/src"
fi
compile "$before/src" "$before/obj"
if [[ "${SASS_DIFF_PREPARE:-0}" == 1 ]]; then
  echo "sass_diff: objects of ${sha:0:12} ready in $before/obj"
  exit 0
fi
# The working tree's csrc/ is copied first, so that edits made during the compile do not mix
# in; its objects are kept while the copy and the flags still match.
after=$work/worktree
flags_key=$(printf '%s\n' "${flags[@]}" | sha1sum | cut -c1-12)
if [[ "$(cat "$after/key" 2>/dev/null)" != "$flags_key" ]] || ! diff -rq "$root/csrc" "$after/src/csrc" >/dev/null 2>&1; then
  rm -rf "$after"
  mkdir -p "$after/src"
  cp -r "$root/csrc" "$after/src/"
  echo "$flags_key" >"$after/key"
fi
compile "$after/src" "$after/obj"

# dump OBJ ARCH: the SASS of one arch, without a line that names the source file.
dump() {
  "$cuobjdump" -sass -arch "sm_$2" "$1" | grep -Ev '^[[:space:]]*identifier[[:space:]]*=' || true
}

same=0 differ=0 missing=0
for f in "$after"/src/csrc/instances/$glob; do
  [[ -e "$f" ]] || continue
  n=$(basename "${f%.cu}")
  for a in "${arch_list[@]}"; do
    b_sass=$(dump "$before/obj/$n.o" "$a" 2>/dev/null || true)
    a_sass=$(dump "$after/obj/$n.o" "$a")
    b_fn=$(grep -c 'Function :' <<<"$b_sass" || true)
    a_ins=$(grep -cE '^ +/\*[0-9a-f]{4,}\*/' <<<"$a_sass" || true)
    if [[ ! -s "$before/obj/$n.o" || "$b_fn" -eq 0 ]]; then
      echo "MISSING   $n sm_$a (no SASS at $ref)"; missing=$((missing + 1))
    elif [[ "$b_sass" == "$a_sass" ]]; then
      echo "identical $n sm_$a ($b_fn kernels, $a_ins instructions)"; same=$((same + 1))
    else
      echo "DIFFERS   $n sm_$a"; differ=$((differ + 1))
      { diff <(echo "$b_sass") <(echo "$a_sass") || true; } | head -20 | sed 's/^/    /' || true
    fi
  done
done
total=$((same + differ + missing))
echo "sass_diff ${sha:0:12}..worktree ($glob, sm_${archs//;/ sm_}): $same of $total identical, $differ differ, $missing missing"
[[ $differ -eq 0 && $missing -eq 0 && $total -gt 0 ]]
