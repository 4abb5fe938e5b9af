"""Parsing YAML (and JSON, which is nearly YAML) while remembering where each value sits.

Validation errors must name the line, and ``yaml.safe_load`` forgets lines, so the file is
composed to nodes and turned into plain Python here, with a side table from each value's path
(``("principles", 3, "revision")``) to its 1-based line.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

import yaml

from cai.constitution.model import ConstitutionError

Path_ = tuple[Any, ...]


def field_name(path: Path_) -> str:
    """``("principles", 3, "revision")`` -> ``principles[3].revision``."""
    out = ""
    for part in path:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


@dataclass
class Located:
    """Parsed data, the file it came from, and the lines of its parts (empty when unknown)."""

    data: Any
    file: str
    lines: dict[Path_, int] = field(default_factory=dict)
    raw: dict[Path_, str] = field(default_factory=dict)

    def line(self, path: Path_) -> int | None:
        """The line of ``path``, else of its nearest ancestor that has one."""
        path = tuple(path)
        while True:
            if path in self.lines:
                return self.lines[path]
            if not path:
                return None
            path = path[:-1]

    def error(self, path: Path_, problem: str, fix: str) -> ConstitutionError:
        return ConstitutionError(self.file, problem, fix, field=field_name(path) or None, line=self.line(path))


def parse_yaml(text: str, file: str) -> Located:
    """Compose ``text`` and build plain data plus its line table; syntax errors and duplicate keys
    become a ConstitutionError with the line."""
    loader = yaml.SafeLoader(text)
    try:
        node = loader.get_single_node()
    except yaml.MarkedYAMLError as e:
        mark = e.problem_mark or e.context_mark
        problem = (e.problem or "syntax error").strip()
        raise ConstitutionError(file, f"invalid YAML ({problem})",
                                "fix the syntax: check the indentation, and quote text that contains ': ' or starts with a special character",
                                line=mark.line + 1 if mark else None) from None
    except yaml.YAMLError as e:
        raise ConstitutionError(file, f"invalid YAML ({e})", "fix the syntax") from None
    finally:
        loader.dispose()
    out = Located(data=None, file=file)
    if node is not None:
        out.data = _build(node, (), out, loader)
    return out


def parse_json_error(text: str, file: str) -> ConstitutionError:
    """The error for text that is not valid JSON, at the line where the JSON parser stopped."""
    try:
        json.loads(text)
    except json.JSONDecodeError as e:
        return ConstitutionError(file, f"invalid JSON ({e.msg}, column {e.colno})", "fix the JSON syntax", line=e.lineno)
    raise ValueError("parse_json_error called on valid JSON")


def _build(node: yaml.Node, path: Path_, out: Located, loader: yaml.SafeLoader) -> Any:
    out.lines[path] = node.start_mark.line + 1
    if isinstance(node, yaml.MappingNode):
        result: dict[Any, Any] = {}
        for key_node, value_node in node.value:
            key = loader.construct_object(key_node, deep=True)
            if not isinstance(key, (str, int, float, bool)) or key is None:
                raise ConstitutionError(out.file, "a mapping key must be a plain word", "write the key as text",
                                        field=field_name(path) or None, line=key_node.start_mark.line + 1)
            key = str(key) if not isinstance(key, str) else key
            if key in result:
                raise ConstitutionError(out.file, f"duplicate key {key!r}", "keep only one of them",
                                        field=field_name(path + (key,)), line=key_node.start_mark.line + 1)
            result[key] = _build(value_node, path + (key,), out, loader)
            # A mapping entry is reported on its key's line (where a reader looks for it), even when
            # the value is a block that starts on the next line.
            out.lines[path + (key,)] = key_node.start_mark.line + 1
        return result
    if isinstance(node, yaml.SequenceNode):
        return [_build(item, path + (i,), out, loader) for i, item in enumerate(node.value)]
    out.raw[path] = node.value
    return loader.construct_object(node, deep=True)
