"""The ``stoicc`` command line (also ``python -m stoicc_ext``).

    stoicc convert MODEL_DIR OUT --mask mask.npz        # PATCH mask -> compressed checkpoint
    stoicc convert MODEL_DIR OUT --prune 0.35           # one-shot PATCH-like pruning instead
    stoicc info OUT                                     # layers, tiles and bytes of a checkpoint
    stoicc cache list | clear | path                    # the tuning cache
    stoicc bench kernels|e2e [ARGS...]                  # the benchmarks (from a source checkout)
    stoicc version

Messages go to stderr through ``logging.getLogger("stoicc")`` (``-v`` for debug, ``-q`` for
warnings only); results (tables, JSON) to stdout. Heavy imports (transformers) wait until a
command needs them, and nothing touches a GPU before a command asks for one.
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import re
import shutil
import subprocess
import sys
import time
from typing import Any, Sequence

from ._version import __version__

__all__ = ["main", "build_parser"]

logger = logging.getLogger("stoicc.cli")

# files of a Hugging Face model directory that travel with the converted model
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "tokenizer.model",
                   "vocab.json", "merges.txt", "added_tokens.json", "chat_template.jinja", "chat_template.json")
_CACHE_FILE = re.compile(r"[0-9a-f]{64}\.json")
_CACHE_TMP = re.compile(r"\.[0-9a-f]{16}\..*\.tmp")


# ---- helpers ----------------------------------------------------------------------------------

class _StderrHandler(logging.StreamHandler):
    """Writes to the current ``sys.stderr`` (not the one at creation: tests and callers swap it)."""

    @property
    def stream(self):
        return sys.stderr

    @stream.setter
    def stream(self, value):
        pass


def _setup_logging(verbosity: int):
    """Console logging for one command; returns a function that undoes it."""
    level = logging.INFO if verbosity == 0 else (logging.DEBUG if verbosity > 0 else logging.WARNING)
    log, insp, sparsify = (logging.getLogger(n) for n in ("stoicc", "stoicc.inspector", "stoicc.sparsify"))
    saved = (log.level, insp.level, sparsify.level)
    log.setLevel(level)
    # the Inspector's line per inspect (and per candidate) only with -v / -vv; sparsify_'s lines
    # with -v (its summary is the command's output, on stdout)
    insp.setLevel(logging.WARNING if verbosity <= 0 else (logging.INFO if verbosity == 1 else logging.DEBUG))
    sparsify.setLevel(logging.WARNING if verbosity <= 0 else logging.DEBUG)
    h = _StderrHandler()
    h.setFormatter(logging.Formatter("%(message)s"))
    log.addHandler(h)

    def undo():
        log.removeHandler(h)
        log.setLevel(saved[0])
        insp.setLevel(saved[1])
        sparsify.setLevel(saved[2])
    return undo


def _mib(n: float) -> str:
    return f"{n / 2 ** 20:,.1f} MiB"


def _sparsity(text: str) -> float:
    """``0.35``, ``35`` or ``35%`` -> 0.35."""
    t = text.strip().rstrip("%")
    try:
        v = float(t)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a sparsity: {text!r} (e.g. 0.35 or 35%)") from None
    if text.strip().endswith("%") or v > 1:
        v /= 100
    if not 0 <= v <= 0.5:
        raise argparse.ArgumentTypeError(f"sparsity {text} is outside [0, 0.5] (50 %: every tile 2:4)")
    return v


def checkout_root() -> str | None:
    """The source checkout this package runs from (it has bench/), or None for an installed copy."""
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    ok = all(os.path.exists(os.path.join(root, "bench", f)) for f in ("__init__.py", "bench_kernels.py", "e2e.py"))
    return root if ok else None


# ---- convert ----------------------------------------------------------------------------------

def cmd_convert(args: argparse.Namespace) -> int:
    import torch

    import stoicc_ext as STOICC
    try:
        import transformers
    except ImportError:
        logger.error("stoicc convert needs transformers (pip install 'stoicc[hf]')")
        return 2
    if not STOICC.extension_loaded:
        logger.error("the stoicc extension is not loaded: %s", STOICC.extension_error)
        return 2
    if args.mask and args.prune is not None:
        logger.error("give --mask or --prune, not both")
        return 2
    out = os.fspath(args.out)
    single = out.endswith(".safetensors")
    if os.path.exists(out) and not args.overwrite:
        logger.error("%s exists (--overwrite replaces it)", out)
        return 2
    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    dtype = {"float16": torch.float16, "bfloat16": torch.bfloat16}[args.dtype]
    if device == "cpu":
        logger.warning("stoicc convert: no GPU; kernels are chosen by the heuristic, not timed, among those that run "
                       "on every GPU (convert on the GPU the model will serve on to tune for it)")
    t0 = time.perf_counter()
    logger.info("loading %s (%s) ...", args.model, args.dtype)
    model = transformers.AutoModelForCausalLM.from_pretrained(args.model, dtype=dtype,
                                                              trust_remote_code=args.trust_remote_code)
    model = model.to(device).eval()
    if args.mask:
        meta = STOICC.apply_patch_mask_(model, args.mask, strict=not args.lenient_mask)
        logger.info("applied %s%s", args.mask, f" ({meta.get('method')}, sparsity {meta.get('sparsity')})"
                    if meta else "")
    elif args.prune is not None:
        res = STOICC.prune_patch_oneshot_(model, args.prune)
        logger.info("pruned one-shot (PATCH-like, not PATCH) to %.1f %% sparsity: %d of %d tiles 2:4",
                    100 * res["sparsity"], res["tiles_24"], res["tiles"])
    else:
        logger.info("no --mask or --prune: converting the weights as they are (already pruned)")
    report = STOICC.sparsify_(model, decode_tokens=args.decode_tokens, prefill_tokens=args.prefill_tokens,
                              strict=args.strict, progress=False if args.no_progress else None)
    print(report.table() if args.verbose > 0 else report.summary())
    if not report.converted:
        logger.error("no layer was converted (see the report: are the weights pruned?); nothing written")
        return 1
    extra = dict(source=os.fspath(args.model), mask=os.fspath(args.mask) if args.mask else None,
                 prune=args.prune, device=device)
    if single:
        STOICC.save_compressed(model, out, extra_metadata=extra)
    else:
        if os.path.isfile(out):
            os.remove(out)
        STOICC.save_pretrained(model, out, max_shard_size=args.max_shard_size, extra_metadata=extra)
        if os.path.isdir(args.model):
            for f in TOKENIZER_FILES:
                if os.path.exists(os.path.join(args.model, f)):
                    shutil.copy2(os.path.join(args.model, f), os.path.join(out, f))
    if args.report:
        with open(args.report, "w", encoding="utf-8") as f:
            json.dump(report.to_dict(), f, indent=1)
    logger.info("wrote %s in %.0f s%s", out, time.perf_counter() - t0,
                "" if single else f" (load it with AutoModelForCausalLM.from_pretrained({out!r}) after "
                                  "import stoicc_ext)")
    return 0


# ---- info -------------------------------------------------------------------------------------

def _cfg(cfg: dict | None) -> str:
    if not cfg:
        return "-"
    if "instance" in cfg:
        s = cfg["instance"].replace("spmm_", "")
        return s + (f"/{cfg['SPLIT_K']}" if cfg.get("SPLIT_K", 1) != 1 else "")
    return str(cfg.get("schedule", "?"))


def cmd_info(args: argparse.Namespace) -> int:
    from .nn.pretrained import describe_checkpoint
    try:
        info = describe_checkpoint(args.checkpoint)
    except (OSError, ValueError) as e:
        logger.error("%s", e)
        return 1
    if args.json:
        print(json.dumps(info, indent=1))
        return 0
    layers = info["layers"]
    print(f"{info['path']}: stoicc checkpoint v{info['version']} (written by stoicc {info['library']}), "
          f"{len(info['files'])} file(s), {_mib(info['file_bytes'])}")
    if args.layers:
        w = max([len(r["name"]) for r in layers] + [5])
        print(f"{'layer':<{w}}  {'N x K':>11}  tile     2:4  dense  empty  {'MiB':>8}  of dense  decode / prefill")
        for r in layers:
            print(f"{r['name']:<{w}}  {r['N']:>5}x{r['K']:<5}  {r['tile']:<7} {r['tiles_24']:>4}  {r['tiles_dense']:>5}  "
                  f"{r['tiles_empty']:>5}  {r['bytes'] / 2 ** 20:>8.2f}  {r['bytes'] / max(r['dense_bytes'], 1):>8.3f}"
                  f"  {_cfg(r['cfg_decoding'])} / {_cfg(r['cfg_prefill'])}")
    tiles = sum(r["tiles"] for r in layers)
    t24 = sum(r["tiles_24"] for r in layers)
    td = sum(r["tiles_dense"] for r in layers)
    te = sum(r["tiles_empty"] for r in layers)
    pct = (lambda n: f"{100 * n / tiles:.1f} %") if tiles else (lambda n: "-")
    print(f"{len(layers)} stoicc layers, {tiles} tiles: 2:4 {t24} ({pct(t24)}), dense {td} ({pct(td)}), "
          f"empty {te} ({pct(te)})")
    print(f"bytes: stoicc layers {_mib(info['layer_bytes'])} ({info['layer_bytes'] / max(info['layer_dense_bytes'], 1):.3f}"
          f" of their dense {_mib(info['layer_dense_bytes'])}), other tensors {_mib(info['other_bytes'])}")
    if info["aliases"]:
        print("tied: " + ", ".join(f"{k} = {v}" for k, v in info["aliases"].items()))
    if not args.layers:
        print("(--layers: one row per layer)")
    return 0


# ---- cache ------------------------------------------------------------------------------------

def _cache_entries(directory: str) -> list[dict[str, Any]]:
    out = []
    try:
        names = sorted(os.listdir(directory))
    except FileNotFoundError:
        return out
    for f in names:
        if not _CACHE_FILE.fullmatch(f):
            continue
        path = os.path.join(directory, f)
        row = dict(key=f[:-5], path=path, bytes=os.path.getsize(path))
        try:
            with open(path, encoding="utf-8") as fh:
                rec = json.load(fh)
            mat, choice = rec.get("material", {}), rec.get("choice", {})
            row.update(gpu=mat.get("gpu"), dtype=mat.get("dtype"), M=mat.get("M"), N=mat.get("N"), K=mat.get("K"),
                       library=mat.get("library"), schedule=choice.get("schedule"),
                       config=_cfg(choice.get("config")), created=rec.get("created"),
                       tuning_s=rec.get("tuning_s"))
        except (OSError, ValueError, AttributeError) as e:
            row["error"] = f"{type(e).__name__}: {e}"
        out.append(row)
    return out


def cmd_cache(args: argparse.Namespace) -> int:
    from .tuning.cache import cache_dir, cache_disabled
    directory = cache_dir()
    if args.cache_cmd == "path":
        print(directory)
        return 0
    entries = _cache_entries(directory)
    if args.cache_cmd == "list":
        if args.json:
            print(json.dumps(dict(directory=directory, entries=entries), indent=1))
            return 0
        print(f"tuning cache {directory}: {len(entries)} record(s), {_mib(sum(e['bytes'] for e in entries))}"
              + (" (STOICC_DISABLE_CACHE is set: not used)" if cache_disabled() else ""))
        for e in entries:
            if "error" in e:
                print(f"  {e['key'][:12]}  unreadable ({e['error']})")
                continue
            when = time.strftime("%Y-%m-%d %H:%M", time.localtime(e["created"])) if e.get("created") else "?"
            print(f"  {e['key'][:12]}  {when}  {e['gpu']}  {e['dtype']}  M={e['M']} N={e['N']} K={e['K']}  "
                  f"-> {e['schedule']}: {e['config']}")
        return 0
    # clear
    tmp = []
    if os.path.isdir(directory):
        tmp = [f for f in os.listdir(directory) if _CACHE_TMP.fullmatch(f)]
    if not entries and not tmp:
        print(f"tuning cache {directory}: nothing to clear")
        return 0
    if args.dry_run:
        print(f"would remove {len(entries)} record(s) and {len(tmp)} temporary file(s) from {directory}")
        return 0
    if not args.yes and sys.stdin.isatty():
        answer = input(f"remove {len(entries)} tuning record(s) from {directory}? [y/N] ")
        if answer.strip().lower() not in ("y", "yes"):
            print("nothing removed")
            return 1
    removed = 0
    for f in [e["path"] for e in entries] + [os.path.join(directory, t) for t in tmp]:
        try:
            os.remove(f)
            removed += 1
        except FileNotFoundError:
            pass
    print(f"removed {removed} file(s) from {directory}")
    return 0


# ---- bench ------------------------------------------------------------------------------------

BENCHES = {"kernels": "bench.bench_kernels", "e2e": "bench.e2e"}


def cmd_bench(args: argparse.Namespace) -> int:
    root = checkout_root()
    module = BENCHES[args.which]
    if root is None:
        print(f"stoicc bench {args.which} runs `python -m {module}` from a source checkout: the benchmarks "
              "(bench/) are not part of the installed package. Clone the repository, install it there "
              "(bash scripts/setup_env.sh) and run `stoicc bench` or `python -m "
              f"{module}` from its root.", file=sys.stderr)
        return 2
    cmd = [sys.executable, "-m", module, *args.args]
    logger.debug("running %s in %s", " ".join(cmd), root)
    return subprocess.call(cmd, cwd=root)


# ---- version ----------------------------------------------------------------------------------

def cmd_version(args: argparse.Namespace) -> int:
    import torch

    import stoicc_ext as STOICC
    print(f"stoicc {__version__}")
    print(f"torch {torch.__version__} (CUDA {torch.version.cuda})")
    print("extension: " + ("loaded" if STOICC.extension_loaded else f"NOT loaded ({STOICC.extension_error})"))
    if STOICC.extension_loaded:
        try:
            n = len(STOICC.list_instances())
            print(f"kernel instances: {n}")
        except RuntimeError as e:
            print(f"kernel instances: {e}")
    try:
        import transformers
        print(f"transformers {transformers.__version__} (from_pretrained of stoicc checkpoints: yes)")
    except ImportError:
        print("transformers: not installed (pip install 'stoicc[hf]' for convert and from_pretrained)")
    from .tuning.cache import cache_dir
    print(f"tuning cache: {cache_dir()}")
    print(f"source checkout: {checkout_root() or 'no (installed package: stoicc bench is not available)'}")
    return 0


# ---- parser -----------------------------------------------------------------------------------

def build_parser() -> argparse.ArgumentParser:
    fmt = argparse.RawDescriptionHelpFormatter
    ap = argparse.ArgumentParser(prog="stoicc", formatter_class=fmt,
                                 description="stoicc: tile-sparse GEMM for PATCH-pruned LLMs. Convert Hugging Face "
                                             "models, inspect checkpoints, manage the tuning cache, run the "
                                             "benchmarks.",
                                 epilog="`stoicc COMMAND --help` for a command's options. Docs: docs/cli.md.")
    ap.add_argument("--version", action="version", version=f"stoicc {__version__}")
    ap.add_argument("-v", "--verbose", action="count", default=0, help="more output (-v: per-layer tables, debug log)")
    ap.add_argument("-q", "--quiet", action="store_true", help="warnings and errors only")
    sub = ap.add_subparsers(dest="cmd", metavar="COMMAND")

    c = sub.add_parser("convert", formatter_class=fmt,
                       help="convert a Hugging Face model directory into a compressed checkpoint",
                       description="Load a Hugging Face causal LM, prune it (a PATCH mask.npz, or one-shot "
                                   "PATCH-like pruning), convert its linears with sparsify_ (tuned on this GPU) and "
                                   "save it.\n\nOUT: a directory (sharded safetensors + config.json: "
                                   "AutoModelForCausalLM.from_pretrained(OUT) after `import stoicc_ext`), or a "
                                   "file ending in .safetensors (the single-file format: load_compressed).",
                       epilog="examples:\n"
                              "  stoicc convert ./Llama-2-7b-hf ./llama-7b-stoicc --mask ./mask.npz\n"
                              "  stoicc convert ./Llama-2-7b-hf ./llama-7b-35 --prune 35%\n"
                              "  stoicc convert ./pruned-model ./pruned.stoicc.safetensors")
    c.add_argument("model", help="Hugging Face model directory (or hub id)")
    c.add_argument("out", help="output directory, or a .safetensors file")
    c.add_argument("--mask", help="PATCH mask.npz to apply first")
    c.add_argument("--lenient-mask", action="store_true",
                   help="skip mask entries naming no parameter (with a warning) instead of failing")
    c.add_argument("--prune", type=_sparsity, metavar="SPARSITY",
                   help="one-shot PATCH-like pruning to this global sparsity (0.35 or 35%%; at most 50%%)")
    c.add_argument("--dtype", choices=("float16", "bfloat16"), default="float16")
    c.add_argument("--device", help="where to convert and tune (default: cuda if available, else cpu)")
    c.add_argument("--decode-tokens", type=int, default=16, help="M the decode kernels are tuned at (default 16)")
    c.add_argument("--prefill-tokens", type=int, default=16 * 128,
                   help="M the prefill kernels are tuned at (default 2048)")
    c.add_argument("--max-shard-size", default="5GB", help="largest safetensors shard (default 5GB)")
    c.add_argument("--report", metavar="FILE.json", help="write the per-layer conversion report as JSON")
    c.add_argument("--strict", action="store_true", help="fail on a layer that cannot be converted")
    c.add_argument("--no-progress", action="store_true", help="no progress bar")
    c.add_argument("--overwrite", action="store_true", help="replace OUT if it exists")
    c.add_argument("--trust-remote-code", action="store_true", help="passed to from_pretrained")
    c.set_defaults(func=cmd_convert)

    i = sub.add_parser("info", help="show a checkpoint's layers, tiles and bytes",
                       description="What a stoicc checkpoint (a directory or a .safetensors file) holds, read from "
                                   "the safetensors headers only: per layer its tiles (2:4 / dense / empty), bytes "
                                   "and kernels; totals.")
    i.add_argument("checkpoint")
    i.add_argument("--layers", action="store_true", help="one row per layer")
    i.add_argument("--json", action="store_true", help="everything as JSON")
    i.set_defaults(func=cmd_info)

    k = sub.add_parser("cache", help="list or clear the tuning cache",
                       description="The Inspector's tuning cache ($STOICC_CACHE_DIR, default ~/.cache/stoicc): one "
                                   "JSON record per tuned (GPU, dtype, M, N, K, tile map).")
    ksub = k.add_subparsers(dest="cache_cmd", metavar="ACTION", required=True)
    kl = ksub.add_parser("list", help="the cached tuning records")
    kl.add_argument("--json", action="store_true")
    kc = ksub.add_parser("clear", help="remove every tuning record (nothing else in the directory)")
    kc.add_argument("-y", "--yes", action="store_true", help="do not ask")
    kc.add_argument("--dry-run", action="store_true", help="say what would be removed")
    ksub.add_parser("path", help="print the cache directory")
    k.set_defaults(func=cmd_cache)

    b = sub.add_parser("bench", formatter_class=fmt, help="run the kernel or end-to-end benchmark",
                       description="Runs `python -m bench.bench_kernels` (kernels) or `python -m bench.e2e` (e2e) "
                                   "from the source checkout, passing ARGS on; they need a GPU to time anything "
                                   "(e2e without one: a dry run on a tiny model).",
                       epilog="examples:\n  stoicc bench kernels --quick\n  stoicc bench e2e --full\n"
                              "  stoicc bench e2e --help")
    b.add_argument("which", choices=sorted(BENCHES))
    b.add_argument("args", nargs=argparse.REMAINDER, help="arguments of the benchmark (its --help lists them)")
    b.set_defaults(func=cmd_bench)

    v = sub.add_parser("version", help="versions, extension, GPU support, cache directory")
    v.set_defaults(func=cmd_version)
    return ap


def main(argv: Sequence[str] | None = None) -> int:
    ap = build_parser()
    args = ap.parse_args(argv)
    if args.cmd is None:
        ap.print_help()
        return 2
    undo_logging = _setup_logging(-1 if args.quiet else args.verbose)
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except (FileNotFoundError, ValueError, KeyError, TypeError) as e:
        if args.verbose > 0:
            raise
        logger.error("stoicc %s: %s: %s (-v for the traceback)", args.cmd, type(e).__name__, e)
        return 1
    finally:
        undo_logging()


if __name__ == "__main__":
    sys.exit(main())
