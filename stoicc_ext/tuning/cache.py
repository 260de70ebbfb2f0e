"""The Inspector's tuning cache: in memory (per process) and on disk (one JSON file per key).

Key: the sha256 of a JSON "material" dict (library version, instance-manifest hash, GPU name
and SM count, dtype, M, N, K, tile-map fingerprint, schedules and config space; see
``Inspector._key_material``). A record holds the material (checked on load, so a hash
collision or a foreign file is never misread), the chosen candidate and the timings of every
candidate that was measured.

Disk layout: ``$STOICC_CACHE_DIR`` (default ``~/.cache/stoicc``) / ``<key>.json``. Writes go
to a temporary file in the same directory, then ``os.replace`` (atomic on POSIX and Windows),
so concurrent processes never see a half-written file; the last writer wins, and all writers
write equivalent content. A file that does not parse or does not match its key is ignored with
a warning, and the case is tuned again (the new record replaces it); so is one whose values no
tuning could have written (the Inspector checks that its choice is one of the problem's
candidates, and its timings numbers).

Environment: ``STOICC_CACHE_DIR``, ``STOICC_DISABLE_CACHE=1`` (no memory, no disk),
``STOICC_FORCE_RETUNE=1`` (ignore what is cached, tune, store the new result).
"""
import hashlib
import json
import os
import tempfile
import threading
import warnings

import torch

__all__ = ["CACHE_FORMAT", "cache_dir", "cache_disabled", "force_retune", "device_identity",
           "make_key", "lookup", "store", "clear_memory", "path_for"]

CACHE_FORMAT = 1
_MEMORY = {}
_LOCK = threading.Lock()
_TRUE = ("1", "true", "yes", "on")


def _jsonable(obj):
    """``obj`` as it looks after a JSON round trip (tuples -> lists, int keys -> str, other objects
    by repr): what a stored record holds, so comparisons with it are exact."""
    return json.loads(json.dumps(obj, sort_keys=True, default=repr))


def cache_dir():
    d = os.environ.get("STOICC_CACHE_DIR")
    if d:
        return os.path.abspath(os.path.expanduser(d))
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(base, "stoicc")


def cache_disabled():
    return os.environ.get("STOICC_DISABLE_CACHE", "").strip().lower() in _TRUE


def force_retune():
    return os.environ.get("STOICC_FORCE_RETUNE", "").strip().lower() in _TRUE


def device_identity(device):
    """(GPU name, SM count) of ``device`` (a torch.device); ("cpu", 0) for the CPU.

    Tests replace this function to simulate another GPU.
    """
    device = torch.device(device)
    if device.type != "cuda":
        return (device.type, 0)
    idx = device.index if device.index is not None else torch.cuda.current_device()
    p = torch.cuda.get_device_properties(idx)
    return (p.name, int(p.multi_processor_count))


def make_key(material):
    blob = json.dumps(material, sort_keys=True, separators=(",", ":"), default=repr)
    return hashlib.sha256(blob.encode()).hexdigest()


def path_for(key, directory=None):
    return os.path.join(directory or cache_dir(), f"{key}.json")


def clear_memory():
    with _LOCK:
        _MEMORY.clear()


def _valid(rec, key, material):
    if not isinstance(rec, dict):
        return "not a JSON object"
    if rec.get("format") != CACHE_FORMAT:
        return f"cache format {rec.get('format')!r}, expected {CACHE_FORMAT}"
    if rec.get("key") != key:
        return "key does not match the file name"
    if rec.get("material") != _jsonable(material):
        return "key material differs (hash collision or edited file)"
    if not isinstance(rec.get("choice"), dict) or not isinstance(rec.get("candidates"), list):
        return "missing choice or candidates"
    return None


def lookup(key, material, memory=True, disk=True, directory=None):
    """``(record, "memory" | "disk")`` or ``(None, None)``."""
    if memory:
        with _LOCK:
            rec = _MEMORY.get(key)
        if rec is not None:
            return rec, "memory"
    if not disk:
        return None, None
    path = path_for(key, directory)
    try:
        with open(path, encoding="utf-8") as f:
            rec = json.load(f)
    except FileNotFoundError:
        return None, None
    except (OSError, ValueError, UnicodeDecodeError) as e:
        warnings.warn(f"stoicc: ignoring unreadable tuning-cache file {path} ({type(e).__name__}: {e}); "
                      "tuning again", RuntimeWarning, stacklevel=3)
        return None, None
    bad = _valid(rec, key, material)
    if bad:
        warnings.warn(f"stoicc: ignoring tuning-cache file {path} ({bad}); tuning again",
                      RuntimeWarning, stacklevel=3)
        return None, None
    if memory:
        with _LOCK:
            _MEMORY[key] = rec
    return rec, "disk"


def store(key, material, record, memory=True, disk=True, directory=None):
    """Store ``record`` (a dict with ``choice`` and ``candidates``); returns the disk path or None."""
    rec = dict(record, format=CACHE_FORMAT, key=key, material=_jsonable(material))
    rec = json.loads(json.dumps(rec, default=repr))  # what a reader will see
    if memory:
        with _LOCK:
            _MEMORY[key] = rec
    if not disk:
        return None
    directory = directory or cache_dir()
    path = path_for(key, directory)
    tmp = None
    try:
        os.makedirs(directory, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{key[:16]}.", suffix=".tmp", dir=directory)
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            json.dump(rec, f, indent=1, sort_keys=True)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
        tmp = None
        return path
    except OSError as e:
        warnings.warn(f"stoicc: could not write the tuning cache in {directory} ({e}); "
                      "keeping the result in memory only", RuntimeWarning, stacklevel=3)
        return None
    finally:
        if tmp is not None:
            try:
                os.unlink(tmp)
            except OSError:
                pass
