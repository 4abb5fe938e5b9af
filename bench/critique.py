"""Throughput of the SL-CAI critique engine against a one-prompt-at-a-time loop.

The engine (``cai.critique.run_critique``) runs the embedded model on the built-in ``redteam``
prompts for 2 rounds (first answer, then critique + revision twice), advancing the whole batch one
step per backend call. The baseline does the same steps for each prompt in turn with
``model.generate``, as in the classic CAI tutorial code: same conversations (built by the same
functions), same principles, same token limits and sampling settings. The loop is far too slow to
run on all prompts, so it runs on the first ``--loop-prompts`` of them and its rate is compared
with the engine's. The target is a speedup of at least 30x in both prompts/s and completion
tokens/s.

The full run is also the issue's must-show: "embedded model, redteam prompts, 2 rounds, 200
prompts, finishes". Keep its records with ``--output runs/redteam-sl.jsonl`` and inspect them with
``cai data stats runs/redteam-sl.jsonl``.

    python bench/critique.py                        # full run; writes its section of bench/RESULTS.md
    python bench/critique.py --model hf:smollm2-135m  # the engine on the hf backend instead of vllm
    python bench/critique.py --quick                # smoke run on a few prompts; writes nothing
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

from report import finish, header, tutorial_model  # bench/report.py, shared by the bench scripts

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "RESULTS.md"
SECTION = "## SL-CAI critique engine (bench/critique.py)"
TARGET = 30.0


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="smollm2-135m", help="engine backend spec (default: smollm2-135m, which "
                   "picks vllm when installed, else hf)")
    p.add_argument("--constitution", default="default")
    p.add_argument("--prompts", default="redteam")
    p.add_argument("--n", type=int, default=200, help="prompts for the engine (default: 200)")
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--batch-size", type=int, default=None, help="engine batch size (default: the CLI default)")
    p.add_argument("--loop-prompts", type=int, default=8, help="prompts for the one-at-a-time loop (default: 8)")
    p.add_argument("--max-tokens", type=int, default=None,
                   help="token limit for answers, critiques and revisions alike (default: the CLI defaults)")
    p.add_argument("--output", help="keep the engine's records here (must not exist: the bench times a fresh run)")
    p.add_argument("--quick", action="store_true", help="smoke run: 4 prompts, 1 in the loop, 32 tokens; writes nothing")
    p.add_argument("--results", default=str(RESULTS), help="results file (default: bench/RESULTS.md)")
    args = p.parse_args(argv)
    if args.quick:
        args.n, args.loop_prompts, args.max_tokens = min(args.n, 4), 1, args.max_tokens or 32
    return args


def make_config(args, output: str):
    from cai.critique import CritiqueConfig

    kw = dict(model=args.model, constitution=args.constitution, prompts=args.prompts, output=output,
              rounds=args.rounds, limit=args.n, seed=0)
    if args.batch_size:
        kw["batch_size"] = args.batch_size
    if args.max_tokens:
        kw.update(answer_max_tokens=args.max_tokens, critique_max_tokens=args.max_tokens,
                  revision_max_tokens=args.max_tokens)
    return CritiqueConfig(**kw)


def run_engine(config) -> dict:
    from cai.backends import load_backend
    from cai.store import read_records
    from cai.critique import run_critique

    t0 = time.perf_counter()
    backend = load_backend(config.model)
    load_s = time.perf_counter() - t0
    try:
        t0 = time.perf_counter()
        summary = run_critique(config, policy=backend, show_progress=sys.stderr.isatty())
        seconds = time.perf_counter() - t0
    finally:
        close = getattr(backend, "close", None)
        if close:
            close()
    records = read_records(summary["output"])
    tokens = sum(r["usage"]["completion_tokens"] for r in records)
    return {"backend": backend.name, "prompts": len(records), "seconds": seconds, "load_s": load_s,
            "tokens": tokens, "revised": sum(r["revised"] for r in records), "output": summary["output"]}


def run_loop(config, n: int) -> dict:
    """The tutorial way: one prompt at a time, one ``model.generate`` per step."""
    import torch

    from cai.critique import prompts as cp
    from cai.backends import split_spec
    from cai.chat import render_prompt
    from cai.constitution import load_constitution
    from cai.critique.plan import choose_principles, principle_pool, prompt_items
    from cai.models import resolve
    from cai.sources import load_prompts

    path = resolve(split_spec(config.model)[1])
    t0 = time.perf_counter()
    tok, model = tutorial_model(path)
    device = model.device
    load_s = time.perf_counter() - t0

    constitution = load_constitution(config.constitution)
    template = cp.CritiqueTemplate.load(config.template)
    shots = cp.few_shot_turns(constitution.examples[: config.few_shot] if config.few_shot is not None
                              else constitution.examples, template)
    system = (config.system_prompt if config.system_prompt is not None else constitution.system_prompt) or None
    pool = principle_pool(constitution, config)
    items = prompt_items(load_prompts(config.prompts, limit=n, seed=config.seed))
    tokens = 0

    def gen(conv, max_new):
        nonlocal tokens
        ids = tok(render_prompt(tok, conv), return_tensors="pt", add_special_tokens=False).input_ids.to(device)
        with torch.no_grad():
            out = model.generate(ids, max_new_tokens=max_new, do_sample=config.temperature > 0,
                                 temperature=config.temperature or None, top_p=config.top_p,
                                 pad_token_id=tok.pad_token_id)
        new = out[0, ids.shape[1]:]
        tokens += len(new) - int(len(new) > 0 and int(new[-1]) == tok.eos_token_id)  # the end-of-turn is not text
        return tok.decode(new, skip_special_tokens=True)

    t0 = time.perf_counter()
    for it in items:
        answer = gen(cp.with_system(it.messages, system), config.answer_max_tokens).strip()
        for principle in choose_principles(it.id, it.index, config.rounds, pool, config):
            ctx = cp.critic_context(it.messages, answer, system=system, shots=shots)
            crit_conv = cp.critique_conversation(ctx, principle.critique, template)
            critique = cp.clean_output(gen(crit_conv, config.critique_max_tokens), "critique", template)
            rev_conv = cp.revision_conversation(crit_conv, critique, principle.revision, template)
            revision = cp.clean_output(gen(rev_conv, config.revision_max_tokens), "revision", template)
            answer = revision or answer
    seconds = time.perf_counter() - t0
    return {"prompts": len(items), "seconds": seconds, "load_s": load_s, "tokens": tokens,
            "threads": torch.get_num_threads()}


def report(config, engine: dict, loop: dict, load_at_start: float) -> tuple[str, bool]:
    e_pps, l_pps = engine["prompts"] / engine["seconds"], loop["prompts"] / loop["seconds"]
    e_tps, l_tps = engine["tokens"] / engine["seconds"], loop["tokens"] / loop["seconds"]
    s_p, s_t = e_pps / l_pps, e_tps / l_tps
    ok = min(s_p, s_t) >= TARGET
    lines = [
        SECTION, "",
        *header(load_at_start),
        f"- job: `{config.prompts}` prompts, constitution `{config.constitution}`, {config.rounds} rounds "
        f"(1 + {2 * config.rounds} generations per prompt), token limits answer/critique/revision "
        f"{config.answer_max_tokens}/{config.critique_max_tokens}/{config.revision_max_tokens}, temperature "
        f"{config.temperature}, engine batch size {config.batch_size}",
        f"- the one-at-a-time loop ran on the first {loop['prompts']} of the engine's {engine['prompts']} prompts "
        f"(it is too slow for all) and ran first, alone, on stock transformers in bfloat16 with {loop['threads']} torch "
        "threads; rates are compared. Model loading is excluded from both "
        f"(engine {engine['load_s']:.1f} s, loop {loop['load_s']:.1f} s).",
        "",
        "| path | prompts | seconds | prompts/s | completion tokens | tokens/s |",
        "|---|---:|---:|---:|---:|---:|",
        f"| engine, `{engine['backend']}`, whole batch per step | {engine['prompts']} | {engine['seconds']:.1f} | "
        f"{e_pps:.3f} | {engine['tokens']} | {e_tps:.1f} |",
        f"| loop, `model.generate` one prompt at a time | {loop['prompts']} | {loop['seconds']:.1f} | {l_pps:.4f} | "
        f"{loop['tokens']} | {l_tps:.1f} |",
        "",
        f"Speedup: {s_p:.1f}x in prompts/s, {s_t:.1f}x in tokens/s (target >= {TARGET:.0f}x in both): "
        f"**{'PASS' if ok else 'FAIL'}**. The engine's run finished: {engine['prompts']} records, "
        f"{engine['revised']} with a final answer that differs from the first.",
        "",
    ]
    return "\n".join(lines), ok


def main(argv=None) -> int:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("VLLM_CPU_NUM_OF_RESERVED_CPU", "0")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    args = parse_args(argv)
    load_at_start = os.getloadavg()[0]
    with tempfile.TemporaryDirectory() as tmp:
        out = args.output or str(Path(tmp) / "critique.jsonl")
        if Path(out).exists():
            sys.exit(f"{out} exists; the bench times a fresh run, so remove it or pick another --output")
        config = make_config(args, out)
        # The loop first, in a process no engine has touched: vLLM's CPU worker binds this process's
        # threads and leaves a polling worker behind, either of which would skew the baseline.
        print(f"loop: {args.loop_prompts} prompts one at a time ...", file=sys.stderr)
        loop = run_loop(config, args.loop_prompts)
        print(f"loop: {loop['prompts']} prompts in {loop['seconds']:.1f} s", file=sys.stderr)
        print(f"engine: {args.n} prompts x {args.rounds} rounds on {args.model} ...", file=sys.stderr)
        engine = run_engine(config)
        print(f"engine: {engine['prompts']} prompts in {engine['seconds']:.1f} s", file=sys.stderr)
        section, ok = report(config, engine, loop, load_at_start)
    return finish(section, ok, quick=args.quick, results=args.results, heading=SECTION)


if __name__ == "__main__":
    raise SystemExit(main())
