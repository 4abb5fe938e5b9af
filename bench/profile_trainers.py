"""Where one optimiser step of each cai trainer spends its time: SFT, the reward model (PM), DPO and
the PPO update, each profiled with torch.profiler on the CPU.

Each trainer is built as its command builds it (:func:`cai.train.sft.build_sft_trainer`,
:func:`cai.train.reward.build_reward_trainer`, :func:`cai.train.dpo.build_dpo_trainer`, and for PPO
:func:`cai.train.ppo_model.build_policy` with the rollout and update functions ``cai ppo``'s loop
calls), with the settings of the presets: SFT as demo-effect's, the PM and PPO as the quickstart's,
DPO as examples/rl_frontier.py's (batch 8, max length 256). Data: HH-RLHF harmless transcripts, as
bench/training.py reads them; PPO answers the preset's prompts once (the rollout is not profiled),
then its update runs on that rollout again and again with random scores (the update's cost does not
depend on them).

Per trainer: ``--warmup`` steps, ``--timed`` steps timed without the profiler (step time, tokens/s,
utilisation), then ``--profiled`` steps under ``torch.profiler.profile(activities=[CPU],
record_shapes=True)``, which give the breakdown. Every profiled op's self time goes to one category,
by the op and the ops it was called from:

  matmul        aten::mm/addmm/bmm/matmul/linear, what they call (transposes, autocast's casts) and
                their backward; the GFLOP/s are the kernels' own (mm/addmm/bmm), from the recorded shapes
  attention     everything under scaled_dot_product_attention, and the plain form's batched matmuls and
                softmax (cai.train.short_attention, on short training batches), forward and backward
  LM head+loss  every op on a tensor with a vocabulary-sized dimension (the head over the vocabulary,
                log-softmax, gather, ...), TRL's fused LM head (ChunkedLogProbFunction),
                cross_entropy/nll_loss/logsigmoid, and their backward
  optimiser     everything under Optimizer.step / zero_grad, and the gradient clipping (_foreach_*)
  data          everything under the DataLoader's __next__ (collation)
  other ops     the rest: norms, activations, embeddings, elementwise ops, copies
  Python        the profiled wall time minus the self times of all the ops: Python, hooks, untraced work

Figures are per optimiser step. A PPO update (the quickstart's: 4 rollouts, minibatch 2, 2 epochs) is
one no-grad pass over the rollouts and 4 optimiser steps, so its figures are the update's divided by 4.
Tokens are the real (non-pad) tokens of the model's forward passes, read from their attention masks.
DPO runs one row a pair, as ``cai dpo`` does (``--no-share-prompt``: two rows, as TRL does); its
tokens are counted as TRL's two rows hold them either way (the hook sees the trainer's batch), so its
utilisation is the two-row work done per second.
Utilisation = 6·N·tokens/s (N: :func:`matmul_params`) over the bf16 matmul peak this script measures
(as bench/training.py does); PPO's no-grad passes (old log-probs, reference, values) count 2·N per token. With LoRA the
backward skips the base weights' gradients, so 6·N overstates that work.

    python bench/profile_trainers.py                 # the embedded model; writes its section of bench/RESULTS.md
    python bench/profile_trainers.py --trainers sft,ppo
    python bench/profile_trainers.py --trainers sft,dpo --no-completion-logits   # TRL's head on every token
    python bench/profile_trainers.py --trainers dpo --no-share-prompt --results /tmp/two-rows.md
    python bench/profile_trainers.py --quick         # a tiny random model, 1+1+1 steps each; writes nothing
"""

from __future__ import annotations

import argparse
import gc
import os
import sys
import tempfile
import time
from pathlib import Path

from report import finish, header  # bench/report.py, shared by the bench scripts
from training import matmul_peak, preference_records, sft_examples  # bench/training.py: peak and data

HERE = Path(__file__).resolve().parent
SECTION = "## Trainer step profile (bench/profile_trainers.py)"
TRAINERS = ("sft", "reward", "dpo", "ppo")
# Where each trainer's settings come from: a preset's section (as `cai run` reads it), then the bench's own.
SETTINGS = {
    "sft": ("demo-effect", {}),
    "reward": ("quickstart", {}),
    "dpo": (None, {"batch_size": 8, "max_length": 256, "lr": 2e-5}),  # examples/rl_frontier.py's DPO
    "ppo": ("quickstart", {}),
}
CATEGORIES = ("matmul", "attention", "LM head+loss", "optimiser", "data", "other ops", "Python")
MATMUL_KERNELS = {"aten::mm", "aten::addmm", "aten::addmm_", "aten::bmm", "aten::baddbmm", "aten::baddbmm_"}
MATMUL_NAMES = MATMUL_KERNELS | {"aten::matmul", "aten::linear", "MmBackward0", "AddmmBackward0", "BmmBackward0"}
# TRL's fused LM head (ChunkedLogProbFunction) works on vocabulary chunks, so its tensors have no
# vocabulary-sized dimension: it is found by name.
HEAD_NAMES = ("chunkedlogprob", "crossentropy", "nllloss", "logsigmoid")
# The plain attention form's ops (normalised as in category()): the layers' own matmuls are mm/addmm.
PLAIN_ATTENTION = ("aten::bmm", "aten::softmax", "bmmbackward0", "softmaxbackward0")
AUTOGRAD_NODE = "autograd::engine::evaluate_function"


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", help="model alias or folder (default: smollm2-135m; with --quick a tiny random model)")
    p.add_argument("--trainers", default=",".join(TRAINERS), help="comma-separated subset of " + ",".join(TRAINERS))
    p.add_argument("--warmup", type=int, default=2, help="steps before any timing (default: 2)")
    p.add_argument("--timed", type=int, default=3, help="steps timed without the profiler (default: 3)")
    p.add_argument("--profiled", type=int, default=1, help="steps under the profiler (default: 1)")
    p.add_argument("--no-completion-logits", dest="completion_logits", action="store_false",
                   help="SFT and DPO with the LM head on every token, as TRL runs it on a CPU (default: on the "
                   "answer tokens only, as cai sft and cai dpo run it)")
    p.add_argument("--no-share-prompt", dest="share_prompt", action="store_false",
                   help="DPO with a pair's two sides as two rows, as TRL runs them (default: one row a pair, the "
                   "prompt once, as cai dpo runs it; utilisation counts TRL's two rows' tokens either way)")
    p.add_argument("--top", type=int, default=0, metavar="N",
                   help="also print each trainer's N ops of most self time in the profiled steps (stderr)")
    p.add_argument("--quick", action="store_true", help="smoke run on a tiny random model, 1 step each; writes nothing")
    p.add_argument("--results", default=str(HERE / "RESULTS.md"), help="results file (default: bench/RESULTS.md)")
    args = p.parse_args(argv)
    if args.quick:
        args.warmup = args.timed = args.profiled = 1
    args.trainers = [t.strip() for t in args.trainers.split(",") if t.strip()]
    if set(args.trainers) - set(TRAINERS):
        p.error(f"unknown trainers {sorted(set(args.trainers) - set(TRAINERS))}; pick from {', '.join(TRAINERS)}")
    if min(args.warmup, args.timed, args.profiled) < 1:
        p.error("--warmup, --timed and --profiled must each be at least 1")
    return args


def tiny_model(folder: Path) -> str:
    """A 2-layer random Llama with the embedded model's tokenizer (as tests/conftest.py makes it)."""
    import torch
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    from cai.models import resolve

    tok = AutoTokenizer.from_pretrained(resolve("smollm2-135m"))
    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=len(tok), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, bos_token_id=tok.bos_token_id,
                         eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id, tie_word_embeddings=False)
    LlamaForCausalLM(config).to(torch.bfloat16).save_pretrained(folder)
    tok.save_pretrained(folder)
    return str(folder)


def stage_config(cls, trainer: str, **fields):
    """``cls`` built from the preset's section, the bench's settings and ``fields``, as `cai run` builds it."""
    from cai.config import build_config
    from cai.run.presets import load_run_file

    preset, own = SETTINGS[trainer]
    section = load_run_file(None, preset)[0].get(trainer, {}) if preset else {}
    return build_config(cls, section, own, fields, where=f"{preset or 'bench'}: {trainer}")


class Window:
    """Counts the model's forward tokens and switches between phases at step boundaries: warm-up
    (nothing kept), timed (wall time and tokens), profiled (the same, under torch.profiler)."""

    def __init__(self, model, warmup: int, timed: int, profiled: int, pairs_in_one_row: bool = False) -> None:
        self.ends = {warmup: "timed", warmup + timed: "profiled", warmup + timed + profiled: None}
        # DPO with --share-prompt: the hook sees TRL's two rows; the body computes one row a pair.
        self.pairs_in_one_row = pairs_in_one_row
        self.phase: str | None = None
        self.started = 0.0
        self.result: dict[str, dict] = {}
        self.prof = None
        model.register_forward_pre_hook(self._count, with_kwargs=True)

    def _count(self, module, args, kwargs) -> None:
        import torch

        if self.phase is None:
            return
        mask = kwargs.get("attention_mask")
        ids = kwargs.get("input_ids", args[0] if args else None)
        if mask is not None and mask.dim() > 2:
            # The PM's one row a pair (cai.train.shared_prompt) passes its [rows, 1, width, width] mask;
            # its padding sits at each row's end at position 0, the only other position 0 being the first.
            pos = kwargs["position_ids"]
            n = int((pos[:, 1:] != 0).sum()) + pos.shape[0]
        else:
            n = int(mask.sum()) if mask is not None else (ids.numel() if ids is not None else 0)
        grad = torch.is_grad_enabled()
        self.result[self.phase]["grad" if grad else "nograd"] += n
        if grad:
            self.result[self.phase]["computed"] += self._computed(ids, mask) if self.pairs_in_one_row else n

    @staticmethod
    def _computed(ids, mask) -> int:
        """Positions the body computes for TRL's two-row DPO batch packed one row a pair."""
        from cai.train.shared_prompt import packed_length

        lengths = mask.sum(dim=1).tolist()
        rows = [r[:n] for r, n in zip(ids.tolist(), lengths)]
        b = len(rows) // 2
        return sum(packed_length(rows[i], rows[b + i]) for i in range(b))

    def mark(self, step: int) -> None:
        """Call after optimiser step ``step`` (1-based)."""
        if step not in self.ends:
            return
        now = time.perf_counter()
        if self.prof is not None:
            self.prof.stop()
        if self.phase is not None:
            self.result[self.phase]["seconds"] = now - self.started
        self.phase = self.ends[step]
        if self.phase is not None:
            self.result[self.phase] = {"grad": 0, "nograd": 0, "computed": 0}
            if self.phase == "profiled":
                from torch.profiler import ProfilerActivity, profile

                self.prof = profile(activities=[ProfilerActivity.CPU], record_shapes=True)
                self.prof.start()
            self.started = time.perf_counter()


def _has_dim(shapes, n: int) -> bool:
    return any(_has_dim(s, n) if isinstance(s, (list, tuple)) else s == n for s in shapes or ())


def _flops(evt) -> float:
    """2·M·K·N of a matmul kernel from its recorded input shapes."""
    s = evt.input_shapes
    a, b = (s[0], s[1]) if evt.name in ("aten::mm", "aten::bmm") else (s[1], s[2])
    if len(a) < 2 or len(b) < 2:
        return 0.0
    batch = a[0] if len(a) == 3 else 1
    return 2.0 * batch * a[-2] * a[-1] * b[-1]


def category(evt, vocab: int) -> str:
    if evt.name.startswith(AUTOGRAD_NODE) and evt.cpu_children:
        # The engine's wrapper around a backward node: it belongs where the node's own work does.
        return category(max(evt.cpu_children, key=lambda c: c.cpu_time_total), vocab)
    chain = []
    e = evt
    while e is not None:
        chain.append(e)
        e = e.cpu_parent
    flat = [c.name.lower().replace("_", "") for c in chain]
    if any("scaleddotproduct" in n for n in flat):
        return "attention"
    if any(n in PLAIN_ATTENTION for n in flat) and not any(_has_dim(c.input_shapes, vocab) for c in chain):
        return "attention"
    if any(n.startswith("optimizer.") or "foreach" in n for n in flat):
        return "optimiser"
    if any(n.startswith("enumerate(dataloader)") for n in flat):
        return "data"
    if any("embedding" in n for n in flat):
        return "other ops"
    if any(_has_dim(c.input_shapes, vocab) for c in chain) or any(k in n for n in flat for k in HEAD_NAMES):
        return "LM head+loss"
    if any(c.name in MATMUL_NAMES for c in chain):
        return "matmul"
    return "other ops"


def breakdown(prof, wall: float, vocab: int) -> dict:
    """Seconds per category, matmul-kernel FLOPs and seconds per category, the top other ops."""
    secs = dict.fromkeys(CATEGORIES, 0.0)
    flops: dict[str, list[float]] = {"matmul": [0.0, 0.0], "LM head+loss": [0.0, 0.0]}
    others: dict[str, float] = {}
    for evt in prof.events():
        self_s = evt.self_cpu_time_total / 1e6
        cat = category(evt, vocab)
        secs[cat] += self_s
        if evt.name in MATMUL_KERNELS and cat in flops:
            flops[cat][0] += _flops(evt)
            flops[cat][1] += self_s
        if cat == "other ops":
            others[evt.name] = others.get(evt.name, 0.0) + self_s
    secs["Python"] = max(wall - sum(secs.values()), 0.0)
    top = sorted(others.items(), key=lambda kv: -kv[1])[:5]
    return {"seconds": secs, "kernel": flops, "top_other": top}


def run_trl(name: str, build, args, path: str, tmp: str) -> dict:
    """The TRL trainer ``build`` makes, trained warm-up + timed + profiled steps."""
    from transformers import TrainerCallback

    from cai.train.rundir import RunDir

    out = Path(tmp) / name
    out.mkdir(parents=True)
    run = RunDir(out, command=name, config={}, data=[], base_model=path)
    fields = {"data": ["bench"], "output": str(out), "max_steps": args.warmup + args.timed + args.profiled,
              "save_steps": 10_000}
    if name in ("sft", "dpo"):
        fields["completion_logits"] = args.completion_logits
    if name == "dpo":
        fields["share_prompt"] = args.share_prompt
    trainer, config = build(path, run, fields)
    window = Window(trainer.model, args.warmup, args.timed, args.profiled,
                    pairs_in_one_row=name == "dpo" and config.completion_logits and config.share_prompt)

    class Mark(TrainerCallback):
        def on_step_end(self, a, state, control, **kw):
            window.mark(state.global_step)

    trainer.add_callback(Mark())
    trainer.train()
    row = {"setup": f"batch {config.batch_size} x grad-accum {config.grad_accum}, max length {config.max_length}, "
                    f"{'LoRA' if config.lora else 'full weights'}, lr {config.lr:g}"
                    + (f", LM head on {'the answers' if config.completion_logits else 'every token'}"
                       if hasattr(config, "completion_logits") else "")
                    + (f", {'one row' if config.share_prompt else 'two rows'} a pair"
                       if hasattr(config, "share_prompt") and name == "dpo" else ""),
           "precision": "bf16" if trainer.args.bf16 else "fp32", "optimiser_steps": 1}
    return finish_row(name, row, window, trainer.model, args.top)


def _examples(config) -> int:
    return (config.max_steps + 1) * config.batch_size * config.grad_accum


def sft_trainer(path: str, run, fields: dict):
    from cai.train.sft import SFTRunConfig, build_sft_trainer

    config = stage_config(SFTRunConfig, "sft", model=path, **fields)
    # Twice as many: examples whose prompt fills max-length are dropped.
    return build_sft_trainer(config, sft_examples(2 * _examples(config)), run, path, show_progress=False), config


def reward_trainer(path: str, run, fields: dict):
    from cai.train.prefdata import record_pair
    from cai.train.reward import RewardTrainConfig, build_reward_trainer

    config = stage_config(RewardTrainConfig, "reward", model=path, **fields)
    pairs = [record_pair(r, f"bench:{i}") for i, r in enumerate(preference_records(_examples(config)))]
    return build_reward_trainer(config, pairs, run, path, show_progress=False), config


def dpo_trainer(path: str, run, fields: dict):
    from cai.train.data import preference_example
    from cai.train.dpo import DPORunConfig, build_dpo_trainer, with_epsilon

    config = stage_config(DPORunConfig, "dpo", policy=path, **fields)
    examples = [preference_example(r, f"bench:{i}") for i, r in enumerate(preference_records(_examples(config)))]
    return build_dpo_trainer(config, with_epsilon(examples, hard=False), run, path, show_progress=False), config


def run_ppo(args, model_path: str) -> dict:
    """cai ppo's update (old log-probs, reference and values, then ppo_epochs passes of minibatches) on one
    rollout of the preset's prompts; the rollout itself is made once, before, and not measured."""
    import math

    import torch

    from cai.sources import load_prompts
    from cai.train import ppo, ppo_rollout
    from cai.train.ppo_math import RunningMoments, kl_controller
    from cai.train.ppo_model import build_policy

    cfg = stage_config(ppo.PPORunConfig, "ppo", policy=model_path, output="unused")
    torch.manual_seed(cfg.seed)
    tok, model, opt = build_policy(cfg, model_path, "cpu")
    prompts = load_prompts(cfg.prompts, field=cfg.field, limit=cfg.limit)[: cfg.batch_size]
    roll = ppo_rollout.rollout(model, tok, [p.messages for p in prompts], cfg, ppo._eos_ids(tok, model.model), seed=cfg.seed)
    raw = torch.randn(cfg.batch_size, generator=torch.Generator().manual_seed(cfg.seed))
    ctl, moments = kl_controller(cfg.kl_coef, cfg.kl_target, cfg.kl_horizon), RunningMoments()
    window = Window(model.model, args.warmup, args.timed, args.profiled)
    for step in range(1, args.warmup + args.timed + args.profiled + 1):
        ppo._update(model, opt, ctl, moments, roll, raw, cfg, step, None, tok)
        window.mark(step)
    per_update = cfg.ppo_epochs * math.ceil(cfg.batch_size / cfg.minibatch)
    row = {"setup": f"rollout of {cfg.batch_size} (answers of {roll['mask'].sum(-1).mean():.0f} tokens on average, "
                    f"at most {cfg.max_tokens}), minibatch {cfg.minibatch}, {cfg.ppo_epochs} PPO epochs: "
                    f"{per_update} optimiser steps per update, {'LoRA' if cfg.lora else 'full weights'}, lr {cfg.lr:g}",
           "precision": "bf16" if model.model.dtype == torch.bfloat16 else "fp32", "optimiser_steps": per_update}
    return finish_row("ppo", row, window, model.model, args.top)


def matmul_params(model) -> int:
    """N: the parameters a token's matmuls use, all but the input embeddings (only looked up) unless they
    are also the LM head (tied, as in SmolLM2; then N is bench/training.py's, all parameters)."""
    emb, head = model.get_input_embeddings().weight, model.get_output_embeddings()
    tied = head is not None and head.weight.data_ptr() == emb.data_ptr()
    return sum(p.numel() for p in model.parameters()) - (0 if tied else emb.numel())


def finish_row(name: str, row: dict, window: Window, model, top: int = 0) -> dict:
    if top:
        print(f"{name}: the {top} ops of most self time, profiled steps", file=sys.stderr)
        print(window.prof.key_averages(group_by_input_shape=True).table(sort_by="self_cpu_time_total",
                                                                        row_limit=top), file=sys.stderr)
    row.update(name=name, timed=window.result["timed"], profiled=window.result["profiled"],
               params=matmul_params(model),
               parts=breakdown(window.prof, window.result["profiled"]["seconds"], model.config.vocab_size))
    return row


def report(args, rows: list[dict], peaks: list[dict], model: str, load_at_start: float) -> str:
    import torch

    peak = max(p["bf16"] for p in peaks)
    lines = [
        SECTION, "",
        *header(load_at_start, load_at_end=True, versions_note=f"; {torch.get_num_threads()} torch threads"),
        f"- model: `{model}`; HH-RLHF harmless transcripts; per trainer "
        f"{args.warmup} warm-up, {args.timed} timed and {args.profiled} profiled steps, one process, one after another",
        "- bf16 matmul peak (2048x2048, best of 8, before and after): " + " / ".join(
            f"{p['bf16'] / 1e9:.0f}" for p in peaks) + f" GFLOP/s; utilisation and matmul shares are against "
        f"{peak / 1e9:.0f} GFLOP/s",
        "- step: wall seconds per optimiser step, timed without the profiler (profiled: with it, whose overhead "
        "falls mostly on the small ops); utilisation = 6·N·tokens/s / peak (PPO's no-grad passes: 2·N)",
        "- categories: share of the profiled step (see the script's docstring for what each holds)",
        "", "| trainer | precision | step | profiled | tokens/step | tokens/s | utilisation | "
        + " | ".join(CATEGORIES) + " |", "|---|---|---:|---:|---:|---:|---:|" + "---:|" * len(CATEGORIES),
    ]
    notes = []
    for r in rows:
        k = r["optimiser_steps"]
        timed, prof = r["timed"], r["profiled"]
        step_s, prof_s = timed["seconds"] / (args.timed * k), prof["seconds"] / (args.profiled * k)
        flop = 6 * r["params"] * timed["grad"] + 2 * r["params"] * timed["nograd"]
        util = flop / timed["seconds"] / peak
        secs = r["parts"]["seconds"]
        total = sum(secs.values()) or 1.0
        lines.append(f"| {r['name']} | {r['precision']} | {step_s:.2f} s | {prof_s:.2f} s | "
                     f"{timed['grad'] / (args.timed * k):.0f} | {timed['grad'] / timed['seconds']:.0f} | "
                     f"{100 * util:.1f}% | " + " | ".join(f"{100 * secs[c] / total:.0f}%" for c in CATEGORIES) + " |")
        kern = "; ".join(f"{c} kernels {f / s / 1e9:.1f} GFLOP/s ({100 * f / s / peak:.0f}% of peak, "
                         f"{s / (args.profiled * k):.2f} s per step)"
                         for c, (f, s) in r["parts"]["kernel"].items() if s > 0)
        top = ", ".join(f"{n} {100 * s / total:.1f}%" for n, s in r["parts"]["top_other"])
        nograd = f"; {timed['nograd'] / (args.timed * k):.0f} no-grad tokens per step" if timed["nograd"] else ""
        computed = timed.get("computed", timed["grad"])
        packed = (f"; the body computes {computed / (args.timed * k):.0f} positions a step "
                  f"({computed / timed['grad']:.2f}x the tokens/step; by those, "
                  f"{100 * (flop - 6 * r['params'] * (timed['grad'] - computed)) / timed['seconds'] / peak:.1f}% "
                  "of the peak)") if computed != timed["grad"] else ""
        notes.append(f"- {r['name']}: {r['setup']}; N = {r['params'] / 1e6:.1f}M{nograd}{packed}. {kern}. "
                     f"Largest other ops: {top}.")
    return "\n".join(lines + [""] + notes + [""])


def main(argv=None) -> int:
    # A CPU profile: on a machine with a GPU the trainers would otherwise move to it (and the CPU
    # profiler would see only kernel launches).
    os.environ["CUDA_VISIBLE_DEVICES"] = ""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    args = parse_args(argv)
    load_at_start = os.getloadavg()[0]
    peak = (lambda: matmul_peak(512, 2)) if args.quick else matmul_peak
    peaks = [peak()]
    rows = []
    with tempfile.TemporaryDirectory(prefix="cai-bench-profile-") as tmp:
        from cai.models import resolve

        model = args.model or ("tiny random Llama" if args.quick else "smollm2-135m")
        path = resolve(args.model) if args.model else tiny_model(Path(tmp) / "tiny") if args.quick \
            else resolve("smollm2-135m")
        builders = {"sft": sft_trainer, "reward": reward_trainer, "dpo": dpo_trainer}
        for name in args.trainers:
            print(f"{name} ...", file=sys.stderr)
            rows.append(run_ppo(args, path) if name == "ppo" else run_trl(name, builders[name], args, path, tmp))
            gc.collect()
    peaks.append(peak())
    return finish(report(args, rows, peaks, model, load_at_start), True, quick=args.quick, results=args.results,
                  heading=SECTION)


if __name__ == "__main__":
    raise SystemExit(main())
