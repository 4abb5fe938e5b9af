"""A trainer's output folder: the run record, the metrics log, the curves and the checkpoints.

Every trainer writes the same layout, so ``cai run`` and the report read any of them::

    DIR/                 a Hugging Face model folder (config, weights, tokenizer + chat template)
    DIR/cai_run.json     kind "cai-train-run": command, config, data files with sha256, base model,
                         start/end time, final metrics, status "running" / "done"
    DIR/metrics.jsonl    one JSON object per logged step ({"step", "epoch", "loss", "lr", ...})
    DIR/curves/*.png     one plot per logged metric
    DIR/checkpoints/     Trainer checkpoints; rerunning the same command resumes from the last one.
                         Deleted when the run finishes, unless --keep-checkpoints

A run is identified by its command, config (less the flags that do not change what is trained),
data hashes and base model: rerunning the same run resumes it, a different run is refused.
"""

from __future__ import annotations

import datetime as _dt
import json
import os
import shutil
from pathlib import Path
from typing import Any, Iterable

from cai.errors import CAIError

RUN_FILE = "cai_run.json"
METRICS_FILE = "metrics.jsonl"
CHECKPOINTS = "checkpoints"
# Flags that change where or how often things are written, or what is measured or warned about
# (cai reward's human-label evaluation, cai ppo's KL warning), or only how the same loss is computed
# (--completion-logits), not what is trained: changing them resumes the run.
_NOT_IDENTITY = {"output", "save_steps", "logging_steps", "progress", "human_eval", "human_limit", "kl_warn",
                 "completion_logits", "keep_checkpoints"}
# Trainer log keys renamed to the shared metrics.jsonl vocabulary.
_RENAME = {"learning_rate": "lr"}


def _now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")


def is_main_process() -> bool:
    """Rank 0 under torchrun / accelerate launch, or the only process."""
    return os.environ.get("RANK", "0") == "0"


def finished_note(path: str | Path) -> str:
    """What every trainer says when asked to rerun a finished run, which it leaves as it is."""
    return f"{path} already holds this finished run; nothing to do (delete the folder to train again)"


def _is_own_tmp(p: Path) -> bool:
    """:func:`_write_json`'s half-written run record: rank 0's, seen by another rank mid-write."""
    return p.name.startswith(f".{RUN_FILE}.") and p.name.endswith(".tmp")


def _write_json(path: Path, data: dict[str, Any]) -> None:
    """Atomic: other ranks and a later rerun never see half a file."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(data, indent=2, ensure_ascii=False) + "\n")
    os.replace(tmp, path)


class RunDir:
    def __init__(self, path: str | Path, *, command: str, config: dict[str, Any], data: list[dict[str, Any]],
                 base_model: str, overwrite: bool = False, inputs: Iterable[str] = ()) -> None:
        """``overwrite``: a folder holding another run, a finished one or files cai did not write is
        trained into afresh (cai's own run files in it are removed at :meth:`start`). ``inputs``:
        the command's inputs (base model, data), which the folder must not be."""
        self.path = Path(path)
        self.command = command
        self.config = config
        self.data = data
        self.base_model = base_model
        self.overwrite = overwrite
        self.inputs = list(inputs)
        self.record: dict[str, Any] = {}
        self._afresh = False

    @property
    def checkpoints(self) -> Path:
        return self.path / CHECKPOINTS

    def identity(self) -> dict[str, Any]:
        return {"command": self.command, "base_model": self.base_model,
                "config": {k: v for k, v in self.config.items() if k not in _NOT_IDENTITY},
                "data": [{"sha256": d["sha256"], "weight": d["weight"]} for d in self.data]}

    def existing(self) -> dict[str, Any] | None:
        f = self.path / RUN_FILE
        if self._afresh or not f.is_file():
            return None
        try:
            return json.loads(f.read_text())
        except json.JSONDecodeError:
            raise CAIError(f"{f} is not valid JSON; delete {self.path} to start fresh") from None

    def check(self) -> str:
        """Before any model work: "new", "resume" or "done"; refuses a path that is a file, a device,
        an input or not writable, and (unless ``overwrite``) a folder that holds something else."""
        from cai.outputs import check_target

        check_target(self.path, flag="-o", folder=True, inputs=[self.base_model, *self.inputs])
        if self.overwrite:
            self._afresh = self.path.is_dir() and any(self.path.iterdir())
            return "new"
        old = self.existing()
        if old is None:
            # Under accelerate launch rank 0 may be writing its first record while rank 1 checks:
            # its temp file is not "something else" in the folder.
            if self.path.exists() and any(not _is_own_tmp(p) for p in self.path.iterdir()):
                raise CAIError(f"{self.path} already exists and holds no cai run; pass a new -o folder (or empty "
                               "this one), or add --overwrite to train into it")
            return "new"
        if old.get("kind") != "cai-train-run" or old.get("identity") != self.identity():
            what = old.get("command", "another command")
            diffs = _diff(old.get("identity") or {}, self.identity())
            raise CAIError(f"{self.path} holds another run ({what}; differs in {', '.join(diffs) or 'format'}); "
                           "rerun with the same settings and data to resume, or pass a new -o folder, or add "
                           "--overwrite to replace it")
        return "done" if old.get("status") == "done" else "resume"

    def last_checkpoint(self) -> str | None:
        """The newest complete checkpoint; a half-written one (killed while saving) is removed."""
        if not self.checkpoints.is_dir():
            return None
        steps = []
        for p in self.checkpoints.iterdir():
            if p.is_dir() and p.name.startswith("checkpoint-") and p.name[11:].isdigit():
                steps.append((int(p.name[11:]), p))
        for _, p in sorted(steps, reverse=True):
            if (p / "trainer_state.json").is_file():
                return str(p)
            if is_main_process():
                shutil.rmtree(p, ignore_errors=True)
        return None

    def start(self, resume_from: str | None) -> None:
        """Write the "running" record, and cut metrics logged after the checkpoint we resume from."""
        if not is_main_process():
            return
        if self._afresh:  # --overwrite: the old run's record, metrics, curves and checkpoints go
            for name in (RUN_FILE, METRICS_FILE, "curves", CHECKPOINTS):
                p = self.path / name
                shutil.rmtree(p) if p.is_dir() else p.unlink(missing_ok=True)
            self._afresh = False
        self.path.mkdir(parents=True, exist_ok=True)
        old = self.existing() or {}
        self.record = {
            "kind": "cai-train-run", "command": self.command, "status": "running",
            "base_model": self.base_model, "config": self.config, "data": self.data,
            "identity": self.identity(),
            "start_time": old.get("start_time") or _now(), "end_time": None,
            "resumed_from": [*old.get("resumed_from", []), *([resume_from] if resume_from else [])],
            "final_metrics": None,
        }
        from cai.provenance import cai_version

        self.record["cai_version"] = cai_version()
        _write_json(self.path / RUN_FILE, self.record)
        step = _checkpoint_step(resume_from) if resume_from else 0
        metrics = self.path / METRICS_FILE
        if metrics.exists():
            keep = [line for line in metrics.read_text().splitlines()
                    if line.strip() and _is_json(line) and json.loads(line).get("step", 0) <= step]
            metrics.write_text("".join(line + "\n" for line in keep))

    def log(self, step: int, logs: dict[str, Any]) -> None:
        if not is_main_process():
            return
        row: dict[str, Any] = {"step": int(step)}
        for k, v in logs.items():
            if isinstance(v, (int, float)) and not isinstance(v, bool):
                row[_RENAME.get(k, k)] = v
        with open(self.path / METRICS_FILE, "a", encoding="utf-8") as f:
            f.write(json.dumps(row) + "\n")

    def finish(self, final_metrics: dict[str, Any]) -> None:
        """Mark the run done; its checkpoints go unless the config says ``keep_checkpoints`` (a finished
        run never resumes, and its model folder is already written)."""
        if not is_main_process():
            return
        curves = draw_curves(self.path / METRICS_FILE, self.path / "curves")
        self.record.update(status="done", end_time=_now(), final_metrics=final_metrics,
                           curves=[str(p.relative_to(self.path)) for p in curves])
        _write_json(self.path / RUN_FILE, self.record)
        if not self.config.get("keep_checkpoints"):
            shutil.rmtree(self.checkpoints, ignore_errors=True)

    def callback(self, rename: dict[str, str] | None = None):
        """A transformers TrainerCallback that appends each log to metrics.jsonl, with a trainer's
        own log names mapped to the shared vocabulary by ``rename``."""
        from transformers import TrainerCallback

        run, rename = self, rename or {}

        class _Log(TrainerCallback):
            def on_log(self, args, state, control, logs=None, **kw):
                # The summary log at the end (train_runtime, ...) goes into final_metrics instead.
                if logs and state.is_world_process_zero and "train_runtime" not in logs:
                    run.log(state.global_step, {"epoch": state.epoch, **{rename.get(k, k): v for k, v in logs.items()}})

            def on_step_end(self, args, state, control, **kw):
                if control.should_save and state.global_step >= state.max_steps and run._last_model_only():
                    # transformers saves a checkpoint at the last step. It serves only to resume a run
                    # killed before its final model and checks are written, and a run resumed there
                    # takes no optimiser step: its optimiser state (1.1 GB for a full 135M PM, 4 s of
                    # the quickstart's PM step) would be written only for finish() to delete it.
                    args.save_only_model = True

            def on_save(self, args, state, control, **kw):
                from cai.store import checkpoint_fault

                checkpoint_fault(state.global_step)  # tests/faults.py: kill -9 once this checkpoint is complete

        return _Log()

    def _last_model_only(self) -> bool:
        """Whether the last checkpoint may leave the optimiser state out: not when the checkpoints are
        kept (--keep-checkpoints: someone may train on from them), nor under DeepSpeed or FSDP, whose
        checkpoints hold the model and optimiser shards together."""
        from accelerate.state import AcceleratorState, DistributedType

        sharded = AcceleratorState().distributed_type in (DistributedType.DEEPSPEED, DistributedType.FSDP)
        return not self.config.get("keep_checkpoints") and not sharded


def _is_json(line: str) -> bool:
    try:
        json.loads(line)
        return True
    except json.JSONDecodeError:
        return False  # a line torn by kill -9


def _checkpoint_step(path: str) -> int:
    return int(Path(path).name.rsplit("-", 1)[1])


def _diff(old: dict[str, Any], new: dict[str, Any]) -> list[str]:
    out = [k for k in ("command", "base_model", "data") if old.get(k) != new.get(k)]
    oc, nc = old.get("config") or {}, new.get("config") or {}
    out += [f"--{k.replace('_', '-')}" for k in sorted(set(oc) | set(nc)) if oc.get(k) != nc.get(k)]
    return out


def draw_curves(metrics_file: Path, out_dir: Path) -> list[Path]:
    """One PNG per metric logged at two or more steps."""
    if not metrics_file.is_file():
        return []
    series: dict[str, list[tuple[int, float]]] = {}
    for line in metrics_file.read_text().splitlines():
        if not line.strip() or not _is_json(line):
            continue
        row = json.loads(line)
        for k, v in row.items():
            if k not in ("step", "epoch") and isinstance(v, (int, float)):
                series.setdefault(k, []).append((row["step"], v))
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out_dir.mkdir(parents=True, exist_ok=True)
    paths = []
    for name, points in sorted(series.items()):
        if len(points) < 2:
            continue
        fig, ax = plt.subplots(figsize=(5, 3.2))
        ax.plot([p[0] for p in points], [p[1] for p in points], lw=1.5)
        ax.set_xlabel("step")
        ax.set_ylabel(name)
        ax.set_title(name)
        ax.grid(alpha=0.3)
        fig.tight_layout()
        path = out_dir / (name.replace("/", "_") + ".png")
        fig.savefig(path, dpi=100)
        plt.close(fig)
        paths.append(path)
    return paths
