"""Pointwise labels: each answer is scored alone, as P(yes) for "is this reply good by the
principle's standard?", and the pair's soft label is p = σ(logit P(yes | x) − logit P(yes | y)).

Why: the embedded 135M judge picks the first or second letter 90-95% of the time whatever the
answers (docs/results.md), so a pairwise question mostly measures position. Asked about one answer
at a time there is no position to prefer. The logit difference is the Bradley-Terry form (Bradley
and Terry 1952): if each answer's quality is s = logit P(yes), then P(x beats y) = σ(s_x − s_y).
"""

from __future__ import annotations

import math
import random
from typing import Any, Sequence

from cai.errors import CAIError
from cai.label.judge import JudgeConfig, PairLabel, PrinciplePlan, PrincipleScore
from cai.label.preference import ensemble
from cai.label.prompts import clean_question, format_transcript, label_template
from cai.templates import fill
from cai.types import Conversation


def _logit(p: float, eps: float = 1e-6) -> float:
    p = min(max(p, eps), 1.0 - eps)
    return math.log(p / (1.0 - p))


def p_yes(logprobs: dict[str, float], yes: str, no: str) -> float:
    """P(yes) over the two options, from their log-probabilities (a softmax over two)."""
    return 1.0 / (1.0 + math.exp(logprobs[no] - logprobs[yes]))


def pointwise_conversation(messages: Conversation, response: str, question: str | None,
                           tpl: dict[str, Any]) -> Conversation:
    content = fill(tpl["pointwise_question"], conversation=format_transcript(messages, tpl),
                   response=response.strip(), question=clean_question(question, tpl))
    conv: Conversation = [{"role": "system", "content": tpl["system"]}] if tpl.get("system") else []
    return conv + [{"role": "user", "content": content},
                   {"role": "assistant", "content": tpl["pointwise_answer_prefix"]}]


def label_pairs_pointwise(feedback: Any, pairs: Sequence[tuple[Conversation, str, str]], constitution: Any,
                          method: JudgeConfig, *, keys: Sequence[str] | None = None) -> list[PairLabel]:
    """Soft labels P(x better than y) from one yes/no score per answer and principle. Each distinct
    (conversation, answer, principle) is scored once, however many pairs it is in."""
    if method.few_shot or method.cot:
        raise CAIError("--method pointwise takes no --few-shot or --cot: the worked examples and the reasoning "
                       "prompt are written for the two-option question")
    tpl = label_template()
    yes, no = tpl["pointwise_options"]
    plan = PrinciplePlan(constitution, method.principles)
    chosen, jobs, index = [], [], {}
    for k, (messages, x, y) in enumerate(pairs):
        key = keys[k] if keys is not None else str(k)
        principles, weights = plan.choose(random.Random(f"{method.seed}:{key}:principles"))
        chosen.append((principles, weights))
        for pr in principles:
            for answer in (x, y):
                conv = pointwise_conversation(messages, answer, pr.preference, tpl)
                jid = repr(conv)
                if jid not in index:
                    index[jid] = len(jobs)
                    jobs.append(conv)
    scores = feedback.score_options(jobs, [yes, no]) if jobs else []
    p = [p_yes(s, yes, no) for s in scores]
    labels = []
    for (messages, x, y), (principles, weights) in zip(pairs, chosen):
        per = []
        for pr in principles:
            px = p[index[repr(pointwise_conversation(messages, x, pr.preference, tpl))]]
            py = p[index[repr(pointwise_conversation(messages, y, pr.preference, tpl))]]
            q = 1.0 / (1.0 + math.exp(-(_logit(px) - _logit(py))))
            # No order was shown, so the "as (A)" view is the label itself and there is no second order.
            per.append(PrincipleScore(pr.id, q, q, None, None, ()))
        p_all = ensemble([s.p for s in per], weights)
        labels.append(PairLabel(p_all, p_all, None, None, tuple(per)))
    return labels
