"""Built-in run files, and reading a run file (or preset) with command-line overrides."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from cai.errors import CAIError

PRESETS = Path(__file__).resolve().parent


def preset_names() -> list[str]:
    return sorted(p.stem for p in PRESETS.glob("*.yaml"))


def load_run_file(path: str | None, preset: str | None) -> tuple[dict[str, Any], str, Path]:
    """(spec, name for messages, folder relative paths are read from)."""
    from cai.config import load_yaml

    if preset:
        p = PRESETS / f"{preset}.yaml"
        if not p.is_file():
            raise CAIError(f"--preset {preset}: no such preset; presets: {', '.join(preset_names())}")
        return load_yaml(p), f"preset {preset}", Path.cwd()
    p = Path(path)  # type: ignore[arg-type]
    return load_yaml(p), str(p), p.resolve().parent


def apply_overrides(spec: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """``section.key=value`` (value read as YAML), ``key=value`` for a top-level key, or a longer
    path into nested mappings such as ``arms.NAME.ppo.max_steps=4``."""
    import copy

    import yaml

    from cai.config import parse_yaml
    from cai.run.overrides import check_override

    spec = copy.deepcopy(spec)
    for item in overrides:
        target, sep, raw = item.partition("=")
        if not sep or not target:
            raise CAIError(f"--set {item}: expected SECTION.KEY=VALUE, e.g. --set sft.epochs=2")
        problem = None
        try:
            value = parse_yaml(raw)
        except yaml.YAMLError as e:
            value, problem = raw, getattr(e, "problem", None) or type(e).__name__
        check_override(item, target.split("."), value, problem)
        *path, key = target.split(".")
        key = _field_name(path[-1] if path else "", key)
        node = spec
        for depth, part in enumerate(path):
            current = node.get(part)
            if current is not None and not isinstance(current, dict):
                raise CAIError(f"--set {item}: {'.'.join(path[:depth + 1])} is not a section")
            node[part] = dict(current or {})
            node = node[part]
        node[key] = value
    return spec


def _field_name(section: str, key: str) -> str:
    """A stage option as its config field, so ``--set critique.data=X`` replaces the run file's
    ``prompts:`` rather than adding a second key for it."""
    from cai.config import key_names
    from cai.run.stages import STAGES, stage_class

    return key_names(stage_class(section)).get(key.replace("-", "_"), key) if section in STAGES else key
