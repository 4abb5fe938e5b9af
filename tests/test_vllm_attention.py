"""Decode attention with shared KV blocks read once (cai.backends.vllm_attention): the segments of
shared blocks, the compiled kernel against vLLM's own CPU kernel on the same cache, and where vLLM's
kernel keeps running. The engine-level tests in test_backend_vllm.py generate through it where the
model's attention is eligible (the embedded model in float32)."""

from __future__ import annotations

import pytest

from cai.backends.vllm_attention import BLOCK, eligible, plan, root_state, segments
from cai.backends.vllm_attention_pick import KernelPick, step_kind


def _covered(rows, segs, table, seq_lens):
    """Each sorted row's blocks, from the segments: every block exactly once, and the rows of a
    segment hold the same physical blocks there."""
    import torch

    seen = {r: [] for r in range(len(rows))}
    for a, b, lo, hi in segs.tolist():
        first = table[rows[a]]
        for r in range(a, b):
            assert torch.equal(table[rows[r], lo:hi], first[lo:hi])
            if b - a > 1:  # shared blocks are full in every row that shares them
                assert hi * BLOCK <= int(seq_lens[rows[r]])
            seen[r].extend(range(lo, hi))
    for r, blocks in seen.items():
        assert sorted(blocks) == list(range(-(-int(seq_lens[rows[r]]) // BLOCK)))


def _few_shot_step(torch):
    """A block table and lengths: requests 0, 2, 3 are one prompt's samples (blocks 0-3, then their
    own); 1 and 4 another prompt with the same first two blocks (a few-shot prefix); 5 alone after
    the prefix. Entries past a row's length are stale (request 5's 77) and must not count."""
    table = torch.tensor([[0, 1, 2, 3, 10, 0],
                          [0, 1, 4, 5, 11, 0],
                          [0, 1, 2, 3, 12, 0],
                          [0, 1, 2, 3, 13, 0],
                          [0, 1, 4, 5, 14, 0],
                          [0, 1, 6, 77, 77, 77]], dtype=torch.int32)
    seq_lens = torch.tensor([140, 150, 129, 160, 131, 70], dtype=torch.int32)
    return table, seq_lens


def test_segments_share_a_common_prefix_then_each_prompts_blocks():
    import torch

    table, seq_lens = _few_shot_step(torch)
    rows, segs = segments(table, seq_lens)
    assert rows.tolist() == [0, 2, 3, 1, 4, 5]
    assert sorted(map(tuple, segs.tolist())) == sorted([
        (0, 6, 0, 2),                                # the few-shot prefix, read once for all six
        (0, 3, 2, 4), (3, 5, 2, 4),                  # each prompt's own blocks, once for its samples
        (0, 1, 4, 5), (1, 2, 4, 5), (2, 3, 4, 5),    # each sample's own block
        (3, 4, 4, 5), (4, 5, 4, 5), (5, 6, 2, 3)])
    _covered(rows, segs, table, seq_lens)


def test_a_partly_filled_block_is_never_shared():
    import torch

    # Both rows hold block 1 at position 1, but row 0 has only 40 tokens: block 1 is its partial
    # last block, so it is read by each row on its own.
    table = torch.tensor([[0, 1], [0, 1]], dtype=torch.int32)
    seq_lens = torch.tensor([40, 64], dtype=torch.int32)
    rows, segs = segments(table, seq_lens)
    assert sorted(map(tuple, segs.tolist())) == [(0, 1, 1, 2), (0, 2, 0, 1), (1, 2, 1, 2)]
    _covered(rows, segs, table, seq_lens)


def test_random_batches_are_covered_exactly():
    import torch

    g = torch.Generator().manual_seed(0)
    for _ in range(30):
        prompts, samples = int(torch.randint(1, 6, (1,), generator=g)), int(torch.randint(1, 5, (1,), generator=g))
        prefix = int(torch.randint(0, 3, (1,), generator=g))
        rows_n, width = prompts * samples, 8
        table = torch.zeros(rows_n, width, dtype=torch.int32)
        fresh = iter(range(100, 10_000))
        for p in range(prompts):
            own = [next(fresh) for _ in range(3)]
            for s in range(samples):
                r = p * samples + s
                table[r] = torch.tensor(list(range(prefix)) + own + [next(fresh) for _ in range(width - prefix - 3)])
        perm = torch.randperm(rows_n, generator=g)
        table = table[perm]
        seq_lens = torch.randint(1, width * BLOCK + 1, (rows_n,), generator=g, dtype=torch.int32)
        rows, segs = segments(table, seq_lens)
        _covered(rows, segs, table, seq_lens)


@pytest.fixture
def small_root(monkeypatch):
    """Matrix products for roots of the tests' small sizes (the defaults want more rows and blocks)."""
    from cai.backends import vllm_attention

    monkeypatch.setattr(vllm_attention, "ROOT_MIN_BLOCKS", 2)
    monkeypatch.setattr(vllm_attention, "ROOT_MIN_ROWS", 2)


def test_the_blocks_every_row_shares_become_the_root(small_root):
    import torch

    # Blocks 0 and 1 are in all six rows, so they leave the kernel's segments for the matrix products.
    table, seq_lens = _few_shot_step(torch)
    tokens = torch.tensor([50, 51, 52, 53, 54, 55])  # each request's query token
    rows, segs, root = plan(table, seq_lens, tokens)
    assert root[0].tolist() == [0, 1] and root[1].tolist() == [50, 52, 53, 51, 54, 55]  # in sorted order
    assert (0, 6, 0, 2) not in map(tuple, segs.tolist()) and len(segs) == 8
    # One row without the prefix: nothing is common to all, so the kernel reads every block.
    table[5, :2] = torch.tensor([20, 21])
    rows, segs, root = plan(table, seq_lens, tokens)
    assert root is None and (0, 5, 0, 2) in map(tuple, segs.tolist()) and len(segs) == 9
    _covered(rows, segs, table, seq_lens)


def test_a_root_too_small_to_pay_stays_in_the_kernel():
    import torch

    from cai.backends.vllm_attention import ROOT_MIN_BLOCKS, ROOT_MIN_ROWS

    # ROOT_MIN_ROWS requests that all begin with the same ROOT_MIN_BLOCKS blocks, then one of their own.
    rows_n, shared = ROOT_MIN_ROWS, ROOT_MIN_BLOCKS
    table = torch.arange(shared, dtype=torch.int32).repeat(rows_n, 1)
    table = torch.cat([table, torch.arange(100, 100 + rows_n, dtype=torch.int32)[:, None]], 1)
    seq_lens = torch.full((rows_n,), shared * BLOCK + 5, dtype=torch.int32)
    tokens = torch.arange(rows_n)
    assert plan(table, seq_lens, tokens)[2] is not None
    assert plan(table[1:], seq_lens[1:], tokens[1:])[2] is None  # one row fewer
    table[:, shared - 1] = torch.arange(200, 200 + rows_n)  # one shared block fewer
    assert plan(table, seq_lens, tokens)[2] is None


@pytest.mark.parametrize("max_scores", [1 << 23, 3 * 64 * 5], ids=["one chunk", "chunks of 5 query rows"])
def test_the_roots_state_is_a_softmax_over_its_blocks(max_scores):
    import torch

    g = torch.Generator().manual_seed(0)
    blocks, kv_heads, group, size, n = 2, 3, 3, 16, 7
    keys = torch.randn(blocks * BLOCK, kv_heads, size, generator=g)
    values = torch.randn(blocks * BLOCK, kv_heads, size, generator=g)
    # vLLM's vec layout: a block's keys transposed, [size][BLOCK], then its values, [BLOCK][size].
    cache = torch.zeros(blocks + 1, kv_heads, 2 * BLOCK, size)
    for b in range(blocks):
        part = slice(b * BLOCK, (b + 1) * BLOCK)
        cache[b + 1, :, :BLOCK] = keys[part].permute(1, 2, 0).reshape(kv_heads, BLOCK, size)
        cache[b + 1, :, BLOCK:] = values[part].permute(1, 0, 2)
    query = torch.randn(n + 2, kv_heads * group, size, generator=g) * 3
    tokens = torch.tensor([8, 0, 3, 1, 5, 2, 7])
    scale = size ** -0.5
    run_max, run_sum, acc = root_state(query, cache, torch.tensor([1, 2]), tokens, scale, max_scores=max_scores)
    assert run_max.shape == run_sum.shape == (kv_heads, n * group) and acc.shape == (kv_heads, n * group, size)
    for h in range(kv_heads):
        q = query[tokens][:, h * group:(h + 1) * group].reshape(n * group, size)
        scores = q @ keys[:, h].T * scale
        torch.testing.assert_close(run_max[h], scores.amax(-1))
        torch.testing.assert_close(run_sum[h], torch.exp(scores - scores.amax(-1, keepdim=True)).sum(-1))
        torch.testing.assert_close(acc[h] / run_sum[h, :, None], torch.softmax(scores, -1) @ values[:, h])


def _decode_step(torch, ops, isa, rows=24, prompts=3, kv_heads=3, heads=9, dim=64, query_lens=None,
                 dtype=None):
    """A decode step: ``prompts`` prompts' samples interleaved as vLLM's batch leaves them, all
    beginning with the same 2 blocks, then their prompt's 3, then 2 of their own; random keys and
    values written by vLLM's own cache writer. ``query_lens`` (default: 1 each) makes some requests
    prompt chunks, their last tokens queried at once."""
    from vllm.v1.attention.backends.cpu_attn import CPUAttentionMetadata

    g = torch.Generator().manual_seed(0)
    blocks = 2 + 3 * prompts + 2 * rows
    dtype = dtype or torch.float32
    kv_cache = torch.zeros(blocks, kv_heads, BLOCK, 2 * dim, dtype=dtype)  # vLLM's shape; viewed as it reads it
    key_cache, value_cache = kv_cache.view(blocks, kv_heads, 2 * BLOCK, dim).chunk(2, dim=2)
    k = torch.randn(blocks * BLOCK, kv_heads, dim, generator=g).to(dtype)
    v = torch.randn(blocks * BLOCK, kv_heads, dim, generator=g).to(dtype)
    ops.cpu_attn_reshape_and_cache(k, v, key_cache, value_cache, torch.arange(blocks * BLOCK), isa)
    table = torch.zeros(rows, 8, dtype=torch.int32)
    for r in range(rows):
        p = r % prompts
        own = 2 + 3 * prompts + 2 * r
        table[r, :7] = torch.tensor([0, 1, 2 + 3 * p, 3 + 3 * p, 4 + 3 * p, own, own + 1])
    seq_lens = torch.randint(5 * BLOCK + 1, 7 * BLOCK + 1, (rows,), generator=g, dtype=torch.int32)
    lens = torch.tensor(query_lens or [1] * rows, dtype=torch.int32)
    query_start = torch.zeros(rows + 1, dtype=torch.int32)
    query_start[1:] = torch.cumsum(lens, 0)
    scheduler = ops.cpu_attn_get_scheduler_metadata(
        num_reqs=rows, num_heads=heads, num_kv_heads=kv_heads, head_dim=dim, seq_lens=seq_lens,
        dtype=dtype, query_start_loc=query_start, causal=True, sliding_window_size=-1, isa=isa,
        enable_kv_split=False)
    metadata = CPUAttentionMetadata(
        num_actual_tokens=int(lens.sum()), max_query_len=int(lens.max()), query_start_loc=query_start,
        max_seq_len=int(seq_lens.max()), seq_lens=seq_lens, block_table=table,
        slot_mapping=torch.zeros(int(lens.sum()), dtype=torch.int64), scheduler_metadata=scheduler)
    # Scores of a few units, as a model's are.
    query = (torch.randn(int(lens.sum()), heads, dim, generator=g) * 3).to(dtype)
    return kv_cache, metadata, query


def _fakes(torch, metadata, isa, heads=9, kv_heads=3, dim=64, dtype=None):
    """vLLM's builder and attention impl as far as cai's methods read them, without an engine."""
    from vllm.v1.attention.backend import AttentionType
    from vllm.v1.attention.backends.cpu_attn import CPUAttentionBackendImpl

    from cai.backends.vllm_attention import _build, _forward

    class Builder:
        num_heads, num_kv_heads, head_dim = heads, kv_heads, dim
        window_size, kv_cache_dtype, block_size = -1, "auto", BLOCK
        vllm_config, layer_names = None, []
        build = _build

        def vllm_build(self, common_prefix_len, common, fast_build):
            return metadata

    Builder.isa, Builder.dtype = isa, dtype or torch.float32

    class Impl(CPUAttentionBackendImpl):
        # vLLM's own forward: where an engine of an earlier test put cai's in its place, it kept vLLM's.
        vllm_forward = getattr(CPUAttentionBackendImpl, "vllm_forward", CPUAttentionBackendImpl.forward)
        forward = _forward

    impl = object.__new__(Impl)
    impl.__dict__.update(attn_type=AttentionType.DECODER, sinks=None, scale=dim ** -0.5, alibi_slopes=None,
                         sliding_window=-1, logits_soft_cap=0, kv_cache_dtype="auto", num_heads=heads)

    class Layer:
        _k_scale_float = _v_scale_float = 1.0

    layer = Layer()
    layer.isa = isa

    class Common:
        num_reqs = metadata.seq_lens.shape[0]

    return Builder(), impl, layer, Common()


def _kernel_or_skip(torch):
    from vllm.v1.attention.backends.cpu_attn import _get_attn_isa

    from cai.backends import vllm_attention

    isa = _get_attn_isa(torch.float32, BLOCK, 64)
    if isa != "vec":
        pytest.skip(f"vLLM picks its {isa!r} kernel for float32 here")
    kernel = vllm_attention.load_kernel()
    if kernel is None:
        pytest.skip("no C++ compiler for torch's extensions here")
    return isa, kernel


@pytest.mark.parametrize("query_lens", [None, [1, 3, 1, 1, 2] + [1] * 19], ids=["decode", "decodes and prompts"])
def test_the_kernel_gives_what_vllms_kernel_gives_on_the_same_cache(query_lens, small_root):
    import torch

    pytest.importorskip("vllm")
    from vllm import _custom_ops as ops

    isa, kernel = _kernel_or_skip(torch)
    kv_cache, metadata, query = _decode_step(torch, ops, isa, query_lens=query_lens)
    builder, impl, layer, common = _fakes(torch, metadata, isa)
    builder.cai_kernel = layer.cai_kernel = kernel  # as the builder's first step hands it to its layers
    expected = torch.zeros_like(query)
    impl.vllm_forward(layer, query, None, None, kv_cache, metadata, expected)
    built = builder.build(0, common)
    rows, tokens, segs, prompts, root = built.cai_segments
    assert root[0].tolist() == [0, 1] and rows.numel() == 24 - (2 if query_lens else 0)  # a prefix for all
    assert (prompts is None) == (query_lens is None)
    out = torch.zeros_like(query)
    impl.forward(layer, query, None, None, kv_cache, built, out)
    assert expected.abs().max() > 0.1
    torch.testing.assert_close(out, expected, atol=2e-5, rtol=1e-4)


def _plain_attention(torch, kv_cache, metadata, query):
    """Each query token's attention over its request's context, in float64 from the cache's own
    values, in vLLM's vec layout (keys transposed, then values, each block and KV head)."""
    blocks, kv_heads, _, width = kv_cache.shape
    dim = width // 2
    cache = kv_cache.view(blocks, kv_heads, 2 * BLOCK, dim).double()
    out = torch.zeros(query.shape, dtype=torch.float64)
    group = query.shape[1] // kv_heads
    starts = metadata.query_start_loc.tolist()
    for r, length in enumerate(metadata.seq_lens.tolist()):
        ids = metadata.block_table[r, :-(-length // BLOCK)].long()
        keys = cache[ids, :, :BLOCK].reshape(-1, kv_heads, dim, BLOCK).permute(1, 0, 3, 2).reshape(
            kv_heads, -1, dim)[:, :length]
        values = cache[ids, :, BLOCK:].permute(1, 0, 2, 3).reshape(kv_heads, -1, dim)[:, :length]
        for t in range(starts[r], starts[r + 1]):
            visible = length - (starts[r + 1] - 1 - t)  # causal within a prompt chunk
            q = query[t].double().view(kv_heads, group, dim) * dim ** -0.5
            scores = q @ keys[:, :visible].transpose(1, 2)
            out[t] = (torch.softmax(scores, -1) @ values[:, :visible]).reshape(-1, dim)
    return out


def test_a_bf16_cache_gives_what_float32_math_gives_on_it_within_bf16s_rounding(small_root, monkeypatch):
    import torch

    pytest.importorskip("vllm")
    from vllm import _custom_ops as ops

    isa, kernel = _kernel_or_skip(torch)
    kv_cache, metadata, query = _decode_step(torch, ops, isa, query_lens=[1, 3, 1, 1, 2] + [1] * 19,
                                             dtype=torch.bfloat16)
    builder, impl, layer, common = _fakes(torch, metadata, isa, dtype=torch.bfloat16)
    builder.cai_kernel = layer.cai_kernel = kernel
    builder.cai_pick = layer.cai_pick = KernelPick()
    monkeypatch.delenv("CAI_VLLM_ATTENTION", raising=False)
    # bf16 is timed both ways by default, on decode-only steps: a step with prompts keeps vLLM's meanwhile.
    assert builder.build(0, common).cai_segments is None
    monkeypatch.setenv("CAI_VLLM_ATTENTION", "cai")
    built = builder.build(0, common)
    assert built.cai_segments[4] is not None  # the root's products, on the widened blocks
    out = torch.zeros_like(query)
    impl.forward(layer, query, None, None, kv_cache, built, out)
    expected = torch.zeros_like(query)
    impl.vllm_forward(layer, query, None, None, kv_cache, metadata, expected)
    decodes = torch.tensor([0, 4, 5] + list(range(8, 27)))  # the tokens of the requests with one query
    prompt_tokens = torch.tensor([1, 2, 3, 6, 7])
    torch.testing.assert_close(out[prompt_tokens], expected[prompt_tokens], atol=0, rtol=0)  # vLLM's kernel
    exact = _plain_attention(torch, kv_cache, metadata, query)[decodes]
    assert exact.abs().max() > 0.1
    # Within the output's own rounding to bf16 (half an ulp, at most 2^-8 relative), where vLLM's
    # kernel rounds its probabilities to bf16 as well.
    torch.testing.assert_close(out[decodes].double(), exact, atol=1e-4, rtol=2 ** -8)
    assert (out[decodes].double() - exact).abs().max() <= (expected[decodes].double() - exact).abs().max()


def test_an_engine_times_both_kernels_on_its_first_steps_then_keeps_the_faster(small_root, monkeypatch):
    import torch

    pytest.importorskip("vllm")
    from vllm import _custom_ops as ops

    isa, kernel = _kernel_or_skip(torch)
    kv_cache, metadata, query = _decode_step(torch, ops, isa, dtype=torch.bfloat16)
    builder, impl, layer, common = _fakes(torch, metadata, isa, dtype=torch.bfloat16)
    builder.cai_kernel = layer.cai_kernel = kernel
    builder.cai_pick = layer.cai_pick = pick = KernelPick(pairs=3)
    monkeypatch.delenv("CAI_VLLM_ATTENTION", raising=False)  # bf16: timed by default
    monkeypatch.setenv("CAI_VLLM_ATTENTION", "cai")
    wanted = torch.zeros_like(query)
    impl.forward(layer, query, None, None, kv_cache, builder.build(0, common), wanted)
    monkeypatch.delenv("CAI_VLLM_ATTENTION")
    calls = []
    vllms = impl.vllm_forward

    def counted(self, layer, query, key, value, kv_cache, attn_metadata, output, *args):
        calls.append(output.data_ptr())
        return vllms(layer, query, key, value, kv_cache, attn_metadata, output, *args)

    monkeypatch.setattr(type(impl), "vllm_forward", counted)
    kind = (True, True)  # every row shares blocks 0-1 (the root), and each prompt's three blocks
    for step in range(3):
        built = builder.build(0, common)
        assert built.cai_timing == kind and built.cai_segments is not None
        out = torch.zeros_like(query)
        impl.forward(layer, query, None, None, kv_cache, built, out)
        assert torch.equal(out, wanted)  # cai's output is the one kept
        assert len(calls) == step + 1 and calls[-1] != out.data_ptr()  # vLLM's went to scratch
    assert pick.wants_cai(kind) is not None and len(pick.ratios[kind]) == 3
    other = type(layer)()  # a later layer of the step: no pick, so no second timing
    other.isa, other.cai_kernel = isa, kernel
    impl.forward(other, query, None, None, kv_cache, built, torch.zeros_like(query))
    assert len(calls) == 3
    pick.choice[kind] = False  # as if vLLM's had won: its kernel for the rest of the engine's life
    assert builder.build(0, common).cai_segments is None
    pick.choice[kind] = True
    built = builder.build(0, common)
    assert built.cai_timing is None and built.cai_segments is not None
    impl.forward(layer, query, None, None, kv_cache, built, torch.zeros_like(query))
    assert len(calls) == 3
    monkeypatch.setenv("CAI_VLLM_ATTENTION", "vllm")  # the variable still overrides a choice made
    assert builder.build(0, common).cai_segments is None


def test_the_pick_takes_the_median_ratio_alternates_the_order_and_keeps_vllms_on_a_tie(caplog):
    import torch

    pick = KernelPick(pairs=3)
    kind = (False, True)
    order = []
    for _ in range(3):  # each pair in the other order from the one before
        pick.time_pair((True, False), lambda: order.append("cai"), lambda: order.append("vllm"))
    assert order == ["cai", "vllm", "vllm", "cai", "cai", "vllm"] and len(pick.ratios[(True, False)]) == 3
    for cai_s, vllm_s in [(1.0, 2.0), (3.0, 1.0)]:  # ratios 0.5, 3, then 0.67: the median 0.67
        pick.record(kind, cai_s, vllm_s)
        assert pick.wants_cai(kind) is None
    with caplog.at_level("DEBUG", logger="cai.backends.vllm_attention_pick"):
        pick.record(kind, 1.0, 1.5)
    assert pick.wants_cai(kind) is True
    assert "without a root, shared blocks: cai's kernel takes 0.67x vLLM's time (median of 3); cai's runs" in caplog.text
    pick.record(kind, 9.0, 1.0)  # a decided kind stays decided
    assert pick.wants_cai(kind) is True
    for _ in range(3):
        pick.record((True, True), 2.0, 2.0)
    assert pick.wants_cai((True, True)) is False  # a tie keeps vLLM's kernel
    assert pick.wants_cai((False, False)) is None
    # A step's kind: the root, and whether blocks are read twice on average.
    segs = torch.tensor([[0, 4, 0, 3], [0, 1, 3, 4], [1, 2, 3, 4], [2, 3, 3, 4], [3, 4, 3, 4]])
    assert step_kind(segs, None, 4) == (False, True)  # 16 reads of 7 blocks
    assert step_kind(segs[1:], None, 4) == (False, False)  # each row its own block
    assert step_kind(segs[1:], (torch.arange(2), None), 4) == (True, True)  # 4 + 8 reads of 6 blocks


def test_steps_and_layers_the_kernel_does_not_take_go_to_vllm(monkeypatch):
    import torch

    pytest.importorskip("vllm")
    from vllm import _custom_ops as ops
    from vllm.v1.attention.backends.cpu_attn import _get_attn_isa

    isa = _get_attn_isa(torch.float32, BLOCK, 64)
    kv_cache, metadata, query = _decode_step(torch, ops, isa, rows=4, query_lens=[1, 2, 2, 2])
    builder, impl, layer, common = _fakes(torch, metadata, isa)
    builder.cai_kernel = layer.cai_kernel = object()  # as if built
    assert builder.build(0, common).cai_segments is None  # one decode: nothing to share
    kv_cache, metadata, query = _decode_step(torch, ops, isa, rows=4)
    builder, impl, layer, common = _fakes(torch, metadata, isa)
    builder.cai_kernel = layer.cai_kernel = object()
    built = builder.build(0, common)
    assert built.cai_segments is not None
    monkeypatch.setenv("CAI_VLLM_ATTENTION", "vllm")  # read each step: an engine already made turns it off too
    assert builder.build(0, common).cai_segments is None
    monkeypatch.delenv("CAI_VLLM_ATTENTION")
    calls = []
    type(impl).vllm_forward = lambda *a, **k: calls.append("vllm")  # a stand-in for vLLM's forward
    impl.sliding_window = 128  # vLLM's kernel takes windows; cai's does not
    impl.forward(layer, query, None, None, kv_cache, built, torch.zeros_like(query))
    assert calls == ["vllm"]
    # Which caches the kernel computes: float32 or bf16 in vLLM's vec layout, blocks of 32, no window.
    assert eligible(torch.float32, "vec", 32, "auto", -1, 3, 64)
    assert eligible(torch.bfloat16, "vec", 32, "auto", -1, 3, 64)
    assert not eligible(torch.float16, "vec", 32, "auto", -1, 3, 64)
    assert not eligible(torch.bfloat16, "amx", 32, "auto", -1, 3, 64)  # AMX packs keys its own way
    assert not eligible(torch.float32, "amx", 32, "auto", -1, 3, 64)
    assert not eligible(torch.float32, "vec", 128, "auto", -1, 3, 64)
    assert not eligible(torch.float32, "vec", 32, "fp8", -1, 3, 64)
    assert not eligible(torch.float32, "vec", 32, "auto", 4096, 3, 64)
    assert not eligible(torch.float32, "vec", 32, "auto", -1, 5, 64)


def test_opt_out_and_worker_processes_keep_vllms_kernel(monkeypatch):
    pytest.importorskip("vllm")
    from vllm.v1.attention.backends.cpu_attn import CPUAttentionBackendImpl, CPUAttentionMetadataBuilder

    from cai.backends.vllm_attention import _build, _forward, use_cascade_attention

    monkeypatch.setattr(CPUAttentionMetadataBuilder, "build", CPUAttentionMetadataBuilder.build)  # restored afterwards
    monkeypatch.setattr(CPUAttentionBackendImpl, "forward", CPUAttentionBackendImpl.forward)
    monkeypatch.setenv("VLLM_ENABLE_V1_MULTIPROCESSING", "0")
    assert use_cascade_attention() is True
    assert CPUAttentionMetadataBuilder.build is _build and CPUAttentionBackendImpl.forward is _forward
    monkeypatch.setenv("CAI_VLLM_ATTENTION", "vllm")
    assert use_cascade_attention() is False
    assert CPUAttentionMetadataBuilder.build is not _build and CPUAttentionBackendImpl.forward is not _forward
    monkeypatch.delenv("CAI_VLLM_ATTENTION")
    monkeypatch.setenv("VLLM_ENABLE_V1_MULTIPROCESSING", "1")
    assert use_cascade_attention() is False and CPUAttentionBackendImpl.forward is not _forward


def test_a_machine_without_a_compiler_keeps_vllms_kernel(monkeypatch, caplog):
    pytest.importorskip("torch")
    import torch.utils.cpp_extension as ext

    from cai.backends import vllm_attention

    def no_compiler(**kwargs):
        raise RuntimeError("Error building extension\ng++: command not found")

    monkeypatch.setattr(ext, "load", no_compiler)
    with caplog.at_level("WARNING", logger="cai.backends.vllm_attention"):
        assert vllm_attention.load_kernel() is None
    assert "g++: command not found" in caplog.text and "vLLM's attention runs instead" in caplog.text


def test_setup_builds_the_kernel_where_vllm_keeps_the_layout_it_reads(monkeypatch):
    pytest.importorskip("vllm")
    from vllm.v1.attention.backends import cpu_attn

    import cai.precision
    from cai.backends import vllm_attention

    built, asked = [], []
    monkeypatch.setattr(vllm_attention, "load_kernel", lambda: built.append(1) or object())
    monkeypatch.setattr(cai.precision, "cpu_compute_dtype", lambda: "bfloat16")
    monkeypatch.setattr(cpu_attn, "_get_attn_isa", lambda dtype, block, head: asked.append(dtype) or "amx")
    assert "not built (vLLM keeps its 'amx' cache layout" in vllm_attention.prebuild() and not built
    monkeypatch.setattr(cpu_attn, "_get_attn_isa", lambda dtype, block, head: asked.append(dtype) or "vec")
    assert vllm_attention.prebuild() == "cascade attention kernel: ready" and built == [1]  # bf16 engines time it
    monkeypatch.setattr(cai.precision, "cpu_compute_dtype", lambda: "float32")
    assert vllm_attention.prebuild() == "cascade attention kernel: ready" and built == [1, 1]
    assert [str(d) for d in asked] == ["torch.bfloat16", "torch.bfloat16", "torch.float32"]
