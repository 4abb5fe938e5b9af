"""Constitutions: the written principles that SL-CAI critiques against and RL-CAI labels with.

``load_constitution("default")`` returns a built-in; ``load_constitution("my.yaml")`` reads a file
in our YAML format or in a foreign format detected from its content (Hugging Face llm-swarm JSON,
the CAI paper's prompt files; see ``cai.constitution.formats``). ``"a.json+b.json"`` joins files,
e.g. the paper's critique instructions with its preference instructions.
"""

from __future__ import annotations

import dataclasses
import os
from importlib import resources
from pathlib import Path

from cai.constitution.model import (
    Constitution,
    ConstitutionError,
    Example,
    PreferenceExample,
    Principle,
    merge,
)
from cai.errors import CAIError

__all__ = [
    "Constitution", "ConstitutionError", "Example", "PreferenceExample", "Principle",
    "builtin_path", "list_constitutions", "load_constitution",
]


def _builtin_dir():
    return resources.files(__name__) / "builtin"


def list_constitutions() -> list[str]:
    """Names of the built-in constitutions, sorted."""
    return sorted(f.name[:-5] for f in _builtin_dir().iterdir()
                  if f.name.endswith(".yaml") and not f.name.startswith("_"))


def builtin_path(name: str) -> Path:
    """The file of a built-in constitution (a starting point to copy and edit)."""
    if name not in list_constitutions():
        raise CAIError(f"no built-in constitution {name!r}; built-ins are {', '.join(list_constitutions())}")
    return Path(str(_builtin_dir() / f"{name}.yaml"))


def load_constitution(name_or_path: str | os.PathLike | Constitution) -> Constitution:
    """A built-in name ("default", "hhh", "customer-service", "red-team"), a file in any supported
    format, or several of these joined with "+". A Constitution is returned unchanged."""
    from cai.constitution.formats import read_file, read_text

    if isinstance(name_or_path, Constitution):
        return name_or_path
    spec = os.fspath(name_or_path)
    builtins = list_constitutions()
    if spec in builtins:
        path = builtin_path(spec)
        c = read_text(path.read_text(encoding="utf-8"), file=str(path), name=spec)
        return dataclasses.replace(c, source=f"builtin:{spec}")
    path = Path(spec).expanduser()
    if path.is_file():
        return read_file(path)
    if "+" in spec and all(part for part in spec.split("+")):
        return merge([load_constitution(part) for part in spec.split("+")])
    raise CAIError(f"no constitution {spec!r}: it is not a built-in ({', '.join(builtins)}) and no such file "
                   "exists; give a built-in name or the path of a constitution file")
