"""Preference pairs for ``cai reward``: read ``cai label`` files and TRL preference files into one shape.

Every record becomes a :class:`Pair` (prompt conversation, chosen answer, rejected answer, soft
label ``p_chosen``, group). Accepted record shapes, per TRL's dataset formats:

* explicit prompt, conversational: ``prompt`` = messages, ``chosen``/``rejected`` = one assistant
  message each (what ``cai label`` and ``cai critique`` write);
* explicit prompt, plain text: ``prompt``/``chosen``/``rejected`` strings (the prompt becomes one
  user turn; a "Human: ... Assistant:" transcript prompt is parsed into turns);
* implicit prompt: ``chosen``/``rejected`` are whole conversations (message lists, or HH-RLHF
  "\\n\\nHuman: ... \\n\\nAssistant: ..." transcripts) that share their prompt.

``p_chosen`` (the probability that chosen is better) is read when present, else 1 (a hard label).
Everything is turned into chat messages so that training and :class:`cai.train.pm.PreferenceModel`
format text the same way.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

from cai.errors import CAIError
from cai.types import Conversation, check_conversation


@dataclass(frozen=True)
class Pair:
    prompt: Conversation
    chosen: str
    rejected: str
    p_chosen: float
    group: str  # pairs of one prompt share a group, so a held-out split never splits a prompt


def _text(x: Any, name: str = "answer") -> str:
    if isinstance(x, str):
        return x
    if isinstance(x, list) and x and isinstance(x[-1], dict) and "content" in x[-1]:
        check_conversation(x, name)
        return "\n\n".join(str(m.get("content", "")) for m in x if m.get("role") == "assistant") or str(x[-1]["content"])
    raise ValueError("an answer must be a string or a list of assistant messages")


def _as_prompt(x: Any) -> Conversation:
    if isinstance(x, list):
        # A chat template renders any role and str() made a null content "None": both were trained on.
        check_conversation(x, "prompt")
        return [{"role": m["role"], "content": m["content"]} for m in x]
    if isinstance(x, str):
        if "Human:" in x:
            from cai.transcripts import parse_transcript

            try:
                return parse_transcript(x if x.startswith("\n\n") else "\n\n" + x.lstrip())
            except ValueError:
                pass
        return [{"role": "user", "content": x}]
    raise ValueError("prompt must be a string or a list of messages")


def _implicit(chosen: Any, rejected: Any) -> tuple[Conversation, str, str]:
    if isinstance(chosen, str) and isinstance(rejected, str):
        from cai.transcripts import split_preference_pair

        return split_preference_pair(chosen, rejected)
    if not (isinstance(chosen, list) and isinstance(rejected, list)):
        raise ValueError("chosen and rejected must both be transcripts or both message lists")
    n = 0
    while n < min(len(chosen), len(rejected)) - 1 and chosen[n] == rejected[n]:
        n += 1
    prompt = _as_prompt(chosen[:n]) if n else []
    if not prompt or prompt[-1]["role"] != "user":
        raise ValueError("chosen and rejected must share a prompt that ends with a user turn")
    return prompt, _text(chosen[n:], "chosen"), _text(rejected[n:], "rejected")


def record_pair(rec: dict[str, Any], where: str) -> Pair:
    """One record -> a Pair; ValueError/CAIError naming ``where`` on a wrong shape."""
    if not isinstance(rec, dict) or "chosen" not in rec or "rejected" not in rec:
        raise CAIError(f"{where}: a preference record needs chosen and rejected (and usually prompt); "
                       "write one with `cai label` or use TRL's preference format")
    try:
        if rec.get("prompt") not in (None, "", []):
            prompt = _as_prompt(rec["prompt"])
            chosen, rejected = _text(rec["chosen"], "chosen"), _text(rec["rejected"], "rejected")
        else:
            prompt, chosen, rejected = _implicit(rec["chosen"], rec["rejected"])
    except (ValueError, KeyError, TypeError) as e:
        raise CAIError(f"{where}: {e}") from None
    if not chosen.strip():
        raise CAIError(f"{where}: 'chosen' is empty, so the model would learn to reward saying nothing; drop this "
                       "record or fix it")
    p = rec.get("p_chosen", 1.0)
    if p is None:
        p = 1.0
    # JSON's true is a bool, which Python counts as the int 1: no probability all the same.
    if isinstance(p, bool) or not isinstance(p, (int, float)) or not 0.0 <= float(p) <= 1.0:
        raise CAIError(f"{where}: p_chosen must be a probability in [0, 1], got {p!r}")
    group = str(rec.get("prompt_id") or rec.get("id") or prompt[-1]["content"])
    return Pair(prompt, chosen, rejected, float(p), group)


def load_pairs(paths: Sequence[str | Path]) -> list[Pair]:
    from cai.store import read_records

    if not paths:
        raise CAIError("--data: give at least one preference file (cai label output or TRL prompt/chosen/rejected)")
    pairs: list[Pair] = []
    for path in paths:
        if not Path(path).is_file():
            raise CAIError(f"--data {path}: file not found")
        records = read_records(path)
        if not records:
            raise CAIError(f"--data {path}: no records in it")
        pairs += [record_pair(r, f"{path}:{n}") for n, r in enumerate(records, 1)]
    # Both sides score the same, so such a pair has no gradient yet counts as data (cai critique keeps
    # unrevised answers); cai dpo drops them too (cai.train.data.load_mix).
    kept = [p for p in pairs if p.chosen != p.rejected]
    if not kept:
        raise CAIError(f"--data {' '.join(map(str, paths))}: all {len(pairs)} pairs have the same chosen and "
                       "rejected answer, so there is no preference to learn; add pairs that differ")
    if len(kept) < len(pairs):
        import sys

        print(f"cai: note: left out {len(pairs) - len(kept)} of {len(pairs)} pairs whose chosen and rejected "
              "answers are the same", file=sys.stderr)
    return kept


def split_pairs(pairs: Sequence[Pair], fraction: float, seed: int) -> tuple[list[Pair], list[Pair]]:
    """(train, held-out): a seeded ``fraction`` of the prompt groups is held out whole."""
    if fraction <= 0:
        return list(pairs), []
    groups = sorted({p.group for p in pairs})
    rng = random.Random(f"{seed}:eval-split")
    n_eval = max(1, round(len(groups) * fraction))
    if n_eval >= len(groups):
        raise CAIError(f"--eval-split {fraction} leaves no training data ({len(groups)} prompts); lower it")
    held = set(rng.sample(groups, n_eval))
    return [p for p in pairs if p.group not in held], [p for p in pairs if p.group in held]
