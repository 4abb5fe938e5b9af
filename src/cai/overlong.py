"""Prompts longer than the model's context, handled one way in every stage (``--overlong``):

* ``error`` (default): the backend stops the run with a message naming the conversation;
* ``truncate``: the hf backend keeps the last tokens of the prompt (the end of a chat is what the
  model answers), with a warning;
* ``skip`` (``cai generate``): the prompt is listed in ``OUT.skipped.jsonl`` and the rest go on.
"""

from __future__ import annotations

from typing import Any

from cai.errors import CAIError
from cai.types import Conversation

OVERLONG = ("error", "truncate", "skip")


def check_overlong(value: str, allowed: tuple[str, ...] = OVERLONG) -> None:
    if value not in allowed:
        raise ValueError(f"overlong must be one of {', '.join(allowed)}, got {value!r}")


def load_for_overlong(spec: Any, overlong: str, **options: Any) -> Any:
    """``load_backend(spec)``, told to cut overlong prompts on the left when ``overlong`` is
    ``truncate`` (only the hf backend can; anything else is refused with a one-line error)."""
    from cai.backends import load_backend, split_spec
    from cai.backends.unstarted import Unstarted

    if isinstance(spec, Unstarted):  # a rerun on a finished output: refuse what loading its spec would
        if overlong == "truncate" and split_spec(spec.spec)[0] != "hf":
            raise CAIError(_needs_hf(spec.spec))
        return spec
    if overlong != "truncate":
        backend = load_backend(spec, **options)
        if hasattr(backend, "overlong_hint"):
            backend.overlong_hint = "pass --overlong truncate to keep its last tokens (hf backend)"
        return backend
    if isinstance(spec, str):
        if split_spec(spec)[0] != "hf":
            raise CAIError(_needs_hf(spec))
        return load_backend(spec, truncate="left", **options)
    if not hasattr(spec, "truncate"):
        raise CAIError(f"--overlong truncate needs the hf backend, not {getattr(spec, 'name', spec)}")
    spec.truncate = "left"
    return spec


def _needs_hf(spec: str) -> str:
    return (f"--overlong truncate needs the hf backend (-m hf:...), not {spec!r}; use --overlong error, or skip "
            "where the command offers it")


def prompt_tokens(backend: Any, conv: Conversation) -> tuple[int, int] | None:
    """(tokens of the rendered prompt, the model's context) for a backend that tokenizes locally."""
    from cai.chat import encode_prompt

    tok = getattr(backend, "tokenizer", None)
    ctx = getattr(backend, "context_length", None) or getattr(backend, "max_model_len", None)
    if tok is None or not ctx:
        return None
    return len(encode_prompt(tok, conv)), int(ctx)
