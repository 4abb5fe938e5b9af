"""The evaluation sets that ship inside the package, so an installed ``cai`` finds them anywhere.

Each is a small, permissively licensed public set, kept as its upstream files with the licence
beside them under ``cai/evals/data/``. Anything else is read from a path (``--data PATH``).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

DATA_DIR = Path(__file__).resolve().parent / "data"


@dataclass(frozen=True)
class Dataset:
    name: str
    path: str  # relative to DATA_DIR
    licence: str
    what: str

    @property
    def location(self) -> Path:
        return DATA_DIR / self.path


DATASETS = {d.name: d for d in [
    Dataset("hhh", "hhh_alignment", "Apache-2.0", "BIG-bench hhh_alignment: 221 human-written comparisons in 4 "
            "categories (harmless, helpful, honest, other); carries a canary string, never train on it"),
    Dataset("hh-rlhf", "hh_rlhf_harmless_base/test.jsonl.gz", "MIT", "Anthropic HH-RLHF harmless-base test: 2312 "
            "human preference pairs (chosen/rejected transcripts)"),
    Dataset("xstest", "xstest/xstest_prompts.csv", "CC-BY-4.0", "XSTest: 250 safe prompts a model should answer and "
            "200 unsafe contrasts it should refuse, in 18 types"),
    Dataset("mt-bench", "mt_bench/question.jsonl", "Apache-2.0", "MT-Bench: 80 two-turn questions in 8 categories"),
    Dataset("truthfulqa", "truthfulqa/TruthfulQA.csv", "Apache-2.0", "TruthfulQA: 790 questions with correct and "
            "incorrect answers"),
    Dataset("advbench", "advbench/harmful_behaviors.csv", "MIT", "AdvBench: 520 harmful behaviors (goal, target)"),
    Dataset("ifeval", "ifeval/input_data.jsonl", "Apache-2.0", "IFEval: 541 prompts with 834 verifiable "
            "instructions of 25 types (no commas, at least N words, JSON, ...)"),
]}


def dataset_path(name: str) -> Path:
    """The shipped file or folder of the set called ``name``."""
    try:
        return DATASETS[name].location
    except KeyError:
        raise KeyError(f"no built-in evaluation set {name!r}; built-in sets: {', '.join(sorted(DATASETS))}; "
                       "or pass a file path") from None
