"""The one backend interface, and ``load_backend`` which turns a spec string into a backend.

Every model-facing step in cai goes through two verbs:

* ``generate(conversations, params)`` -> one :class:`~cai.types.Completion` per conversation and
  sample (conversation-major when ``params.n > 1``);
* ``score_options(conversations, options)`` -> for each conversation, the summed log-probability
  of each option string as a continuation of the rendered prompt, in one forward pass, with no
  generation and no parsing of text.

Specs: ``mock:[SCRIPT]``, ``hf:MODEL``, ``vllm:MODEL``, ``openai:URL#MODEL``; a bare ``MODEL``
picks vllm when it is installed and hf otherwise, and falls back to hf, saying why in one line, when
vLLM cannot start; an explicit ``vllm:MODEL`` fails instead. MODEL is an alias (``smollm2-135m``), a local
folder, a checkpoint written by cai, or a hub id. Heavy libraries are imported only by the backend
that needs them.
"""

from __future__ import annotations

import importlib
import importlib.util
import sys
from pathlib import Path
from typing import Any, Protocol, Sequence, runtime_checkable

from cai.errors import CAIError
from cai.types import Completion, Conversation, SamplingParams

__all__ = ["Backend", "load_backend", "split_spec", "is_explicit", "options_per_conversation", "start_options",
           "BACKENDS"]

# A vLLM engine on a CPU is up in about 7 s without its torch.compile warm-up, and then generates at
# 0.78x the compiled rate. A compiled start takes 11 s where vLLM's AOT cache holds the folder's
# compiled model (the embedded model after its first start, and a trained folder of its shape) and
# 17 s where it does not (a trained folder of another shape or dtype; cai.backends.vllm_compile). So
# the quick start finishes first below about 16k and 43k generated tokens (SmolLM2-135M, 2-core AMX
# VM, 2026-12-04; bench/RESULTS.md, "vLLM engine start"). Jobs up to those bounds by their upper bound
# (prompts x token limit; answers that stop early make real jobs smaller) take it: 16k, and 40k for a
# folder that starts without the AOT cache.
QUICK_START_TOKENS = 16 * 1024
QUICK_START_TOKENS_TRAINED = 40 * 1024


@runtime_checkable
class Backend(Protocol):
    """What every backend implements. ``name`` is the spec it was loaded from, for provenance."""

    name: str

    def generate(self, conversations: Sequence[Conversation], params: SamplingParams) -> list[Completion]: ...

    def score_options(
        self, conversations: Sequence[Conversation], options: Sequence[str] | Sequence[Sequence[str]]
    ) -> list[dict[str, float]]: ...


# kind -> "module:factory"; the module is imported only when a spec of that kind is loaded.
BACKENDS: dict[str, str] = {
    "mock": "cai.backends.mock:MockBackend",
    "hf": "cai.backends.hf:HFBackend",
    "vllm": "cai.backends.vllm:VLLMBackend",
    "openai": "cai.backends.openai:OpenAIBackend",
}


def vllm_available() -> bool:
    return importlib.util.find_spec("vllm") is not None


def split_spec(spec: str) -> tuple[str, str]:
    """``"hf:smollm2-135m"`` -> ``("hf", "smollm2-135m")``; a bare model picks vllm or hf."""
    spec = spec.strip()
    if not spec:
        raise ValueError("empty model spec; pass e.g. -m smollm2-135m, -m hf:PATH or -m openai:URL#MODEL")
    kind, sep, rest = spec.partition(":")
    if sep and kind in BACKENDS:
        return kind, rest
    if sep and not Path(spec).expanduser().exists() and "/" not in kind:
        # Hub ids and aliases have no colon; "foo:bar" is a mistyped backend, not a model for vLLM.
        raise ValueError(f"unknown backend {kind!r} in model spec {spec!r}; use one of "
                         f"{', '.join(k + ':' for k in BACKENDS)} or a bare model name or folder")
    folder = Path(spec).expanduser()
    if (folder / "adapter_config.json").is_file() and not (folder / "config.json").is_file():
        # A --keep-adapter folder: vLLM serves an adapter only beside its base (enable_lora), and a try
        # failed with a message about the KV cache before the fallback; hf loads it through PEFT.
        return "hf", spec
    return ("vllm" if vllm_available() else "hf"), spec


def is_explicit(spec: str) -> bool:
    """Whether a spec names its backend (``vllm:X``) rather than leaving the choice to cai (``X``)."""
    kind, sep, _ = spec.strip().partition(":")
    return bool(sep) and kind in BACKENDS


def load_backend(spec: str, **options: Any) -> Backend:
    """Load the backend a spec string names; ``options`` go to its constructor (e.g. ``batch_size``).

    A backend instance passed instead of a string is returned as it is, so public functions can
    take either.
    """
    if not isinstance(spec, str):
        return spec
    kind, target = split_spec(spec)
    if kind == "vllm" and not is_explicit(spec):
        # A bare name is a request for "the fast default": if vLLM cannot start here (too little
        # free memory, an unsupported model, a broken install), say why and use transformers.
        try:
            return _factory("vllm")(target, **options)
        except CAIError as e:
            try:
                backend = _factory("hf")(target, **options)
            except CAIError as e2:
                # A model that is not there fails the same way in both: one message, not the fallback note too.
                raise (e2 if str(e2) == str(e) else CAIError(f"{e2} (vLLM could not start either: {e})")) from None
            print(f"cai: vLLM could not start, used the hf backend instead: {e}", file=sys.stderr)
            return backend
    return _factory(kind)(target, **options)


def start_options(spec: Any, job_tokens: int | None) -> dict[str, Any]:
    """Constructor options for a job that generates at most ``job_tokens`` tokens: ``quick_start``
    for a small job on a vLLM engine on a CPU (at most QUICK_START_TOKENS, or
    QUICK_START_TOKENS_TRAINED for a folder that starts without vLLM's AOT cache: a trained folder
    that cannot use its base model's compiled model); nothing for a job of unknown size, a
    GPU (where the eager mode loses CUDA graphs), a backend already loaded or any other kind."""
    if job_tokens is None or not isinstance(spec, str):
        return {}
    try:
        kind, target = split_spec(spec)
    except ValueError:
        return {}  # load_backend says what is wrong with the spec
    if kind != "vllm":
        return {}
    from cai.backends.vllm_compile import compile_key_folder

    folder = Path(target).expanduser()
    uncached = folder.is_dir() and compile_key_folder(folder) is None  # it starts without the AOT cache
    if job_tokens > (QUICK_START_TOKENS_TRAINED if uncached else QUICK_START_TOKENS):
        return {}
    import torch

    return {} if torch.cuda.is_available() else {"quick_start": True}


def _factory(kind: str) -> Any:
    module_name, _, attr = BACKENDS[kind].partition(":")
    return getattr(importlib.import_module(module_name), attr)


def options_per_conversation(
    conversations: Sequence[Conversation], options: Sequence[str] | Sequence[Sequence[str]]
) -> list[list[str]]:
    """Normalise ``options`` (one shared list, or one list per conversation) to one list each."""
    if not options:
        raise ValueError("score_options needs at least one option")
    if all(isinstance(o, str) for o in options):
        shared = list(options)  # type: ignore[arg-type]
        per = [shared for _ in conversations]
    else:
        per = [list(o) for o in options]
        if len(per) != len(conversations):
            raise ValueError(f"got {len(per)} option lists for {len(conversations)} conversations")
    for opts in per:
        if not opts or not all(isinstance(o, str) and o for o in opts):
            raise ValueError(f"options must be non-empty strings, got {opts!r}")
        if len(set(opts)) != len(opts):
            raise ValueError(f"options must be distinct, got {opts!r}")
    return per
