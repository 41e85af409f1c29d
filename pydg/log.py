"""pydg's logging and its PYDG_* switches.

Everything pydg reports goes through `logging.getLogger("pydg")` (children: `pydg.jit`,
`pydg.plan`, `pydg.ptxas`), which is silent by default. An application that configures logging at
DEBUG sees every message. A PYDG_* switch raises its topic's messages to INFO and makes sure they
reach someone: if the application has configured no logging, pydg attaches one stderr handler.

Switches are read when used (not at import), so a test or a notebook can flip them at run time.
"""
from __future__ import annotations

import logging
import os
import sys
import threading

logger = logging.getLogger("pydg")
logger.addHandler(logging.NullHandler())

# The switches, with what each one turns on (README "Environment variables" documents them).
CACHE_DIR = "PYDG_CACHE_DIR"            # a path, not a switch
JIT_DEBUG = "PYDG_JIT_DEBUG"            # log every kernel compiled or loaded, with options and time
PRINT_CONFIGS = "PYDG_PRINT_CONFIGS"    # print the plan of each new shape at its first call
PTXAS_VERBOSE = "PYDG_PTXAS_VERBOSE"    # print ptxas's report of each kernel
PTXAS_CHECK = "PYDG_PTXAS_CHECK"        # raise when a kernel spills or uses local memory
DUMP_PTX = "PYDG_DUMP_PTX"              # write <key>.ptx next to the cache entry
DUMP_SASS = "PYDG_DUMP_SASS"            # write <key>.sass next to the cache entry
SWITCHES = (JIT_DEBUG, PRINT_CONFIGS, PTXAS_VERBOSE, PTXAS_CHECK, DUMP_PTX, DUMP_SASS)

_OFF = ("", "0", "false", "no", "off")
_visible_lock = threading.Lock()
_visible = False


def enabled(switch: str) -> bool:
    """True when the environment variable is set to anything but empty/0/false/no/off."""
    return os.environ.get(switch, "").strip().lower() not in _OFF


def _make_visible() -> None:
    """Let INFO messages of pydg through, to the application's handlers or else to stderr."""
    global _visible
    if _visible:
        return
    with _visible_lock:
        if _visible:
            return
        if logger.getEffectiveLevel() > logging.INFO:
            logger.setLevel(logging.INFO)  # an application logging at DEBUG keeps its level
        if not logging.getLogger().handlers:
            handler = logging.StreamHandler(sys.stderr)
            handler.setFormatter(logging.Formatter("%(name)s: %(message)s"))
            logger.addHandler(handler)
        _visible = True


def report(switch: str, topic: logging.Logger, message: str, *args) -> None:
    """Log at INFO (and make it visible) when `switch` is on, else at DEBUG."""
    if enabled(switch):
        _make_visible()
        topic.info(message, *args)
    else:
        topic.debug(message, *args)


jit_logger = logging.getLogger("pydg.jit")
plan_logger = logging.getLogger("pydg.plan")
ptxas_logger = logging.getLogger("pydg.ptxas")


def warn(topic: logging.Logger, message: str, *args) -> None:
    """A problem with something a switch asked for (a dump that cannot be written): always shown."""
    _make_visible()
    topic.warning(message, *args)
