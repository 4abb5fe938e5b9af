"""RLAIF labels: pairs of answers, a feedback model's choice per principle as a soft label.

``engine`` samples and stores pairs, ``judge`` scores them, ``prompts`` words the question,
``preference`` holds the probability arithmetic (debiasing, ensembling, margins).
"""

from cai.label.engine import LabelConfig, form_pairs, label_pairs, run_label, skipped_path
from cai.label.judge import JudgeConfig, PairLabel

__all__ = ["LabelConfig", "JudgeConfig", "PairLabel", "form_pairs", "label_pairs", "run_label", "skipped_path"]
