#!/usr/bin/env python3
"""Writes the compiled kernel instances: one parameter-named .cu file per instance under
csrc/instances/, the C++ registry (csrc/instances/registry.cpp) and the manifest the Python
inspector enumerates (stoicc_ext/instances.json). The three come from the one list below, so
the set compiled and the set the inspector can pick cannot drift apart; a test checks that the
committed files match this script's output.

Run: python csrc/generate_instances.py   (then commit the output)

Each instance says why it exists. Keep the list to what wins somewhere: every instance costs
CI build time (x 2 dtypes x 4 archs).
"""
import hashlib
import json
import os
from dataclasses import dataclass

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
INST_DIR = os.path.join(HERE, "instances")
MANIFEST = os.path.join(ROOT, "stoicc_ext", "instances.json")


@dataclass(frozen=True)
class Instance:
    block_m: int
    block_n: int
    block_k: int
    warps_n: int
    warps_m: int
    stages: int
    schedule: str  # "sequential", "split_k" or "stream_k"
    why: str
    min_sm: int = 80  # mma.sp.sync m16n8k32 needs sm_80

    @property
    def name(self):
        return (f"spmm_m{self.block_m}_n{self.block_n}_k{self.block_k}_w{self.warps_n}x{self.warps_m}"
                f"_s{self.stages}_{SHORT[self.schedule]}")

    @property
    def smem_bytes(self):
        # per stage: one dense weight tile (a 2:4 tile uses 9/16 of it) + the X slice (unpadded,
        # swizzled rows); + 1 KiB to align the base to 1024 bytes. Must match SpmmKernel::kSmemBytes
        return self.stages * (2 * self.block_n * self.block_k + self.block_m * 2 * self.block_k) + 1024

    @property
    def tparams(self):
        return (f"{self.block_m}, {self.block_n}, {self.block_k}, {self.warps_n}, {self.warps_m}, {self.stages}, "
                f"{SCHED_ID[self.schedule]}")

    @property
    def num_warps(self):
        return self.warps_n * self.warps_m


I = Instance
INSTANCES = [
    # Decode (M <= 16): bound by weight bytes. Split-K spreads the few tile rows over all SMs.
    I(16, 128, 128, 4, 1, 4, "split_k", "decode: largest copies per stage, fewest CTAs; H100/A100 smem"),
    I(16, 128, 128, 4, 1, 3, "split_k", "decode: 128x128 with two CTAs per H100 SM (one drains while one streams)"),
    I(16, 128, 64, 4, 1, 4, "split_k", "decode: 128x64 tiles (PATCH sub-tile), fits sm_86/89 smem"),
    I(16, 64, 128, 4, 1, 4, "split_k", "decode: 64x128 tiles (PATCH sub-tile), twice the tile rows"),
    I(16, 64, 64, 4, 1, 6, "split_k", "decode: 64x64 tiles (finest PATCH sub-tile), deep pipeline"),
    I(16, 128, 128, 4, 1, 4, "sequential", "decode, sequential: large N where tile rows alone fill the GPU"),
    # Stream-K: the whole weight spread evenly over all SM slots, crossing tile rows. On the H100
    # sweep of random tile placements (bench/results) it did not beat split_k/sequential; kept
    # (two instances) for weights whose rows differ much in cost, where per-row splits idle SMs.
    I(16, 128, 128, 4, 1, 3, "stream_k", "decode: byte-balanced over all SMs, 2 CTAs/SM on H100"),
    I(16, 128, 64, 4, 1, 4, "stream_k", "decode: byte-balanced, 128x64 tiles"),
    # Small batches (M <= 64): still bandwidth-bound; one CTA covers all tokens. A CTA here is
    # bound by the latency of its per-item instruction stream, not by bytes in flight, so CTAs
    # per SM matter more than pipeline depth: 3 stages fit 3 CTAs per H100 SM where 4 fit 2
    # (H100 sweeps at 559700b+, bench/results/ab/swizzle_s3_H100.log, stages_s2_s3_H100.log:
    # 11008x4096 f = 1 M = 64 26.0 us vs 35.9 us with 4 stages, M = 32 22.4 vs 28.6 us). Listed
    # first so that the untuned heuristic (dispatch.cpp) prefers them on ties.
    I(32, 128, 64, 4, 1, 3, "split_k", "M in 17..32, 128x64 tiles: 3 CTAs per H100 SM"),
    I(64, 128, 64, 2, 2, 3, "split_k", "M in 33..64, 128x64 tiles, 2x2 warps: 3 CTAs per H100 SM"),
    I(32, 128, 128, 4, 1, 4, "split_k", "M in 17..32 with 128x128 tiles"),
    I(32, 128, 64, 4, 1, 4, "split_k", "M in 17..32 with 128x64 tiles (2 CTAs per SM; wins on 28672x8192)"),
    I(64, 64, 128, 4, 1, 4, "split_k", "M in 33..64 with 64x128 tiles"),
    # A 2x2 warp grid halves the shared-memory X traffic per item (each warp reads the X
    # fragments of its tokens for its rows: (warps along N) x BM x BK x 2 bytes). H100 A/B at
    # cf21921: 2-8 % faster than the 4x1 grid at M = 64 with 2:4 tiles (7 of 12 cases); the 2x2
    # variants for M = 32 and for 64x128 tiles never won by more than 1 % and were dropped. The
    # 4x1 M = 64 128x64 instance lost to 2x2 in every case of the later sweeps and was dropped.
    I(64, 128, 64, 2, 2, 4, "split_k", "M in 33..64, 128x64 tiles, 2x2 warps: half the X smem traffic"),
    # Stream-K for M in 17..64, where a CTA is issue-bound and uneven CTA counts per SM cost the
    # most (docs/kernels.md step 10). H200 A/B at daafb86: 4-9 % faster than the best split_k on
    # 28672x8192 and on 11008x4096 at f = 0.7; 10-60 % slower on the 4096-row shapes (the sweep
    # and the Inspector pick per shape).
    I(64, 128, 64, 2, 2, 4, "stream_k", "M in 33..64: byte-balanced over all SMs; wins on large N x K"),
    I(32, 128, 64, 4, 1, 4, "stream_k", "M in 17..32: byte-balanced over all SMs; wins on large N x K"),
    # Prefill (M >= 128): compute-bound on the mma.sync path; 8 warps, 64x32 warp tiles.
    I(128, 128, 64, 2, 4, 3, "sequential", "prefill: 128x64 tiles, 128 tokens per CTA"),
    I(128, 64, 128, 2, 4, 3, "sequential", "prefill: 64x128 tiles"),
    I(128, 128, 128, 2, 4, 2, "sequential", "prefill: 128x128 tiles, two stages to fit smem"),
    I(128, 64, 64, 2, 4, 4, "sequential", "prefill: 64x64 tiles"),
]

SCHED_ID = {"sequential": 0, "split_k": 1, "stream_k": 2}
SHORT = {"sequential": "seq", "split_k": "splitk", "stream_k": "streamk"}
HEADER = "// Auto-generated by csrc/generate_instances.py: do not edit.\n"


def instance_source(inst):
    return (HEADER + f"// {inst.why}\n"
            '#include "../kernels/spmm_kernel.cuh"\n\n'
            "namespace stoicc {\n"
            f"static_assert(SpmmKernel<__half, {inst.tparams}>::kSmemBytes == {inst.smem_bytes},\n"
            f"              \"generate_instances.py and the kernel disagree on shared memory\");\n"
            f"int launch_{inst.name}(const SpmmArgs& a, DType dt, void* stream) {{\n"
            f"  return launch_instance<{inst.tparams}>(a, dt, stream);\n"
            "}\n"
            f"bool uses_cluster_{inst.name}(DType dt) {{ return instance_uses_cluster<{inst.tparams}>(dt); }}\n"
            "}  // namespace stoicc\n")


def manifest_entries():
    return [dict(index=i, name=x.name, BLOCK_M=x.block_m, BLOCK_N=x.block_n, BLOCK_K=x.block_k,
                 warps_n=x.warps_n, warps_m=x.warps_m, num_warps=x.num_warps, num_stages=x.stages,
                 schedule=x.schedule, min_sm=x.min_sm, smem_bytes=x.smem_bytes, why=x.why)
            for i, x in enumerate(INSTANCES)]


def manifest_hash():
    blob = json.dumps(manifest_entries(), sort_keys=True).encode()
    return int.from_bytes(hashlib.sha256(blob).digest()[:8], "little") & 0x7FFFFFFFFFFFFFFF


def registry_source():
    lines = [HEADER, '#include "../common.h"\n\nnamespace stoicc {\n']
    for x in INSTANCES:
        # weak: a development build (STOICC_INSTANCES) compiles a subset; the others stay null
        lines.append(f"__attribute__((weak)) int launch_{x.name}(const SpmmArgs&, DType, void*);\n")
        lines.append(f"__attribute__((weak)) bool uses_cluster_{x.name}(DType);\n")
    lines.append("\nconst InstanceInfo kInstances[] = {\n")
    for x in INSTANCES:
        lines.append(f'    {{"{x.name}", {x.block_m}, {x.block_n}, {x.block_k}, {x.warps_n}, {x.warps_m}, '
                     f"{x.stages}, {SCHED_ID[x.schedule]}, {x.min_sm}, &launch_{x.name}, "
                     f"{x.smem_bytes}, &uses_cluster_{x.name}}},\n")
    lines.append("};\n")
    lines.append(f"const int kNumInstances = {len(INSTANCES)};\n")
    lines.append(f"const uint64_t kManifestHash = {manifest_hash()}ULL;\n")
    lines.append("}  // namespace stoicc\n")
    return "".join(lines)


def outputs():
    """{path: content} of everything this script writes."""
    out = {os.path.join(INST_DIR, x.name + ".cu"): instance_source(x) for x in INSTANCES}
    out[os.path.join(INST_DIR, "registry.cpp")] = registry_source()
    man = dict(generator="csrc/generate_instances.py", manifest_hash=manifest_hash(),
               instances=manifest_entries())
    out[MANIFEST] = json.dumps(man, indent=1) + "\n"
    return out


def main():
    os.makedirs(INST_DIR, exist_ok=True)
    want = outputs()
    for old in os.listdir(INST_DIR):
        p = os.path.join(INST_DIR, old)
        if p not in want:
            os.remove(p)
    for path, text in want.items():
        with open(path, "w") as f:
            f.write(text)
    print(f"wrote {len(INSTANCES)} instances, registry and manifest (hash {manifest_hash()})")


if __name__ == "__main__":
    main()
