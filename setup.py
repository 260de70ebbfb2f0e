"""Build of the stoicc CUDA extension (stoicc_ext/_C.abi3.so).

The extension is built against the LibTorch stable ABI (TORCH_TARGET_VERSION = 2.10) and the
Python limited API (Py_LIMITED_API = 3.10, which torch's BuildExtension sets), so one binary loads
on every torch >= 2.10 and every CPython >= 3.10 (wheel tag cp310-abi3).

Build variables:
  STOICC_CUDA_ARCHS   semicolon list of archs, default "80;86;89;90a" (90a enables Hopper-only PTX);
                      each gets SASS, and the oldest one that is not arch-specific ("a") also
                      gets PTX, which newer GPUs (sm_100, sm_120, ...) JIT-compile at load
  STOICC_PTX          0: no PTX (SASS only)
  STOICC_INSTANCES    comma list of instance-name substrings to compile (default: all); for fast
                      development builds, e.g. "m16_n128_k128" (the registry still lists every
                      instance; the ones not compiled report so when chosen)
  MAX_JOBS            parallel compile jobs (torch's variable)
  STOICC_PREBUILT_EXT path of an already built _C.abi3.so (built from these sources with the same
                      variables) to package instead of compiling; scripts/build_wheel.sh sets it
                      (unless --compile) once scripts/setup_env.sh has made the in-tree build current
"""
import glob
import os
import shutil

from setuptools import find_packages, setup
from torch.utils.cpp_extension import BuildExtension, CUDAExtension

ROOT = os.path.dirname(os.path.abspath(__file__))
TORCH_TARGET = "0x020a000000000000"  # torch 2.10: TORCH_BOX and the stable tensor API


def arch_flags():
    archs = [a.strip() for a in os.environ.get("STOICC_CUDA_ARCHS", "80;86;89;90a").split(";") if a.strip()]
    flags = []
    for a in archs:
        if not a.rstrip("a").isdigit() or int(a.rstrip("a")) < 80:
            raise SystemExit(f"STOICC_CUDA_ARCHS: '{a}' is not a supported arch (80, 86, 89, 90a, ...)")
    # PTX for the oldest portable arch: a GPU newer than every SASS in the binary JIT-compiles it
    # (the sm_80 path). Arch-specific targets ("90a") are not forward compatible, so never the PTX.
    portable = sorted((a for a in archs if not a.endswith("a")), key=int)
    ptx = portable[0] if portable and os.environ.get("STOICC_PTX", "1") != "0" else None
    for a in archs:
        code = f"[sm_{a},compute_{a}]" if a == ptx else f"sm_{a}"
        flags.append(f"-gencode=arch=compute_{a},code={code}")
    return flags


def sources():
    inst = sorted(glob.glob(os.path.join("csrc", "instances", "*.cu")))
    only = [s for s in os.environ.get("STOICC_INSTANCES", "").split(",") if s]
    if only:
        inst = [p for p in inst if any(s in os.path.basename(p) for s in only)]
        if not inst:
            raise SystemExit(f"STOICC_INSTANCES={only} matches no instance in csrc/instances")
    base = ["csrc/ops.cpp", "csrc/dispatch.cpp", "csrc/spmm_cpu.cpp", "csrc/densify.cu", "csrc/instances/registry.cpp",
            "csrc/manylinux_compat.cpp"]
    return base + inst


common = ["-O3", "-std=c++20", f"-DTORCH_TARGET_VERSION={TORCH_TARGET}", "-DUSE_CUDA"]
ext = CUDAExtension(
    name="stoicc_ext._C",
    sources=sources(),
    include_dirs=[os.path.join(ROOT, "csrc")],
    extra_compile_args={
        "cxx": common + ["-DTORCH_STABLE_ONLY"],
        "nvcc": common + ["-lineinfo", "--expt-relaxed-constexpr", "-Xptxas=-warn-spills"] + arch_flags(),
    },
    py_limited_api=True,
)


class BuildExt(BuildExtension.with_options(use_ninja=True)):
    """torch's build_ext; with STOICC_PREBUILT_EXT it packages that binary instead of compiling."""

    def build_extension(self, ext):
        prebuilt = os.environ.get("STOICC_PREBUILT_EXT")
        if not prebuilt:
            return super().build_extension(ext)
        if not os.path.isfile(prebuilt):
            raise SystemExit(f"STOICC_PREBUILT_EXT={prebuilt}: no such file")
        dest = self.get_ext_fullpath(ext.name)
        os.makedirs(os.path.dirname(dest), exist_ok=True)
        print(f"stoicc: packaging the prebuilt {prebuilt} as {dest} (STOICC_PREBUILT_EXT)")
        shutil.copyfile(prebuilt, dest)


# Metadata (name, version, license, classifiers, extras) is in pyproject.toml.
setup(
    packages=find_packages(include=["stoicc_ext", "stoicc_ext.*"]),
    # the manifest and py.typed; include_package_data adds the data files MANIFEST.in lists in
    # subpackages too
    package_data={"stoicc_ext": ["instances.json", "py.typed"]},
    include_package_data=True,
    ext_modules=[ext],
    cmdclass={"build_ext": BuildExt},
    options={"bdist_wheel": {"py_limited_api": "cp310"}},
)
