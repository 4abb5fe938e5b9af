"""The wording of every prompt cai sends (critique, revision, labelling, judging) lives in YAML
files in this folder, so changing how a model is asked is a data change.

``load_template("critique")`` returns the mapping in ``critique.yaml``; ``fill`` substitutes
``{placeholders}`` and fails loudly on a missing one.
"""

from __future__ import annotations

from functools import lru_cache
from importlib import resources
from typing import Any

import yaml


@lru_cache(maxsize=None)
def load_template(name: str) -> dict[str, Any]:
    path = resources.files(__name__) / f"{name}.yaml"
    if not path.is_file():
        raise FileNotFoundError(f"no prompt template named {name!r} in cai/templates")
    data = yaml.safe_load(path.read_text(encoding="utf-8"))
    if not isinstance(data, dict):
        raise ValueError(f"cai/templates/{name}.yaml must be a mapping")
    return data


def fill(template: str, **values: Any) -> str:
    try:
        return template.format(**values)
    except KeyError as e:
        raise KeyError(f"template placeholder {e.args[0]!r} was not given a value") from None
