"""Third-party log lines that say nothing to a cai user, kept out of a command's stderr.

Every ``cai`` command, and every step process ``cai run`` starts, runs inside
:func:`quiet_libraries`: vLLM, transformers, datasets, TRL and accelerate log errors only, torch's
C++ log too (vLLM's CPU worker warns through it about NUMA binding). Errors stay visible, and so
do Python warnings: the two known to be harmless are ignored where they arise (TRL's vLLM version
check in :mod:`cai.train`, torch's ``reduce_op`` in :mod:`cai.backends.vllm`).
``cai --verbose`` or ``CAI_VERBOSE=1`` leaves the libraries as they are; an environment variable
the user set (``VLLM_LOGGING_LEVEL=INFO``) wins either way.

Most of this must happen before the libraries are imported, hence environment variables: they
also reach the step processes, which import the libraries afresh. Everything is put back when
the command returns, so a program (or a test) that calls ``cai.cli.main`` keeps its own settings.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
from typing import Iterator

from cai.env_flags import set_on

VERBOSE_ENV = "CAI_VERBOSE"

# Read when a library is imported (torch's C++ log) or first configures its logging (vLLM when its
# engine starts, transformers and datasets at their first log line).
ENV = {
    "VLLM_LOGGING_LEVEL": "ERROR",
    "TORCH_CPP_LOG_LEVEL": "ERROR",
    "TRANSFORMERS_VERBOSITY": "error",
    "DATASETS_VERBOSITY": "error",
}
# The Python loggers, for a library already imported when the command starts, and for lines logged
# before the library configures itself: vLLM's import-time "Triton is installed, but doesn't
# include CPU backend" reaches Python's last-resort handler, which only the logger's level stops.
# Each follows the environment variable above where there is one, so a user's own level wins.
LOGGERS = {"vllm": "VLLM_LOGGING_LEVEL", "transformers": "TRANSFORMERS_VERBOSITY", "datasets": "DATASETS_VERBOSITY",
           "trl": None, "accelerate": None}


def verbose_requested() -> bool:
    """``CAI_VERBOSE`` is set to something other than empty, 0, false, no or off."""
    return set_on(VERBOSE_ENV)


def third_party_bars() -> bool:
    """Whether a library's own progress bar (vLLM loading weights) may draw: on a terminal, where a
    bar redraws in place; in a log file each redraw is a line. ``--verbose`` shows them anyway, unless
    ``cai run --no-progress`` (``CAI_PROGRESS``) said otherwise."""
    from cai.progress import PROGRESS_ENV, bars_wanted

    if os.environ.get(PROGRESS_ENV, "").strip():
        return bars_wanted()
    return sys.stderr.isatty() or verbose_requested()


@contextlib.contextmanager
def quiet_libraries(verbose: bool = False) -> Iterator[None]:
    """Run the body with third-party logs at errors only (see the module's docstring); with
    ``verbose`` (or ``CAI_VERBOSE`` set) change nothing but pass ``CAI_VERBOSE=1`` on to step
    processes. The environment and logger levels are restored on exit."""
    if verbose:
        with env_vars({VERBOSE_ENV: "1"}, override=True):
            yield
    elif verbose_requested():
        yield
    else:
        with env_vars(ENV), _logger_levels():
            yield


@contextlib.contextmanager
def env_vars(values: dict[str, str], *, override: bool = False) -> Iterator[None]:
    """Set the variables (only those the user has not set, unless ``override``); restore them after."""
    before = {k: os.environ.get(k) for k in values if override or k not in os.environ}
    os.environ.update({k: values[k] for k in before})
    try:
        yield
    finally:
        for k, old in before.items():
            if old is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = old


@contextlib.contextmanager
def _logger_levels() -> Iterator[None]:
    before = {name: logging.getLogger(name).level for name in LOGGERS}
    for name, env in LOGGERS.items():
        try:
            logging.getLogger(name).setLevel(((os.environ.get(env) if env else "") or "ERROR").upper())
        except ValueError:  # not a level name ("detail"): the library says so itself
            pass
    try:
        yield
    finally:
        for name, level in before.items():
            logging.getLogger(name).setLevel(level)


@contextlib.contextmanager
def no_weights_bar(enabled: bool = True) -> Iterator[None]:
    """transformers' per-tensor "Loading weights" bar turned off while a local folder loads: it only
    adds noise above the output (and a redraw per tensor in a log). The setting is put back after."""
    from transformers.utils import logging as hf_logging

    bars = enabled and hf_logging.is_progress_bar_enabled()
    if bars:
        hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        if bars:
            hf_logging.enable_progress_bar()
