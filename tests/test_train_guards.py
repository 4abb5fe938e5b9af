"""The non-finite guard on a tiny model: a NaN loss at step 3 stops training there, names the
step, and leaves the checkpoints of steps 1 and 2 as the last good ones."""

from __future__ import annotations

import math

import pytest

from cai.errors import CAIError
from cai.train.guards import NonFiniteGuard, last_checkpoint


def _tiny_trainer(tmp_path, guard, nan_at: int):
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM, Trainer, TrainingArguments

    torch.manual_seed(0)
    model = LlamaForCausalLM(LlamaConfig(vocab_size=64, hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                                         num_attention_heads=2, num_key_value_heads=1))
    data = [{"input_ids": torch.randint(0, 64, (8,)), "labels": torch.randint(0, 64, (8,))} for _ in range(32)]

    class Poisoned(Trainer):
        def compute_loss(self, model, inputs, return_outputs=False, **kw):
            loss = super().compute_loss(model, inputs, return_outputs=return_outputs, **kw)
            # the step being computed is global_step + 1
            if self.state.global_step + 1 >= nan_at:
                loss = loss * float("nan")
            return loss

    args = TrainingArguments(output_dir=str(tmp_path / "checkpoints"), max_steps=6, per_device_train_batch_size=4,
                             save_steps=1, logging_steps=1, report_to=[], use_cpu=True,
                             disable_tqdm=True, learning_rate=1e-3)
    return Poisoned(model=model, args=args, train_dataset=data, callbacks=[guard])


def test_nan_loss_stops_at_its_step_and_keeps_the_last_good_checkpoint(tmp_path):
    guard = NonFiniteGuard()
    trainer = _tiny_trainer(tmp_path, guard, nan_at=3)
    trainer.train()
    assert guard.tripped is not None and guard.tripped["step"] == 3
    assert trainer.state.global_step == 3  # stopped at once, not at max_steps
    saved = sorted(d.name for d in (tmp_path / "checkpoints").iterdir() if d.name.startswith("checkpoint-"))
    assert saved == ["checkpoint-1", "checkpoint-2"], "no checkpoint may hold the NaN weights"
    assert last_checkpoint(tmp_path / "checkpoints").name == "checkpoint-2"
    with pytest.raises(CAIError) as e:
        guard.raise_if_tripped(tmp_path / "checkpoints")
    msg = str(e.value)
    assert "step 3" in msg and "checkpoint-2" in msg and "\n" not in msg


def test_a_clean_run_is_untouched(tmp_path):
    guard = NonFiniteGuard()
    trainer = _tiny_trainer(tmp_path, guard, nan_at=10**9)
    trainer.train()
    assert guard.tripped is None and trainer.state.global_step == 6
    guard.raise_if_tripped(tmp_path / "checkpoints")


def test_check_for_hand_written_loops():
    guard = NonFiniteGuard()
    assert not guard.check(1, {"loss": 0.5, "kl": 0.01})
    assert guard.check(2, {"loss": 0.4, "kl": math.inf})
    assert guard.tripped == {"step": 2, "what": "kl", "value": math.inf}
    assert guard.check(3, {"loss": 0.1})  # stays tripped at the first bad step
    assert "kl became inf at step 2" in guard.message()


def test_the_weight_check_names_the_first_trainable_weight_that_is_not_finite():
    """The fused-norm shortcut must neither miss a NaN or an infinity nor stop a run whose weights are
    finite but large enough to overflow the norm; frozen weights are not the run's to check."""
    import torch

    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(4, 4), torch.nn.Linear(4, 4), torch.nn.Linear(4, 2))
    model[0].requires_grad_(False)
    guard = NonFiniteGuard()
    assert guard._bad_weights(model) is None
    with torch.no_grad():
        model[0].weight[0, 0] = math.nan  # frozen: not checked
        assert guard._bad_weights(model) is None
        model[1].weight.fill_(1e30)  # finite, but its squares overflow float32
        assert guard._bad_weights(model) is None
        for bad in (math.nan, math.inf, -math.inf):
            model[2].bias[1] = bad
            assert guard._bad_weights(model) == "2.bias"
        model[2].bias[1] = 0.0
        model[1].weight[2, 3] = math.nan
        assert guard._bad_weights(model) == "1.weight"
