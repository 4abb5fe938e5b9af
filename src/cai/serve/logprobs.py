"""Prompt log-probabilities for ``cai serve`` over an in-process transformers model.

The Backend protocol has no verb for "the log-prob of every prompt token", which vLLM's
``prompt_logprobs`` extension returns, so the server computes it here from the backend's ``model``
and ``tokenizer``: one forward pass per prompt (batched, right-padded), keeping for every position
the prompt token's log-prob and rank, the top-k alternatives when asked, and the full next-token
distribution after the prompt (for one-token answers and OpenAI ``top_logprobs``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Sequence

TOKEN_BUDGET = 4096  # prompt tokens per forward pass: bounds the (tokens x vocab) logits in memory


@dataclass
class PromptScores:
    ids: list[int]
    logprobs: list[float]  # per prompt token from the second on
    ranks: list[int]
    top: list[list[tuple[int, float]]] | None  # per position, the k most likely tokens
    next_logprobs: Any  # a 1-D float32 tensor over the vocabulary, after the last prompt token


@dataclass
class ScoreJob:
    """One request's scoring work: its conversation, how many prompt alternatives to list (None:
    no prompt log-probs), and, for a one-token answer, its sampling and ``top_logprobs``."""

    conversation: list[dict[str, str]]
    prompt_k: int | None
    sample: Any = None  # SamplingParams for a one-token answer, else None
    top_k: int | None = None


@dataclass
class ScoreResult:
    prompt_token_ids: list[int]
    prompt_logprobs: list[dict[str, dict[str, Any]] | None] | None  # vLLM's shape
    choices: list[dict[str, Any]] = field(default_factory=list)  # token_id, text, finish_reason, logprobs


def run_score_jobs(model: Any, tokenizer: Any, jobs: Sequence[ScoreJob]) -> list[ScoreResult]:
    """Everything a scoring request needs, computed on the model thread (tokenizers included: a
    fast tokenizer used from two threads at once can fail with "Already borrowed")."""
    from cai.chat import encode_prompt

    ids = [encode_prompt(tokenizer, j.conversation) for j in jobs]
    scores = score_prompts(model, [(i, j.prompt_k or 0) for i, j in zip(ids, jobs)])
    stop_ids = eos_ids(model, tokenizer)
    out = []
    for job, sc in zip(jobs, scores):
        res = ScoreResult(sc.ids, None if job.prompt_k is None else vllm_prompt_logprobs(tokenizer, sc))
        if job.sample is not None:
            p = job.sample
            for tid in sample_next(sc.next_logprobs, temperature=p.temperature, top_p=p.top_p, n=p.n, seed=p.seed):
                text = "" if tid in stop_ids else tokenizer.decode([tid])
                finish = "stop" if tid in stop_ids else "length"
                for s in p.stop:
                    if s and s in text:
                        text, finish = text[: text.index(s)], "stop"
                lps = None
                if job.top_k is not None:
                    lps = {"content": [_token_logprob(tokenizer, tid, sc.next_logprobs, job.top_k)]}
                res.choices.append({"token_id": tid, "text": text, "finish_reason": finish, "logprobs": lps})
        out.append(res)
    return out


def vllm_prompt_logprobs(tokenizer: Any, scores: PromptScores) -> list[dict[str, dict[str, Any]] | None]:
    """None for the first token, then {token_id: {logprob, rank, decoded_token}} with the prompt's
    own token first and the top-k alternatives after it."""
    pieces = decoded_pieces(tokenizer, scores.ids)
    out: list[dict[str, dict[str, Any]] | None] = [None]
    for pos in range(1, len(scores.ids)):
        tid = scores.ids[pos]
        entry = {str(tid): {"logprob": scores.logprobs[pos - 1], "rank": scores.ranks[pos - 1],
                            "decoded_token": pieces[pos]}}
        for rank, (alt, lp) in enumerate(scores.top[pos - 1] if scores.top else [], start=1):
            entry.setdefault(str(alt), {"logprob": lp, "rank": rank, "decoded_token": tokenizer.decode([alt])})
        out.append(entry)
    return out


def _token_logprob(tokenizer: Any, tid: int, logprobs: Any, k: int) -> dict[str, Any]:
    """OpenAI's per-token logprobs entry, with the k most likely alternatives."""
    def item(t: int) -> dict[str, Any]:
        text = tokenizer.decode([t])
        return {"token": text, "logprob": float(logprobs[t]), "bytes": list(text.encode("utf-8"))}

    top = logprobs.topk(k).indices.tolist() if k > 0 else []
    return {**item(tid), "top_logprobs": [item(t) for t in top]}


def score_prompts(model: Any, items: Sequence[tuple[list[int], int]]) -> list[PromptScores]:
    """``items`` are (prompt ids, top-k); returns one PromptScores each, in order."""
    import torch

    device = next(model.parameters()).device
    order = sorted(range(len(items)), key=lambda i: len(items[i][0]))
    out: list[PromptScores | None] = [None] * len(items)

    def run(chunk: list[int]) -> None:
        width = max(len(items[i][0]) for i in chunk)
        ids = torch.zeros((len(chunk), width), dtype=torch.long)
        mask = torch.zeros_like(ids)
        for row, i in enumerate(chunk):
            seq = items[i][0]
            ids[row, : len(seq)] = torch.tensor(seq)
            mask[row, : len(seq)] = 1
        with torch.inference_mode():
            # Right padding: real tokens keep positions 0..len-1 and never attend to the padding.
            logits = model(input_ids=ids.to(device), attention_mask=mask.to(device), use_cache=False).logits
        for row, i in enumerate(chunk):
            seq, k = items[i]
            lp = torch.log_softmax(logits[row, : len(seq)].float(), dim=-1).cpu()
            target = torch.tensor(seq[1:], dtype=torch.long).unsqueeze(1)
            actual = lp[:-1].gather(1, target).squeeze(1)
            ranks = (lp[:-1] > actual.unsqueeze(1)).sum(-1) + 1
            top = None
            if k > 0 and len(seq) > 1:
                values, indices = lp[:-1].topk(k, dim=-1)
                top = [list(zip(r_i, r_v)) for r_i, r_v in zip(indices.tolist(), values.tolist())]
            out[i] = PromptScores(list(seq), actual.tolist(), ranks.tolist(), top, lp[-1].clone())

    chunk: list[int] = []
    total = 0
    for i in order:
        n = len(items[i][0])
        if chunk and total + n > TOKEN_BUDGET:
            run(chunk)
            chunk, total = [], 0
        chunk.append(i)
        total += n
    if chunk:
        run(chunk)
    return out  # type: ignore[return-value]


def decoded_pieces(tokenizer: Any, ids: Sequence[int]) -> list[str]:
    """Each token's text, such that the pieces join up to the decoded prompt.

    A byte-level token that holds part of a UTF-8 character decodes to U+FFFD on its own; like vLLM,
    give such a token "" and its whole character to the token that completes it.
    """
    pieces = []
    for i, tid in enumerate(ids):
        piece = tokenizer.decode([tid])
        if piece.endswith("\ufffd"):
            piece = _complete_char(tokenizer, list(ids[max(0, i - 4) : i]), tid)
        pieces.append(piece)
    return pieces


def _complete_char(tokenizer: Any, context: list[int], tid: int) -> str:
    for n in range(1, len(context) + 1):
        ctx = context[-n:]
        full = tokenizer.decode(ctx + [tid])
        if full.endswith("\ufffd"):
            continue
        clean = len(ctx)
        while clean > 0 and tokenizer.decode([ctx[clean - 1]]).endswith("\ufffd"):
            clean -= 1
        prefix = tokenizer.decode(ctx[:clean]) if clean else ""
        return full[len(prefix) :] if full.startswith(prefix) else full
    return ""


def sample_next(next_logprobs: Any, *, temperature: float, top_p: float, n: int, seed: int | None) -> list[int]:
    """n next tokens from the distribution after the prompt: greedy at temperature 0, else
    temperature and nucleus sampling with a seeded generator."""
    import torch

    if temperature == 0:
        return [int(next_logprobs.argmax())] * n
    probs = torch.softmax(next_logprobs / temperature, dim=-1)
    if top_p < 1.0:
        sorted_p, idx = probs.sort(descending=True)
        keep = (sorted_p.cumsum(0) - sorted_p) < top_p  # the smallest set whose mass reaches top_p
        probs = torch.zeros_like(probs).scatter(0, idx[keep], sorted_p[keep])
    gen = torch.Generator().manual_seed(seed) if seed is not None else None
    return torch.multinomial(probs, n, replacement=True, generator=gen).tolist()


def eos_ids(model: Any, tokenizer: Any) -> set[int]:
    ids: set[int] = set()
    for source in (getattr(model, "generation_config", None), tokenizer):
        value = getattr(source, "eos_token_id", None)
        if isinstance(value, int):
            ids.add(value)
        elif value:
            ids.update(int(v) for v in value)
    return ids
