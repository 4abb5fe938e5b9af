"""IFEval's two comparisons: "less than" (count < n) and "at least" (count >= n)."""

from __future__ import annotations

RELATIONS = ("less than", "at least")


def compare(count: int, relation: str, n: int) -> bool:
    if relation == "less than":
        return count < n
    if relation == "at least":
        return count >= n
    raise ValueError(f"relation {relation!r} must be one of {', '.join(RELATIONS)}")
