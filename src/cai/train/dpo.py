"""``cai dpo``: Direct Preference Optimisation on AI-labelled pairs, with per-pair soft labels.

TRL's DPOTrainer does the work; :class:`SoftLabelDPOTrainer` changes only the loss. The soft label
of a pair is ``p_chosen`` (the feedback model's probability that the chosen answer is better); it
enters through conservative DPO (Mitchell 2023, "A note on DPO with noisy preferences"), which
assumes each label is flipped with probability ε. We set ε = 1 − p_chosen per pair:

    L = −(1 − ε)·log σ(β·h) − ε·log σ(−β·h),
    h = (log π(y_c|x) − log π_ref(y_c|x)) − (log π(y_r|x) − log π_ref(y_r|x))      (Rafailov et al. 2023)

Since log σ(z) − log σ(−z) = z, this is TRL's sigmoid loss −log σ(β·h) plus ε·β·h, which is how the
trainer computes it: TRL's loss, metrics and distributed code stay as they are, and only the
ε·β·h term is added. Hard labels (p = 1, e.g. ``cai critique`` revision-over-first-answer pairs)
give ε = 0, plain DPO. ``--min-margin M`` drops pairs with |2·p_chosen − 1| ≤ M instead, the
margin ``cai label --min-margin`` reads.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cai.config import option
from cai.errors import CAIError
from cai.train.common import TrainCommon

EPSILON = "cdpo_epsilon"


def cdpo_loss(h, epsilon, beta: float):
    """The per-pair conservative-DPO loss, written as in the paper (used by tests as the reference)."""
    import torch.nn.functional as F

    return -(1 - epsilon) * F.logsigmoid(beta * h) - epsilon * F.logsigmoid(-beta * h)


def cdpo_correction(h, epsilon, beta: float):
    """What cDPO adds to the plain sigmoid DPO loss −log σ(β·h): ε·β·h (exact, per pair)."""
    return epsilon * beta * h


@dataclass
class DPORunConfig(TrainCommon):
    policy: str = option("smollm2-135m", help="model to train (also the frozen reference): an alias, hf:PATH or a "
                         "folder, e.g. a cai sft output", flags=("-m", "--model"), aliases=("--policy",))
    data: list[str] = option([], help="preference file FILE or FILE:WEIGHT (repeatable): cai label output "
                             "(soft labels from p_chosen), cai critique output (revision over first answer) or "
                             "TRL prompt/chosen/rejected JSONL")
    beta: float = option(0.1, help="DPO β: how far the policy may move from the reference (higher: less)")
    min_margin: float | None = option(None, help="drop pairs whose |P(chosen) - P(rejected)| = |2 p_chosen - 1| is at "
                                      "most this, as in cai label (0 drops exact ties; 0.8 keeps only pairs the "
                                      "labeller gave p > 0.9 or < 0.1)")
    completion_logits: bool = option(True, help="on a CPU, compute the LM head only at the chosen and rejected "
                                     "answers' tokens (the same log-probs, faster); --no-completion-logits computes "
                                     "it at every token, as TRL does on a CPU")
    share_prompt: bool = option(True, help="on a CPU with --completion-logits, run both sides of a pair in one row, "
                                "the prompt they share once (position ids and an attention mask keep the answers "
                                "apart: the same log-probs); --no-share-prompt runs them as two rows, as TRL does")
    hard_labels: bool = option(False, help="ignore p_chosen's confidence (ε = 0, plain DPO; a pair with p_chosen "
                               "< 0.5 is flipped)")

    def __post_init__(self) -> None:
        self.check_common()
        self.data = list(self.data or [])
        if not self.beta > 0:
            raise ValueError(f"beta must be > 0, got {self.beta}")
        if self.min_margin is not None and not 0 <= self.min_margin < 1:
            raise ValueError(f"--min-margin must be in [0, 1), got {self.min_margin}; 0 drops exact ties, "
                             "0.8 keeps only pairs labelled p > 0.9 or < 0.1")

    def check(self) -> None:
        self.check_output_and_data(self.data, "no preference data; "
                                   "pass --data prefs.jsonl (cai label or cai critique output)")


def with_epsilon(examples: list[dict[str, Any]], hard: bool) -> list[dict[str, Any]]:
    """Add ε = 1 − p_chosen to each pair (hard: orient by p and use ε = 0, leaving out ties)."""
    out = []
    for ex in examples:
        p = ex.pop("p_chosen")
        if hard and p == 0.5:  # no side is preferred: ε = 0 would make a coin flip a certain label
            continue
        if hard and p < 0.5:
            ex["chosen"], ex["rejected"], p = ex["rejected"], ex["chosen"], 1.0 - p
        out.append({**ex, EPSILON: 0.0 if hard else 1.0 - p})
    return out


def _trainer_class():
    import torch
    from trl import DPOTrainer

    from cai.train.completion_logits import score_completions_only

    class SoftLabelDPOTrainer(DPOTrainer):
        """DPOTrainer with per-pair label noise ε (column ``cdpo_epsilon``): the loss becomes cDPO.
        ``completion_logits``: the LM head runs on the answers' tokens only (cai.train.completion_logits);
        ``share_prompt``: with it, the body runs one row a pair (cai.train.shared_prompt)."""

        def __init__(self, *args: Any, completion_logits: bool = False, share_prompt: bool = False,
                     **kwargs: Any) -> None:
            # Read by _precompute_ref_logps, which DPOTrainer.__init__ calls after it adds its fused head.
            self._completion_logits, self._share_prompt = completion_logits, share_prompt
            super().__init__(*args, **kwargs)
            if completion_logits:  # again, for a trainer that computes no reference pass
                score_completions_only(self.model, share_prompt=share_prompt)
            inner = self.data_collator

            def collate(examples: list[dict[str, Any]]) -> dict[str, Any]:
                batch = inner(examples)
                batch[EPSILON] = torch.tensor([float(e[EPSILON]) for e in examples], dtype=torch.float32)
                return batch

            self.data_collator = collate

        def _precompute_ref_logps(self, *args, **kwargs):
            if self._completion_logits:
                # The reference log-probs from the same head and rows as the policy's, so h starts at 0.
                score_completions_only(self.model, share_prompt=self._share_prompt)
            # TRL's bar over this pass reads only TQDM_DISABLE, not --no-progress (disable_tqdm): in a
            # log it wrote one redraw per batch.
            if not self.args.disable_tqdm:
                return super()._precompute_ref_logps(*args, **kwargs)
            from cai.quiet import env_vars

            with env_vars({"TQDM_DISABLE": "1"}):  # a user's own TQDM_DISABLE is left as it is
                return super()._precompute_ref_logps(*args, **kwargs)

        def _set_signature_columns_if_needed(self) -> None:
            super()._set_signature_columns_if_needed()
            if EPSILON not in self._signature_columns:
                self._signature_columns = [*self._signature_columns, EPSILON]

        def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
            epsilon = inputs.pop(EPSILON, None)
            if epsilon is None or not bool((epsilon != 0).any()):
                return super().compute_loss(model, inputs, return_outputs, num_items_in_batch)
            # TRL computes the policy log-probs inside its loss; a forward hook keeps the first (policy) pass.
            captured: list[Any] = []
            handle = model.register_forward_hook(lambda _m, _a, out: captured.append(out) if not captured else None)
            try:
                result = super().compute_loss(model, inputs, return_outputs, num_items_in_batch)
            finally:
                handle.remove()
            seq_len = inputs["completion_mask"].size(1) - 1
            logps = captured[0].log_probs[:, -seq_len:].sum(dim=1)  # masked to the completion by TRL's labels
            chosen, rejected = logps.chunk(2, dim=0)
            h = (chosen - inputs["ref_chosen_logps"]) - (rejected - inputs["ref_rejected_logps"])
            extra = cdpo_correction(h, epsilon.to(h.device, h.dtype), self.beta).mean()
            if return_outputs:
                loss, outputs = result
                return loss + extra, outputs
            return result + extra

    return SoftLabelDPOTrainer


def build_dpo_trainer(config: DPORunConfig, examples: list[dict[str, Any]], run_dir: Any, base_path: str,
                      *, show_progress: bool | None = None):
    from trl import DPOConfig

    from cai.train.model_io import load_model, load_tokenizer, lora_config, shared_dataset, trainer_args

    args = DPOConfig(
        **trainer_args(config, run_dir, show_progress=show_progress),
        beta=config.beta,
        loss_type=["sigmoid"],
        # The ε·β·h term needs the reference log-probs in the batch; computing them once up front also
        # frees the reference model's memory during training.
        precompute_ref_log_probs=True,
        dataset_num_proc=None,
    )
    cls = _trainer_class()
    return cls(
        model=load_model(base_path),
        args=args,
        train_dataset=shared_dataset(examples, args, run_dir),
        processing_class=load_tokenizer(base_path),
        peft_config=lora_config(config),
        callbacks=[run_dir.callback()],
        completion_logits=config.completion_logits,
        share_prompt=config.share_prompt,
    )


def run_dpo(config: DPORunConfig, *, show_progress: bool | None = None) -> dict[str, Any]:
    """Train, write the model folder and the run record; returns a summary. Resumes a killed run."""
    from cai.train.data import load_mix
    from cai.train.model_io import model_path, run_trl

    config.check()
    examples, files = load_mix(config.data, "preference", seed=config.seed, min_margin=config.min_margin)
    labelled = len(examples)
    examples = with_epsilon(examples, config.hard_labels)
    if len(examples) < labelled:
        ties = (f"{labelled - len(examples)} of {labelled} pairs are ties (p_chosen 0.5), which --hard-labels "
                "cannot orient")
        if not examples:
            raise CAIError(f"{ties}; drop --hard-labels (as soft labels, ties hold the two answers level) or add "
                           "pairs the labeller decided")
        print(f"cai: note: left out {ties}", file=sys.stderr)
    eps = [ex[EPSILON] for ex in examples]
    summary: dict[str, Any] = {"output": str(Path(config.output)), "examples": len(examples),
                               "files": [f.to_dict() for f in files], "mean_epsilon": sum(eps) / len(eps)}
    return run_trl("dpo", config, examples, files, model_path(config.policy), build_dpo_trainer, summary=summary,
                   show_progress=show_progress, final_extra={"mean_epsilon": summary["mean_epsilon"]})
