"""``--completion-logits``: on a CPU, project through the LM head only the positions the loss reads.

TRL's SFT and DPO trainers take their per-token log-probs from the fused LM head TRL puts on the
model (``trl.trainer.utils.add_fused_lm_head``): called with ``fused_lm_head=True``, the model runs
its body, then ``ChunkedLogProbFunction`` projects the hidden states through the LM head in tiles
and folds each tile into log-probs. On CUDA/XPU (Triton) TRL projects only the positions whose
shifted label is not -100. Everywhere else it projects every position, prompt and padding included,
and zeroes the unused ones afterwards: on compiled devices (XLA, Neuron) a row count that changes
with each batch would recompile the graph. A CPU compiles nothing, yet pays for every row: with the
embedded model's 49k-token vocabulary the head and its loss were 49% of a ``cai sft`` step and 59%
of a ``cai dpo`` step (bench/profile_trainers.py), while the loss reads only the answer tokens.

:func:`score_completions_only` wraps that patched forward on one model so that on a CPU the head
runs on the label positions only: TRL's own CUDA path (same kernel, same outputs, zeros elsewhere),
taken on the CPU too. The trainers' ``compute_loss`` is untouched, so their loss (per-token mean,
``num_items_in_batch`` under gradient accumulation), metrics (entropy, mean_token_accuracy,
num_tokens, DPO's logits/*) and every other loss type stay TRL's.
"""

from __future__ import annotations

import inspect
from typing import Any

# Set on the wrapper, so that installing twice (DPO installs before its reference pass and after
# construction) wraps once.
MARK = "_cai_completion_logits"
# The settings TRL's fused forward closes over that this path reproduces; if a TRL release renames
# one, :func:`score_completions_only` leaves TRL's path in place rather than guess.
_NEEDED = ("backbone_attr", "temperature", "cast_lm_head_to_fp32", "final_logit_softcapping", "logit_scale",
           "outputs", "text_config")
# TRL's vocabulary tile width (``_CHUNKED_LOGPROB_CHUNK_SIZE``): at most 32k logits per row at once.
VOCAB_TILE = 32768


def fused_target(model: Any) -> Any:
    """The model TRL patched: the PEFT model's base model, else the model itself."""
    get_base = getattr(model, "get_base_model", None)
    return get_base() if callable(get_base) and hasattr(model, "peft_config") else model


def score_completions_only(model: Any, *, share_prompt: bool = False) -> bool:
    """Wrap the fused LM head TRL added to ``model`` (or to its PEFT base model) so that, on a CPU,
    only label positions go through the head. ``share_prompt`` (DPO's batches, pair i in rows i and
    B + i): the body runs one row a pair, the prompt both sides share once
    (:func:`cai.train.shared_prompt.pack_two_row_batch`). True when the wrapper is in place (or
    already was: its ``share_prompt`` is then set anew); False when TRL's forward is not the one
    this was written against (TRL's path stays)."""
    import functools
    import types

    target = fused_target(model)
    fused = vars(target).get("forward")  # TRL sets the patched forward on the instance
    if fused is None:
        return False
    if getattr(fused, MARK, False):
        fused.__func__.share_prompt = share_prompt
        return True
    func = getattr(fused, "__func__", None)
    # follow_wrapped=False: TRL's forward carries the model's own signature (functools.wraps) for generate.
    if func is None or "fused_lm_head" not in inspect.signature(func, follow_wrapped=False).parameters:
        return False
    # TRL's settings for this model (temperature, logit scale, soft-capping, the per-token outputs the
    # trainer asked for), read from its forward rather than re-derived from the config, so that both
    # paths use the same ones.
    settings = inspect.getclosurevars(func).nonlocals
    if any(name not in settings for name in _NEEDED) or settings["text_config"] is not target.config:
        return False  # a vision-language model's text config, or a TRL this was not written against

    @functools.wraps(type(target).forward)  # as TRL's: generate checks its kwargs against this signature
    def forward(self, *args: Any, fused_lm_head: bool = False, labels: Any = None, shift_labels: Any = None,
                num_items_in_batch: Any = None, **kwargs: Any) -> Any:
        scored = labels if shift_labels is None else shift_labels
        if not fused_lm_head or scored is None or not _applies(self, scored, kwargs, settings["text_config"]):
            return fused(*args, fused_lm_head=fused_lm_head, labels=labels, shift_labels=shift_labels,
                         num_items_in_batch=num_items_in_batch, **kwargs)
        return _compact_forward(self, args, kwargs, labels, shift_labels, num_items_in_batch, settings,
                                forward.share_prompt)

    setattr(forward, MARK, True)
    forward.share_prompt = share_prompt
    target.forward = types.MethodType(forward, target)
    return True


def _applies(model: Any, labels: Any, kwargs: dict[str, Any], text_config: Any) -> bool:
    """Where the compact path cannot reproduce TRL's, TRL's full path runs instead."""
    if labels.device.type != "cpu":
        return False  # CUDA/XPU: TRL already projects the label positions only; XLA: it must not
    if kwargs.get("output_router_logits") or getattr(text_config, "output_router_logits", False):
        return False  # MoE: TRL adds the router's load-balancing loss, which this path does not
    weight = model.get_output_embeddings().weight
    return type(weight).__name__ != "DTensor"  # FSDP2's sharded head: TRL gathers it first


def _body(backbone: Any, args: tuple, kwargs: dict[str, Any], share_prompt: bool) -> Any:
    """The body's last hidden states for TRL's rows; with ``share_prompt``, computed one row a pair
    and gathered back into TRL's layout (only a plain batch of ids and a padding mask: a batch with
    other per-token inputs, images say, runs as TRL's rows)."""
    from cai.train.shared_prompt import pack_two_row_batch

    mask = kwargs.get("attention_mask")
    # PEFT's wrapper passes its own arguments through, unset (inputs_embeds=None, return_dict=None, ...).
    given = {k for k, v in kwargs.items() if v is not None and v is not False} - {"use_cache", "return_dict"}
    if share_prompt and not args and mask is not None and given <= {"input_ids", "attention_mask"}:
        packed = pack_two_row_batch(kwargs["input_ids"], mask, pad_token_id=0)
        if packed is not None:
            rows, index = packed
            last = backbone(input_ids=rows["input_ids"], attention_mask=rows["pair_mask"],
                            position_ids=rows["position_ids"], use_cache=False).last_hidden_state
            return last.reshape(-1, last.shape[-1])[index]
    return backbone(*args, **kwargs).last_hidden_state


def _compact_forward(model: Any, args: tuple, kwargs: dict[str, Any], labels: Any, shift_labels: Any,
                     num_items_in_batch: Any, settings: dict[str, Any], share_prompt: bool = False) -> Any:
    """TRL's fused forward with its CUDA branch (``compact``) taken: the body, then the head on the
    positions whose next-token label is not -100 only, scattered back to ``(batch, seq - 1)``."""
    from contextlib import nullcontext

    import torch
    from trl.kernels import ChunkedLogProbFunction
    from trl.trainer.utils import FusedCausalLMOutput, maybe_gather_lm_head_ctx

    kwargs["use_cache"] = False
    last = _body(getattr(model, settings["backbone_attr"]), args, kwargs, share_prompt)
    if shift_labels is None:  # position t predicts token t + 1
        hidden, labels = last[:, :-1], labels[:, 1:]
    else:  # context / sequence parallelism passes labels already shifted
        hidden, labels = last, shift_labels
    head = model.get_output_embeddings()
    mask = labels != -100
    autocast = nullcontext()
    if settings["cast_lm_head_to_fp32"]:
        hidden = hidden.float()
        autocast = torch.autocast(hidden.device.type, enabled=False)
    with autocast, maybe_gather_lm_head_ctx(head.weight, head.bias):
        per_token = ChunkedLogProbFunction.apply(
            hidden[mask], head.weight, head.bias, labels[mask], settings["temperature"], VOCAB_TILE,
            settings["final_logit_softcapping"], settings["logit_scale"], settings["outputs"])
    # masked_scatter keeps an all-masked micro-batch connected to the graph (a zero, not a failed backward).
    log_probs, entropy, log_sum_sq_probs, mean_logits, is_top1 = (
        None if x is None else x.new_zeros(mask.shape).masked_scatter(mask, x) for x in per_token)
    loss = -log_probs.sum() / (mask.sum().clamp(min=1) if num_items_in_batch is None else num_items_in_batch)
    return FusedCausalLMOutput(loss=loss, log_probs=log_probs, entropy=entropy, log_sum_sq_probs=log_sum_sq_probs,
                               mean_logits=mean_logits, is_top1=is_top1, label_mask=mask)
