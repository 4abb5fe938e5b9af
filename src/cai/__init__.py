"""cai: Constitutional AI end to end.

The public API, imported lazily so that ``import cai`` (and ``cai --help``) stays fast::

    import cai
    backend = cai.load_backend("hf:smollm2-135m")
    constitution = cai.load_constitution("default")
    prompts = cai.load_prompts("redteam", limit=8)
    records = cai.critique_revise(prompts, policy=backend, constitution=constitution)
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

# public name -> module that defines it
_EXPORTS = {
    "Backend": "cai.backends",
    "load_backend": "cai.backends",
    "SamplingParams": "cai.types",
    "Completion": "cai.types",
    "resolve_model": ("cai.models", "resolve"),
    "load_constitution": "cai.constitution",
    "list_constitutions": "cai.constitution",
    "Constitution": "cai.constitution",
    "Principle": "cai.constitution",
    "load_prompts": "cai.sources",
    "Prompt": "cai.sources",
    "GenerateConfig": "cai.generation",
    "generate_file": "cai.generation",
    "CritiqueConfig": "cai.critique",
    "critique_revise": "cai.critique",
    "run_critique": "cai.critique",
    "LabelConfig": "cai.label",
    "run_label": "cai.label",
    "LabelerEvalConfig": "cai.evals.labeler",
    "evaluate_labeler": "cai.evals.labeler",
    "label_pairs": "cai.label",
    "SFTRunConfig": "cai.train.sft",
    "run_sft": "cai.train.sft",
    "RewardTrainConfig": "cai.train.reward",
    "run_reward": "cai.train.reward",
    "PreferenceModel": "cai.train.pm",
    "load_reward": "cai.train.rewards",
    "PPORunConfig": "cai.train.ppo",
    "run_ppo": "cai.train.ppo",
    "DPORunConfig": "cai.train.dpo",
    "run_dpo": "cai.train.dpo",
    "RlooConfig": "cai.train.rloo",
    "run_rloo": "cai.train.rloo",
    "load_grader": "cai.evals.graders",
    "EvalResult": "cai.evals.results",
    "read_result": "cai.evals.results",
    "RedteamConfig": "cai.redteam.run",
    "run_redteam": "cai.redteam.run",
    "ReportConfig": "cai.report",
    "build_report": "cai.report",
    "RunOptions": "cai.run",
    "run_pipeline": ("cai.run", "execute"),
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    target = _EXPORTS.get(name)
    if target is None:
        raise AttributeError(f"module 'cai' has no attribute {name!r}")
    module_name, attr = target if isinstance(target, tuple) else (target, name)
    value = getattr(importlib.import_module(module_name), attr)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
