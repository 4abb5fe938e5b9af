"""``cai reward``: train the preference model (PM) of RL-CAI on soft AI labels, then measure it.

The PM is a one-score sequence-classification head on a base LM, trained with the soft-label
Bradley-Terry loss (:func:`cai.train.reward_trainer.soft_bt_loss`) through TRL's RewardTrainer.
After training it reports accuracy with a bootstrap 95% CI on held-out AI labels (``--eval-split``)
and on human labels (HH-RLHF harmless-base test and BIG-bench HHH, read by the same readers as
``cai eval labeler``; of HH-RLHF only the check pool, whose prompts are never training prompts). Load the result with :class:`cai.train.pm.PreferenceModel`.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from functools import partial
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
    eval_split: float = option(0.1, help="fraction of the prompts held out: their loss and accuracy are measured "
                               "after every epoch (eval_loss in metrics.jsonl) and their accuracy with a bootstrap "
                               "interval at the end (0 to skip)")
    human_eval: tuple[str, ...] = option(("hh-rlhf", "hhh"), help="human-labelled sets to measure accuracy on after "
                                         "training (hh-rlhf: its check pool; hhh; or a path `cai eval labeler` reads); "
                                         "'none' to skip")
    human_limit: int | None = option(500, help="at most this many comparisons per human set (a seeded subset)")
    group_by_length: bool = option(True, help="batch pairs of similar length (transformers' length-grouped sampler: "
                                   "still shuffled, every pair once per epoch, far less padding); "
                                   "--no-group-by-length draws batches uniformly at random, as TRL does")
    share_prompt: bool = option(True, help="put both sides of a pair in one row, the prompt they share once "
                                "(position ids and an attention mask keep the answers apart: the same rewards); "
                                "--no-share-prompt pads them as two rows, as TRL does")

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


def heldout_scores(pm: Any, pairs: Sequence[Any]) -> tuple[list[float], list[float]]:
    """The PM's scores of the labeller's chosen and rejected answers of each held-out pair."""
    from cai.train.pm import score_both

    return score_both(pm, [p.prompt for p in pairs], [p.chosen for p in pairs], [p.rejected for p in pairs])


def heldout_accuracy(pairs: Sequence[Any], chosen: Sequence[float], rejected: Sequence[float],
                     seed: int = 0) -> dict[str, Any] | None:
    """Agreement with the labeller's preferred side; undecided labels (p = 0.5) are left out."""
    kept = [(p, c, r) for p, c, r in zip(pairs, chosen, rejected) if p.p_chosen != 0.5]
    if not kept:
        return None
    return _accuracy([_credit(c, r) if p.p_chosen > 0.5 else _credit(r, c) for p, c, r in kept], seed)


def heldout_eval_row(pairs: Sequence[Any], chosen: Sequence[float], rejected: Sequence[float]) -> dict[str, float]:
    """The numbers TRL's evaluation logs for these pairs (``eval_loss``: the soft-label loss;
    ``eval_accuracy``, ``eval_margin``, ``eval_min/mean/max_reward``) from scores already taken,
    so the last epoch needs no evaluation pass of its own. TRL averages min and max over its
    batches; here they are over all the pairs."""
    import torch

    from cai.train.reward_trainer import soft_bt_loss

    c, r = torch.tensor(chosen, dtype=torch.float64), torch.tensor(rejected, dtype=torch.float64)
    p = torch.tensor([x.p_chosen for x in pairs], dtype=torch.float64)
    both = torch.cat([c, r])
    return {"eval_loss": soft_bt_loss(c, r, p).item(), "eval_accuracy": (c > r).double().mean().item(),
            "eval_margin": (c - r).mean().item(), "eval_min_reward": both.min().item(),
            "eval_mean_reward": both.mean().item(), "eval_max_reward": both.max().item()}


def human_comparisons(source: str, *, limit: int | None, seed: int = 0) -> list[Any]:
    """The answer pairs of one ``--human-eval`` set, read before training: a missing or malformed set
    failed only after the PM was trained and saved, and was called ``--data``."""
    from cai.evals.comparisons import Comparison, load_comparisons

    try:
        _, items = load_comparisons(source, limit=limit, seed=seed)
    except CAIError as e:
        text = str(e)
        raise CAIError("--human-eval " + text[len("--data "):] if text.startswith("--data ")
                       else f"--human-eval {source}: {text}") from None
    items = [it for it in items if isinstance(it, Comparison)]
    if not items:
        raise CAIError(f"--human-eval {source}: no answer pairs to score (multiple-choice files need a labeller, "
                       "not a PM)")
    return items


def human_accuracy(pm: Any, source: str, *, limit: int | None, seed: int = 0,
                   items: list[Any] | None = None) -> dict[str, Any]:
    """Accuracy on human comparisons: the PM is right when it scores the human-preferred answer higher."""
    from cai.train.pm import score_both

    if items is None:
        items = human_comparisons(source, limit=limit, seed=seed)

    better, worse = score_both(pm, [it.messages for it in items], [it.better for it in items],
                               [it.worse for it in items])
    credits = [_credit(b, w) for b, w in zip(better, worse)]
    result = _accuracy(credits, seed)
    cats = sorted({it.category for it in items})
    if len(cats) > 1:
        result["by_category"] = {c: _accuracy([x for it, x in zip(items, credits) if it.category == c], seed)
                                 for c in cats}
    return result


def evaluate_pm(pm: Any, heldout: Sequence[Any], config: RewardTrainConfig,
                human: dict[str, list[Any]] | None = None) -> tuple[dict[str, Any], dict[str, float]]:
    """Accuracy with a bootstrap interval on the held-out AI labels and each human set, and the
    held-out pairs' evaluation row (:func:`heldout_eval_row`; empty without held-out pairs)."""
    results: dict[str, Any] = {}
    row: dict[str, float] = {}
    if heldout:
        chosen, rejected = heldout_scores(pm, heldout)
        row = heldout_eval_row(heldout, chosen, rejected)
        held = heldout_accuracy(heldout, chosen, rejected, config.seed)
        if held is not None:
            results["heldout-ai"] = held
    for source in config.human_eval:
        results[source] = human_accuracy(pm, source, limit=config.human_limit, seed=config.seed,
                                         items=(human or {}).get(source))
    return results, row


def _no_last_evaluation():
    """A callback that drops the trainer's evaluation after the last epoch: :func:`_train` scores the
    held-out pairs with the saved PM anyway and logs that row in its place (TRL's pass over the same
    pairs cost 6.5 s of the quickstart's PM step). Earlier epochs keep theirs: the eval_loss curve."""
    from transformers import TrainerCallback

    class _NoLastEvaluation(TrainerCallback):
        def on_epoch_end(self, args, state, control, **kw):
            if state.global_step >= state.max_steps:  # after DefaultFlowCallback, which asked for it
                control.should_evaluate = False

    return _NoLastEvaluation()


def _rows(pairs: Sequence[Any], tokenizer: Any, max_length: int, share_prompt: bool) -> list[dict[str, Any]]:
    """Pairs tokenised here, by the same function the PM scores with, so TRL skips its own tokenising.
    ``length`` is what a pair costs in a batch (its one row; or, as two rows, both sides padded to
    the batch's longest), for the length-grouped sampler; the collator reads only the ids and ``p_chosen``."""
    from cai.train.pm import encode
    from cai.train.shared_prompt import packed_length

    rows = []
    for p in pairs:
        chosen = encode(tokenizer, p.prompt, p.chosen, max_length)
        rejected = encode(tokenizer, p.prompt, p.rejected, max_length)
        length = packed_length(chosen, rejected) if share_prompt else max(len(chosen), len(rejected))
        rows.append({"chosen_ids": chosen, "rejected_ids": rejected, "p_chosen": p.p_chosen, "length": length})
    return rows


def _trainer_args(config: RewardTrainConfig, run_dir: Any, show_progress: bool | None, evaluate: bool = False):
    from trl import RewardConfig

    from cai.train.model_io import trainer_args

    kw = trainer_args(config, run_dir, show_progress=show_progress)
    kw.update(max_length=None,  # sequences are already left-truncated by cai.train.pm.encode
              remove_unused_columns=False,  # keeps p_chosen for the collator
              # A pair's loss does not depend on its batch-mates (right padding, causal attention, the
              # score read at the last real token), so grouping changes only which pairs share a step.
              train_sampling_strategy="group_by_length" if config.group_by_length else "random",
              length_column_name="length",  # from _rows, so the sampler does not measure the rows again
              eval_strategy="epoch" if evaluate else "no", per_device_eval_batch_size=config.batch_size)
    return RewardConfig(**kw)


def _peft_config(config: RewardTrainConfig):
    if not config.lora:
        return None
    from peft import LoraConfig

    return LoraConfig(task_type="SEQ_CLS", r=config.lora_r, lora_alpha=config.lora_alpha, lora_dropout=0.0,
                      target_modules="all-linear", modules_to_save=["score"])


def run_reward(config: RewardTrainConfig, *, show_progress: bool | None = None) -> dict[str, Any]:
    """Train (or resume) the PM into ``config.output`` and measure it. Returns the run record
    (``cai_run.json``: ``final_metrics`` and ``evaluation`` hold the numbers)."""
    from cai.train.data import sha256_file
    from cai.train.model_io import model_path
    from cai.train.prefdata import load_pairs, split_pairs
    from cai.outputs import inputs_of
    from cai.train.rundir import RunDir, finished_note

    config.check_output_and_data(list(config.data), "no preference data; pass --data FILE.jsonl (a `cai label` "
                                 "file or a TRL prompt/chosen/rejected JSONL; repeat it to mix files)")
    out = Path(config.output)
    pairs = load_pairs(config.data)
    train, heldout = split_pairs(pairs, config.eval_split, config.seed)
    base = model_path(config.model)
    data = [{"path": str(p), "sha256": sha256_file(Path(p)), "weight": 1.0} for p in config.data]
    run = RunDir(out, command=STAGE, config=to_dict(config), data=data, base_model=base, overwrite=config.overwrite,
                 inputs=inputs_of(config))
    state = run.check()
    if state == "done":
        print(finished_note(out), file=sys.stderr)
        return run.existing() or {}
    human = {s: human_comparisons(s, limit=config.human_limit, seed=config.seed) for s in config.human_eval}
    from cai.progress import library_bars

    with library_bars(show_progress):
        return _train(config, run, base, train, heldout, run.last_checkpoint() if state == "resume" else None,
                      show_progress, human)


def build_reward_trainer(config: RewardTrainConfig, train: Sequence[Any], run: Any, base: str,
                         *, show_progress: bool | None = None, heldout: Sequence[Any] = ()):
    """TRL's RewardTrainer with the soft-label loss, set up the cai way (used by the command and the bench).
    With ``heldout`` pairs, their loss, accuracy and margin are measured after every epoch
    (``eval_loss`` in metrics.jsonl): the curve that says whether more epochs still help."""
    from cai.train.model_io import load_tokenizer, shared_dataset
    from cai.train.reward_trainer import SoftPreferenceCollator, SoftRewardTrainer
    from cai.train.shared_prompt import SharedPromptCollator, score_head

    tokenizer = load_tokenizer(base)
    args = _trainer_args(config, run, show_progress, evaluate=bool(heldout))
    rows = partial(_rows, tokenizer=tokenizer, max_length=config.max_length, share_prompt=config.share_prompt)
    held = shared_dataset(rows(heldout), args, run, name="eval-dataset") if heldout else None
    collator = SharedPromptCollator if config.share_prompt else SoftPreferenceCollator
    trainer = SoftRewardTrainer(
        model=base, args=args, train_dataset=shared_dataset(rows(train), args, run), eval_dataset=held,
        processing_class=tokenizer, data_collator=collator(pad_token_id=tokenizer.pad_token_id),
        peft_config=_peft_config(config), callbacks=[run.callback()])
    if config.share_prompt and score_head(trainer.model) is None:
        raise CAIError(f"-m {config.model}: its sequence-classification model has no `score` head, which one row "
                       "per pair reads at two positions; pass --no-share-prompt")
    if args.use_cpu:
        from cai.train.short_attention import use_short_eager_attention

        # CPU flash attention's backward was 27% of a PM step; the plain form on short batches is faster.
        use_short_eager_attention(trainer.model.get_base_model() if config.lora else trainer.model)
    return trainer


def _train(config, run, base, train, heldout, checkpoint, show_progress, human=None) -> dict[str, Any]:
    from cai.train.guards import train_guarded
    from cai.train.saving import saving
    from cai.train.model_io import final_metrics, save_final
    from cai.train.pm import PreferenceModel

    run.start(checkpoint)
    trainer = build_reward_trainer(config, train, run, base, show_progress=show_progress, heldout=heldout)
    trainer.add_callback(_no_last_evaluation())
    # A NaN/inf loss or weight stops at its step with a one-line error; no final model is saved.
    with saving(run):  # a checkpoint or the model that cannot be written (a full disk) is one line too
        result = train_guarded(trainer, checkpoint, run.checkpoints)
    with saving(run, model_files=True):
        save_final(trainer, config, run.path, base)
    metrics = final_metrics(result, trainer)
    metrics.update(train_pairs=len(train), heldout_pairs=len(heldout))
    if trainer.accelerator.is_main_process:
        # Measured on the folder as saved, so the numbers are those of the PM that others load.
        pm = PreferenceModel.load(run.path, batch_size=2 * config.batch_size)
        evaluation, row = evaluate_pm(pm, heldout, config, human)
        if row:  # in place of the last epoch's evaluation (_no_last_evaluation)
            run.log(trainer.state.global_step, {"epoch": trainer.state.epoch, **row})
        for name, r in evaluation.items():
            metrics[f"accuracy/{name}"] = r["accuracy"]
        run.record["evaluation"] = evaluation
        run.finish(metrics)
    return run.record


def accuracy_rows(evaluation: dict[str, Any]) -> list[tuple[str, str, str, str]]:
    """(set, n, accuracy, 95% CI) rows for the summary table, categories indented under their set."""
    rows = []
    for name, r in evaluation.items():
        rows.append((name, str(r["n"]), f"{r['accuracy']:.3f}", f"[{r['ci95'][0]:.3f}, {r['ci95'][1]:.3f}]"))
        for cat, c in (r.get("by_category") or {}).items():
            rows.append((f"  {cat}", str(c["n"]), f"{c['accuracy']:.3f}", f"[{c['ci95'][0]:.3f}, {c['ci95'][1]:.3f}]"))
    return rows
