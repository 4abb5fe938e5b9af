"""The held-out rule for HH-RLHF: which pairs may become training prompts and which check labellers.

The shipped HH-RLHF harmless-base pairs serve two masters: their first human turns are red-team
requests worth training on (the built-in ``harmful-train`` set), and their human preferences are
the yardstick for AI labellers and preference models (``cai eval labeler --data hh-rlhf``,
``cai reward``'s human accuracy). A pair must never be both, or the yardstick measures memory.
So every pair goes to exactly one pool, decided by a hash of its first human turn alone: the rule
needs no list of ids, gives the same answer on any copy of the data, and sends repeats of a request
(HH-RLHF has many) to the same pool.
"""

from __future__ import annotations

import hashlib
from typing import Literal

__all__ = ["CHECK_TENTHS", "HH_POOLS", "hh_rlhf_pool", "normalise"]

Pool = Literal["check", "train"]
HH_POOLS = ("check", "train", "all")
CHECK_TENTHS = 3  # 30% of first turns check, 70% train


def normalise(text: str) -> str:
    """Lower case, whitespace runs collapsed to one space, ends stripped: the form in which two
    prompts count as the same text."""
    return " ".join(text.lower().split())


def hh_rlhf_pool(text: str) -> Pool:
    """``"check"`` or ``"train"`` for an HH-RLHF pair whose first human turn is ``text``."""
    digest = hashlib.sha1(normalise(text).encode("utf-8")).hexdigest()
    return "check" if int(digest[:8], 16) % 10 < CHECK_TENTHS else "train"
