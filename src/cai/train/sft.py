"""``cai sft``: supervised fine-tuning on SL-CAI revisions (and any chat data mixed in), with TRL's
SFTTrainer.

Every example is a conversational prompt/completion pair (see :mod:`cai.train.data`), and TRL's
``completion_only_loss`` masks the prompt tokens out of the labels, so the loss is the paper's
L_SL = −Σ log p(y_revised | x): only the assistant's final answer is trained on.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cai.config import option
from cai.errors import CAIError
from cai.train.common import TrainCommon


@dataclass
class SFTRunConfig(TrainCommon):
    model: str = option("smollm2-135m", help="base model to fine-tune: an alias, hf:PATH or a model folder",
                        flags=("-m", "--model"))
    data: list[str] = option([], help="training file FILE or FILE:WEIGHT (repeatable): cai critique output, "
                             "cai generate output, messages or prompt/completion JSONL; WEIGHT 0.5 uses a random "
                             "half of the file, 2 uses it twice")
    packing: bool = option(False, help="pack several examples into each max-length sequence (fewer pad tokens, "
                           "faster on short examples)")
    completion_logits: bool = option(True, help="on a CPU, compute the LM head only at the answer tokens the loss "
                                     "reads (the same loss, faster); --no-completion-logits computes it at every "
                                     "token, as TRL does on a CPU")
    eval_split: float = option(0.0, help="fraction of the examples held out; their loss is measured after every "
                               "epoch (eval_loss in metrics.jsonl), so you can see when more epochs stop helping")

    def __post_init__(self) -> None:
        self.check_common()
        self.data = list(self.data or [])
        if not 0.0 <= self.eval_split < 1.0:
            raise ValueError(f"--eval-split must be in [0, 1), got {self.eval_split}")

    def check(self) -> None:
        self.check_output_and_data(self.data, "no training data; "
                                   "pass --data FILE.jsonl (repeat it to mix files, FILE:0.5 to weight one)")


def split_examples(examples: list[dict[str, Any]], fraction: float, seed: int
                   ) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """(train, held-out): a seeded ``fraction`` of the examples, at least one, held out."""
    if fraction <= 0:
        return examples, []
    import random

    n_eval = max(1, round(len(examples) * fraction))
    if n_eval >= len(examples):
        raise CAIError(f"--eval-split {fraction} leaves no training data ({len(examples)} examples); lower it")
    held = set(random.Random(f"{seed}:sft-eval-split").sample(range(len(examples)), n_eval))
    return ([e for i, e in enumerate(examples) if i not in held], [e for i, e in enumerate(examples) if i in held])


def build_sft_trainer(config: SFTRunConfig, examples: list[dict[str, Any]], run_dir: Any, base_path: str,
                      *, show_progress: bool | None = None, eval_examples: list[dict[str, Any]] | None = None):
    """TRL's SFTTrainer set up the cai way (used by the command, the tests and the bench)."""
    from trl import SFTConfig, SFTTrainer

    from cai.train.completion_logits import score_completions_only
    from cai.train.model_io import load_model, load_tokenizer, lora_config, shared_dataset, trainer_args

    args = SFTConfig(
        **trainer_args(config, run_dir, show_progress=show_progress),
        completion_only_loss=True,  # labels are -100 on the prompt: the loss is on the answer only
        packing=config.packing,
        dataset_num_proc=None,
        # The held-out loss once per epoch: cheap next to the epoch, and the curve that says when to stop.
        eval_strategy="epoch" if eval_examples else "no",
        per_device_eval_batch_size=config.batch_size,
    )
    trainer = SFTTrainer(
        model=load_model(base_path),
        args=args,
        train_dataset=shared_dataset(examples, args, run_dir),
        eval_dataset=shared_dataset(eval_examples, args, run_dir, name="eval-dataset") if eval_examples else None,
        processing_class=load_tokenizer(base_path),
        peft_config=lora_config(config),
        callbacks=[run_dir.callback()],
    )
    if config.completion_logits:
        # TRL's compute_loss (mean over answer tokens, num_items_in_batch, its metrics) stays as it is;
        # only the head under it skips the prompt and padding positions. No forward runs before train().
        score_completions_only(trainer.model)
    return trainer


def run_sft(config: SFTRunConfig, *, show_progress: bool | None = None) -> dict[str, Any]:
    """Train, write the model folder and the run record; returns a summary. Resumes a killed run."""
    from cai.train.data import load_mix
    from cai.train.model_io import model_path, run_trl

    config.check()
    examples, files = load_mix(config.data, "sft", seed=config.seed)
    train, held = split_examples(examples, config.eval_split, config.seed)
    summary: dict[str, Any] = {"output": str(Path(config.output)), "examples": len(train), "held_out": len(held),
                               "files": [f.to_dict() for f in files]}
    return run_trl("sft", config, train, files, model_path(config.model), build_sft_trainer, summary=summary,
                   show_progress=show_progress, held_out=held)
