"""How ``cai run`` runs its steps: each in a child process (:mod:`cai.run.stages`), so that its
memory (a vLLM engine, a model being trained) goes back to the system when it ends; consecutive
eval steps of the same model together in one.

An eval step's cost is mostly its engine's start (25-45 s for vLLM on a 2-core CPU), and a run
ends with several evals of one model (the quickstart: two tasks on the base model, then the same
two on the final one), so those steps share one process and one engine (:func:`engine_groups`).
Every other step, and a group of one, runs alone: one step, one process. The child measures each
step (``seconds``, ``started``, ``ended`` in its ``summary.json``) and the runner sees the whole
process; :func:`record_group` turns both into each step's manifest entry.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

from cai.run.plan import Step

STEP_ERROR = 2  # the exit code of a step that stopped on a cai error (cai.run.stages.main)


def now() -> str:
    """A manifest time stamp (UTC, to the second): the runner's and the step process's alike."""
    import datetime as dt

    return dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")


def child_env() -> dict[str, str]:
    env = dict(os.environ)
    src = str(Path(__file__).resolve().parents[2])
    env["PYTHONPATH"] = src + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    return env


class Terminated(KeyboardInterrupt):
    """SIGTERM to the runner (kill, timeout, docker stop), handled as Ctrl-C is. Ctrl-C reaches the
    step's process from the terminal; a SIGTERM reaches the runner alone, and the step it started
    ran on, orphaned, writing into the run folder: :func:`sigterm_as_interrupt` passes it on."""
    exit_code = 128 + signal.SIGTERM


# The process a SIGTERM to the runner is passed on to, and the signal that interrupts it there: a
# step's own process takes SIGINT, as from Ctrl-C; the step server (which ignores SIGINT) SIGTERM,
# which it passes on to its forked step as SIGINT.
_forward: tuple[int, int] | None = None


@contextlib.contextmanager
def sigterm_as_interrupt() -> Iterator[None]:
    """Inside the block a SIGTERM interrupts the step running and raises :class:`Terminated`."""
    if threading.current_thread() is not threading.main_thread():  # only the main thread sets handlers
        yield
        return

    def on_term(signum: int, frame: Any) -> None:
        if _forward is not None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(*_forward)
        raise Terminated

    previous = signal.signal(signal.SIGTERM, on_term)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


@contextlib.contextmanager
def forward_sigterm(pid: int, sig: int) -> Iterator[None]:
    global _forward
    before, _forward = _forward, (pid, sig)
    try:
        yield
    finally:
        _forward = before


def run_child(*step_files: Path, server: Any = None) -> tuple[int, float]:
    """Run steps (one, or a group sharing an engine) in a process of their own; (exit code, its
    peak RSS in MiB). With a live ``server`` (:class:`cai.run.step_server.StepServer`) the process
    is forked from it, the libraries already imported; else a fresh interpreter."""
    if server is not None and server.alive:
        with forward_sigterm(server.proc.pid, signal.SIGTERM):
            result = server.run(*step_files)
        if result is not None:
            return result
    proc = subprocess.Popen([sys.executable, "-m", "cai.run.stages", *map(str, step_files)], env=child_env())
    try:
        with forward_sigterm(proc.pid, signal.SIGINT):
            _, status, usage = os.wait4(proc.pid, 0)
    except KeyboardInterrupt:
        proc.wait()
        raise
    proc.returncode = os.waitstatus_to_exitcode(status)
    return proc.returncode, usage.ru_maxrss / 1024  # Linux reports KiB


def failure_advice(step: str, code: int) -> str:
    """What to do after a step's process ended with ``code``. Only an interruption (Ctrl-C, a
    signal, a crash) is undone by running again, which resumes the step; a step that stopped on a
    cai error (bad data, a filter that kept nothing) stops there again until its cause is fixed."""
    if code == STEP_ERROR:
        return (f"{step} stopped on the error above, which running again as is would meet again; fix the cause it "
                "names, then run the same command again (the steps already done are kept)")
    if code == 130:
        what = "was interrupted"
    elif code < 0:
        try:
            name = signal.Signals(-code).name
        except ValueError:
            name = f"signal {-code}"
        what = f"was killed ({name}{', often out of memory' if code == -signal.SIGKILL else ''})"
    else:
        what = f"crashed (exit {code}; the traceback is above)"
    return f"{step} {what}; run the same command again to resume from it"


def engine_groups(todo: list[Step], configs: dict[str, dict[str, Any]]) -> list[list[Step]]:
    """``todo`` cut into runs of consecutive steps that share one process: eval steps whose task
    takes a shared backend and whose (resolved) model is the same; every other step alone."""
    from cai.run.stages import shared_model

    groups: list[list[Step]] = []
    last = None
    for step in todo:
        model = shared_model(step.stage, configs[step.id])
        if model is not None and model == last:
            groups[-1].append(step)
        else:
            groups.append([step])
        last = model
    return groups


@dataclass
class Prepared:
    """What the runner changed for a step before its group's process started, to put back when the
    process stops before reaching the step: its manifest entry before, where its old folder was
    moved (--from, --overwrite), and whether its folder was made for it."""
    folder: Path
    entry: dict[str, Any] | None
    moved: Path | None
    made: bool

    def undo(self, stages: dict[str, Any], step_id: str) -> None:
        if self.entry is None:
            stages.pop(step_id, None)
        else:
            stages[step_id] = self.entry
        if self.made or self.moved:
            shutil.rmtree(self.folder, ignore_errors=True)  # it holds only the step.json written for it
        if self.moved:
            self.moved.rename(self.folder)


def read_summary(folder: Path) -> dict[str, Any] | None:
    """The summary.json the step's process wrote when the step finished; None if it did not."""
    path = folder / "summary.json"
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError):
        return None  # cut off by a kill: the step counts as unfinished and runs again


def record_group(stages: dict[str, Any], group: list[Step], prepared: list[Prepared], code: int,
                 peak: float | None, wall: float, ended: str) -> Step | None:
    """Write each step's outcome into the manifest's ``stages``; the step that stopped the process,
    or None. Steps that wrote their summary are done, whatever happened after them (nothing
    computed is lost); the first that did not (or the last, if the process failed after it wrote
    it) failed; those after it are put back as they were. Each done step gets its own seconds; the
    process's time outside them (start-up, imports) counts to the failing step, or else the first.
    ``peak`` is the process's peak memory (MiB), None when the runner was interrupted waiting."""
    mem = {"peak_rss_mb": round(peak, 1)} if peak is not None else {}
    summaries = [read_summary(p.folder) for p in prepared]
    stop = None
    if code != 0:
        stop = next((i for i, s in enumerate(summaries) if s is None), len(group) - 1)
    done = range(len(group)) if stop is None else range(stop)
    own = {i: float(summaries[i].get("seconds") or 0.0) for i in done if summaries[i] is not None}
    rest = max(wall - sum(own.values()), 0.0)
    for i in done:
        record = stages[group[i].id]
        summary = summaries[i] or {}
        seconds = own.get(i, 0.0) + (rest if i == 0 and stop is None else 0.0)
        # The first step's clock starts with the process and the last's stops with it, as seconds count.
        if i > 0:
            record["started"] = summary.get("started", record["started"])
        last = stop is None and i == len(group) - 1
        record.update(status="done", ended=ended if last else summary.get("ended", ended),
                      seconds=round(seconds, 1), **mem, outputs={"output": record["config"]["output"]},
                      summary=summary.get("summary", {}))
    if stop is None:
        return None
    record = stages[group[stop].id]
    if stop > 0:  # it started when the step before it ended
        record["started"] = stages[group[stop - 1].id]["ended"]
    record.update(status="failed" if code == STEP_ERROR else "interrupted", ended=ended, seconds=round(rest, 1),
                  **mem)
    for step, prep in zip(group[stop + 1:], prepared[stop + 1:]):
        prep.undo(stages, step.id)
    return group[stop]
