"""--method pointwise: each answer is scored alone and the pair's label is the sigmoid of the
logit difference of the two P(yes), so the order the answers are given in cannot matter."""

from __future__ import annotations

import math

import pytest

from cai.constitution import load_constitution
from cai.errors import CAIError
from cai.label.judge import JudgeConfig, label_pairs
from cai.label.pointwise import p_yes

MSGS = [{"role": "user", "content": "How do I bake bread?"}]


class YesBackend:
    """Scores " Yes" by a fixed P(yes) per answer text found in the prompt; counts the calls."""

    name = "fake"

    def __init__(self, p_by_answer):
        self.p_by_answer, self.scored = p_by_answer, 0

    def score_options(self, conversations, options):
        out = []
        for conv in conversations:
            text = conv[-2]["content"]
            p = next(v for k, v in self.p_by_answer.items() if f"Assistant's reply: {k}" in text)
            assert conv[-1] == {"role": "assistant", "content": "Answer:"} and list(options) == [" Yes", " No"]
            out.append({" Yes": math.log(p), " No": math.log(1 - p)})
            self.scored += 1
        return out


def test_p_yes_is_a_two_way_softmax():
    assert p_yes({" Yes": math.log(0.2), " No": math.log(0.6)}, " Yes", " No") == pytest.approx(0.25)


def test_label_is_sigmoid_of_the_logit_difference_and_order_free():
    hhh = load_constitution("hhh")
    backend = YesBackend({"Knead flour.": 0.8, "No.": 0.5})
    cfg = JudgeConfig(method="pointwise", principles="harmless")
    (xy,) = label_pairs(backend, [(MSGS, "Knead flour.", "No.")], hhh, cfg)
    (yx,) = label_pairs(backend, [(MSGS, "No.", "Knead flour.")], hhh, cfg)
    # logit(0.8) - logit(0.5) = log 4, and sigmoid(log 4) = 4/5
    assert xy.p == pytest.approx(0.8) and yx.p == pytest.approx(0.2)
    assert xy.p_x_as_b is None and xy.agree is None  # no order was shown, so no position bias to measure
    # Two principles: the mean of their labels; each answer is scored once per principle.
    backend.scored = 0
    (both,) = label_pairs(backend, [(MSGS, "Knead flour.", "No.")], hhh, JudgeConfig(method="pointwise",
                                                                                 principles="harmless,helpful"))
    assert both.p == pytest.approx(0.8) and backend.scored == 4 and [s.id for s in both.principles] == ["harmless", "helpful"]


def test_pointwise_rejects_options_it_cannot_use():
    hhh = load_constitution("hhh")
    with pytest.raises(CAIError, match="no --few-shot or --cot"):
        label_pairs(YesBackend({}), [(MSGS, "a", "b")], hhh, JudgeConfig(method="pointwise", cot=True))
    with pytest.raises(CAIError, match="pairwise or pointwise"):
        label_pairs(YesBackend({}), [(MSGS, "a", "b")], hhh, JudgeConfig(method="pairs"))
