"""TRL's RewardTrainer with the soft-label Bradley-Terry loss (imports torch and TRL: load lazily).

TRL 1.16's RewardTrainer takes hard labels (and a margin). RLAIF labels are probabilities: the
feedback model's P(chosen is better), ``p_chosen``. The CAI paper trains its preference model on
these soft targets (Bai et al. 2022, "Constitutional AI", section 4.1: "we ... use the normalized
probabilities as targets"), i.e. a cross-entropy against p of the Bradley-Terry probability
sigma(r_c - r_r). We override the loss, and seed transformers' length-grouped sampler per epoch
(:class:`EpochSeededLengthSampler`); the rest (tokenised pairs, padding, logging, checkpoints, PEFT)
is TRL's.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from transformers.trainer_pt_utils import LengthGroupedSampler
from trl import RewardTrainer
from trl.trainer.reward_trainer import DataCollatorForPreference


def soft_bt_loss(r_chosen: torch.Tensor, r_rejected: torch.Tensor, p_chosen: torch.Tensor) -> torch.Tensor:
    """Mean of -[p log sigma(r_c - r_r) + (1 - p) log sigma(r_r - r_c)] over the batch.

    Bradley & Terry 1952 model P(c better than r) = sigma(r_c - r_r); this is its cross-entropy
    against the soft target p (Bai et al. 2022, CAI section 4.1). p = 1 gives TRL's hard loss
    -log sigma(r_c - r_r); p = 0.5 is minimised by r_c = r_r, so an undecided label teaches nothing.
    """
    d = r_chosen - r_rejected
    return -(p_chosen * F.logsigmoid(d) + (1.0 - p_chosen) * F.logsigmoid(-d)).mean()


@dataclass
class SoftPreferenceCollator(DataCollatorForPreference):
    """TRL's preference collator that also carries each pair's ``p_chosen`` (1.0 when absent) to
    :meth:`SoftRewardTrainer.compute_loss`."""

    def torch_call(self, examples: list[dict[str, Any]]) -> dict[str, Any]:
        out = super().torch_call(examples)
        out["p_chosen"] = torch.tensor([float(e.get("p_chosen", 1.0)) for e in examples], dtype=torch.float)
        return out


class EpochSeededLengthSampler(LengthGroupedSampler):
    """transformers' length-grouped order (shuffle, sort by length within megabatches), drawn from
    ``seed + epoch`` instead of the global torch RNG. A resumed run skips the batches it already
    trained by count, so it must draw the order the killed run drew; the global RNG is in another
    state by then (transformers restores the saved state only after the skip). The random sampler
    is already seeded this way (accelerate's SeedableRandomSampler)."""

    def __init__(self, batch_size: int, lengths: list[int], seed: int) -> None:
        super().__init__(batch_size, lengths=lengths)
        self.seed, self.epoch = seed, 0

    def set_epoch(self, epoch: int) -> None:  # called by accelerate's dataloader before each epoch
        self.epoch = epoch

    def __iter__(self):
        self.generator = torch.Generator().manual_seed(self.seed + self.epoch)
        return super().__iter__()


class SoftRewardTrainer(RewardTrainer):
    """RewardTrainer whose loss is :func:`soft_bt_loss`. Its datasets must keep the ``p_chosen``
    column (``remove_unused_columns=False``) and use :class:`SoftPreferenceCollator` (two rows a pair)
    or :class:`cai.train.shared_prompt.SharedPromptCollator` (one)."""

    def _get_train_sampler(self, train_dataset=None):
        sampler = super()._get_train_sampler(train_dataset)
        if type(sampler) is not LengthGroupedSampler:
            return sampler
        seed = self.args.data_seed if self.args.data_seed is not None else self.args.seed
        # list(): a datasets Column answers each index with an Arrow lookup.
        return EpochSeededLengthSampler(sampler.batch_size, list(sampler.lengths), seed)

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        p_chosen = inputs.pop("p_chosen", None)
        if "pair_mask" in inputs:  # one row per pair (cai.train.shared_prompt): TRL sees its two-row rewards
            from cai.train.shared_prompt import SharedPromptRewards, score_head

            model = SharedPromptRewards(model, score_head(self.accelerator.unwrap_model(model)))
        # TRL's compute_loss runs the model and logs reward/accuracy/margin; only its loss is replaced.
        hard, outputs = super().compute_loss(model, inputs, return_outputs=True, num_items_in_batch=num_items_in_batch)
        if p_chosen is None:
            loss = hard
        else:
            r_chosen, r_rejected = torch.chunk(outputs.logits.squeeze(-1), chunks=2)
            loss = soft_bt_loss(r_chosen, r_rejected, p_chosen.to(r_chosen.device, r_chosen.dtype))
        return (loss, outputs) if return_outputs else loss
