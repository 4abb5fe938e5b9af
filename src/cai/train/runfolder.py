"""The output folder every trainer writes, and resuming it.

``DIR`` is a Hugging Face model folder plus:

* ``DIR/cai_run.json``: kind "cai-train-run", stage, config, data files with sha256, base model,
  start/end time, status ("running"/"done") and the final metrics;
* ``DIR/metrics.jsonl``: one JSON object per logged step (``step``, ``epoch``, ``loss``, ``lr``,
  ``grad_norm`` and the stage's own metrics);
* ``DIR/curves/*.png``: one curve per logged metric;
* ``DIR/checkpoints/checkpoint-N``: Trainer checkpoints. The same command on the same ``DIR``
  resumes from the last one; a ``DIR`` holding another run is refused.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import json
import math
from pathlib import Path
from typing import Any, Sequence

from cai.errors import CAIError

RUN_FILE = "cai_run.json"
METRICS_FILE = "metrics.jsonl"
# Trainer log keys -> the shared metrics.jsonl names.
RENAME = {"learning_rate": "lr", "train_loss": None, "train_runtime": None, "train_samples_per_second": None,
          "train_steps_per_second": None, "total_flos": None}
IDENTITY_SKIP = ("output", "save_steps", "logging_steps")  # changing these does not make it another run


def now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")


def sha256_file(path: str | Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def data_files(paths: Sequence[str | Path]) -> list[dict[str, Any]]:
    return [{"path": str(p), "sha256": sha256_file(p), "bytes": Path(p).stat().st_size} for p in paths]


def read_run(out: str | Path) -> dict[str, Any] | None:
    try:
        return json.loads((Path(out) / RUN_FILE).read_text())
    except (OSError, json.JSONDecodeError):
        return None


def write_run(out: str | Path, run: dict[str, Any]) -> None:
    p = Path(out) / RUN_FILE
    tmp = p.with_suffix(".tmp")
    tmp.write_text(json.dumps(run, indent=2, default=str) + "\n")
    tmp.replace(p)


def _identity(stage: str, config: dict[str, Any], data: list[dict[str, Any]]) -> dict[str, Any]:
    return {"stage": stage, "config": {k: v for k, v in config.items() if k not in IDENTITY_SKIP},
            "data": sorted(d["sha256"] for d in data)}


def open_run(out: str | Path, *, stage: str, config: dict[str, Any], data: list[dict[str, Any]],
             base_model: str) -> tuple[dict[str, Any], str | None]:
    """Claim ``out`` for this run. Returns (run record, checkpoint to resume from or None).

    The record's ``status`` is "done" when this exact run already finished there.
    """
    out = Path(out)
    old = read_run(out)
    fresh = {"kind": "cai-train-run", "stage": stage, "command": f"cai {stage}", "config": config,
             "data": data, "base_model": base_model, "start_time": now(), "end_time": None,
             "status": "running", "metrics": {}}
    if old is None:
        if out.exists() and any(out.iterdir()):
            raise CAIError(f"{out} is not empty and holds no cai run; pick a new -o folder")
        out.mkdir(parents=True, exist_ok=True)
        write_run(out, fresh)
        return fresh, None
    if _identity(stage, config, data) != _identity(old.get("stage"), old.get("config") or {}, old.get("data") or []):
        diff = _what_differs(old, stage, config, data)
        raise CAIError(f"{out} holds another run ({diff}); pick a new -o folder, or delete {out} to start over")
    if old.get("status") == "done":
        return old, None
    ckpt = last_checkpoint(out / "checkpoints")
    old["config"] = config
    write_run(out, old)
    return old, ckpt


def last_checkpoint(folder: Path) -> str | None:
    """The newest complete ``checkpoint-N`` under ``folder``. The Trainer writes trainer_state.json
    last, so a checkpoint without it was cut off by a kill; it is removed (the Trainer would
    otherwise count it when rotating old checkpoints)."""
    import shutil

    if not folder.is_dir():
        return None
    found = sorted((int(p.name.split("-")[-1]), p) for p in folder.glob("checkpoint-*")
                   if p.is_dir() and p.name.split("-")[-1].isdigit())
    for _, p in reversed(found):
        if (p / "trainer_state.json").is_file():
            return str(p)
        shutil.rmtree(p, ignore_errors=True)
    return None


def _what_differs(old: dict[str, Any], stage: str, config: dict[str, Any], data: list[dict[str, Any]]) -> str:
    if old.get("stage") != stage:
        return f"a `cai {old.get('stage')}` run"
    if sorted(d["sha256"] for d in old.get("data") or []) != sorted(d["sha256"] for d in data):
        return "other data files"
    keys = [k for k in set(config) | set(old.get("config") or {}) if k not in IDENTITY_SKIP
            and config.get(k) != (old.get("config") or {}).get(k)]
    return "other settings: " + ", ".join(sorted(keys)) if keys else "another run"


def finish_run(out: str | Path, run: dict[str, Any], metrics: dict[str, Any], **extra: Any) -> dict[str, Any]:
    run = dict(run, status="done", end_time=now(), metrics=metrics, **extra)
    write_run(out, run)
    return run


def metrics_callback(out: str | Path, resume_from: str | None = None,
                     rename: dict[str, str | None] | None = None):
    """A TrainerCallback that appends each log to ``metrics.jsonl``. When training starts it drops
    lines past the step it resumes from (0 for a fresh start), so the file reads as one run."""
    from transformers import TrainerCallback

    names = {**RENAME, **(rename or {})}
    path = Path(out) / METRICS_FILE
    start = 0
    if resume_from:
        start = json.loads((Path(resume_from) / "trainer_state.json").read_text()).get("global_step", 0)

    class MetricsLog(TrainerCallback):
        def on_train_begin(self, args, state, control, **kw):
            # The Trainer calls this before it loads the checkpoint's state, so the step comes from above.
            if not state.is_world_process_zero or not path.exists():
                return
            keep = [line for line in path.read_text().splitlines()
                    if line.strip() and json.loads(line).get("step", 0) <= start]
            path.write_text("".join(line + "\n" for line in keep))

        def on_log(self, args, state, control, logs=None, **kw):
            if not state.is_world_process_zero or not logs:
                return
            row: dict[str, Any] = {"step": state.global_step}
            if state.epoch is not None:
                row["epoch"] = round(float(state.epoch), 4)
            for k, v in logs.items():
                name = names.get(k, k)
                if name is None or name in row or not isinstance(v, (int, float)):
                    continue
                row[name] = float(v)
            if len(row) > 2:
                with open(path, "a") as f:
                    f.write(json.dumps(row) + "\n")

    return MetricsLog()


def read_metrics(out: str | Path) -> list[dict[str, Any]]:
    path = Path(out) / METRICS_FILE
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def draw_curves(out: str | Path) -> list[Path]:
    """One PNG per logged metric against step, under ``out/curves``."""
    rows = read_metrics(out)
    keys = sorted({k for r in rows for k in r if k not in ("step", "epoch")})
    if not keys:
        return []
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    folder = Path(out) / "curves"
    folder.mkdir(exist_ok=True)
    written = []
    for k in keys:
        pts = [(r["step"], r[k]) for r in rows if isinstance(r.get(k), (int, float)) and math.isfinite(r[k])]
        if not pts:
            continue
        fig, ax = plt.subplots(figsize=(5, 3.2))
        ax.plot([p[0] for p in pts], [p[1] for p in pts], marker="." if len(pts) < 50 else None)
        ax.set_xlabel("step")
        ax.set_title(k)
        ax.grid(alpha=0.3)
        fig.tight_layout()
        dest = folder / (k.replace("/", "_") + ".png")
        fig.savefig(dest, dpi=90)
        plt.close(fig)
        written.append(dest)
    return written


def use_bf16(flag: bool | None) -> bool:
    """``--bf16/--no-bf16``, or by default: bf16 on a bf16-capable GPU or CPU (AMX/AVX512-BF16), else fp32."""
    if flag is not None:
        return flag
    import torch

    if torch.cuda.is_available():
        return torch.cuda.is_bf16_supported()
    from cai.backends.hf import cpu_has_bf16

    return cpu_has_bf16()


def model_path(spec: str) -> str:
    """A local folder (or hub id) for ``-m``: an alias, a folder, or ``hf:PATH``."""
    from cai.models import resolve

    return resolve(spec.removeprefix("hf:"))
