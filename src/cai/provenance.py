"""The provenance block every generated record carries: what made it, with what, when."""

from __future__ import annotations

import datetime as _dt
from importlib import metadata
from typing import Any


def cai_version() -> str:
    try:
        return metadata.version("cai")
    except metadata.PackageNotFoundError:
        return "unknown"


def provenance(*, constitution: Any = None, models: dict[str, str] | None = None,
               sampling: dict[str, Any] | None = None, seed: int | None = None, **extra: Any) -> dict[str, Any]:
    """``constitution`` is a Constitution (name, version, hash are read from it) or None."""
    block: dict[str, Any] = {}
    if constitution is not None:
        block["constitution"] = {"name": constitution.name, "version": constitution.version,
                                 "hash": constitution.hash}
    block["models"] = dict(models or {})
    block["sampling"] = dict(sampling or {})
    block["seed"] = seed
    block["cai_version"] = cai_version()
    block["time"] = _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")
    block.update(extra)
    return block
