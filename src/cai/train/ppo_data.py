"""PPO's data: the order prompts are used in, their tokens, and the SL-CAI examples of PPO-ptx.

The prompt order is a function of (seed, step) alone, so a resumed run draws exactly the prompts
an uninterrupted one would have.
"""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any, Sequence

from cai.errors import CAIError
from cai.sources.readers import iter_jsonl
from cai.types import Conversation


def batch_indices(n_prompts: int, batch_size: int, step: int, seed: int) -> list[int]:
    """Prompt indices for PPO step ``step`` (1-based): consecutive slices of per-epoch shuffles."""
    out, start = [], (step - 1) * batch_size
    for pos in range(start, start + batch_size):
        epoch, i = divmod(pos, n_prompts)
        order = list(range(n_prompts))
        random.Random(f"{seed}:prompts:{epoch}").shuffle(order)
        out.append(order[i])
    return out


def encode_prompts(tokenizer: Any, conversations: Sequence[Conversation], max_prompt_tokens: int) -> list[list[int]]:
    """Chat-template token ids ending with the assistant's opening; long prompts keep their end."""
    ids = []
    for conv in conversations:
        text = tokenizer.apply_chat_template(list(conv), add_generation_prompt=True, tokenize=False)
        toks = tokenizer(text, add_special_tokens=False)["input_ids"]
        ids.append(toks[-max_prompt_tokens:])
    return ids


def left_pad(seqs: Sequence[Sequence[int]], pad_id: int):
    import torch

    width = max(len(s) for s in seqs)
    ids = torch.full((len(seqs), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(seqs), width), dtype=torch.long)
    for i, s in enumerate(seqs):
        if s:
            ids[i, width - len(s):] = torch.tensor(s)
            mask[i, width - len(s):] = 1
    return ids, mask


def trim_columns(ids: Any, attn: Any, start: int) -> tuple[Any, Any, int, int]:
    """Some rollouts' ``ids`` and ``attn`` without the columns none of them uses: the left padding they
    all share (the batch's prompt width is its longest prompt's) and the answer columns after their
    longest answer. A forward pass over those columns changes no real token's output, and a
    minibatch of the quickstart's PPO step carried about 9% of them (bench/RESULTS.md). Returns
    (ids, attn, the answers' first column, the answers' width); the answers' per-token tensors of
    these rows are their first ``width`` columns."""
    real = attn.bool().any(0).nonzero().flatten()
    lo = min(int(real[0]), start - 1)  # the position before the first answer token predicts it
    hi = max(int(real[-1]) + 1, start + 1)
    return ids[:, lo:hi], attn[:, lo:hi], start - lo, hi - start


def widen(x: Any, width: int) -> Any:
    """Per-token ``x`` [rows, w] of :func:`trim_columns`'s answers, padded with zeros to ``width`` columns
    (the batch's answer width; what the zeros stand for is masked out)."""
    import torch

    return torch.nn.functional.pad(x, (0, width - x.shape[1]))


def _ptx_messages(rec: Any, where: str) -> Conversation:
    if not isinstance(rec, dict):
        raise CAIError(f"{where}: expected a JSON object with 'messages' or 'prompt'/'completion'")
    if isinstance(rec.get("messages"), list):
        msgs = rec["messages"]
    elif "prompt" in rec and "completion" in rec:
        p, c = rec["prompt"], rec["completion"]
        msgs = (p if isinstance(p, list) else [{"role": "user", "content": str(p)}]) + \
            (c if isinstance(c, list) else [{"role": "assistant", "content": str(c)}])
    else:
        raise CAIError(f"{where}: no 'messages' or 'prompt'/'completion' fields; PPO-ptx takes `cai critique` "
                       "records or any TRL SFT file")
    if not msgs or msgs[-1].get("role") != "assistant":
        raise CAIError(f"{where}: the conversation must end with an assistant answer (the text the ptx loss trains on)")
    return msgs


def load_ptx(path: str, tokenizer: Any, max_length: int) -> list[tuple[list[int], int]]:
    """(token ids, index of the first answer token) per SL example; the loss falls on the final
    assistant answer only, as in SL-CAI."""
    p = Path(path).expanduser()
    if not p.is_file():
        raise CAIError(f"--ptx-data {path}: no such file")
    out = []
    for n, rec in iter_jsonl(p, "PPO-ptx takes `cai critique` records or any TRL SFT file", objects=False):
        where = f"{path}:{n}"
        msgs = _ptx_messages(rec, where)
        prompt = tokenizer.apply_chat_template(msgs[:-1], add_generation_prompt=True, tokenize=False)
        full = tokenizer.apply_chat_template(msgs, tokenize=False)
        if not full.startswith(prompt):
            raise CAIError(f"{where}: the chat template renders the answer's prompt differently inside the full "
                           "conversation; PPO-ptx cannot locate the answer")
        p_ids = tokenizer(prompt, add_special_tokens=False)["input_ids"]
        a_ids = tokenizer(full[len(prompt):], add_special_tokens=False)["input_ids"]
        ids = (p_ids + a_ids)[-max_length:]
        start = max(len(ids) - len(a_ids), 1)
        out.append((ids, start))
    if not out:
        raise CAIError(f"--ptx-data {path}: the file holds no records")
    return out


def ptx_batch(examples: Sequence[tuple[list[int], int]], size: int, cursor: int, seed: int, pad_id: int):
    """The ``cursor``-th batch of a seeded endless pass over the ptx examples: (ids, mask, labels)."""
    import torch

    n = len(examples)
    picked = []
    for pos in range(cursor * size, cursor * size + size):
        epoch, i = divmod(pos, n)
        order = list(range(n))
        random.Random(f"{seed}:ptx:{epoch}").shuffle(order)
        picked.append(examples[order[i]])
    width = max(len(ids) for ids, _ in picked)
    ids = torch.full((size, width), pad_id, dtype=torch.long)
    mask = torch.zeros((size, width), dtype=torch.long)
    labels = torch.full((size, width), -100, dtype=torch.long)
    for r, (seq, start) in enumerate(picked):
        ids[r, : len(seq)] = torch.tensor(seq)
        mask[r, : len(seq)] = 1
        labels[r, start: len(seq)] = torch.tensor(seq[start:])
    return ids, mask, labels
