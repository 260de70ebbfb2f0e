"""The compiled kernel instances: the manifest (stoicc_ext/instances.json, written by
csrc/generate_instances.py) checked against the registry compiled into the binary."""
import functools
import json
import os
from typing import NamedTuple

import torch

from ._library import extension_loaded

MANIFEST_PATH = os.path.join(os.path.dirname(os.path.abspath(__file__)), "instances.json")
# ScheduleId (csrc/common.h) by value.
SCHEDULE_NAMES = ("sequential", "split_k", "stream_k")


class InstanceInfo(NamedTuple):
    """One instance as the binary's registry describes it (``torch.ops.stoicc.instance_info``)."""
    block_m: int
    block_n: int
    block_k: int
    warps_n: int
    warps_m: int
    stages: int
    schedule: str       # "sequential", "split_k" or "stream_k"
    min_sm: int         # lowest compute capability, major * 10 + minor
    smem_bytes: int     # dynamic shared memory per CTA
    compiled: bool      # False: this build left it out (STOICC_INSTANCES)


def instance_info(index):
    """The registry's record of instance ``index`` (an ``InstanceInfo``)."""
    v = torch.ops.stoicc.instance_info(index)
    return InstanceInfo(*v[:6], SCHEDULE_NAMES[v[6]], v[7], v[8], bool(v[9]))


@functools.lru_cache(maxsize=None)
def manifest():
    """The manifest as a dict: generator, manifest_hash, instances (list of dicts)."""
    with open(MANIFEST_PATH) as f:
        return json.load(f)


def list_instances(compiled_only=True):
    """Instance dicts (index, name, BLOCK_M/N/K, num_warps, num_stages, schedule, why, ...).

    Raises RuntimeError if the binary was built from another instance list than the manifest,
    which would make instance indices point at the wrong kernels.
    """
    man = manifest()
    out = []
    if extension_loaded:
        binary_hash = torch.ops.stoicc.manifest_hash()
        if binary_hash != man["manifest_hash"]:
            raise RuntimeError(
                f"stoicc_ext: the compiled extension (instance hash {binary_hash}) does not match "
                f"instances.json ({man['manifest_hash']}); rebuild with pip install .")
    for entry in man["instances"]:
        e = dict(entry)
        e["compiled"] = bool(extension_loaded and instance_info(e["index"]).compiled)
        if e["compiled"] or not compiled_only:
            out.append(e)
    return out
