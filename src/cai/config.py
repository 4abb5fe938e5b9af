"""One config dataclass per stage serves the Python API, the CLI flags and the YAML run file.

A stage declares its options once, as dataclass fields whose ``metadata`` carries the help text
(and optionally ``flags`` such as ``("-m", "--model")``, and ``aliases``: old flag names that still
work but no longer show in --help). This module turns such a class into argparse arguments, and
merges defaults < YAML file < command-line flags into an instance. A YAML key is a field's name or
any of its long flag names, so ``data:`` and ``prompts:`` both set ``CritiqueConfig.prompts``.
"""

from __future__ import annotations

import argparse
import dataclasses
import difflib
import types
import typing
from pathlib import Path
from typing import Any, TypeVar

T = TypeVar("T")


def option(default: Any = dataclasses.MISSING, *, help: str, flags: tuple[str, ...] = (),
           aliases: tuple[str, ...] = (), recorded: bool = True, **kw: Any) -> Any:
    """A dataclass field with its CLI help attached; ``flags`` replace the default ``--field-name``,
    ``aliases`` are older names that still parse but are hidden from --help. A list field's flag
    collects every use (``--x A --x B`` is ``--x A B``): keeping only the last, argparse's default,
    silently dropped a second ``--data FILE``. A field that is not ``recorded`` is left out of
    :func:`to_dict` (provenance, a run's identity)."""
    meta = {"help": help, "flags": flags, "aliases": aliases, "recorded": recorded}
    if isinstance(default, (list, dict, set)):
        return dataclasses.field(default_factory=lambda d=default: type(d)(d), metadata=meta, **kw)
    return dataclasses.field(default=default, metadata=meta, **kw)


def _base_type(tp: Any) -> tuple[Any, bool]:
    """(inner type, is_sequence) for annotations like ``int | None`` or ``tuple[str, ...]``."""
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        return _base_type(args[0]) if len(args) == 1 else (str, False)
    if origin in (list, tuple):
        args = [a for a in typing.get_args(tp) if a is not Ellipsis]
        return (args[0] if args else str), True
    return tp, False


def _flags(f: dataclasses.Field) -> list[str]:
    return list(f.metadata.get("flags") or ()) or [f"--{f.name.replace('_', '-')}"]


def add_config_arguments(parser: argparse.ArgumentParser, cls: type, *, skip: tuple[str, ...] = ()) -> None:
    """Add one flag per field of ``cls``; absent flags stay absent so YAML values can show through."""
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        if f.name in skip or not f.init or f.name.startswith("_"):
            continue
        tp, is_seq = _base_type(hints[f.name])
        flags = _flags(f)
        long = next((s for s in flags if s.startswith("--")), f"--{f.name}")
        default = f.default if f.default is not dataclasses.MISSING else (
            f.default_factory() if f.default_factory is not dataclasses.MISSING else None)  # type: ignore[misc]
        help_text = f.metadata.get("help", "")
        if default not in (None, (), [], "") and tp is not bool:
            help_text += f" (default: {_shown_default(default)})"
        elif tp is bool and default is True:  # a switch that is off unless given needs no note; one that is on does
            help_text += " (default: on)"
        if tp is bool:
            kind: dict[str, Any] = {"action": argparse.BooleanOptionalAction}
        elif is_seq:
            kind = {"type": tp, "nargs": "+", "metavar": long[2:].replace("-", "_").upper(), "action": "extend"}
        else:
            kind = {"type": tp if tp in (int, float) else str, "metavar": long[2:].replace("-", "_").upper()}
        parser.add_argument(*flags, dest=f.name, default=argparse.SUPPRESS, help=help_text, **kind)
        aliases = f.metadata.get("aliases") or ()
        if aliases:  # old names: still accepted, no longer shown
            parser.add_argument(*aliases, dest=f.name, default=argparse.SUPPRESS, help=argparse.SUPPRESS, **kind)


def _shown_default(default: Any) -> str:
    """A default as the user would type it: a list as its items (``hh-rlhf hhh``, each quoted where
    it holds a space), not Python's ``('hh-rlhf', 'hhh')``."""
    if isinstance(default, (list, tuple)):
        import shlex

        return shlex.join(str(v) for v in default)
    return str(default)


def key_names(cls: type) -> dict[str, str]:
    """Every key a config file may use for a field of ``cls`` -> the field: its name, and its long
    flag names (shown or old) with dashes as underscores. A field's own name wins a clash."""
    names: dict[str, str] = {}
    fields = [f for f in dataclasses.fields(cls) if f.init]
    for f in fields:
        for flag in _flags(f) + list(f.metadata.get("aliases") or ()):
            if flag.startswith("--"):
                names.setdefault(flag[2:].replace("-", "_"), f.name)
    names.update({f.name: f.name for f in fields})
    return names


def canonical_keys(cls: type, values: dict[str, Any], where: str = "config") -> dict[str, Any]:
    """``values`` with each key that names a field of ``cls`` by a flag name renamed to the field;
    two keys for one field are an error, other keys are kept as they are."""
    names = key_names(cls)
    out: dict[str, Any] = {}
    given: dict[str, str] = {}
    for k, v in values.items():
        field = names.get(k.replace("-", "_"))
        if field is None:
            out[k] = v
            continue
        if field in given:
            raise ValueError(f"{where}: {given[field]!r} and {k!r} both set the option {field}; keep one of them")
        given[field] = k
        out[field] = v
    return out


def closest(word: str, choices: Any) -> str | None:
    """The one of ``choices`` that ``word`` most likely misspells, if any is close."""
    close = difflib.get_close_matches(word, list(choices), n=1, cutoff=0.6)
    return close[0] if close else None


def parse_yaml(text: str) -> Any:
    """``yaml.safe_load`` that reads ``1e9`` and ``1e-5`` as numbers. PyYAML follows YAML 1.1,
    where a float needs a dot and a signed exponent (``1.0e-4``), so ``lr: 1e-4`` was text and
    failed as "must be a number, got '1e-4' (str)"; YAML 1.2, and every user, reads a number."""
    import re

    import yaml

    class Loader(yaml.SafeLoader):
        pass

    # add_implicit_resolver copies the resolver table onto the subclass: SafeLoader is unchanged.
    Loader.add_implicit_resolver("tag:yaml.org,2002:float",
                                 re.compile(r"^[-+]?(?:[0-9][0-9_]*(?:\.[0-9_]*)?|\.[0-9_]+)[eE][-+]?[0-9]+$"),
                                 list("-+0123456789."))
    return yaml.load(text, Loader=Loader)  # noqa: S506 (a SafeLoader)


def load_yaml(path: str | Path, flag: str = "") -> dict[str, Any]:
    """A YAML mapping from ``path`` (given as ``flag``, where one names it)."""
    import yaml

    from cai.textfiles import read_text

    p = Path(path)
    text = read_text(p, flag)
    try:
        data = parse_yaml(text) or {}
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f"{p}:{mark.line + 1}:{mark.column + 1}" if mark is not None else str(p)
        raise ValueError(f"{where}: not valid YAML ({getattr(e, 'problem', None) or e}); fix the file, "
                         "e.g. quote text that holds ': ' or '#'") from None
    if not isinstance(data, dict):
        raise ValueError(f"{p}: a config file is a mapping of option: value")
    return data


def build_config(cls: type[T], *layers: dict[str, Any] | argparse.Namespace | None, where: str = "config") -> T:
    """Instantiate ``cls`` from layers applied in order (later wins); unknown keys are an error."""
    names = {f.name for f in dataclasses.fields(cls) if f.init}
    values: dict[str, Any] = {}
    for layer in layers:
        if layer is None:
            continue
        if isinstance(layer, argparse.Namespace):
            # argparse carries the subcommand's own bookkeeping too
            values.update({k: v for k, v in vars(layer).items() if k in names})
            continue
        for k, v in canonical_keys(cls, layer, where).items():
            if k not in names:
                near = closest(k, key_names(cls))
                hint = f"did you mean {near!r}? " if near else ""
                raise ValueError(f"{where}: unknown option {k!r}; {hint}valid options: {', '.join(sorted(names))}")
            values[k] = v
    hints = typing.get_type_hints(cls)
    for k, v in list(values.items()):
        tp, is_seq = _base_type(hints[k])
        if is_seq and isinstance(v, (list, tuple)) and typing.get_origin(hints[k]) is tuple:
            values[k] = tuple(v)
        elif is_seq and isinstance(v, str):
            values[k] = (v,) if typing.get_origin(hints[k]) is tuple else [v]
        values[k] = _checked(values[k], tp, is_seq, hints[k], f"{where}: {k}")
    try:
        return cls(**values)
    except TypeError as e:  # a check in __post_init__ met a value of a type it did not expect
        raise ValueError(f"{where}: {e}") from None


_TYPE_NAMES = {int: "a whole number", float: "a number", bool: "true or false", str: "text"}


def field_type(cls: type, key: str) -> tuple[Any, bool] | None:
    """(type, is_sequence) of the field ``key`` names in ``cls`` (by field or flag name), or None."""
    field = key_names(cls).get(key.replace("-", "_"))
    return None if field is None else _base_type(typing.get_type_hints(cls)[field])


def check_value(cls: type, key: str, value: Any, where: str) -> None:
    """Raise the one-line error for ``key: value`` in a config of ``cls`` (an unknown key, with the
    nearest one, or a value of the wrong type), without the run file advice of :func:`build_config`."""
    names = key_names(cls)
    field = names.get(key.replace("-", "_"))
    if field is None:
        near = closest(key, names)
        raise ValueError(f"{where}: no option {key!r}" + (f"; did you mean {near!r}?" if near else
                         f"; options: {', '.join(sorted(set(names.values())))}"))
    tp, is_seq = _base_type(typing.get_type_hints(cls)[field])
    if is_seq and isinstance(value, str):
        value = [value]
    _checked(value, tp, is_seq, typing.get_type_hints(cls)[field], f"{where}: {field}", fix="")


def _checked(value: Any, tp: Any, is_seq: bool, hint: Any, where: str,
             fix: str = "; fix that value in the config file") -> Any:
    """``value`` if it has the field's type (ints pass as floats); else a one-line error naming the
    field, what it got and what it needs. YAML gives typed values, so ``rounds: "two"`` lands here."""
    if value is None:
        if type(None) in typing.get_args(hint):
            return value
        raise ValueError(f"{where} cannot be empty; give {_TYPE_NAMES.get(tp, tp.__name__)} or leave the key out")
    if is_seq:
        if not isinstance(value, (list, tuple)):
            raise ValueError(f"{where} must be a list, got {value!r:.60}")
        items = [_checked(v, tp, False, tp, where, fix) for v in value]
        return type(value)(items)
    if tp is bool:
        ok = isinstance(value, bool)
    elif tp is int:
        ok = isinstance(value, int) and not isinstance(value, bool)
    elif tp is float:
        ok = isinstance(value, (int, float)) and not isinstance(value, bool)
        value = float(value) if ok else value
    elif tp is str:
        ok = isinstance(value, str)
    else:
        return value
    if not ok:
        raise ValueError(f"{where} must be {_TYPE_NAMES[tp]}, got {value!r:.60} ({type(value).__name__}){fix}")
    return value


def to_dict(config: Any) -> dict[str, Any]:
    """A JSON-friendly dict of a config, for provenance and run files."""
    out = {}
    for f in dataclasses.fields(config):
        if f.metadata.get("recorded") is False:
            continue
        v = getattr(config, f.name)
        out[f.name] = list(v) if isinstance(v, tuple) else v
    return out


def add_stage_arguments(parser: argparse.ArgumentParser, cls: type, *, skip: tuple[str, ...] = ()) -> None:
    """The flags every stage command shares: ``--config RUN.yaml``, ``--progress``, and one per field."""
    parser.add_argument("--config", metavar="RUN.yaml", help="YAML run file with these options (keys are the "
                        "long flag names); flags given on the command line override it")
    parser.add_argument("--progress", action=argparse.BooleanOptionalAction, default=None,
                        help="show a progress bar with ETA (default: when stderr is a terminal)")
    add_config_arguments(parser, cls, skip=skip)


def stage_config(cls: type[T], args: argparse.Namespace) -> T:
    """The stage's config from defaults < ``--config`` YAML < command-line flags."""
    config_path = getattr(args, "config", None)
    layers = [load_yaml(config_path, "--config")] if config_path else []
    return build_config(cls, *layers, args, where=config_path or "config")
