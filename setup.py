"""Build of the stoicc CUDA extension (stoicc_ext/_C.abi3.so).

The extension is built against the LibTorch stable ABI (TORCH_TARGET_VERSION = 2.10) and the
Python limited API, so one binary loads on every torch >= 2.10 and every CPython >= 3.9.

Build variables:
  STOICC_CUDA_ARCHS   semicolon list of archs, default "80;86;89;90a" (90a enables Hopper-only PTX)
  STOICC_INSTANCES    comma list of instance-name substrings to compile (default: all); for fast
                      development builds, e.g. "m16_n128_k128" (the registry still lists every
                      instance; the ones not compiled report so when chosen)
  MAX_JOBS            parallel compile jobs (torch's variable)
"""
import glob
import importlib.util
import os

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
        flags.append(f"-gencode=arch=compute_{a},code=sm_{a}")
    return flags


def cutlass_includes():
    """CUTLASS/CuTe headers from the nvidia-cutlass package (a build requirement), located
    without importing it (its imports need packages we do not install)."""
    spec = importlib.util.find_spec("cutlass_library")
    if spec is None or not spec.origin:
        raise SystemExit("nvidia-cutlass is not installed: pip install --no-deps nvidia-cutlass")
    base = os.path.join(os.path.dirname(spec.origin), "source")
    return [os.path.join(base, "include"), os.path.join(base, "tools", "util", "include")]


def sources():
    inst = sorted(glob.glob(os.path.join("csrc", "instances", "spmm_*.cu")))
    only = [s for s in os.environ.get("STOICC_INSTANCES", "").split(",") if s]
    if only:
        inst = [p for p in inst if any(s in os.path.basename(p) for s in only)]
        if not inst:
            raise SystemExit(f"STOICC_INSTANCES={only} matches no instance in csrc/instances")
    base = ["csrc/ops.cpp", "csrc/dispatch.cpp", "csrc/spmm_cpu.cpp", "csrc/densify.cu", "csrc/instances/registry.cpp"]
    return base + inst


common = ["-O3", "-std=c++20", f"-DTORCH_TARGET_VERSION={TORCH_TARGET}", "-DUSE_CUDA"]
ext = CUDAExtension(
    name="stoicc_ext._C",
    sources=sources(),
    include_dirs=[os.path.join(ROOT, "csrc")] + cutlass_includes(),
    extra_compile_args={
        "cxx": common + ["-DTORCH_STABLE_ONLY"],
        "nvcc": common + ["-lineinfo", "--expt-relaxed-constexpr", "-Xptxas=-warn-spills"] + arch_flags(),
    },
    py_limited_api=True,
)

setup(
    name="stoicc",
    version=open(os.path.join(ROOT, "stoicc_ext", "_version.py")).read().split('"')[1],
    packages=find_packages(include=["stoicc_ext", "stoicc_ext.*"]),
    package_data={"stoicc_ext": ["instances.json"]},
    ext_modules=[ext],
    cmdclass={"build_ext": BuildExtension.with_options(use_ninja=True)},
    options={"bdist_wheel": {"py_limited_api": "cp39"}},
)
