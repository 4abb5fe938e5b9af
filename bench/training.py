"""Training throughput: SFT tokens/s on the embedded model in bf16 and fp32, the FLOP utilisation,
peak memory, the preference model's (PM) epoch with random and with length-grouped batches, and PPO
seconds per step.

Each SFT variant runs TRL's SFTTrainer, built exactly as ``cai sft`` builds it
(:func:`cai.train.sft.build_sft_trainer`), in its own process, for ``--warmup`` untimed steps and
``--steps`` timed ones, on chat transcripts from the HH-RLHF harmless test set that ships with cai
(the "chosen" side, the last assistant turn as the answer: realistic prompt and answer lengths).
Tokens/s counts the real (non-pad) tokens TRL reports in ``num_tokens``, prompt tokens included
(they are in the forward and backward pass too).

FLOP utilisation = 6·N·tokens/s over the bf16 matmul peak measured in the same run (a 2048×2048
bf16 matmul, best of several, before and after the variants), N = the model's parameter count.
6·N per token is the usual forward + backward estimate; it leaves out attention's own FLOPs (small
at these lengths), so it slightly understates the work done. The completion-logits variant skips the
LM head's share of it on prompt tokens, so its figure is an effective one: the work TRL's path does
for the same tokens, per second.

Variants, each changing one thing from the one before:
  trl-default   TRL's SFTConfig as it comes: bf16, gradient checkpointing on, padded batches of 8
  no-gc         gradient checkpointing off (the activations of a 135M model fit easily)
  packing       + packing (best-fit decreasing, padding-free: no pad tokens at all)
  batch-16      + 16 sequences per step
  fp32          the packing variant in float32 instead of bf16 (bf16 vs fp32 on the same setup)
  completion-logits  the no-gc variant with the LM head run on the answer tokens only (`cai sft`'s
                default, --completion-logits); every other variant runs it on every token, as TRL
                does on a CPU (--no-completion-logits), so that their figures stay comparable

PM variants: TRL's RewardTrainer as ``cai reward`` builds it, with the quickstart's batches (4 pairs
x 2 accumulation steps), on HH-RLHF pairs (each answer against the next transcript's: real lengths).
Each trains one whole epoch of ``--reward-steps`` optimiser steps, all timed: the grouped order is
sorted within each megabatch (a quarter of the epoch, at most 50 steps; longest first), so a window
inside the epoch would favour it. Padding = pad tokens / all tokens of the epoch's batches.
  reward          random batches (--no-group-by-length; TRL's default)
  reward-grouped  length-grouped batches (`cai reward`'s default, --group-by-length)
  reward-sdpa     reward-grouped with SDPA's attention in every layer, as before cai.train.short_attention
                  (cai reward on a CPU takes the plain form where its memory is small: short batches, so run
                  this pair with --reward-max-length 192 to see it); written to a section of its own
  reward-one-row  reward-grouped with both sides of a pair in one row, their shared prompt once (`cai
                  reward`'s default, --share-prompt; the three above pad the sides as two rows, as TRL does);
                  compare pairs/s: tokens/s counts each prompt once here

    python bench/training.py            # full run; writes its section of bench/RESULTS.md
    python bench/training.py --quick    # smoke run: no-gc, completion-logits, reward-grouped; writes nothing
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from report import finish, header  # bench/report.py, shared by the bench scripts

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "RESULTS.md"
# Each family of variants has its own section, so a run of one family leaves the others' results alone.
SECTION = "## Training throughput (bench/training.py)"
PM_SECTION = "## Preference-model batches: random against length-grouped (bench/training.py)"
PM_ATTENTION_SECTION = "## Preference-model attention: SDPA against the plain form on short batches (bench/training.py)"
PM_ROWS_SECTION = "## Preference-model pairs: one row against two (bench/training.py)"
PPO_SECTION = "## PPO seconds per step (bench/training.py)"
# cai ppo's flags for each precision of --ppo-rows (auto: cai's default).
PRECISION_FLAGS = {"fp32": ["--no-bf16"], "bf16": ["--bf16"], "auto": []}
TARGET_UTILISATION = 0.40

_TRL = {"completion_logits": False}  # TRL's head on every token, as TRL runs it on a CPU
_PM = {"trainer": "reward", "bf16": None, "batch_size": 4, "grad_accum": 2}  # the quickstart's; bf16 as cai picks
VARIANTS = {
    "trl-default": {"bf16": True, "gradient_checkpointing": True, "packing": False, "batch_size": 8, **_TRL},
    "no-gc": {"bf16": True, "gradient_checkpointing": False, "packing": False, "batch_size": 8, **_TRL},
    "packing": {"bf16": True, "gradient_checkpointing": False, "packing": True, "batch_size": 8, **_TRL},
    "batch-16": {"bf16": True, "gradient_checkpointing": False, "packing": True, "batch_size": 16, **_TRL},
    "fp32": {"bf16": False, "gradient_checkpointing": False, "packing": True, "batch_size": 8, **_TRL},
    # The best padded variant (no-gc) with the head on the answer tokens only: padded batches are where
    # the head wastes most (prompt and padding rows); packing removes only the padding ones.
    "completion-logits": {"bf16": True, "gradient_checkpointing": False, "packing": False, "batch_size": 8,
                          "completion_logits": True},
    "reward": {**_PM, "group_by_length": False, "share_prompt": False},
    "reward-grouped": {**_PM, "group_by_length": True, "share_prompt": False},
    "reward-sdpa": {**_PM, "group_by_length": True, "share_prompt": False, "sdpa": True},
    "reward-one-row": {**_PM, "group_by_length": True, "share_prompt": True},
}


def _is_pm(variant: str) -> bool:
    return VARIANTS[variant].get("trainer") == "reward"


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="smollm2-135m", help="model alias or folder (default: smollm2-135m)")
    p.add_argument("--steps", type=int, default=6, help="timed optimiser steps per variant (default: 6)")
    p.add_argument("--warmup", type=int, default=1, help="untimed steps first (default: 1)")
    p.add_argument("--max-length", type=int, default=256, help="sequence length limit (default: 256)")
    p.add_argument("--reward-steps", type=int, default=24, help="PM variants: one epoch of this many x 8 pairs "
                   "(default: 24, about the quickstart's 200 pairs)")
    p.add_argument("--reward-max-length", type=int, default=1024, help="PM length limit (default: 1024, cai's)")
    p.add_argument("--variants", default=",".join(VARIANTS), help="comma-separated subset of " + ",".join(VARIANTS))
    p.add_argument("--ppo-steps", type=int, default=5, help="PPO steps to time, the first left out (0: skip PPO) "
                   "(default: 5)")
    p.add_argument("--ppo-rows", default="forward:fp32:sdpa:all:libc,rollout:fp32:sdpa:all:libc,"
                   "rollout:auto:sdpa:all:libc,rollout:auto:cai:all:libc,rollout:auto:cai:trim:libc,rollout:auto",
                   help="PPO rows, one after the other on the same PM, each "
                   "OLD_LOGPROBS:PRECISION[:ATTENTION[:COLUMNS[:MALLOC]]] (forward or rollout; fp32, bf16 or auto, "
                   "cai's default; cai, the default, or sdpa: CAI_SHORT_ATTENTION=0; trim, the default: each "
                   "minibatch's passes skip the columns none of its rollouts uses, as cai ppo does, or all: every pass "
                   "over the whole rollout's width; tcmalloc, the default: the cai command's TCMalloc where one is "
                   "installed, or libc: CAI_TCMALLOC=0) (default: the separate no-grad pass as when issue 16 was "
                   "filed, then generate's own logits, then cai's default precision, then cai's attention for the "
                   "update, then the trimmed columns, then TCMalloc)")
    p.add_argument("--quick", action="store_true", help="smoke run: 2 variants x 2 steps; writes nothing")
    p.add_argument("--results", default=str(RESULTS), help="results file (default: bench/RESULTS.md)")
    p.add_argument("--parallel", action="store_true", help="run the variants at the same time (on a machine shared "
                   "with other jobs, each then sees the same contention; figures are per variant)")
    p.add_argument("--one", help=argparse.SUPPRESS)  # internal: run one variant in this process, print JSON
    args = p.parse_args(argv)
    if args.quick:
        args.steps, args.warmup, args.variants, args.ppo_steps = 2, 1, "no-gc,completion-logits,reward-grouped", 2
        args.reward_steps = 2
    args.variants = [v.strip() for v in args.variants.split(",") if v.strip()]
    rows = []
    for row in (r.strip() for r in args.ppo_rows.split(",") if r.strip()):
        mode, precision, attention, columns, malloc = (row.split(":") + ["", "", "", ""])[:5]
        if (mode not in ("forward", "rollout") or (precision or "auto") not in PRECISION_FLAGS
                or (attention or "cai") not in ("cai", "sdpa") or (columns or "trim") not in ("trim", "all")
                or (malloc or "tcmalloc") not in ("tcmalloc", "libc") or row.count(":") > 4):
            p.error(f"--ppo-rows: {row!r} is not OLD_LOGPROBS:PRECISION[:ATTENTION[:COLUMNS[:MALLOC]]] (forward or "
                    "rollout; fp32, bf16 or auto; cai or sdpa; trim or all; tcmalloc or libc)")
        rows.append((mode, precision or "auto", attention or "cai", columns or "trim", malloc or "tcmalloc"))
    args.ppo_rows = rows
    unknown = set(args.variants) - set(VARIANTS)
    if unknown:
        p.error(f"unknown variants {sorted(unknown)}; pick from {', '.join(VARIANTS)}")
    return args


def matmul_peak(n: int = 2048, repeats: int = 8, dtypes: tuple[str, ...] = ("bf16", "fp32")) -> dict[str, float]:
    """Best-of FLOP/s of an n×n matmul in each of ``dtypes`` ("bf16", "fp32"), with the threads torch uses.
    (A CPU without bf16 instructions emulates bf16: 0.3 GFLOP/s on an AVX2 EPYC, minutes for this.)"""
    import torch

    out = {}
    for name, dtype in (("bf16", torch.bfloat16), ("fp32", torch.float32)):
        if name not in dtypes:
            continue
        a, b = torch.randn(n, n, dtype=dtype), torch.randn(n, n, dtype=dtype)
        a @ b  # warm-up
        best = float("inf")
        for _ in range(repeats):
            t = time.perf_counter()
            a @ b
            best = min(best, time.perf_counter() - t)
        out[name] = 2 * n**3 / best
    return out


def sft_examples(n: int) -> list[dict]:
    """HH-RLHF harmless chosen transcripts as prompt/completion pairs (cai sft's example shape)."""
    import gzip

    from cai.evals.datasets import dataset_path
    from cai.transcripts import parse_transcript

    root = dataset_path("hh-rlhf")
    path = root if root.is_file() else next(root.glob("*.jsonl.gz"))
    out = []
    with gzip.open(path, "rt", encoding="utf-8") as f:
        for line in f:
            conv = parse_transcript(json.loads(line)["chosen"])
            if len(conv) >= 2 and conv[-1]["role"] == "assistant" and conv[-1]["content"].strip():
                out.append({"prompt": conv[:-1], "completion": conv[-1:]})
            if len(out) >= n:
                break
    return out


def preference_records(n: int) -> list[dict]:
    """Preference records in TRL's conversational format: each HH-RLHF transcript's answer as chosen, the
    next one's as rejected (the labels mean nothing; the lengths are real)."""
    rows = sft_examples(n)
    return [{"id": f"bench-{i}", "prompt": r["prompt"], "chosen": r["completion"],
             "rejected": rows[(i + 1) % len(rows)]["completion"]} for i, r in enumerate(rows)]


def ppo_timings(args: argparse.Namespace) -> dict | None:
    """PPO seconds per step, split into rollout, scoring and update, as ``cai ppo`` logs them: one
    row per ``--old-logprobs`` mode (``forward``: the separate no-grad pass for the sampling policy's
    log-probs and values, as before; ``rollout``: generate's own logits and hidden states).

    The policy is the model (LoRA, as the presets train it); the reward is a PM of the same size,
    made by ``cai reward`` with one step on a few HH-RLHF pairs (its scores mean nothing, but
    scoring costs what a trained PM's does). Step 1 is left out of the means: it pays for warm-up.
    Peak RSS is the largest of the PPO process's.
    """
    if args.ppo_steps <= 1:
        return None
    with tempfile.TemporaryDirectory(prefix="cai-bench-ppo-") as tmp:
        pairs = Path(tmp) / "pairs.jsonl"
        with pairs.open("w") as f:
            f.writelines(json.dumps(r) + "\n" for r in preference_records(8))
        cai = [sys.executable, "-m", "cai"]
        pm = Path(tmp) / "pm"
        subprocess.run(cai + ["reward", "-m", args.model, "--data", str(pairs), "-o", str(pm), "--max-steps", "1",
                              "--batch-size", "2", "--human-eval", "none", "--eval-split", "0"],
                       check=True, capture_output=True, text=True)
        return {row: _ppo_row(args, cai, pm, Path(tmp) / f"ppo-{i}", *row) for i, row in enumerate(args.ppo_rows)}


# `cai ppo` with every pass over the whole rollout's width, as before cai.train.ppo_data.trim_columns.
ALL_COLUMNS = ("import sys; import cai.train.ppo_data as d; "
               "d.trim_columns = lambda ids, attn, start: (ids, attn, start, ids.shape[1] - start); "
               "from cai.cli import entry; sys.exit(entry())")


def _ppo_row(args: argparse.Namespace, cai: list[str], pm: Path, out: Path, mode: str, precision: str,
             attention: str, columns: str, malloc: str) -> dict:
    # A wrapper process, so that the peak RSS is PPO's alone (RUSAGE_CHILDREN here also holds the
    # SFT variants').
    wrap = ("import resource, subprocess, sys; r = subprocess.run(sys.argv[1:]); "
            "print('PEAK_RSS_KB', resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss, file=sys.stderr); "
            "sys.exit(r.returncode)")
    print(f"ppo --old-logprobs {mode}, {precision}, {attention} attention, {columns} columns, {malloc} ...",
          file=sys.stderr)
    from cai.allocator import without_preload

    env = {**os.environ, "CAI_SHORT_ATTENTION": "0" if attention == "sdpa" else "1"}
    if malloc == "libc":
        env["CAI_TCMALLOC"] = "0"
        env = without_preload(env)  # a bench started with LD_PRELOAD=...tcmalloc... too
    if columns == "all":
        cai = [sys.executable, "-c", ALL_COLUMNS]
    proc = subprocess.run([sys.executable, "-c", wrap] + cai + [
        "ppo", "-m", args.model, "--reward", str(pm), "--data", "redteam", "-o", str(out),
        "--max-steps", str(args.ppo_steps), "--batch-size", "8", "--minibatch-size", "4", "--max-tokens", "64",
        "--lora", "--lr", "1e-4", "--old-logprobs", mode, *PRECISION_FLAGS[precision], "--no-progress"],
        capture_output=True, text=True, env=env)
    if proc.returncode != 0:
        raise RuntimeError(f"cai ppo failed:\n{proc.stderr[-3000:]}")
    rss = int(proc.stderr.rsplit("PEAK_RSS_KB", 1)[1].split()[0])
    logged = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines() if x.strip()]
    timed = [r for r in logged if r["step"] > 1] or logged
    mean = lambda k: sum(r[k] for r in timed) / len(timed)  # noqa: E731
    return {"steps": len(timed), "rollout_s": mean("time_rollout"), "scoring_s": mean("time_score"),
            "update_s": mean("time_update"), "length": mean("length"), "kl": mean("kl"),
            "peak_rss_gib": rss / 2**20}


def run_one(spec: dict) -> dict:
    """One variant in this process: build the trainer as cai sft does, time the steps after warm-up."""
    import torch
    from transformers import TrainerCallback

    from cai.train.rundir import RunDir
    from cai.train.sft import SFTRunConfig, build_sft_trainer

    if _is_pm(spec["variant"]):
        return run_reward_one(spec)
    v = VARIANTS[spec["variant"]]
    steps, warmup = spec["steps"], spec["warmup"]
    config = SFTRunConfig(model=spec["path"], data=["bench"], output=spec["out"], max_steps=steps + warmup,
                          batch_size=v["batch_size"], max_length=spec["max_length"], bf16=v["bf16"],
                          packing=v["packing"], completion_logits=v["completion_logits"], save_steps=10_000, lr=1e-5)
    # Enough that no step gets a short batch (examples whose prompt fills max-length are dropped).
    n_examples = (steps + warmup) * v["batch_size"] * (6 if v["packing"] else 2)
    run = RunDir(spec["out"], command="sft", config={}, data=[], base_model=spec["path"])
    Path(spec["out"]).mkdir(parents=True, exist_ok=True)
    trainer = build_sft_trainer(config, sft_examples(n_examples), run, spec["path"], show_progress=False)
    if v["gradient_checkpointing"]:
        trainer.args.gradient_checkpointing = True
        trainer.model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        trainer.model.config.use_cache = False
    marks: dict[str, float] = {}

    class Clock(TrainerCallback):
        def on_log(self, args, state, control, logs=None, **kw):
            if logs and "num_tokens" in logs:
                if state.global_step == warmup:
                    marks["t0"], marks["tok0"] = time.perf_counter(), logs["num_tokens"]
                if state.global_step == warmup + steps:
                    marks["t1"], marks["tok1"] = time.perf_counter(), logs["num_tokens"]

    trainer.add_callback(Clock())
    trainer.train()
    seconds, tokens = marks["t1"] - marks["t0"], marks["tok1"] - marks["tok0"]
    n_params = sum(p.numel() for p in trainer.model.parameters())
    return {"variant": spec["variant"], "seconds": seconds, "tokens": tokens, "steps": steps,
            "params": n_params, "threads": torch.get_num_threads(),
            "peak_rss_gib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20}


def run_reward_one(spec: dict) -> dict:
    """One PM variant in this process: build the trainer as cai reward does, time one whole epoch."""
    import torch
    from transformers import TrainerCallback

    from cai.train.prefdata import record_pair
    from cai.train.reward import RewardTrainConfig, build_reward_trainer
    from cai.train.rundir import RunDir

    v = {k: x for k, x in VARIANTS[spec["variant"]].items() if k not in ("trainer", "sdpa")}
    config = RewardTrainConfig(model=spec["path"], data=("bench",), output=spec["out"], max_length=spec["max_length"],
                               human_eval=(), save_steps=10_000, lr=2e-5, **v)
    n_pairs = spec["steps"] * config.batch_size * config.grad_accum
    pairs = [record_pair(r, f"bench:{i}") for i, r in enumerate(preference_records(n_pairs))]
    run = RunDir(spec["out"], command="reward", config={}, data=[], base_model=spec["path"])
    Path(spec["out"]).mkdir(parents=True, exist_ok=True)
    trainer = build_reward_trainer(config, pairs, run, spec["path"], show_progress=False)
    counts, collate, marks = {"real": 0, "all": 0}, trainer.data_collator, {}

    def counting(examples):  # the padded batches as the model gets them
        mask = (batch := collate(examples))["attention_mask"]
        counts["real"], counts["all"] = counts["real"] + int(mask.sum()), counts["all"] + mask.numel()
        return batch

    trainer.data_collator = counting

    class Clock(TrainerCallback):  # to the last step's log, before the checkpoint the Trainer writes at the end
        def on_train_begin(self, args, state, control, **kw):
            marks["t0"] = time.perf_counter()

        def on_log(self, args, state, control, logs=None, **kw):
            if logs and "loss" in logs:
                marks["t1"] = time.perf_counter()

    trainer.add_callback(Clock())
    trainer.train()
    n_params = sum(p.numel() for p in trainer.model.parameters())
    return {"variant": spec["variant"], "seconds": marks["t1"] - marks["t0"], "tokens": counts["real"],
            "padded_tokens": counts["all"], "pairs": n_pairs, "steps": trainer.state.global_step, "params": n_params,
            "bf16": bool(trainer.args.bf16), "threads": torch.get_num_threads(),
            "attention": trainer.model.config._attn_implementation,
            "peak_rss_gib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20}


def start_variant(variant: str, args: argparse.Namespace, path: str, tmp: str) -> subprocess.Popen:
    pm = _is_pm(variant)
    spec = {"variant": variant, "steps": args.reward_steps if pm else args.steps, "warmup": args.warmup,
            "max_length": args.reward_max_length if pm else args.max_length, "path": path,
            "out": str(Path(tmp) / variant)}
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(HERE.parent / "src"), os.environ.get("PYTHONPATH", "")]),
           # SDPA in every layer, as before cai.train.short_attention (the same switch as the PPO rows')
           "CAI_SHORT_ATTENTION": "0" if VARIANTS[variant].get("sdpa") else "1"}
    return subprocess.Popen([sys.executable, __file__, "--one", json.dumps(spec)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=env)


def collect(variant: str, proc: subprocess.Popen) -> dict:
    out, err = proc.communicate()
    lines = [line for line in out.splitlines() if line.startswith("{")]
    if proc.returncode != 0 or not lines:
        raise RuntimeError(f"variant {variant} failed:\n{err[-3000:]}")
    return json.loads(lines[-1])


def pm_lines(args, rows: list[dict], peak_bf16: float, peak_fp32: float) -> list[str]:
    """The PM variants' table: one epoch each, random against length-grouped batches. Utilisation is
    against the peak of the precision the PM ran in (cai picks it by a measured matmul rate)."""
    if not rows:
        return []
    r0, v0 = rows[0], VARIANTS[rows[0]["variant"]]
    lines = [f"- PM: TRL RewardTrainer as `cai reward` builds it, one epoch of {r0['pairs']} HH-RLHF pairs "
             f"({r0['steps']} optimiser steps of {v0['batch_size']} pairs x {v0['grad_accum']} accumulation), max length "
             f"{args.reward_max_length}, all timed.", "",
             "| variant | batches | rows a pair | attention | precision | epoch | pairs/s | tokens/s | padding | utilisation "
             "(of that precision's peak) | peak RSS |",
             "|---|---|---:|---|---|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        rate = r["tokens"] / r["seconds"]
        lines.append(f"| {r['variant']} | {'length-grouped' if VARIANTS[r['variant']]['group_by_length'] else 'random'} "
                     f"| {1 if VARIANTS[r['variant']]['share_prompt'] else 2} | {r.get('attention', '?')} | {'bf16' if r['bf16'] else 'fp32'} | {r['seconds']:.0f} s | {r['pairs'] / r['seconds']:.2f} "
                     f"| {rate:.0f} | {100 * (1 - r['tokens'] / r['padded_tokens']):.0f}% "
                     f"| {100 * 6 * r['params'] * rate / (peak_bf16 if r['bf16'] else peak_fp32):.1f}% | {r['peak_rss_gib']:.1f} GiB |")
    by = {r["variant"]: r for r in rows}
    if "reward" in by and "reward-grouped" in by:
        lines += ["", f"- length-grouped vs random PM batches (same pairs, same epoch): "
                  f"{by['reward']['seconds'] / by['reward-grouped']['seconds']:.2f}x the pairs/s."]
    if "reward-one-row" in by and "reward-grouped" in by:
        lines += ["", f"- one row a pair (the shared prompt once) vs two rows, both length-grouped (same pairs, same epoch): "
                  f"{by['reward-grouped']['seconds'] / by['reward-one-row']['seconds']:.2f}x the pairs/s, "
                  f"{by['reward-one-row']['padded_tokens'] / by['reward-grouped']['padded_tokens']:.2f}x the positions computed."]
    if "reward-sdpa" in by and "reward-grouped" in by:
        lines += ["", f"- attention `{by['reward-grouped'].get('attention')}` (cai's) vs `sdpa` in every layer (same pairs, "
                  f"same epoch): {by['reward-sdpa']['seconds'] / by['reward-grouped']['seconds']:.2f}x the pairs/s."]
    return lines + [""]


def report(args, rows: list[dict], peaks: list[dict], ppo: dict | None,
           load_at_start: float) -> tuple[list[tuple[str, str]], bool]:
    """(heading, section) for each family that ran (SFT, PM, PPO), and whether SFT met its target."""
    peak_bf16 = max(p["bf16"] for p in peaks)
    peak_fp32 = max(p["fp32"] for p in peaks)
    pm_rows = [r for r in rows if _is_pm(r["variant"])]
    rows = [r for r in rows if not _is_pm(r["variant"])]
    first = (rows or pm_rows or [None])[0]
    common = [
        *header(load_at_start, load_at_end=True),
        *([] if first is None else [f"- `{args.model}` ({first['params'] / 1e6:.0f}M parameters), each variant in its own process"
        f"{' (all at once: --parallel)' if args.parallel else ''}, {first['threads']} torch threads."]),
        "- matmul peak (2048x2048, best of 8, measured before and after the variants): bf16 "
        + " / ".join(f"{p['bf16'] / 1e9:.0f}" for p in peaks) + " GFLOP/s, fp32 "
        + " / ".join(f"{p['fp32'] / 1e9:.0f}" for p in peaks) + " GFLOP/s.",
    ]
    lines = [SECTION, "", *common, "- tokens/s counts real (non-pad) tokens, prompt and answer; utilisation = "
             f"6·N·tokens/s / the higher bf16 peak ({peak_bf16 / 1e9:.0f} GFLOP/s)."]
    if rows:
        lines += [f"- SFT: TRL SFTTrainer as `cai sft` builds it, HH-RLHF harmless chosen transcripts, max length "
                  f"{args.max_length}, {args.warmup} warm-up + {args.steps} timed steps per variant.",
                  "", "| variant | precision | grad. checkpointing | packing | LM head on | batch | tokens/s | "
                  "utilisation | peak RSS |", "|---|---|---|---|---|---:|---:|---:|---:|"]
    best = 0.0
    for r in rows:
        v = VARIANTS[r["variant"]]
        rate = r["tokens"] / r["seconds"]
        util = 6 * r["params"] * rate / peak_bf16
        best = max(best, util)
        lines.append(f"| {r['variant']} | {'bf16' if v['bf16'] else 'fp32'} | {'on' if v['gradient_checkpointing'] else 'off'} "
                     f"| {'yes' if v['packing'] else 'no'} | {'answers' if v['completion_logits'] else 'all tokens'} "
                     f"| {v['batch_size']} | {rate:.0f} | {100 * util:.1f}% | "
                     f"{r['peak_rss_gib']:.1f} GiB |")
    by = {r["variant"]: r["tokens"] / r["seconds"] for r in rows}
    lines.append("")
    if "packing" in by and "fp32" in by:
        lines.append(f"- bf16 vs fp32 (same setup, packing): {by['packing'] / by['fp32']:.2f}x the tokens/s "
                     f"(matmul peaks: {peak_bf16 / peak_fp32:.2f}x).")
    if "no-gc" in by and "completion-logits" in by:
        lines.append(f"- LM head on the answer tokens only vs on every token (same setup, padded): "
                     f"{by['completion-logits'] / by['no-gc']:.2f}x the tokens/s.")
    if "trl-default" in by:
        lines.append("- speed-up of each variant over TRL as it comes: " + ", ".join(
            f"{k} {by[k] / by['trl-default']:.2f}x" for k in by if k != "trl-default") + ".")
    # The target is SFT's (the PM variants compare two batch orders, not a utilisation).
    ok = best >= TARGET_UTILISATION or not rows
    if rows:
        lines.append(f"- utilisation >= {TARGET_UTILISATION:.0%}: best {best:.1%}, **{'PASS' if ok else 'FAIL'}**")
    sections = [(SECTION, "\n".join(lines + [""]))] if rows else []
    if pm_rows:
        ran = {r["variant"] for r in pm_rows}
        heading = (PM_ATTENTION_SECTION if "reward-sdpa" in ran else PM_ROWS_SECTION if "reward-one-row" in ran
                   else PM_SECTION)
        sections.append((heading, "\n".join([heading, "", *common, *pm_lines(args, pm_rows, peak_bf16, peak_fp32), ""])))
    if ppo:
        sections.append((PPO_SECTION, "\n".join([PPO_SECTION, "", *common[:3], *ppo_lines(ppo), ""])))
    return sections, ok


def ppo_lines(ppo: dict[tuple[str, str, str, str, str], dict]) -> list[str]:
    """One row per --old-logprobs mode, policy precision, attention, columns and allocator; the update's ratio
    against the first row (same run, same PM)."""
    import torch

    from cai.allocator import find_tcmalloc
    from cai.train.ppo_model import pick_dtype

    tcmalloc = find_tcmalloc()
    auto = "bf16" if pick_dtype(None, lora=True) is torch.bfloat16 else "fp32"  # what cai ppo --lora picks here
    first = next(iter(ppo.values()))
    lines = [f"- job: `cai ppo`, LoRA policy, a PM of the same size as reward, batch 8, minibatch 4, 4 PPO epochs (the default), "
             f"at most 64 new tokens; mean of {first['steps']} steps after the first; one row per "
             "`--old-logprobs`, policy precision (auto: cai's default, here " + auto + ") and attention (cai: "
             "`cai.train.short_attention` for the update's passes, cai's default on a CPU; sdpa: "
             "`CAI_SHORT_ATTENTION=0`) and columns (trim: each minibatch's passes skip the columns none of its "
             "rollouts uses, cai's; all: the whole rollout's width, as before) and memory allocator (tcmalloc: the "
             "`cai` command's, " + (f"here {tcmalloc}" if tcmalloc else "none installed here, so the C "
             "library's") + "; libc: `CAI_TCMALLOC=0`, as before), one after the other", "",
             "| --old-logprobs | precision | attention | columns | malloc | rollout | scoring | update | update vs first row "
             "| answer tokens | KL | peak RSS |",
             "|---|---|---|---|---|---:|---:|---:|---:|---:|---:|---:|"]
    for (mode, precision, attention, columns, malloc), r in ppo.items():
        precision = f"auto ({auto})" if precision == "auto" else precision
        lines.append(f"| {mode} | {precision} | {attention} | {columns} | {malloc} | {r['rollout_s']:.1f} s | "
                     f"{r['scoring_s']:.1f} s | "
                     f"{r['update_s']:.1f} s | "
                     f"{r['update_s'] / first['update_s']:.2f}x | {r['length']:.0f} | {r['kl']:.3f} | "
                     f"{r['peak_rss_gib']:.1f} GiB |")
    return lines


def main(argv=None) -> int:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    args = parse_args(argv)
    if args.one:
        print(json.dumps(run_one(json.loads(args.one))))
        return 0
    from cai.models import resolve

    path = resolve(args.model)
    load_at_start = os.getloadavg()[0]
    peaks = [matmul_peak()]
    rows = []
    with tempfile.TemporaryDirectory(prefix="cai-bench-train-") as tmp:
        if args.parallel:
            procs = {v: start_variant(v, args, path, tmp) for v in args.variants}
            rows = [collect(v, p) for v, p in procs.items()]
        else:
            for variant in args.variants:
                print(f"{variant} ...", file=sys.stderr)
                rows.append(collect(variant, start_variant(variant, args, path, tmp)))
        for r in rows:
            print(f"{r['variant']}: {r['tokens'] / r['seconds']:.0f} tokens/s", file=sys.stderr)
    peaks.append(matmul_peak())
    sections, ok = report(args, rows, peaks, ppo_timings(args), load_at_start)
    for heading, section in sections:
        finish(section, ok, quick=args.quick, results=args.results, heading=heading)
    return 0 if ok or args.quick else 1


if __name__ == "__main__":
    raise SystemExit(main())
