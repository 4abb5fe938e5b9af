"""Generation throughput on the embedded model: 256 chat prompts x up to 128 new tokens, three ways.

(a) one prompt at a time through ``model.generate``, as in the classic CAI tutorial code: the
    model loaded with ``AutoModelForCausalLM`` in bfloat16 (the checkpoint's dtype, which
    transformers 5 loads by default; on a CPU with AVX512-BF16 or AMX it also decodes a single
    sequence faster than float32, about 22 vs 13 tokens/s on the 2-core EPYC this was written on,
    so the baseline is not handicapped), the chat template applied, one ``generate`` call per
    prompt with the KV cache on and no batching. It is far too slow for 256 prompts, so it
    runs on the first ``--loop-prompts`` (default 16) and its rate is compared.
(b) the hf backend (``hf:smollm2-135m``): one ``generate`` call for all prompts; it batches,
    pads on the left and sorts by length.
(c) the vllm backend (``vllm:smollm2-135m``): one ``generate`` call for all prompts.

All three decode greedily (temperature 0) with the same limit of 128 new tokens and the same
chat-template prompts. Nothing forces answers to run to the limit: every rate counts the tokens
actually generated (including the end-of-turn token that stops an answer), and the table shows
how many answers reached the limit, so a method cannot look fast by stopping early. Model loading
(and vLLM's engine start) is excluded; a short warm-up call precedes each timed run.

The prompts are the project's built-in ``helpful`` and ``redteam`` sets, shuffled with a fixed
seed, the first 256.

    python bench/generation.py           # full run; writes its section of bench/RESULTS.md
    python bench/generation.py --quick   # smoke run: 8 prompts x 32 tokens, 2 in the loop; writes nothing
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

from report import finish, header, tutorial_model  # bench/report.py, shared by the bench scripts

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "RESULTS.md"
SECTION = "## Generation throughput (bench/generation.py)"
TARGETS = {"vllm": 40.0, "hf": 10.0}  # speedup over (a) in generated tokens/s


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="smollm2-135m", help="model alias or folder (default: smollm2-135m)")
    p.add_argument("--n", type=int, default=256, help="prompts for the backends (default: 256)")
    p.add_argument("--max-tokens", type=int, default=128, help="new tokens per prompt at most (default: 128)")
    p.add_argument("--loop-prompts", type=int, default=16, help="prompts for the one-at-a-time loop (default: 16)")
    p.add_argument("--methods", default="loop,hf,vllm", help="comma-separated subset of loop,hf,vllm")
    p.add_argument("--quick", action="store_true", help="smoke run: 8 prompts x 32 tokens, 2 in the loop; writes nothing")
    p.add_argument("--results", default=str(RESULTS), help="results file (default: bench/RESULTS.md)")
    args = p.parse_args(argv)
    if args.quick:
        args.n, args.max_tokens, args.loop_prompts = min(args.n, 8), min(args.max_tokens, 32), min(args.loop_prompts, 2)
    args.methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    unknown = set(args.methods) - {"loop", "hf", "vllm"}
    if unknown:
        p.error(f"unknown methods {sorted(unknown)}; pick from loop, hf, vllm")
    return args


def load_conversations(n: int) -> list[list[dict[str, str]]]:
    import random

    from cai.sources import load_prompts

    prompts = load_prompts("helpful") + load_prompts("redteam")
    random.Random(0).shuffle(prompts)
    if len(prompts) < n:
        raise SystemExit(f"only {len(prompts)} built-in prompts; ask for --n {len(prompts)} or fewer")
    return [p.messages for p in prompts[:n]]


def run_loop(path: str, convs, max_tokens: int) -> dict:
    """(a): the tutorial way, one ``model.generate`` per prompt."""
    import torch

    t0 = time.perf_counter()
    tok, model = tutorial_model(path)
    device = model.device
    load_s = time.perf_counter() - t0

    def one(conv, limit):
        ids = tok.apply_chat_template(conv, add_generation_prompt=True, return_tensors="pt", return_dict=True)
        ids = ids["input_ids"].to(device)
        with torch.no_grad():
            out = model.generate(ids, max_new_tokens=limit, do_sample=False, pad_token_id=tok.pad_token_id)
        return out.shape[1] - ids.shape[1]

    one(convs[0], 16)  # warm-up
    t0 = time.perf_counter()
    counts = [one(c, max_tokens) for c in convs]
    seconds = time.perf_counter() - t0
    del model
    return {"prompts": len(convs), "seconds": seconds, "load_s": load_s, "tokens": sum(counts),
            "at_limit": sum(c >= max_tokens for c in counts)}


def run_backend(spec: str, convs, max_tokens: int) -> dict:
    """(b) and (c): the whole batch in one ``generate`` call."""
    from cai.backends import load_backend
    from cai.types import SamplingParams

    t0 = time.perf_counter()
    backend = load_backend(spec)
    load_s = time.perf_counter() - t0
    try:
        backend.generate(convs[:2], SamplingParams(temperature=0.0, max_tokens=4))  # warm-up
        t0 = time.perf_counter()
        out = backend.generate(convs, SamplingParams(temperature=0.0, max_tokens=max_tokens))
        seconds = time.perf_counter() - t0
    finally:
        close = getattr(backend, "close", None)
        if close:
            close()
    return {"backend": backend.name, "prompts": len(out), "seconds": seconds, "load_s": load_s,
            "tokens": sum(c.completion_tokens for c in out), "at_limit": sum(c.finish_reason == "length" for c in out)}


def report(args, rows: dict[str, dict], load_at_start: float) -> tuple[str, bool]:
    rate = {k: r["tokens"] / r["seconds"] for k, r in rows.items()}
    labels = {"loop": "(a) `model.generate`, one prompt at a time", "hf": "(b) hf backend, one batched call",
              "vllm": "(c) vllm backend, one call"}
    lines = [
        SECTION, "",
        *header(load_at_start),
        f"- job: `{args.model}`, built-in `helpful` + `redteam` chat prompts (shuffled, seed 0), greedy, at most "
        f"{args.max_tokens} new tokens each; rates count the tokens actually generated (end-of-turn included).",
    ]
    if "loop" in rows:
        lines.append(f"- (a) ran on the first {rows['loop']['prompts']} prompts only (too slow for all); rates are "
                     "compared. (a) loads the model in bfloat16, as a tutorial on a bf16-capable CPU would.")
    lines.append("- model loading and engine start are excluded: " + ", ".join(
        f"{k} {r['load_s']:.1f} s" for k, r in rows.items()))
    lines += ["", "| method | prompts | seconds | tokens | answers at the limit | tokens/s | speedup vs (a) |",
              "|---|---:|---:|---:|---:|---:|---:|"]
    for k, r in rows.items():
        speed = f"{rate[k] / rate['loop']:.1f}x" if "loop" in rows else "n/a"
        lines.append(f"| {labels[k]} | {r['prompts']} | {r['seconds']:.1f} | {r['tokens']} | {r['at_limit']} | "
                     f"{rate[k]:.1f} | {speed} |")
    lines.append("")
    ok = True
    for k, target in TARGETS.items():
        if k in rows and "loop" in rows:
            passed = rate[k] / rate["loop"] >= target
            ok &= passed
            lines.append(f"- {k} >= {target:.0f}x (a): {rate[k] / rate['loop']:.1f}x, **{'PASS' if passed else 'FAIL'}**")
    lines.append("")
    return "\n".join(lines), ok


def main(argv=None) -> int:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    args = parse_args(argv)
    from cai.models import resolve

    path = resolve(args.model)
    convs = load_conversations(args.n)
    load_at_start = os.getloadavg()[0]
    rows: dict[str, dict] = {}
    if "loop" in args.methods:
        print(f"(a) {args.loop_prompts} prompts one at a time ...", file=sys.stderr)
        rows["loop"] = run_loop(path, convs[: args.loop_prompts], args.max_tokens)
    for kind in ("hf", "vllm"):
        if kind in args.methods:
            print(f"({'b' if kind == 'hf' else 'c'}) {kind} backend, {len(convs)} prompts ...", file=sys.stderr)
            rows[kind] = run_backend(f"{kind}:{args.model}", convs, args.max_tokens)
    section, ok = report(args, rows, load_at_start)
    return finish(section, ok, quick=args.quick, results=args.results, heading=SECTION)


if __name__ == "__main__":
    raise SystemExit(main())
