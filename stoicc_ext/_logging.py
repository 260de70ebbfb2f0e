"""Messages and progress: every module logs to a child of ``logging.getLogger("stoicc")``, which
has only a ``NullHandler``, so library calls print nothing unless the application configures
logging (``logging.basicConfig(level=logging.INFO)``, or the ``stoicc`` command line does) or a
call is asked to (``verbose=True``). Genuine user warnings stay ``warnings.warn``.

Progress bars use ``tqdm`` when it is installed and stderr is a terminal (``progress=None``), or
when asked (``progress=True``); ``progress=False`` never shows one. Without ``tqdm`` there is no
bar.
"""
from __future__ import annotations

import contextlib
import logging
import sys
from typing import Any, Callable, Iterable, Iterator

__all__ = ["logger", "get_logger", "emitter", "progress"]

logger = logging.getLogger("stoicc")
if not any(isinstance(h, logging.NullHandler) for h in logger.handlers):
    logger.addHandler(logging.NullHandler())


def get_logger(name: str) -> logging.Logger:
    """``logging.getLogger("stoicc.<name>")``."""
    return logging.getLogger(f"stoicc.{name}")


def _shown(log: logging.Logger, level: int) -> bool:
    """Whether a record of ``level`` on ``log`` reaches a real handler (not a NullHandler)."""
    if not log.isEnabledFor(level):
        return False
    cur = log
    while cur is not None:
        if any(not isinstance(h, logging.NullHandler) and h.level <= level for h in cur.handlers):
            return True
        if not cur.propagate:
            break
        cur = cur.parent
    return False


def _write(msg: str) -> None:
    tqdm = _tqdm()
    if tqdm is not None and getattr(tqdm, "_instances", None):
        tqdm.write(msg, file=sys.stderr)
    else:
        print(msg, file=sys.stderr, flush=True)


def emitter(log: logging.Logger, verbose: bool) -> Callable[..., None]:
    """``emit(msg, level=logging.INFO)``: log ``msg``; with ``verbose`` it is printed on stderr
    when logging would not show it."""
    def emit(msg: str, level: int = logging.INFO) -> None:
        if verbose and not _shown(log, level):
            _write(msg)
        else:
            log.log(level, msg)
    return emit


def _tqdm():
    try:
        from tqdm.auto import tqdm
    except ImportError:
        return None
    return tqdm


def _isatty() -> bool:
    try:
        return sys.stderr.isatty()
    except (AttributeError, ValueError):
        return False


@contextlib.contextmanager
def progress(items: Iterable[Any], *, total: int | None = None, enabled: bool | None = None, desc: str = "",
             unit: str = "it") -> Iterator[Iterable[Any]]:
    """``with progress(items, enabled=...) as it: for x in it: ...``: a tqdm bar over ``items``
    (``enabled=None``: when stderr is a terminal), or ``items`` as they are. While the bar is up,
    the ``stoicc`` logger's console output goes through ``tqdm.write`` so lines do not break it."""
    tqdm = _tqdm()
    if enabled is None:
        enabled = _isatty()
    if not enabled or tqdm is None:
        yield items
        return
    bar = tqdm(items, total=total, desc=desc, unit=unit, file=sys.stderr, leave=False, dynamic_ncols=True)
    try:
        from tqdm.contrib.logging import logging_redirect_tqdm
        redirect = logging_redirect_tqdm(loggers=[logger, logging.getLogger()])
    except ImportError:
        redirect = contextlib.nullcontext()
    try:
        with redirect:
            yield bar
    finally:
        bar.close()
