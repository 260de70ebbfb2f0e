"""What every result file of the benchmarks records about its run: the commit (``STOICC_COMMIT``
where the tree has no .git, as on the GPU machine; else ``git rev-parse`` in this repository,
wherever the script was started from), the date, the file-name tag of a GPU, and the GPU's
datasheet tensor-core peaks."""
import datetime
import json
import os
import subprocess

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# Datasheet fp16/bf16 tensor-core peaks in TFLOP/s (dense, 2:4 sparse), without sparsity
# "up to" rounding, keyed by a substring of torch.cuda.get_device_name(); the first match wins
# (so the more specific names come first). Figures from NVIDIA's product datasheets (SXM parts at
# their boost clock); they are the ceilings the tables' "fraction of peak" columns divide by,
# not measurements.
DATASHEET_PEAK_TFLOPS = (
    ("H200", (989.4, 1978.9)),          # H200 SXM (H200 NVL: 835 / 1671, not lent here)
    ("H100 NVL", (835.0, 1671.0)),
    ("H100 PCIe", (756.0, 1513.0)),
    ("H100", (989.4, 1978.9)),          # H100 SXM5 80GB HBM3
    ("A100", (312.0, 624.0)),
    ("L40S", (362.1, 733.0)),
)


def commit():
    if os.environ.get("STOICC_COMMIT"):
        return os.environ["STOICC_COMMIT"]
    # Only this tree's own .git: a copy without one (git archive on the GPU machine) would
    # otherwise get the commit of whatever repository encloses it, which is not the code that ran.
    if not os.path.exists(os.path.join(REPO, ".git")):
        return "unknown"
    return subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                          cwd=REPO).stdout.strip() or "unknown"


def today():
    return datetime.date.today().isoformat()


def gpu_tag(gpu, suffix=""):
    """``NVIDIA H100 80GB HBM3`` -> ``H100_80GB_HBM3`` (+ ``_suffix``): the result file names' tag."""
    tag = gpu.replace("NVIDIA ", "").replace(" ", "_").replace("/", "_")
    return f"{tag}_{suffix}" if suffix else tag


def peak_tflops(gpu):
    """(dense, 2:4 sparse) datasheet fp16 tensor-core TFLOP/s of the GPU named ``gpu``, or
    (None, None) for a GPU not in ``DATASHEET_PEAK_TFLOPS``."""
    for key, peaks in DATASHEET_PEAK_TFLOPS:
        if key in gpu:
            return peaks
    return None, None


def write_tables(out_dir, name, data, markdown):
    """``<name>.json`` (``data``) and ``<name>.md`` (``markdown(data, json file name)``) in
    ``out_dir``: the pair every benchmark writes. Returns the path without extension."""
    os.makedirs(out_dir, exist_ok=True)
    base = os.path.join(out_dir, name)
    with open(base + ".json", "w") as f:
        json.dump(data, f, indent=1)
    with open(base + ".md", "w") as f:
        f.write(markdown(data, name + ".json"))
    return base
