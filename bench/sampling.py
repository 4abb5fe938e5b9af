"""Sampled generation on the hf backend: transformers' ``torch.multinomial`` against cai's inverse-CDF draw.

transformers draws every sampled token with ``torch.multinomial(probs, 1)``; on a CPU that call
costs more than a decode step of a small model (a 49k vocabulary). The hf backend (and PPO's
rollouts) run ``generate`` inside :func:`cai.backends.hf_sampling.fast_multinomial`, which draws
the same distribution by inverse CDF. Both rows here are the hf backend as ``cai generate -m
hf:MODEL`` builds it, in one process, one ``generate`` call each of the first P prompts of the
built-in ``everyday`` set at temperature 0.7, at most M new tokens, seed 0; the ``torch`` row puts
torch's own multinomial back for its call. Rows alternate (torch, cai, torch, cai, ...) ``--repeats``
times after a warm-up call; the table has each row's best and mean.

vLLM's own CPU sampler is the other half of the same change (cai.backends.vllm_sampler); its rate
is the ``vllm-sampler`` row of bench/engine_start.py.

    python bench/sampling.py            # writes its section of bench/RESULTS.md
    python bench/sampling.py --quick    # 8 prompts x 8 tokens, one repeat; writes nothing
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

from report import finish, header  # bench/report.py, shared by the bench scripts

HERE = Path(__file__).resolve().parent
SECTION = "## Sampled generation on the hf backend: torch.multinomial against cai's draw (bench/sampling.py)"


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="smollm2-135m", help="model alias or folder (default: smollm2-135m)")
    p.add_argument("--prompts", type=int, default=64, help="prompts P in one call (default: 64)")
    p.add_argument("--max-tokens", type=int, default=64, help="new tokens per answer at most (default: 64)")
    p.add_argument("--repeats", type=int, default=3, help="timed calls per row (default: 3)")
    p.add_argument("--quick", action="store_true", help="smoke run: 8 prompts x 8 tokens, one repeat; writes nothing")
    p.add_argument("--results", default=str(HERE / "RESULTS.md"), help="results file (default: bench/RESULTS.md)")
    args = p.parse_args(argv)
    if args.quick:
        args.prompts, args.max_tokens, args.repeats = 8, 8, 1
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    load = os.getloadavg()[0]
    import torch

    from cai.backends import hf_sampling, load_backend
    from cai.sources import load_prompts
    from cai.types import SamplingParams

    backend = load_backend(f"hf:{args.model}")
    convs = [p.messages for p in load_prompts("everyday", limit=args.prompts)]
    params = SamplingParams(max_tokens=args.max_tokens, temperature=0.7, seed=0)
    backend.generate(convs[:4], SamplingParams(max_tokens=4, temperature=0.7, seed=0))
    ours = hf_sampling.fast_multinomial
    times: dict[str, list[tuple[float, int]]] = {"torch": [], "cai": []}
    for _ in range(args.repeats):
        for row in ("torch", "cai"):
            if row == "torch":  # the backend's block, but with torch's multinomial left in place
                hf_sampling.fast_multinomial = _torch_block
            t = time.perf_counter()
            out = backend.generate(convs, params)
            times[row].append((time.perf_counter() - t, sum(c.completion_tokens for c in out)))
            hf_sampling.fast_multinomial = ours
            print(f"{row}: {times[row][-1][0]:.2f} s, {times[row][-1][1]} tokens", file=sys.stderr)
    lines = [SECTION, "", *header(load, load_at_end=True),
             f"- job: `hf:{args.model}` ({backend.model.dtype}, {torch.get_num_threads()} torch threads), one `generate` "
             f"of the first {args.prompts} prompts of `everyday`, temperature 0.7, at most {args.max_tokens} new tokens, "
             f"seed 0; rows alternate, {args.repeats} calls each after a warm-up; tokens/s counts the tokens generated",
             "", "| sampler | best | mean | tokens/s (best) | tokens/s vs torch |", "|---|---:|---:|---:|---:|"]
    rate = {}
    for row in ("torch", "cai"):
        best = min(times[row])
        rate[row] = best[1] / best[0]
        mean = sum(t for t, _ in times[row]) / len(times[row])
        lines.append(f"| {row} | {best[0]:.2f} s | {mean:.2f} s | {rate[row]:.0f} | {rate[row] / rate['torch']:.2f}x |")
    return finish("\n".join(lines + [""]), True, quick=args.quick, results=args.results, heading=SECTION)


def _torch_block():
    import contextlib

    return contextlib.nullcontext()


if __name__ == "__main__":
    sys.exit(main())
