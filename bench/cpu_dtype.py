"""Which dtype a CPU should generate in: vLLM's generation in bf16 and in fp32, against the dtype cai
picks for ``dtype="auto"`` (:func:`cai.precision.cpu_compute_dtype`).

vLLM's own "auto" keeps a model in the dtype it is stored in; the embedded model is stored in bf16.
A CPU without bf16 instructions (no AVX512-BF16, no AMX: AVX2-only EPYCs, most laptops) emulates
bf16 matmuls, and on one such VM torch's bf16 matmul ran at 0.3 GFLOP/s against 150 for fp32. So on
a CPU cai asks vLLM for the dtype :mod:`cai.precision` measures as faster. This script checks that
choice end to end: the same P prompts (default: the first 32 of the built-in ``redteam`` set) answered
once at temperature 0.7 with at most 64 new tokens, by an engine started in each dtype, each in its
own process (engine start and a short warm-up excluded, recorded beside), then both matmul rates.

The target: cai's choice is the faster of the two, within 5%.

    python bench/cpu_dtype.py            # writes its section of bench/RESULTS.md
    python bench/cpu_dtype.py --quick    # 4 prompts x 16 tokens; writes nothing
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

from report import finish, header  # bench/report.py, shared by the bench scripts

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "RESULTS.md"
SECTION = "## The dtype a CPU generates in: bf16 against fp32 in vLLM (bench/cpu_dtype.py)"
DTYPES = ("bfloat16", "float32")
TOLERANCE = 1.05  # cai's choice may be this much slower than the other and still count as the faster


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="smollm2-135m", help="model alias or folder (default: smollm2-135m)")
    p.add_argument("--data", default="redteam", help="prompt set or file (default: the built-in redteam set)")
    p.add_argument("--prompts", type=int, default=32, help="prompts P (default: 32)")
    p.add_argument("--max-tokens", type=int, default=64, help="new tokens per answer at most (default: 64)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--quick", action="store_true", help="smoke run: 4 prompts x 16 tokens; writes nothing")
    p.add_argument("--results", default=str(RESULTS), help="results file (default: bench/RESULTS.md)")
    p.add_argument("--child", choices=DTYPES, help=argparse.SUPPRESS)  # one engine, in its own process
    args = p.parse_args(argv)
    if args.quick:
        args.prompts, args.max_tokens = 4, 16
    return args


def child(args) -> dict:
    """Start vLLM in ``args.child``, warm it up, answer the prompts once; the measures as a dict."""
    from cai.backends.vllm import VLLMBackend
    from cai.sources import load_prompts
    from cai.types import SamplingParams

    convs = [p.messages for p in load_prompts(args.data, limit=args.prompts)]
    t0 = time.perf_counter()
    backend = VLLMBackend(args.model, dtype=args.child)
    start = time.perf_counter() - t0
    try:
        backend.generate(convs[:2], SamplingParams(temperature=0.7, max_tokens=4, seed=args.seed))
        backend.llm.reset_prefix_cache()
        params = SamplingParams(temperature=0.7, max_tokens=args.max_tokens, seed=args.seed)
        t0 = time.perf_counter()
        out = backend.generate(convs, params)
        seconds = time.perf_counter() - t0
    finally:
        backend.close()
    return {"dtype": args.child, "start": start, "seconds": seconds, "answers": len(out),
            "tokens": sum(c.completion_tokens for c in out)}


def run_child(args, dtype: str) -> dict:
    cmd = [sys.executable, __file__, "--child", dtype, "--model", args.model, "--data", args.data,
           "--prompts", str(args.prompts), "--max-tokens", str(args.max_tokens), "--seed", str(args.seed)]
    print(f"{dtype}: starting an engine and answering {args.prompts} prompts ...", file=sys.stderr)
    done = subprocess.run(cmd, stdout=subprocess.PIPE, text=True)
    if done.returncode != 0:
        raise SystemExit(f"the {dtype} run failed (exit {done.returncode}); its log is above")
    return json.loads(done.stdout.strip().splitlines()[-1])


def report(args, rows: dict, rates: dict, chosen: str, load_at_start: float) -> tuple[str, bool]:
    other = next(d for d in DTYPES if d != chosen)
    ok = rows[chosen]["seconds"] <= TOLERANCE * rows[other]["seconds"]
    lines = [SECTION, "", *header(load_at_start, load_at_end=True),
             f"- job: `vllm:{args.model}`, {args.prompts} `{args.data}` prompts answered once, temperature 0.7, at most "
             f"{args.max_tokens} new tokens, seed {args.seed}; each dtype's engine in its own process, started and "
             "warmed up before the timed call",
             f"- torch's matmul on this machine (1024 x 1024, {os.cpu_count()} cores): bf16 {rates['bf16']:.1f} GFLOP/s, "
             f"fp32 {rates['fp32']:.1f} GFLOP/s",
             "", "| dtype | engine start s | seconds | tokens | tokens/s | vs cai's choice |", "|---|---:|---:|---:|---:|---:|"]
    for d in DTYPES:
        r = rows[d]
        mark = " (cai's choice)" if d == chosen else ""
        lines.append(f"| {d}{mark} | {r['start']:.1f} | {r['seconds']:.2f} | {r['tokens']} | "
                     f"{r['tokens'] / r['seconds']:.1f} | {r['seconds'] / rows[chosen]['seconds']:.2f}x |")
    lines += ["", f"- cai asks vLLM for {chosen} on this CPU (`cai.precision.cpu_compute_dtype`); the other dtype "
              f"takes {rows[other]['seconds'] / rows[chosen]['seconds']:.2f}x its time: "
              f"{'**PASS**' if ok else '**FAIL**'} (cai's choice the faster, within {TOLERANCE - 1:.0%})"]
    return "\n".join(lines) + "\n", ok


def main(argv=None) -> int:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    args = parse_args(argv)
    if args.child:
        print(json.dumps(child(args)))
        return 0
    from cai.precision import cpu_compute_dtype, matmul_rates

    load_at_start = os.getloadavg()[0]
    chosen = cpu_compute_dtype()
    rows = {d: run_child(args, d) for d in DTYPES}
    rates = matmul_rates(1024)
    section, ok = report(args, rows, rates, chosen, load_at_start)
    return finish(section, ok, quick=args.quick, results=args.results, heading=SECTION)


if __name__ == "__main__":
    raise SystemExit(main())
