"""PPO's own part of its run folder: the checkpoints a rerun resumes from, TensorBoard, and the
hashes that identify its data. The run record, ``metrics.jsonl`` and the curves are the shared
:class:`cai.train.rundir.RunDir`'s, as for every trainer.

    DIR/checkpoints/step-N/   policy (full or adapter), value head, optimiser, RNG, state.json
    DIR/tensorboard/          the per-step scalars, when the tensorboard package is installed
    DIR/value_head/           the final value head, outside the model's weights
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from pathlib import Path
from typing import Any


def json_sha256(obj: Any) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, ensure_ascii=False).encode()).hexdigest()


class Checkpoints:
    """PPO's own checkpoints, ``DIR/checkpoints/step-N/``, written whole or not at all."""

    def __init__(self, out: str | Path) -> None:
        self.folder = Path(out) / "checkpoints"

    def latest(self) -> Path | None:
        """The newest complete checkpoint (a partial one, from a kill mid-save, has no state.json)."""
        if not self.folder.is_dir():
            return None
        done = [p for p in self.folder.glob("step-*") if (p / "state.json").is_file()]
        return max(done, key=lambda p: int(p.name.split("-")[1]), default=None)

    def clean_latest(self) -> Path | None:
        """:meth:`latest`, once a checkpoint left half-written (a failed save) is removed."""
        for stale in self.folder.glob("tmp-step-*"):
            shutil.rmtree(stale, ignore_errors=True)
        return self.latest()

    def new(self, step: int) -> Path:
        tmp = self.folder / f"tmp-step-{step}"
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        return tmp

    def commit(self, tmp: Path, step: int, keep: int = 2) -> Path:
        """Rename a written checkpoint into place (atomic), then drop all but the ``keep`` newest."""
        final = self.folder / f"step-{step}"
        shutil.rmtree(final, ignore_errors=True)
        os.replace(tmp, final)
        done = sorted(self.folder.glob("step-*"), key=lambda p: int(p.name.split("-")[1]))
        for old in done[:-keep]:
            shutil.rmtree(old, ignore_errors=True)
        for stale in self.folder.glob("tmp-step-*"):
            shutil.rmtree(stale, ignore_errors=True)
        return final


class TensorBoard:
    """The per-step scalars in TensorBoard too, when the package is installed (the ``train``
    extra installs it); ``metrics.jsonl`` is written by :class:`cai.train.rundir.RunDir`."""

    def __init__(self, out: Path, resume_step: int = 0) -> None:
        self.tb = None
        try:
            from torch.utils.tensorboard import SummaryWriter

            self.tb = SummaryWriter(str(out / "tensorboard"), purge_step=resume_step + 1 if resume_step else None)
        except ImportError:
            pass

    def log(self, record: dict[str, Any]) -> None:
        if self.tb is not None:
            for k, v in record.items():
                if k != "step" and isinstance(v, (int, float)):
                    self.tb.add_scalar(f"ppo/{k}", v, record["step"])

    def close(self) -> None:
        if self.tb is not None:
            self.tb.close()


