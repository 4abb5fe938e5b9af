"""TCMalloc for the ``cai`` command's process on Linux, where one is installed.

vLLM's CPU backend asks for TCMalloc in ``LD_PRELOAD`` (it warns "libtcmalloc is not found in
LD_PRELOAD" otherwise). On a 2-core AMD EPYC the quickstart's PPO step took 0.84x the time with it
and the whole run 0.81x the peak memory (bench/RESULTS.md, "TCMalloc"). The dynamic loader reads
``LD_PRELOAD`` only when a process starts, so the ``cai`` command starts itself once more with it
set, before it has imported anything heavy; the child processes it starts (``cai run``'s steps)
inherit it. Where no TCMalloc is installed (``make setup`` installs Debian's
``libtcmalloc-minimal4`` when it may), cai runs on the C library's allocator as before.

``CAI_TCMALLOC=0`` keeps the C library's allocator; ``CAI_TCMALLOC=/path/libtcmalloc.so`` names
another build. A user's own ``LD_PRELOAD`` that already names an allocator is left alone.
Programs that are not Python (the report's Chromium) are started without it: :func:`without_preload`.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Mapping

from cai.env_flags import env_switch

ENV = "CAI_TCMALLOC"
# Debian/Ubuntu (x86-64, arm64), Fedora/RHEL, and local builds.
LIB_DIRS = ("/usr/lib/x86_64-linux-gnu", "/usr/lib/aarch64-linux-gnu", "/usr/lib64", "/usr/lib", "/usr/local/lib")
LIB_NAMES = ("libtcmalloc_minimal.so.4", "libtcmalloc.so.4")
# Allocators a user may have preloaded already: cai adds none beside them.
ALLOCATORS = ("libtcmalloc", "libjemalloc", "libmimalloc")


def find_tcmalloc(dirs: tuple[str, ...] = LIB_DIRS) -> str | None:
    """The first TCMalloc library in ``dirs``, or None."""
    for folder in dirs:
        for name in LIB_NAMES:
            path = Path(folder) / name
            if path.is_file():
                return str(path)
    return None


def preload_env(environ: Mapping[str, str], *, platform: str = sys.platform,
                dirs: tuple[str, ...] = LIB_DIRS) -> dict[str, str] | None:
    """The environment to start cai again with, TCMalloc in ``LD_PRELOAD``; None where there is
    nothing to do: not Linux, ``CAI_TCMALLOC=0``, an allocator already preloaded (so the restarted
    process does not restart again), none installed. ValueError: ``CAI_TCMALLOC`` names no library,
    or says 1 where none is installed."""
    choice, switch = environ.get(ENV, "").strip(), env_switch(ENV, environ)
    if not platform.startswith("linux") or switch is False:
        return None
    current = environ.get("LD_PRELOAD", "")
    named = _named(environ)
    # A named library need not carry an allocator's name (/opt/tc.so): without its own check the
    # restarted process would not see it in LD_PRELOAD and start itself again, for ever.
    if any(name in current for name in ALLOCATORS) or (named and named in current.split(":")):
        return None
    if named and not Path(named).is_file():
        raise ValueError(f"{ENV}={choice}: no such file; set {ENV} to a libtcmalloc*.so's path, "
                         f"or to 1 or 0 (also true/false, yes/no, on/off)")
    if named and not _is_elf(named):
        raise ValueError(f"{ENV}={choice}: not a shared library; name a libtcmalloc*.so, or set {ENV}=0")
    lib = named or find_tcmalloc(dirs)
    if not lib:
        if switch:
            raise ValueError(f"{ENV}={choice}: no TCMalloc found in {', '.join(dirs)}; install one "
                             f"(Debian: libtcmalloc-minimal4) or set {ENV} to its path")
        return None
    env = dict(environ)
    env["LD_PRELOAD"] = f"{lib}:{current}" if current else lib
    return env


def _named(environ: Mapping[str, str]) -> str | None:
    """The library ``CAI_TCMALLOC`` names (not an on/off word), absolute: the loader finds a bare
    name only in its own folders, and the restarted process compares paths."""
    choice = environ.get(ENV, "").strip()
    return os.path.abspath(choice) if choice and env_switch(ENV, environ) is None else None


def _is_elf(path: str) -> bool:
    try:
        with open(path, "rb") as f:
            return f.read(4) == b"\x7fELF"
    except OSError:
        return False


def restart_with_tcmalloc() -> None:
    """Start this process's command again with TCMalloc preloaded (never returns), or do nothing.
    Only for the ``cai`` command itself: ``sys.orig_argv`` runs the same program with the same
    arguments, whether it came in as the ``cai`` script or as ``python -m cai``."""
    try:
        env = preload_env(os.environ)
    except ValueError as e:
        print(f"cai: warning: {e}; running on the C library's allocator", file=sys.stderr)
        return
    argv = getattr(sys, "orig_argv", None)
    if env is None or not argv:
        return
    sys.stdout.flush()
    sys.stderr.flush()
    try:
        os.execve(sys.executable, argv, env)
    except OSError:  # an interpreter that cannot be started again this way: carry on as we are
        return


def without_preload(environ: Mapping[str, str]) -> dict[str, str]:
    """``environ`` with every allocator of ``ALLOCATORS`` taken out of ``LD_PRELOAD`` (cai's TCMalloc,
    the one ``CAI_TCMALLOC`` names, or one the user preloaded), for programs that bring their own (Chromium)."""
    env = dict(environ)
    own = _named(environ)
    kept = [p for p in env.get("LD_PRELOAD", "").split(":")
            if p and p != own and not any(a in p for a in ALLOCATORS)]
    if kept:
        env["LD_PRELOAD"] = ":".join(kept)
    else:
        env.pop("LD_PRELOAD", None)
    return env


def active() -> str:
    """The allocator this process runs on, as ``cai --version`` reports it."""
    try:
        maps = Path("/proc/self/maps").read_text()
    except OSError:
        return "unknown"
    for name in ALLOCATORS:
        if name in maps:
            return name[len("lib"):]
    named = _named(os.environ)
    if named and named in maps:  # CAI_TCMALLOC's own build, whatever its file is called
        return f"tcmalloc ({named})"
    return "the C library's"
