"""Preference pairs as one row each: the tokens both sides begin with (the prompt) once, then the
chosen answer, then the rejected one.

TRL's preference collator puts a pair's two sides in two padded rows, so the PM computes its prompt
twice. In the quickstart's 200 pairs a side is 168 tokens on average, 54 of them prompt; padded as
two rows the PM computed 72,880 tokens for 66,058 real ones, where one row per pair holds 55,321.
The rejected answer's position ids restart where the sides fork, and the attention mask keeps
each answer from seeing the other, so every token's hidden state is the one it has in its own
sequence: the same rewards as two rows up to float rounding (tests/test_shared_prompt.py).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

import torch

# Segments of a row: the shared prefix, the chosen answer, the rejected answer, padding.
SHARED, CHOSEN, REJECTED, PAD = 0, 1, 2, 3


def fork(chosen: Sequence[int], rejected: Sequence[int]) -> int:
    """How many leading tokens the two sides share, short of either side's last token: a reward is
    read at a side's last token, which must be that side's own."""
    limit = min(len(chosen), len(rejected)) - 1
    k = 0
    while k < limit and chosen[k] == rejected[k]:
        k += 1
    return k


def packed_length(chosen: Sequence[int], rejected: Sequence[int]) -> int:
    """Tokens in the pair's row."""
    return len(chosen) + len(rejected) - fork(chosen, rejected)


def pack_pairs(pairs: Sequence[tuple[Sequence[int], Sequence[int]]], pad_token_id: int) -> dict[str, Any]:
    """One row per (chosen ids, rejected ids): ``input_ids`` and ``position_ids`` [pairs, width],
    ``attention_mask`` (the real tokens), ``pair_mask`` (boolean, [pairs, 1, width, width], True where
    a query may attend a key: the model's attention mask), ``chosen_at`` and ``rejected_at`` (each
    side's last token)."""
    rows = [_row(c, r) for c, r in pairs]
    width = max(len(ids) for ids, _, _ in rows)
    ids = torch.full((len(rows), width), pad_token_id, dtype=torch.long)
    pos = torch.zeros((len(rows), width), dtype=torch.long)
    seg = torch.full((len(rows), width), PAD, dtype=torch.long)
    for i, (r_ids, r_pos, r_seg) in enumerate(rows):
        n = len(r_ids)
        ids[i, :n], pos[i, :n], seg[i, :n] = torch.tensor(r_ids), torch.tensor(r_pos), torch.tensor(r_seg)
    q, k = seg[:, :, None], seg[:, None, :]
    causal = torch.ones(width, width, dtype=torch.bool).tril()
    # A padding query sees padding keys (and the prefix), never a real query's row: so no row of
    # the mask is empty (an all-masked softmax is NaN, and a NaN in a padding position's values
    # would reach real tokens through their zero weights).
    mask = causal & ((k == SHARED) | (k == q))
    return {"input_ids": ids, "attention_mask": (seg != PAD).long(), "position_ids": pos, "pair_mask": mask[:, None],
            "chosen_at": torch.tensor([len(c) - 1 for c, _ in pairs]),
            "rejected_at": torch.tensor([len(r_ids) - 1 for r_ids, _, _ in rows])}


def _row(chosen: Sequence[int], rejected: Sequence[int]) -> tuple[list[int], list[int], list[int]]:
    k = fork(chosen, rejected)
    ids = list(chosen) + list(rejected[k:])
    pos = list(range(len(chosen))) + list(range(k, len(rejected)))
    seg = [SHARED] * k + [CHOSEN] * (len(chosen) - k) + [REJECTED] * (len(rejected) - k)
    return ids, pos, seg


@dataclass
class SharedPromptCollator:
    """The reward trainer's collator for one row a pair: :func:`pack_pairs` of each example's
    ``chosen_ids`` and ``rejected_ids``, and its ``p_chosen`` (1.0 when absent)."""

    pad_token_id: int

    def __call__(self, examples: list[dict[str, Any]]) -> dict[str, Any]:
        out = pack_pairs([(e["chosen_ids"], e["rejected_ids"]) for e in examples], self.pad_token_id)
        out["p_chosen"] = torch.tensor([float(e.get("p_chosen", 1.0)) for e in examples], dtype=torch.float)
        return out


def score_head(model: Any) -> Any | None:
    """The PM's reward head (a sequence-classification model's ``score``), under any PEFT wrapper;
    None for a model without one: ``cai reward`` then asks for ``--no-share-prompt``, and
    :meth:`cai.train.pm.PreferenceModel.score_pairs` scores each side on its own."""
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    return getattr(base, "score", None)


class SharedPromptRewards:
    """Stands in for the PM in TRL's ``compute_loss``: runs the model on packed rows (through the
    wrapper the trainer holds, so distributed training sees its forward) and returns the chosen
    rewards then the rejected ones as ``logits`` [2 x pairs, 1], the layout of TRL's two-row batch."""

    def __init__(self, model: Any, head: Any) -> None:
        self.model, self.head = model, head

    def __call__(self, *, input_ids, pair_mask, position_ids, chosen_at, rejected_at, attention_mask=None,
                 **kwargs: Any) -> Any:
        from transformers.modeling_outputs import SequenceClassifierOutputWithPast

        out = self.model(input_ids=input_ids, attention_mask=pair_mask, position_ids=position_ids,
                         output_hidden_states=True, **kwargs)
        last = out.hidden_states[-1]  # after the final norm: what the head reads
        rows = torch.arange(input_ids.shape[0], device=input_ids.device)
        picked = torch.cat([last[rows, chosen_at], last[rows, rejected_at]])
        return SequenceClassifierOutputWithPast(logits=self.head(picked))


def pack_two_row_batch(input_ids: Any, attention_mask: Any, pad_token_id: int) -> tuple[dict[str, Any], Any] | None:
    """TRL's DPO batch (rows ``[chosen; rejected]``, pair i in rows i and B + i, each row's real
    tokens first) as one row a pair: :func:`pack_pairs`' inputs for the model, and ``index``
    [2B, T], where row r, position t of TRL's batch finds its hidden state in the packed output
    flattened to [B x width, hidden]. Padding positions point at their row's first token; the loss
    masks them. None when the batch is not in that layout (an odd row count, padding before a
    real token), so the caller runs TRL's rows."""
    rows, width = input_ids.shape
    lengths = attention_mask.sum(dim=1)
    flushed = bool((attention_mask == (torch.arange(width, device=attention_mask.device) < lengths[:, None])).all())
    if rows % 2 or not flushed:
        return None
    b = rows // 2
    ids = input_ids.tolist()
    sides = [(ids[i][: int(lengths[i])], ids[b + i][: int(lengths[b + i])]) for i in range(b)]
    packed = pack_pairs(sides, pad_token_id)
    packed_width = packed["input_ids"].shape[1]
    index = torch.zeros((rows, width), dtype=torch.long)
    for i, (chosen, rejected) in enumerate(sides):
        k, start = fork(chosen, rejected), i * packed_width
        index[i, : len(chosen)] = torch.arange(start, start + len(chosen))
        index[i, len(chosen):] = start
        # The rejected side reads the shared prefix, then its own tokens after the chosen ones.
        index[b + i, :k] = torch.arange(start, start + k)
        index[b + i, k: len(rejected)] = torch.arange(start + len(chosen), start + len(chosen) + len(rejected) - k)
        index[b + i, len(rejected):] = start
    return packed, index.to(input_ids.device)
