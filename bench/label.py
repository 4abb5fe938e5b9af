"""Throughput of AI preference labelling: option scoring against generate-and-parse.

Ours is ``cai.label.judge.label_pairs``, the code ``cai label`` and ``cai eval labeler`` run: for
every pair, both (A)/(B) orders are scored with ``score_options`` (one forward pass per order, no
generation), batched across pairs. The baseline is the classic tutorial loop: for one pair at a
time, render the same multiple-choice prompt (one order only), ``model.generate`` up to
``--max-new-tokens`` greedy tokens, decode, and look for "A" or "B" in the text. Both use the same
weights in the same dtype. The pairs are BIG-bench HHH comparisons (``../shared/data``), so the
prompts have realistic lengths. The target is a speedup of at least 20x in pairs/s, although ours
does twice the work per pair (both orders).

    python bench/label.py                 # full run; writes its section of bench/RESULTS.md
    python bench/label.py --quick         # smoke run on a few pairs; writes nothing
"""

from __future__ import annotations

import argparse
import os
import re
import sys
import time
from pathlib import Path

from report import finish, header, tutorial_model  # bench/report.py, shared by the bench scripts

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
RESULTS = HERE / "RESULTS.md"
SECTION = "## RLAIF labelling: option scoring vs generate-and-parse (bench/label.py)"
TARGET = 20.0
_LETTER = re.compile(r"\(?\b([AB])\b\)?")


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="hf:smollm2-135m", help="backend spec for ours; the baseline loads the same "
                   "weights with transformers (default: hf:smollm2-135m)")
    p.add_argument("--data", default=str(ROOT.parent / "shared" / "data" / "hhh_alignment"),
                   help="hhh_alignment-shaped folder the pairs come from")
    p.add_argument("--constitution", default="hhh")
    p.add_argument("--pairs", type=int, default=128, help="pairs labelled by ours (default: 128)")
    p.add_argument("--loop-pairs", type=int, default=8, help="pairs for the generate-and-parse loop, spread evenly over --pairs (default: 8)")
    p.add_argument("--max-new-tokens", type=int, default=32, help="baseline generation budget (default: 32)")
    p.add_argument("--quick", action="store_true", help="smoke run: 4 pairs, 1 in the loop, 8 tokens; writes nothing")
    p.add_argument("--results", default=str(RESULTS), help="results file (default: bench/RESULTS.md)")
    args = p.parse_args(argv)
    if args.quick:
        args.pairs, args.loop_pairs, args.max_new_tokens = min(args.pairs, 4), 1, min(args.max_new_tokens, 8)
    return args


def load_pairs(args):
    from cai.evals.comparisons import load_comparisons

    _, items = load_comparisons(args.data, limit=None)
    items = items[: args.pairs]
    if len(items) < args.pairs:
        sys.exit(f"{args.data} holds only {len(items)} comparisons; lower --pairs")
    return [(it.messages, it.better, it.worse) for it in items]


def run_ours(backend, constitution, pairs) -> dict:
    from cai.label.judge import JudgeConfig, label_pairs

    method = JudgeConfig(principles="sample", swap=True)
    label_pairs(backend, pairs[:2], constitution, method)  # warm-up: kernels, allocator
    t = time.perf_counter()
    labels = label_pairs(backend, pairs, constitution, method, keys=[str(i) for i in range(len(pairs))])
    seconds = time.perf_counter() - t
    return {"pairs": len(labels), "seconds": seconds, "forward_prompts": 2 * len(labels)}


def run_loop(path: str, constitution, pairs, max_new_tokens: int) -> dict:
    """The tutorial's way: stock transformers in bfloat16, a short answer generated per pair, the
    letter parsed out of it."""
    import random

    import torch

    from cai.chat import render_prompt
    from cai.label.prompts import choice_conversation

    tok, model = tutorial_model(path)
    questions = [p.preference for p in constitution.preference_principles()]
    rng = random.Random(0)
    parsed = prompt_tokens = new_tokens = 0
    # warm-up
    warm = render_prompt(tok, choice_conversation(pairs[0][0], pairs[0][1], pairs[0][2], questions[0])[:-1])
    with torch.inference_mode():
        model.generate(**tok(warm, return_tensors="pt", add_special_tokens=False).to(model.device), max_new_tokens=2,
                       do_sample=False, pad_token_id=tok.pad_token_id or tok.eos_token_id)
    t = time.perf_counter()
    for messages, x, y in pairs:
        # the same question and options, but the model is asked to *say* its answer
        conv = choice_conversation(messages, x, y, rng.choice(questions))[:-1]
        text = render_prompt(tok, conv) + "The answer is:"
        inputs = tok(text, return_tensors="pt", add_special_tokens=False).to(model.device)
        with torch.inference_mode():
            out = model.generate(**inputs, max_new_tokens=max_new_tokens, do_sample=False,
                                 pad_token_id=tok.pad_token_id or tok.eos_token_id)
        prompt_tokens += inputs["input_ids"].shape[1]
        new_tokens += out.shape[1] - inputs["input_ids"].shape[1]
        reply = tok.decode(out[0, inputs["input_ids"].shape[1]:], skip_special_tokens=True)
        parsed += bool(_LETTER.search(reply))
    seconds = time.perf_counter() - t
    return {"pairs": len(pairs), "seconds": seconds, "parsed": parsed, "dtype": str(model.dtype),
            "prompt_tokens": prompt_tokens / len(pairs), "new_tokens": new_tokens / len(pairs),
            "threads": torch.get_num_threads()}


def mean_prompt_tokens(tokenizer, constitution, pairs) -> float:
    from cai.chat import render_prompt
    from cai.label.prompts import choice_conversation

    q = constitution.preference_principles()[0].preference
    lens = [len(tokenizer(render_prompt(tokenizer, choice_conversation(m, x, y, q)),
                          add_special_tokens=False)["input_ids"]) for m, x, y in pairs]
    return sum(lens) / len(lens)


def report(args, backend, ours: dict, loop: dict) -> tuple[str, bool]:
    o_pps = ours["pairs"] / ours["seconds"]
    l_pps = loop["pairs"] / loop["seconds"]
    speedup = o_pps / l_pps
    ok = speedup >= TARGET
    lines = [
        SECTION, "",
        *header(),
        f"- model: ours `{backend.name}` ({getattr(backend, 'dtype', 'checkpoint dtype')}), loop stock `transformers` ({loop['dtype']}, "
        f"{loop['threads']} torch threads); "
        f"pairs: BIG-bench HHH comparisons, {ours['prompt_tokens']:.0f} prompt tokens on average; constitution "
        f"`{args.constitution}`",
        f"- command: `python bench/label.py --pairs {args.pairs} --loop-pairs {args.loop_pairs} "
        f"--max-new-tokens {args.max_new_tokens}`", "",
        "| method | pairs | seconds | pairs/s |",
        "|---|---:|---:|---:|",
        f"| `label_pairs`: score_options, both orders, batched | {ours['pairs']} | {ours['seconds']:.1f} | {o_pps:.3f} |",
        f"| loop: `model.generate` ({args.max_new_tokens} tokens) + parse A/B, one order, one pair at a time | "
        f"{loop['pairs']} | {loop['seconds']:.1f} | {l_pps:.4f} |", "",
        f"Speedup: {speedup:.1f}x in pairs/s (target >= {TARGET:.0f}x): **{'PASS' if ok else 'FAIL'}**. "
        f"The loop's prompts averaged {loop['prompt_tokens']:.0f} tokens and its replies {loop['new_tokens']:.1f} "
        f"tokens; it found a letter in {loop['parsed']}/{loop['pairs']} replies. Scoring always yields a "
        "probability.", "",
    ]
    return "\n".join(lines), ok


def main(argv=None) -> int:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    args = parse_args(argv)
    from transformers import AutoTokenizer

    from cai.backends import load_backend, split_spec
    from cai.constitution import load_constitution
    from cai.models import resolve

    pairs = load_pairs(args)
    constitution = load_constitution(args.constitution)
    path = resolve(split_spec(args.model)[1])
    # The loop first, in a process no engine has touched: vLLM's CPU worker binds this process's
    # threads and leaves a polling worker behind, either of which would skew the baseline.
    print(f"loop: {args.loop_pairs} pairs one at a time ...", file=sys.stderr)
    # The loop's pairs are spread evenly over ours, so their prompt lengths are representative.
    step = max(1, args.pairs // args.loop_pairs)
    loop = run_loop(path, constitution, pairs[: args.pairs : step][: args.loop_pairs], args.max_new_tokens)
    print(f"loop: {loop['pairs']} pairs in {loop['seconds']:.1f} s", file=sys.stderr)
    backend = load_backend(args.model)
    print(f"ours: {args.pairs} pairs x 2 orders on {backend.name} ...", file=sys.stderr)
    try:
        ours = run_ours(backend, constitution, pairs[: args.pairs])
    finally:
        if getattr(backend, "close", None):
            backend.close()
    print(f"ours: {ours['pairs']} pairs in {ours['seconds']:.1f} s", file=sys.stderr)
    ours["prompt_tokens"] = mean_prompt_tokens(AutoTokenizer.from_pretrained(path), constitution, pairs[: args.pairs])
    section, ok = report(args, backend, ours, loop)
    return finish(section, ok, quick=args.quick, results=args.results, heading=SECTION)


if __name__ == "__main__":
    raise SystemExit(main())
