"""Checking one ``cai run --set PATH=VALUE`` item before it is merged into the run file, so that a
mistake in it is named as that ``--set`` item (an unknown section or option with the nearest name,
a value of the wrong type, YAML that read ``mock:`` as a mapping) instead of as the run file's."""

from __future__ import annotations

from typing import Any

from cai.errors import CAIError

# Top-level keys of a run file -> the type their value must have.
_TOP_TYPES: dict[str, type] = {"model": str, "constitution": str, "seed": int, "rl": str, "rl_rounds": int,
                               "stages": list, "output": str, "description": str, "arms": dict}


def check_override(item: str, path: list[str], value: Any, yaml_error: str | None) -> None:
    """Raise a one-line :class:`CAIError` naming ``--set item`` when ``path`` (the keys before
    ``=``, split at dots) and ``value`` (the YAML-read text after it) cannot be right."""
    where = f"--set {item}"
    try:
        _check(path, value, where)
    except ValueError as e:
        msg = str(e)
        if yaml_error and isinstance(value, str):
            msg += f" (the value is not valid YAML: {yaml_error})"
        raise CAIError(msg) from None


def _check(path: list[str], value: Any, where: str) -> None:
    from cai.config import closest
    from cai.run.plan import STAGES

    head, rest = path[0], path[1:]
    if head == "arms" and len(rest) >= 2:
        return _check(rest[1:], value, where)  # arms.NAME.<what a run file holds>
    if head == "arms" and not rest and isinstance(value, dict):  # arms={NAME: {...}, ...}
        for name, overlay in value.items():
            _check(["arms", str(name)], overlay, where)
        return None
    if head == "arms" and len(rest) == 1:  # arms.NAME={...}: one arm's overlay
        if isinstance(value, dict):
            for k, v in value.items():
                _check([str(k)], v, where)
        elif value is not None:
            raise ValueError(f"{where}: an arm is a mapping of run-file keys to change, e.g. "
                             f"--set 'arms.{rest[0]}={{stages: [eval]}}'")
        return None
    if head not in _TOP_TYPES and head not in STAGES:
        near = closest(head, list(_TOP_TYPES) + list(STAGES))
        raise ValueError(f"{where}: a run file has no section or key {head!r}" +
                         (f"; did you mean {near!r}?" if near else f"; sections: {', '.join(STAGES)}"))
    if head in STAGES:
        if not rest:
            if isinstance(value, dict):
                for k, v in value.items():
                    _check([head, str(k)], v, where)
            elif value is not None:
                raise ValueError(f"{where}: a section is a mapping of option: value; set one option with "
                                 f"--set {head}.OPTION=VALUE")
            return
        return _check_option(head, rest, value, where)
    if rest:
        raise ValueError(f"{where}: {head} is not a section; set it with --set {head}=VALUE")
    want = _TOP_TYPES[head]
    if value is not None and (not isinstance(value, want) or isinstance(value, bool) and want is int):
        raise ValueError(_type_problem(where, head, value, want))
    if head == "rl" and value not in (None, "ppo", "dpo", "rloo"):
        raise ValueError(f"{where}: rl must be one of ppo, dpo, rloo, got {value!r}")


def _check_option(stage: str, rest: list[str], value: Any, where: str) -> None:
    from cai.config import check_value, closest, field_type, key_names
    from cai.run.stages import eval_task_classes, stage_class

    if value is None:
        return  # null clears a key (in an arm's overlay it removes it); the run checks what is left
    if stage == "eval":
        classes = eval_task_classes()
        if rest[0] in classes and len(rest) > 1:
            stage, classes, rest = f"eval.{rest[0]}", {rest[0]: classes[rest[0]]}, rest[1:]
        elif rest[0] == "tasks" or rest[0] in classes or (rest == ["baseline"] and isinstance(value, bool)):
            return  # `baseline: true/false` is the run's own switch (cai.run.plan); a name is helpfulness's
        key = rest[0]
        owners = [cls for cls in classes.values() if key.replace("-", "_") in key_names(cls)]
        if not owners:
            names = {n for cls in classes.values() for n in key_names(cls)}
            near = closest(key, names | {"tasks"})
            raise ValueError(f"{where}: {stage} has no option {key!r}" + (f"; did you mean {near!r}?" if near else ""))
        cls = owners[0]
    else:
        cls = stage_class(stage)
    if len(rest) > 1:
        raise ValueError(f"{where}: {stage}.{rest[0]} is not a section; set it with --set {stage}.{rest[0]}=VALUE")
    key = rest[0]
    if not isinstance(value, str) and field_type(cls, key) == (str, False):
        raise ValueError(_type_problem(where, key, value, str))
    check_value(cls, key, value, where)


def _type_problem(where: str, key: str, value: Any, want: type) -> str:
    if want is str:  # YAML made something else of text: mock: is a mapping, 7 a number, yes true
        target, _, raw = where[len("--set "):].partition("=")
        kind = {dict: "a mapping", list: "a list", bool: "true or false"}.get(type(value), "a number")
        return (f"{where}: {key} is text, but YAML reads {raw!r} as {kind} ({value!r:.40}); quote it: "
                f"--set '{target}=\"{raw}\"'")
    names = {int: "a whole number", str: "text", list: "a list", dict: "a mapping"}
    return f"{where}: {key} must be {names.get(want, want.__name__)}, got {value!r:.60} ({type(value).__name__})"
