"""Fault injection for cai commands: run a command as a subprocess, kill it with SIGKILL at a
chosen point, run it again, and compare what it wrote with an uninterrupted run.

The kill points come from ``CAI_FAULT`` (read in ``cai.store``): ``before_write:N`` (the N-th
batch's work is done but nothing of it written), ``mid_write:N`` (half its bytes written, a torn
line left behind) and ``after_write:N`` (written and fsynced), where N counts the non-empty
appends of the process; and ``after_checkpoint:N`` (a trainer's step-N checkpoint is complete).

A stage joins the suite with one :class:`Case` in ``CASES`` (tests/test_faults.py runs every case
at each of its ``points``, by default ``POINTS``)::

    Case("sft", lambda d: ["sft", "-m", str(d / "model"), "--data", str(d / "sl.jsonl"), "-o", str(d / "run"),
                           "--max-steps", "4", "--save-steps", "1"],
         outputs=(), points=("after_checkpoint:2",), reference=False, model=True, extra_check=trained(4))

``argv`` builds the command for a work folder that already holds ``prompts.jsonl``, ``sl.jsonl``
(SL-CAI records that are also preference pairs) and, with ``model``, ``model`` (a tiny random
Llama). ``outputs`` are the record files (relative to it; a glob names one file) whose records
must match the uninterrupted run: every id once, none lost, the same content apart from timestamps
(``provenance.time``). A trainer's case has no reference run: :func:`trained` checks that the
resumed run ends at the same step count, each step logged once.
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
    # Called on (reference folder or None, resumed folder) for checks beyond the record files.
    extra_check: Callable[[Path | None, Path], None] | None = field(default=None, compare=False)
    points: tuple[str, ...] | None = None  # kill points; None: POINTS of tests/test_faults.py
    reference: bool = True  # compare with an uninterrupted run
    model: bool = False  # needs the tiny model at WORK/model
    group: bool = False  # the command starts child processes: kill the whole process group


def cai_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "CAI_FAULT"}
    env.update(PYTHONPATH=str(SRC), HF_HUB_OFFLINE="1", TOKENIZERS_PARALLELISM="false", **extra)
    return env


def run_cai(argv: list[str], cwd: Path, *, fault: str | None = None, env: dict[str, str] | None = None,
            timeout: float = 300, group: bool = False) -> subprocess.CompletedProcess:
    env = cai_env(**(env or {}), **({"CAI_FAULT": fault} if fault else {}),
                  **({"CAI_FAULT_GROUP": "1"} if group and fault else {}))
    # A group kill must not reach pytest: the command gets its own session.
    return subprocess.run([sys.executable, "-m", "cai", *argv], cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=timeout, start_new_session=group)


def _turn(role: str, text: str) -> list[dict[str, str]]:
    return [{"role": role, "content": text}]


def workdir(path: Path) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    (path / "prompts.jsonl").write_text("".join(json.dumps(p) + "\n" for p in PROMPTS))
    (path / "sl.jsonl").write_text("".join(json.dumps({
        "id": p["id"], "prompt": _turn("user", p["prompt"]),
        "completion": _turn("assistant", f"Lock it and keep it in sight ({i})."),
        "chosen": _turn("assistant", f"Lock it and keep it in sight ({i})."),
        "rejected": _turn("assistant", "No idea."), "p_chosen": 0.9}) + "\n" for i, p in enumerate(PROMPTS * 2)))
    return path


def trained(steps: int, where: str = "run") -> Callable[[Path | None, Path], None]:
    """The check of a trainer case: the run in WORK/``where`` (a glob naming one folder) is done, at
    ``steps`` steps, each logged once, and it resumed from a checkpoint rather than starting over."""

    def check(_ref: Path | None, work: Path) -> None:
        out = _one(work, where)
        record = json.loads((out / "cai_run.json").read_text())
        assert record["status"] == "done", record
        rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
        # Held-out rows (eval_loss after an epoch, e.g. cai reward's --eval-split) share a training step.
        logged = [r["step"] for r in rows if "eval_loss" not in r]
        assert logged == list(range(1, steps + 1)), f"steps logged: {logged}"
        final = record["final_metrics"]
        assert final.get("global_step", final.get("step")) == steps, final
        assert record["resumed_from"] and record["resumed_from"][0].endswith("-2"), record  # checkpoint-2, step-2
        assert (out / "config.json").is_file(), "no final model folder"
        assert any((out / "curves").glob("*.png")), "no curves drawn"

    return check


def _one(folder: Path, name: str) -> Path:
    if "*" not in name:
        return folder / name
    found = sorted(folder.glob(name))
    assert len(found) <= 1, f"{name}: several files match in {folder}"
    return found[0] if found else folder / name.replace("*", "_none_")


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
        ref, got = _one(ref_dir, name), _one(got_dir, name)
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


def kill_and_resume(case: Case, point: str, ref_dir: Path | None, work: Path) -> str:
    """Run ``case`` killed at ``point``, check what survived, resume it, and compare with ``ref_dir``
    (None for a case without a reference run). Returns the resumed run's stderr."""
    work = workdir(work)
    killed = run_cai(case.argv(work), work, fault=point, group=case.group)
    assert killed.returncode == -signal.SIGKILL, (
        f"{case.name} at {point}: expected a kill, got exit {killed.returncode}\n{killed.stderr[-2000:]}")
    resumed = run_cai(case.argv(work), work)
    assert resumed.returncode == 0, f"{case.name} resume after {point} failed:\n{resumed.stderr[-2000:]}"
    if ref_dir is not None:
        assert_same_records(ref_dir, work, case.outputs)
    if case.extra_check:
        case.extra_check(ref_dir, work)
    return resumed.stderr
