"""The feedback model as a judge: soft preference labels for response pairs, read from option
log-probabilities (never from generated text).

One function, :func:`label_pairs`, is the labelling method. ``cai label`` (RLAIF data) and
``cai eval labeler`` (agreement with human labels) both call it, so what is measured is what is
used. Per pair it

1. picks principles (one sampled with a seeded RNG, as in the CAI paper; all; N sampled; or
   named ones) and asks each one's preference question;
2. builds the multiple-choice prompt with the pair as (A)/(B), and, unless ``swap`` is off, again
   with the order reversed;
3. in chain-of-thought mode, lets the model reason first (one batched ``generate`` call);
4. scores " (A)" and " (B)" for every prompt in one batched ``score_options`` call;
5. combines: P(x better) per order -> clamp (CoT) -> mean over orders -> mean over principles.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Any, Sequence

from cai.config import option
from cai.errors import CAIError
from cai.label.prompts import after_reasoning, choice_conversation, label_template
from cai.label.preference import check_clamp, clamp, debias, ensemble, orders_agree, two_option_prob
from cai.types import Conversation, SamplingParams


@dataclass
class JudgeConfig:
    """How pairs are labelled; shared by ``cai label`` and ``cai eval labeler``."""

    constitution: str = option("default", help="constitution whose preference questions are asked: a built-in "
                               "name (cai constitution list) or a file", flags=("-c", "--constitution"))
    principles: str = option("sample", help="which preference questions: 'sample' (one per pair, seeded, the "
                             "paper's way), 'all' (mean over all), N (mean over N sampled), or comma-separated ids")
    few_shot: int = option(0, help="labelled preference examples from the constitution placed before the "
                           "question (-1: all of them)")
    cot: bool = option(False, help="chain of thought: the feedback model reasons before its answer is scored")
    cot_clamp: tuple[float, ...] = option((0.4, 0.6), help="clamp CoT probabilities into LO HI, as in the "
                                          "paper (0 1 turns clamping off)")
    cot_max_tokens: int = option(160, help="most tokens of reasoning per CoT prompt")
    swap: bool = option(True, help="score both orders of (A)/(B) and average (--no-swap: one order)")
    method: str = option("pairwise", help="pairwise: one (A)/(B) question per pair (the paper's way); pointwise: "
                         "each answer scored alone as P(yes) for 'is it good by this principle?', and p = "
                         "sigmoid(logit difference), which letter order cannot bias")
    seed: int = option(0, help="seed for principle sampling (and sampling answers in cai label)")


@dataclass(frozen=True)
class PrincipleScore:
    """P(x better) under one principle; ``p_x_as_b`` is None when only one order was scored."""

    id: str
    p: float
    p_x_as_a: float
    p_x_as_b: float | None
    agree: bool | None
    reasoning: tuple[str, ...] = ()


@dataclass(frozen=True)
class PairLabel:
    """The soft label that response x beats response y, and how it was reached."""

    p: float
    p_x_as_a: float
    p_x_as_b: float | None
    agree: bool | None
    principles: tuple[PrincipleScore, ...]


class PrinciplePlan:
    """Which principles a pair is judged by, drawn from a per-pair seeded RNG (stable across
    batching and resumed runs)."""

    def __init__(self, constitution: Any, spec: str | int) -> None:
        pool = tuple(constitution.preference_principles())
        if not pool:
            raise CAIError(f"constitution {constitution.name!r} has no preference questions; add `preference:` "
                           "to some principles or pick another (-c hhh, -c default)")
        spec = str(spec).strip()
        self.spec = spec
        if spec in ("sample", "all"):
            self.mode, self.pool = spec, pool
        elif spec.isdigit():
            n = int(spec)
            if n < 1:
                raise CAIError(f"--principles {spec}: N must be at least 1")
            self.mode, self.pool, self.n = "n", pool, min(n, len(pool))
        else:
            ids = list(dict.fromkeys(s.strip() for s in spec.split(",") if s.strip()))
            chosen = tuple(constitution.principle(i) for i in ids)
            missing = [p.id for p in chosen if not p.preference]
            if missing or not chosen:
                raise CAIError(f"--principles {spec}: {', '.join(missing) or 'nothing'} has no preference question; "
                               f"use ids among: {', '.join(p.id for p in pool)}")
            self.mode, self.pool = "fixed", chosen
        if sum(p.weight for p in self.pool) <= 0 or any(p.weight < 0 for p in self.pool):
            raise CAIError(f"constitution {constitution.name!r}: preference principles need non-negative weights "
                           "with a positive sum; fix the `weight:` fields")

    def choose(self, rng: random.Random) -> tuple[list[Any], list[float] | None]:
        """(principles, weights for the mean or None for a plain mean).

        A principle's weight sets how often it is drawn; where nothing is drawn ('all', named
        ids) it weights the mean instead, so it counts the same either way.
        """
        weights = [p.weight for p in self.pool]
        if self.mode == "sample":
            return [rng.choices(self.pool, weights=weights)[0]], None
        if self.mode == "n":
            # Weighted sampling without replacement (Efraimidis-Spirakis keys u^(1/w)).
            keyed = sorted(self.pool, key=lambda p: -(rng.random() ** (1.0 / p.weight)) if p.weight > 0 else 0.0)
            return keyed[: self.n], None
        return list(self.pool), weights


def few_shot_examples(constitution: Any, k: int) -> tuple[Any, ...]:
    if k < -1:
        raise CAIError(f"--few-shot must be -1 (all), 0 (none) or a count, got {k}")
    if k == 0:
        return ()
    available = tuple(constitution.preference_examples)
    if not available:
        raise CAIError(f"constitution {constitution.name!r} has no preference_examples for --few-shot; "
                       "drop --few-shot or add labelled examples to the constitution")
    return available if k < 0 else available[:k]


@dataclass
class _Job:
    pair: int
    principle: Any
    x_first: bool  # order 1: x is (A)
    conv: Conversation
    reasoning: str = ""
    p_x: float = 0.5


def label_pairs(feedback: Any, pairs: Sequence[tuple[Conversation, str, str]], constitution: Any,
                method: JudgeConfig | None = None, *, keys: Sequence[str] | None = None) -> list[PairLabel]:
    """Soft labels P(x better than y) for ``(messages, x, y)`` pairs.

    ``feedback`` is a Backend; ``keys`` are stable per-pair strings (record ids) that seed the
    principle draw, so a pair gets the same principles whatever batch it lands in.
    """
    method = method or JudgeConfig()
    if method.method not in ("pairwise", "pointwise"):
        raise CAIError(f"--method must be pairwise or pointwise, got {method.method!r}")
    if not pairs:
        return []
    if method.method == "pointwise":
        from cai.label.pointwise import label_pairs_pointwise

        return label_pairs_pointwise(feedback, pairs, constitution, method, keys=keys)
    if keys is not None and len(keys) != len(pairs):
        raise ValueError(f"got {len(keys)} keys for {len(pairs)} pairs")
    tpl = label_template()
    bounds = check_clamp(method.cot_clamp) if method.cot else None
    plan = PrinciplePlan(constitution, method.principles)
    examples = few_shot_examples(constitution, method.few_shot)
    options = list(tpl["options"])

    jobs: list[_Job] = []
    chosen: list[tuple[list[Any], list[float] | None]] = []
    for k, (messages, x, y) in enumerate(pairs):
        key = keys[k] if keys is not None else str(k)
        principles, weights = plan.choose(random.Random(f"{method.seed}:{key}:principles"))
        chosen.append((principles, weights))
        for pr in principles:
            for x_first in ((True, False) if method.swap else (True,)):
                a, b = (x, y) if x_first else (y, x)
                conv = choice_conversation(messages, a, b, pr.preference, examples=examples, cot=method.cot, tpl=tpl)
                jobs.append(_Job(k, pr, x_first, conv))

    if method.cot:
        params = SamplingParams(temperature=0.0, max_tokens=method.cot_max_tokens, stop=tuple(tpl["cot_stop"]))
        outs = feedback.generate([j.conv for j in jobs], params)
        for j, out in zip(jobs, outs):
            j.reasoning = out.text.strip()
            j.conv = after_reasoning(j.conv, j.reasoning, tpl)

    scores = feedback.score_options([j.conv for j in jobs], options)
    for j, lp in zip(jobs, scores):
        p_a = two_option_prob(lp, options[0], options[1])
        j.p_x = clamp(p_a if j.x_first else 1.0 - p_a, bounds)

    by_pair: dict[int, list[_Job]] = {}
    for j in jobs:
        by_pair.setdefault(j.pair, []).append(j)
    labels = []
    for k, (principles, weights) in enumerate(chosen):
        per: list[PrincipleScore] = []
        for pr in principles:
            mine = [j for j in by_pair[k] if j.principle is pr]
            p_a = next(j.p_x for j in mine if j.x_first)
            p_b = next((j.p_x for j in mine if not j.x_first), None)
            per.append(PrincipleScore(pr.id, debias(p_a, p_b), p_a, p_b, orders_agree(p_a, p_b),
                                      tuple(j.reasoning for j in mine if method.cot)))
        ens_a = ensemble([s.p_x_as_a for s in per], weights)
        ens_b = None if not method.swap else ensemble([s.p_x_as_b for s in per], weights)  # type: ignore[misc]
        labels.append(PairLabel(ensemble([s.p for s in per], weights), ens_a, ens_b, orders_agree(ens_a, ens_b),
                                tuple(per)))
    return labels


def method_summary(method: JudgeConfig, constitution: Any) -> dict[str, Any]:
    """What provenance records about the labelling method."""
    return {"method": method.method, "principles": str(method.principles), "few_shot": method.few_shot, "cot": method.cot,
            "cot_clamp": list(method.cot_clamp) if method.cot else None, "swap": method.swap,
            "preference_principles": [p.id for p in constitution.preference_principles()]}
