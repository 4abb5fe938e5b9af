"""A backend that is named but never started: what a rerun on a finished output gets instead of a model.

Rerunning a command whose output already holds every record leaves no model work, yet the command
still checks that the stored records were made with the same settings and builds its summary or
result from them, and both read only the backend's ``name``. Starting the real engine just for
that cost 30-40 s (vLLM on CPU). So each stage first reads its stored records and the prompt
source; when nothing is left to do and the records name models that ``-m`` could load, it runs
on :class:`Unstarted` stand-ins carrying the stored names. Everything after that (the settings
checks, the result) is the code a loaded backend goes through; a stand-in asked for model work
raises, so a wrong "finished" verdict fails loudly instead of writing anything.
"""

from __future__ import annotations

from typing import Any, Callable, Sequence

from cai.backends import is_explicit, split_spec


class Unstarted:
    """``name`` (as the loaded backend would carry it) of ``spec``; no model behind it."""

    def __init__(self, spec: str, name: str) -> None:
        self.spec, self.name = spec, name

    def _refuse(self, *_: Any, **__: Any) -> Any:
        raise RuntimeError(f"{self.name} was not started because its output looked complete, yet model work was "
                           "asked of it; this is a bug in cai: pass --overwrite to redo the output meanwhile")

    generate = score_options = _refuse


def names_of(spec: str) -> tuple[str, ...]:
    """The names a backend loaded from ``spec`` may carry, found without loading it; the one
    :func:`cai.backends.load_backend` tries first comes first. Empty when only a load can tell
    (an openai server asked for its model, a spec ``load_backend`` would refuse)."""
    try:
        kind, target = split_spec(spec)
    except ValueError:
        return ()
    if kind == "openai":
        from cai.backends.openai import parse_target

        try:
            url, model = parse_target(target)
        except ValueError:
            return ()
        return (f"openai:{url}#{model}",) if model else ()
    if kind == "vllm" and not is_explicit(spec):  # a bare name, with vLLM installed
        return (f"vllm:{target}", f"hf:{target}")  # it falls back to hf when vLLM cannot start
    return (f"{kind}:{target}",)


def finished_record(store: Any, items: Sequence[Any], key: Callable[[Any], str]) -> dict[str, Any] | None:
    """The first record of ``store`` (a :class:`cai.store.RecordStore`, or None for no store) when it
    already holds every one of ``items``, so a rerun has no model work; else None. That record names
    the models the stand-ins are checked against. A store opened with ``overwrite`` holds nothing,
    so it is never finished."""
    if store is None or not items or store.todo(items, key=key):
        return None
    return next(iter(store), None)


def stand_in(spec: Any, stored: Any) -> Any:
    """What to run with when a finished output's records name the model ``stored``: an
    :class:`Unstarted` for a spec that could have loaded a backend of that name, a ready backend
    object as it is if it bears that name, else None (the model differs, or only a load tells). A
    shared backend not loaded yet (:mod:`cai.backends.deferred`) counts as its spec: loading it
    to read its name would start the engine this check exists to spare."""
    from cai.backends.deferred import pending_spec

    spec = pending_spec(spec) or spec
    if not isinstance(spec, str):
        return spec if getattr(spec, "name", None) == stored else None
    return Unstarted(spec, stored) if isinstance(stored, str) and stored in names_of(spec) else None


def stand_ins(specs: Sequence[Any], stored: Sequence[Any]) -> list[Any] | None:
    """:func:`stand_in` for each spec and stored name; None unless every one of them stands in."""
    if len(specs) != len(stored):
        return None
    out = [stand_in(spec, name) for spec, name in zip(specs, stored)]
    return out if all(b is not None for b in out) else None


def named(spec: Any) -> Any:
    """A stand-in for a model the stored records do not name in full (a judge recorded as
    ``judge:MODEL``): named as the backend ``load_backend`` tries first would be. A ready backend
    is returned as it is; a spec whose name only a load tells, as the spec (it is loaded)."""
    if not isinstance(spec, str):
        return spec
    names = names_of(spec)
    return Unstarted(spec, names[0]) if names else spec
