"""The PPO run's folder bookkeeping: the run record (``cai_run.json``), the per-step metrics
(``metrics.jsonl`` and TensorBoard), the PNG curves, and the checkpoints a rerun resumes from.

Layout of ``DIR``::

    cai_run.json            kind "cai-train-run": command, config, data hashes, times, status
    metrics.jsonl           one JSON object per logged step
    tensorboard/            the same scalars, when the tensorboard package is installed
    curves/*.png            one curve per metric, drawn at the end
    checkpoints/step-N/     policy (full or adapter), value head, optimiser, state.json
    config.json, model.safetensors, tokenizer files   the final policy (written at the end)
    value_head/             the value head, outside the model's weights
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import json
import os
import shutil
import sys
from pathlib import Path
from typing import Any

from cai.errors import CAIError

RUN_FILE = "cai_run.json"
METRICS_FILE = "metrics.jsonl"
# Options that may change between a run and its resumption without making it another run
# (kl_warn only sets when a warning is printed).
RESUMABLE_CHANGES = ("output", "save_steps", "logging_steps", "max_steps", "epochs", "kl_warn")


def now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")


def json_sha256(obj: Any) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, ensure_ascii=False).encode()).hexdigest()


class RunFolder:
    """The output folder of one run; refuses a folder that holds a different run."""

    def __init__(self, out: str | Path, command: str) -> None:
        self.out, self.command = Path(out).expanduser(), command
        self.record: dict[str, Any] = {}

    @property
    def checkpoints(self) -> Path:
        return self.out / "checkpoints"

    def check(self, config: dict[str, Any], data: list[dict[str, Any]]) -> dict[str, Any] | None:
        """Refuse a folder that holds something else (writes nothing); the earlier record of this
        same run, or None for a fresh folder."""
        run_file = self.out / RUN_FILE
        if self.out.exists() and not self.out.is_dir():
            raise CAIError(f"-o {self.out}: is a file; give a folder")
        if run_file.is_file():
            try:
                old = json.loads(run_file.read_text())
            except json.JSONDecodeError:
                raise CAIError(f"-o {self.out}: {RUN_FILE} is damaged; delete the folder to start fresh") from None
            self._same_run(old, config, data)
            return old
        if self.out.is_dir() and any(self.out.iterdir()):
            raise CAIError(f"-o {self.out}: the folder is not empty and holds no cai run; give a new folder")
        return None

    def claim(self, config: dict[str, Any], data: list[dict[str, Any]], base_model: str) -> bool:
        """Start or continue the run; True when an earlier attempt of this same run is there."""
        old = self.check(config, data)
        if old is not None:
            self.record = old
            self.record.update(config=config, status="running")
            self._write()
            return True
        self.out.mkdir(parents=True, exist_ok=True)
        self.record = {"kind": "cai-train-run", "command": self.command, "config": config, "data": data,
                       "base_model": base_model, "start_time": now(), "end_time": None, "final_metrics": {},
                       "status": "running"}
        self._write()
        return False

    def _same_run(self, old: dict[str, Any], config: dict[str, Any], data: list[dict[str, Any]]) -> None:
        fix = "give another -o, or delete the folder to start fresh"
        if old.get("kind") != "cai-train-run" or old.get("command") != self.command:
            raise CAIError(f"-o {self.out}: holds a `cai {old.get('command', '?')}` run, not `cai {self.command}`; {fix}")
        before = old.get("config", {})
        for key in sorted(set(before) | set(config)):
            if key in RESUMABLE_CHANGES:
                continue
            if before.get(key) != config.get(key):
                raise CAIError(f"-o {self.out}: holds another run ({key} was {before.get(key)!r}, now "
                               f"{config.get(key)!r}); {fix}")
        old_hashes = [d.get("sha256") for d in old.get("data", [])]
        if old_hashes != [d.get("sha256") for d in data]:
            raise CAIError(f"-o {self.out}: holds a run on other data (the prompt or ptx data changed); {fix}")

    def finish(self, final_metrics: dict[str, Any]) -> None:
        self.record.update(status="done", end_time=now(), final_metrics=final_metrics)
        self._write()

    def _write(self) -> None:
        tmp = self.out / (RUN_FILE + ".tmp")
        tmp.write_text(json.dumps(self.record, indent=2, ensure_ascii=False) + "\n")
        os.replace(tmp, self.out / RUN_FILE)

    # -- checkpoints ----------------------------------------------------------------------------

    def latest_checkpoint(self) -> Path | None:
        """The newest complete checkpoint (a partial one, from a kill mid-save, has no state.json)."""
        if not self.checkpoints.is_dir():
            return None
        done = [p for p in self.checkpoints.glob("step-*") if (p / "state.json").is_file()]
        return max(done, key=lambda p: int(p.name.split("-")[1]), default=None)

    def new_checkpoint(self, step: int) -> Path:
        tmp = self.checkpoints / f"tmp-step-{step}"
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        return tmp

    def commit_checkpoint(self, tmp: Path, step: int, keep: int = 2) -> Path:
        """Rename a written checkpoint into place (atomic), then drop all but the ``keep`` newest."""
        final = self.checkpoints / f"step-{step}"
        shutil.rmtree(final, ignore_errors=True)
        os.replace(tmp, final)
        done = sorted((p for p in self.checkpoints.glob("step-*")), key=lambda p: int(p.name.split("-")[1]))
        for old in done[:-keep]:
            shutil.rmtree(old, ignore_errors=True)
        for stale in self.checkpoints.glob("tmp-step-*"):
            shutil.rmtree(stale, ignore_errors=True)
        return final


class MetricsLog:
    """``metrics.jsonl`` plus TensorBoard when available. On resume, lines logged after the
    checkpoint are dropped, so every step appears once."""

    def __init__(self, out: Path, resume_step: int = 0) -> None:
        self.path = out / METRICS_FILE
        kept = []
        if self.path.is_file():
            for line in self.path.read_text().splitlines():
                try:
                    rec = json.loads(line)
                except json.JSONDecodeError:
                    continue  # a line cut by a kill
                if rec.get("step", 0) <= resume_step:
                    kept.append(line)
        self.path.write_text("".join(k + "\n" for k in kept))
        self.tb = None
        try:
            from torch.utils.tensorboard import SummaryWriter

            self.tb = SummaryWriter(str(out / "tensorboard"), purge_step=resume_step + 1 if resume_step else None)
        except ImportError:
            pass  # tensorboard is optional (the `train` extra installs it)

    def log(self, record: dict[str, Any]) -> None:
        with self.path.open("a") as f:
            f.write(json.dumps(record) + "\n")
            f.flush()
        if self.tb is not None:
            for k, v in record.items():
                if k != "step" and isinstance(v, (int, float)):
                    self.tb.add_scalar(f"ppo/{k}", v, record["step"])

    def close(self) -> None:
        if self.tb is not None:
            self.tb.close()

    def records(self) -> list[dict[str, Any]]:
        return [json.loads(line) for line in self.path.read_text().splitlines() if line.strip()]


CURVES = ("reward", "kl", "kl_coef", "entropy", "clip_frac", "value_loss", "approx_kl", "length", "policy_loss",
          "ptx_loss", "truncated")


def draw_curves(records: list[dict[str, Any]], folder: Path) -> list[Path]:
    """One PNG per metric (x: step); returns the files written (none without matplotlib)."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("cai ppo: matplotlib is not installed; no curves drawn (pip install 'cai[eval]')", file=sys.stderr)
        return []
    folder.mkdir(parents=True, exist_ok=True)
    written = []
    for name in CURVES:
        pts = [(r["step"], r[name]) for r in records if isinstance(r.get(name), (int, float))]
        if not pts:
            continue
        fig, ax = plt.subplots(figsize=(5, 3.2), dpi=100)
        ax.plot([p[0] for p in pts], [p[1] for p in pts], marker="." if len(pts) < 60 else None)
        ax.set_xlabel("PPO step")
        ax.set_title(name)
        ax.grid(alpha=0.3)
        fig.tight_layout()
        path = folder / f"{name}.png"
        fig.savefig(path)
        plt.close(fig)
        written.append(path)
    return written
