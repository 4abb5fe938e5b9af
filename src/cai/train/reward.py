"""``cai reward``: train the preference model (PM) of RL-CAI on soft AI labels, then measure it.

The PM is a one-score sequence-classification head on a base LM, trained with the soft-label
Bradley-Terry loss (:func:`cai.train.reward_trainer.soft_bt_loss`) through TRL's RewardTrainer.
After training it reports accuracy with a bootstrap 95% CI on held-out AI labels (``--eval-split``)
and on human labels (HH-RLHF harmless-base test and BIG-bench HHH, read by the same readers as
``cai eval labeler``). Load the result with :class:`cai.train.pm.PreferenceModel`.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

from cai.config import option, to_dict
from cai.errors import CAIError
from cai.train.common import TrainCommon

STAGE = "reward"


@dataclass
class RewardTrainConfig(TrainCommon):
    model: str = option("smollm2-135m", help="base model the PM head goes on (alias, folder or hf:PATH)",
                        flags=("-m", "--model"))
    data: tuple[str, ...] = option((), help="preference files: `cai label` output or any TRL prompt/chosen/rejected "
                                   "JSONL (p_chosen is the soft label; absent means 1)")
    eval_split: float = option(0.1, help="fraction of the prompts held out to measure accuracy on unseen AI labels "
                               "(0 to skip)")
    human_eval: tuple[str, ...] = option(("hh-rlhf", "hhh"), help="human-labelled sets to measure accuracy on after "
                                         "training (hh-rlhf, hhh, or a path `cai eval labeler` reads); 'none' to skip")
    human_limit: int | None = option(500, help="at most this many comparisons per human set (a seeded subset)")

    def __post_init__(self) -> None:
        self.check_common()
        if not 0.0 <= self.eval_split < 1.0:
            raise ValueError(f"--eval-split must be in [0, 1), got {self.eval_split}")
        self.human_eval = tuple(s for s in self.human_eval if s.lower() != "none")


def _accuracy(credits: list[float], seed: int) -> dict[str, Any]:
    from cai.evals.metrics import bootstrap_ci

    lo, hi = bootstrap_ci(credits, seed=seed)
    return {"accuracy": sum(credits) / len(credits) if credits else float("nan"), "ci95": [lo, hi], "n": len(credits)}


def _credit(better: float, worse: float) -> float:
    return 1.0 if better > worse else 0.0 if better < worse else 0.5


def heldout_accuracy(pm: Any, pairs: Sequence[Any], seed: int = 0) -> dict[str, Any] | None:
    """Agreement with the labeller's preferred side; undecided labels (p = 0.5) are left out."""
    pairs = [p for p in pairs if p.p_chosen != 0.5]
    if not pairs:
        return None
    chosen = pm.score([p.prompt for p in pairs], [p.chosen for p in pairs])
    rejected = pm.score([p.prompt for p in pairs], [p.rejected for p in pairs])
    credits = [_credit(c, r) if p.p_chosen > 0.5 else _credit(r, c) for p, c, r in zip(pairs, chosen, rejected)]
    return _accuracy(credits, seed)


def human_accuracy(pm: Any, source: str, *, limit: int | None, seed: int = 0) -> dict[str, Any]:
    """Accuracy on human comparisons: the PM is right when it scores the human-preferred answer higher."""
    from cai.evals.comparisons import Comparison, load_comparisons

    _, items = load_comparisons(source, limit=limit, seed=seed)
    items = [it for it in items if isinstance(it, Comparison)]
    if not items:
        raise CAIError(f"--human-eval {source}: no answer pairs to score (multiple-choice files need a labeller, "
                       "not a PM)")
    better = pm.score([it.messages for it in items], [it.better for it in items])
    worse = pm.score([it.messages for it in items], [it.worse for it in items])
    credits = [_credit(b, w) for b, w in zip(better, worse)]
    result = _accuracy(credits, seed)
    cats = sorted({it.category for it in items})
    if len(cats) > 1:
        result["by_category"] = {c: _accuracy([x for it, x in zip(items, credits) if it.category == c], seed)
                                 for c in cats}
    return result


def evaluate_pm(pm: Any, heldout: Sequence[Any], config: RewardTrainConfig) -> dict[str, Any]:
    results: dict[str, Any] = {}
    held = heldout_accuracy(pm, heldout, config.seed)
    if held is not None:
        results["heldout-ai"] = held
    for source in config.human_eval:
        results[source] = human_accuracy(pm, source, limit=config.human_limit, seed=config.seed)
    return results


def _dataset(pairs: Sequence[Any], tokenizer: Any, max_length: int):
    from datasets import Dataset

    from cai.train.pm import encode

    rows = [{"chosen_ids": encode(tokenizer, p.prompt, p.chosen, max_length),
             "rejected_ids": encode(tokenizer, p.prompt, p.rejected, max_length),
             "p_chosen": p.p_chosen} for p in pairs]
    return Dataset.from_list(rows)


def _trainer_args(config: RewardTrainConfig, out: Path):
    import torch
    from trl import RewardConfig

    from cai.train.runfolder import use_bf16

    return RewardConfig(
        output_dir=str(out / "checkpoints"), num_train_epochs=config.epochs,
        max_steps=config.max_steps if config.max_steps is not None else -1,
        learning_rate=config.lr, per_device_train_batch_size=config.batch_size,
        gradient_accumulation_steps=config.grad_accum, seed=config.seed, data_seed=config.seed,
        bf16=use_bf16(config.bf16), logging_steps=config.logging_steps, save_strategy="steps",
        save_steps=config.save_steps, save_total_limit=1, report_to="none", gradient_checkpointing=False,
        max_length=None,  # sequences are already left-truncated by cai.train.pm.encode
        remove_unused_columns=False,  # keeps p_chosen for the collator
        disable_tqdm=True, dataloader_num_workers=0, use_cpu=not torch.cuda.is_available(), lr_scheduler_type="linear", warmup_steps=0,
    )


def _peft_config(config: RewardTrainConfig):
    if not config.lora:
        return None
    from peft import LoraConfig

    return LoraConfig(task_type="SEQ_CLS", r=config.lora_r, lora_alpha=config.lora_alpha, lora_dropout=0.0,
                      target_modules="all-linear", modules_to_save=["score"])


def run_reward(config: RewardTrainConfig, *, show_progress: bool | None = None) -> dict[str, Any]:
    """Train (or resume) the PM into ``config.output`` and measure it. Returns the run record."""
    from cai.train.prefdata import load_pairs, split_pairs
    from cai.train.runfolder import data_files, model_path, open_run

    if not config.output:
        raise CAIError("-o/--output is required: the folder the preference model is written to")
    if not config.data:
        raise CAIError("--data is required: a `cai label` file or a TRL preference JSONL")
    out = Path(config.output)
    pairs = load_pairs(config.data)
    train, heldout = split_pairs(pairs, config.eval_split, config.seed)
    base = model_path(config.model)
    run, checkpoint = open_run(out, stage=STAGE, config=to_dict(config), data=data_files(config.data),
                               base_model=config.model)
    if run.get("status") == "done":
        print(f"{out}: this run is already done; delete the folder to train again", file=sys.stderr)
        return run
    return _train(config, out, base, train, heldout, run, checkpoint, show_progress)


def _train(config, out, base, train, heldout, run, checkpoint, show_progress) -> dict[str, Any]:
    from transformers import AutoTokenizer

    from cai.train.pm import PreferenceModel
    from cai.train.reward_trainer import SoftPreferenceCollator, SoftRewardTrainer
    from cai.train.runfolder import draw_curves, finish_run, metrics_callback

    tokenizer = AutoTokenizer.from_pretrained(base)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    args = _trainer_args(config, out)
    if show_progress:
        args.disable_tqdm = False
    trainer = SoftRewardTrainer(
        model=base, args=args, train_dataset=_dataset(train, tokenizer, config.max_length),
        processing_class=tokenizer, data_collator=SoftPreferenceCollator(pad_token_id=tokenizer.pad_token_id),
        peft_config=_peft_config(config), callbacks=[metrics_callback(out, checkpoint)])
    result = trainer.train(resume_from_checkpoint=checkpoint)
    model = trainer.model
    if config.lora and not config.keep_adapter:
        model = model.merge_and_unload()
    model.config.pad_token_id = tokenizer.pad_token_id
    model.save_pretrained(str(out))
    tokenizer.save_pretrained(str(out))
    pm = PreferenceModel(model.eval(), tokenizer, max_length=config.max_length, batch_size=2 * config.batch_size,
                         path=str(out))
    evaluation = evaluate_pm(pm, heldout, config)
    draw_curves(out)
    metrics = {"train_loss": result.training_loss, "steps": trainer.state.global_step,
               "train_pairs": len(train), "heldout_pairs": len(heldout)}
    for name, r in evaluation.items():
        metrics[f"accuracy/{name}"] = r["accuracy"]
    return finish_run(out, run, metrics, evaluation=evaluation, resumed_from=checkpoint)


def accuracy_rows(evaluation: dict[str, Any]) -> list[tuple[str, str, str, str]]:
    """(set, n, accuracy, 95% CI) rows for the summary table, categories indented under their set."""
    rows = []
    for name, r in evaluation.items():
        rows.append((name, str(r["n"]), f"{r['accuracy']:.3f}", f"[{r['ci95'][0]:.3f}, {r['ci95'][1]:.3f}]"))
        for cat, c in (r.get("by_category") or {}).items():
            rows.append((f"  {cat}", str(c["n"]), f"{c['accuracy']:.3f}", f"[{c['ci95'][0]:.3f}, {c['ci95'][1]:.3f}]"))
    return rows
