"""Find what a folder holds, by the shared file conventions (see ``cai.evals.results`` and the
trainers' ``cai_run.json``), without loading any model:

- training runs: a folder with ``cai_run.json`` (kind "cai-train-run") and ``metrics.jsonl``;
- eval results: a JSON file with ``"kind": "cai-eval-result"`` (``cai eval``, ``cai redteam``);
- labeller evals: a JSON file with ``"eval": "labeler"`` (``cai eval labeler``);
- critique files: JSONL whose records have ``initial`` and ``steps`` (``cai critique``);
- preference files: JSONL whose records have ``chosen`` and ``rejected`` (``cai label``);
- a run manifest: JSON with ``"kind": "cai-run-manifest"`` or a ``stages`` list (``cai run``);
- an experiment: JSON with ``"kind": "cai-experiment"`` (``cai run`` with arms: each arm's results).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable

from cai.errors import CAIError

# Folders that hold weights, checkpoints or tooling, never report inputs.
SKIP_DIRS = {"checkpoints", "curves", ".git", "__pycache__", "node_modules", ".venv", ".cache", "wandb", "runs_tb"}
MAX_DEPTH = 6
MAX_JSON_BYTES = 200 * 1024 * 1024


@dataclass
class Found:
    train_runs: list[Path] = field(default_factory=list)      # folders holding cai_run.json
    eval_results: list[Path] = field(default_factory=list)
    labeler_results: list[Path] = field(default_factory=list)
    critique_files: list[Path] = field(default_factory=list)
    preference_files: list[Path] = field(default_factory=list)
    manifests: list[Path] = field(default_factory=list)
    experiments: list[Path] = field(default_factory=list)
    roots: list[Path] = field(default_factory=list)

    def empty(self) -> bool:
        return not (self.train_runs or self.eval_results or self.labeler_results or self.critique_files
                    or self.preference_files or self.manifests or self.experiments)


def _first_record(path: Path) -> dict[str, Any] | None:
    try:
        with open(path, encoding="utf-8") as f:
            for line in f:
                if line.strip():
                    rec = json.loads(line)
                    return rec if isinstance(rec, dict) else None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return None
    return None


def _read_json(path: Path) -> Any:
    if path.stat().st_size > MAX_JSON_BYTES:
        return None
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return None


def classify(path: Path) -> str | None:
    """What one file is: train-run, eval, labeler, critique, preference, manifest, experiment, or None."""
    name = path.name
    if name == "cai_run.json":
        d = _read_json(path)
        return "train-run" if isinstance(d, dict) else None
    if name.endswith(".jsonl"):
        if name == "metrics.jsonl" or name.endswith((".skipped.jsonl", ".examples.jsonl", ".dropped.jsonl")):
            return None  # read through the run, result or critique file that owns them
        rec = _first_record(path)
        if not rec:
            return None
        if "initial" in rec and "steps" in rec:
            return "critique"
        if "chosen" in rec and "rejected" in rec:
            return "preference"
        return None
    if name.endswith(".json"):
        if name in ("config.json", "tokenizer.json", "tokenizer_config.json", "generation_config.json",
                    "special_tokens_map.json", "adapter_config.json", "trainer_state.json") or name.endswith(".index.json"):
            return None
        d = _read_json(path)
        if not isinstance(d, dict):
            return None
        if d.get("kind") == "cai-eval-result":
            return "eval"
        if d.get("kind") == "cai-train-run":
            return "train-run"
        if d.get("eval") == "labeler" and "overall" in d:
            return "labeler"
        if d.get("kind") == "cai-experiment":
            return "experiment"
        if d.get("kind") == "cai-run-manifest" or isinstance(d.get("stages"), (list, dict)):
            return "manifest"
    return None


def _walk(root: Path, depth: int = 0) -> Iterable[Path]:
    try:
        entries = sorted(root.iterdir(), key=lambda p: p.name)
    except OSError:
        return
    for p in entries:
        if p.is_dir():
            if p.name in SKIP_DIRS or p.name.startswith(".") or depth >= MAX_DEPTH:
                continue
            yield from _walk(p, depth + 1)
        elif p.suffix in (".json", ".jsonl"):
            yield p


def discover(paths: Iterable[str | Path]) -> Found:
    """Classify every file under the given folders and every file given. A file given by name
    that is not a cai artefact is an error; one found while walking a folder is skipped."""
    found = Found()
    seen: set[Path] = set()
    for raw in paths:
        p = Path(raw)
        if not p.exists():
            raise CAIError(f"{p}: no such file or folder")
        explicit = p.is_file()
        candidates = [p] if explicit else list(_walk(p))
        found.roots.append(p)
        for f in candidates:
            rp = f.resolve()
            if rp in seen:
                continue
            seen.add(rp)
            kind = classify(f)
            if kind is None:
                if explicit:
                    raise CAIError(f"{f}: not a cai file the report reads (an eval result, cai_run.json, a critique "
                                   "or preference JSONL, a labeller eval or a run manifest)")
                continue
            if kind == "train-run":
                found.train_runs.append(f.parent)
            else:
                {"eval": found.eval_results, "labeler": found.labeler_results, "critique": found.critique_files,
                 "preference": found.preference_files, "manifest": found.manifests,
                 "experiment": found.experiments}[kind].append(f)
    return found
