"""What every result file of the benchmarks records about its run: the commit (``STOICC_COMMIT``
where the tree has no .git, as on the GPU machine; else ``git rev-parse`` in this repository,
wherever the script was started from), the date, and the file-name tag of a GPU."""
import datetime
import os
import subprocess

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def commit():
    return os.environ.get("STOICC_COMMIT") or subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, cwd=REPO).stdout.strip() or "unknown"


def today():
    return datetime.date.today().isoformat()


def gpu_tag(gpu, suffix=""):
    """``NVIDIA H100 80GB HBM3`` -> ``H100_80GB_HBM3`` (+ ``_suffix``): the result file names' tag."""
    tag = gpu.replace("NVIDIA ", "").replace(" ", "_").replace("/", "_")
    return f"{tag}_{suffix}" if suffix else tag
