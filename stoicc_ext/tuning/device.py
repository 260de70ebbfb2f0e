"""What tuning needs to know of a device: the properties the kernel choice reads and the L2 size
the timing protocol rotates weight copies past."""
import dataclasses

import torch


@dataclasses.dataclass(frozen=True)
class DeviceProps:
    name: str
    sm_count: int
    cc: int                  # compute capability, major * 10 + minor
    max_smem_optin: int      # bytes of shared memory one CTA may opt in to
    max_smem_per_sm: int
    l2_bytes: int
    index: int = None        # the CUDA device index; None for a described device (no GPU)
    # Whether arch-specific code (the sm_90a wgmma kernels, manifest exact_sm) may be chosen: a
    # choice made for this device must run wherever it is used.
    arch_specific: bool = True


# Candidates are enumerated for this device (an H100 SXM) when the weight is not on a GPU. A
# model converted without a GPU may be loaded on any GPU, so its choices leave out the sm_90a-only
# instances (they would fail on an A100 or an L4); tuned on an H100/H200, it gets them.
NOMINAL = DeviceProps(name="cpu", sm_count=132, cc=90, max_smem_optin=232448, max_smem_per_sm=233472,
                      l2_bytes=50 * 2 ** 20, arch_specific=False)


def device_props(device):
    """The properties of ``device`` (a torch.device); ``NOMINAL`` off the GPU."""
    if device.type != "cuda":
        return NOMINAL
    idx = device.index if device.index is not None else torch.cuda.current_device()
    p = torch.cuda.get_device_properties(idx)
    return DeviceProps(name=p.name, sm_count=int(p.multi_processor_count), cc=p.major * 10 + p.minor,
                       max_smem_optin=p.shared_memory_per_block_optin,
                       max_smem_per_sm=p.shared_memory_per_multiprocessor, l2_bytes=p.L2_cache_size, index=idx)
