"""Fault injection for cai commands: run a command as a subprocess, kill it with SIGKILL at a
chosen point, run it again, and compare what it wrote with an uninterrupted run.

The kill points come from ``CAI_FAULT`` (read only in ``cai.store.RecordStore.append``):
``before_write:N`` (the N-th batch's work is done but nothing of it written), ``mid_write:N``
(half its bytes written, a torn line left behind) and ``after_write:N`` (written and fsynced).
N counts the non-empty appends of the process.

A stage joins the suite with one :class:`Case` in ``CASES`` (tests/test_faults.py runs every case
at every point of ``POINTS``)::

    Case("sft", lambda d: ["train", "sft", "-m", TINY, "--data", str(d / "data.jsonl"), "-o", str(d / "run")],
         outputs=("run/metrics.jsonl",))

``argv`` builds the command for a work folder that already holds ``prompts.jsonl``;
``outputs`` are the record files (relative to it) whose records must match the uninterrupted run:
every id once, none lost, the same content apart from timestamps (``provenance.time``).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

SRC = Path(__file__).resolve().parents[1] / "src"
PROMPTS = [{"id": f"p{i}", "prompt": f"Question {i}: how do I keep my {w} safe?"}
           for i, w in enumerate(["bike", "car", "house", "phone", "laptop", "garden", "boat"], 1)]


@dataclass(frozen=True)
class Case:
    name: str
    argv: Callable[[Path], list[str]]
    outputs: tuple[str, ...]
    # Called on (reference folder, resumed folder) for checks beyond the record files.
    extra_check: Callable[[Path, Path], None] | None = field(default=None, compare=False)


def cai_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "CAI_FAULT"}
    env.update(PYTHONPATH=str(SRC), HF_HUB_OFFLINE="1", TOKENIZERS_PARALLELISM="false", **extra)
    return env


def run_cai(argv: list[str], cwd: Path, *, fault: str | None = None, env: dict[str, str] | None = None,
            timeout: float = 120) -> subprocess.CompletedProcess:
    env = cai_env(**(env or {}), **({"CAI_FAULT": fault} if fault else {}))
    return subprocess.run([sys.executable, "-m", "cai", *argv], cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=timeout)


def workdir(path: Path) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    (path / "prompts.jsonl").write_text("".join(json.dumps(p) + "\n" for p in PROMPTS))
    return path


def normalised(path: Path, root: Path | None = None) -> list[dict[str, Any]]:
    """The records of ``path`` with run timestamps removed and the work folder ``root`` (which
    provenance names in its paths) replaced by ``WORK``; every line must be whole JSON."""
    out = []
    text = path.read_text(encoding="utf-8")
    if root is not None:
        text = text.replace(json.dumps(str(root))[1:-1], "WORK")
    for line in text.splitlines():
        if not line.strip():
            continue
        rec = json.loads(line)  # a torn or half-written line fails here, naming nothing lost silently
        if isinstance(rec.get("provenance"), dict):
            rec["provenance"].pop("time", None)
        out.append(rec)
    return out


def assert_same_records(ref_dir: Path, got_dir: Path, outputs: tuple[str, ...]) -> None:
    for name in outputs:
        ref, got = ref_dir / name, got_dir / name
        if not ref.exists():
            assert not got.exists() or not normalised(got), f"{name}: written only by the interrupted run"
            continue
        ref_recs, got_recs = normalised(ref, ref_dir), normalised(got, got_dir)
        got_ids = [r["id"] for r in got_recs]
        doubled = sorted({i for i in got_ids if got_ids.count(i) > 1})
        assert not doubled, f"{name}: duplicated ids {doubled}"
        assert set(got_ids) == {r["id"] for r in ref_recs}, f"{name}: ids differ (lost or extra records)"
        by_id = {r["id"]: r for r in ref_recs}
        for r in got_recs:
            assert r == by_id[r["id"]], f"{name}: record {r['id']} differs from the uninterrupted run"


def kill_and_resume(case: Case, point: str, ref_dir: Path, work: Path) -> str:
    """Run ``case`` killed at ``point``, check what survived, resume it, and compare with ``ref_dir``.
    Returns the resumed run's stderr."""
    work = workdir(work)
    killed = run_cai(case.argv(work), work, fault=point)
    assert killed.returncode == -signal.SIGKILL, (
        f"{case.name} at {point}: expected a kill, got exit {killed.returncode}\n{killed.stderr[-2000:]}")
    resumed = run_cai(case.argv(work), work)
    assert resumed.returncode == 0, f"{case.name} resume after {point} failed:\n{resumed.stderr[-2000:]}"
    assert_same_records(ref_dir, work, case.outputs)
    if case.extra_check:
        case.extra_check(ref_dir, work)
    return resumed.stderr
