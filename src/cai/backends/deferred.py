"""A backend loaded on its first use, then kept: what the eval steps of one ``cai run`` process share.

``cai run`` runs consecutive eval steps of the same model in one process (:mod:`cai.run.stages`)
and hands each of them the same :class:`Deferred` as ``backend=``, so the engine starts once
(a vLLM start costs 25-45 s on a 2-core CPU). Loading waits for model work because a rerun on a
finished output starts no engine (:mod:`cai.backends.unstarted`): the finished checks see a
Deferred that has not loaded as its spec (:func:`pending_spec`), so a group whose steps are all
finished loads nothing, and the first step with work loads it for every step after it.
"""

from __future__ import annotations

from typing import Any, Sequence


class Deferred:
    """The backend ``load_backend(spec)`` gives, loaded when first asked for model work or a name."""

    def __init__(self, spec: str, **options: Any) -> None:
        self.spec = spec
        self.options = options  # for load_backend, e.g. quick_start for a small group of steps
        self._backend: Any = None

    @property
    def started(self) -> bool:
        return self._backend is not None

    def backend(self) -> Any:
        if self._backend is None:
            from cai.backends import load_backend

            self._backend = load_backend(self.spec, **self.options)
        return self._backend

    @property
    def name(self) -> str:
        # The name of the loaded backend, not the spec: a bare name may load vllm or fall back to hf.
        return self.backend().name

    def generate(self, conversations: Sequence[Any], params: Any) -> Any:
        return self.backend().generate(conversations, params)

    def score_options(self, conversations: Sequence[Any], options: Any) -> Any:
        return self.backend().score_options(conversations, options)

    def __getattr__(self, attr: str) -> Any:
        # Whatever else a stage reads of its backend (a tokenizer, max_model_len) is the loaded one's.
        if attr.startswith("_"):
            raise AttributeError(attr)
        return getattr(self.backend(), attr)

    def close(self) -> None:
        """Free the engine (vLLM's workers and KV cache) if one was started; nothing otherwise."""
        close = getattr(self._backend, "close", None)
        if close is not None:
            close()
        self._backend = None


def pending_spec(backend: Any) -> str | None:
    """The spec of a :class:`Deferred` that has not loaded yet; None for anything else."""
    return backend.spec if isinstance(backend, Deferred) and not backend.started else None
