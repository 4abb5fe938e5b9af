"""Strict and loose scoring of responses, and the four IFEval accuracies with their intervals.

Strict: the instruction's checker on the response as it is. Loose (the paper's upper bound, for
responses that follow an instruction but wrap it in a preamble like "Sure, here it is:" or in
markdown): the instruction counts as followed when the checker passes on any of eight variants,
the response with its first line removed, its last line removed, both, and each of those four
with every ``*`` removed.

Accuracies: prompt-level, the share of prompts whose every instruction is followed; instruction-
level, the share of all instructions followed. Intervals are percentile bootstraps over prompts;
for instruction-level the prompts are resampled with their instructions and the share recomputed,
since instructions of one prompt are not independent.
"""

from __future__ import annotations

from typing import Any, Sequence

from cai.evals.ifeval.registry import follows
from cai.evals.results import Metric


def loose_variants(response: str) -> list[str]:
    lines = response.split("\n")
    trimmed = ["\n".join(lines[1:]).strip(), "\n".join(lines[:-1]).strip(), "\n".join(lines[1:-1]).strip()]
    plain = [response] + trimmed
    return plain + [r.replace("*", "") for r in plain]


def score_response(instruction_ids: Sequence[str], kwargs: Sequence[dict[str, Any]],
                   response: str) -> dict[str, list[bool]]:
    """Per instruction, strict and loose: ``{"strict": [...], "loose": [...]}``."""
    variants = loose_variants(response)
    strict, loose = [], []
    for iid, kw in zip(instruction_ids, kwargs):
        s = follows(iid, kw, response)
        strict.append(s)
        loose.append(s or any(follows(iid, kw, v) for v in variants[1:]))
    return {"strict": strict, "loose": loose}


def _share(values: Sequence[float], *, help: str, seed: int, n_resamples: int) -> Metric:
    from cai.evals.tasks.itemrun import mean_ci

    return mean_ci(values, help=help, seed=seed, n_resamples=n_resamples)


def _instruction_share(scores: Sequence[Sequence[bool]], *, help: str, seed: int, n_resamples: int) -> Metric:
    from cai.evals.metrics import bootstrap_ratio_ci

    num = [float(sum(s)) for s in scores]
    den = [float(len(s)) for s in scores]
    total = sum(den)
    if not total:
        return Metric(float("nan"), None, 0, True, help)
    return Metric(sum(num) / total, bootstrap_ratio_ci(num, den, n_resamples=n_resamples, seed=seed), int(total),
                  True, help)


def summarise(scored: Sequence[dict[str, Any]], *, seed: int = 0, n_resamples: int = 2000) -> dict[str, Metric]:
    """The four headline accuracies from per-prompt ``{"strict": [...], "loose": [...]}`` scores."""
    out = {}
    for mode in ("strict", "loose"):
        out[f"prompt_{mode}_accuracy"] = _share(
            [all(s[mode]) for s in scored], seed=seed, n_resamples=n_resamples,
            help=f"share of prompts whose every instruction is followed ({mode})")
    for mode in ("strict", "loose"):
        out[f"instruction_{mode}_accuracy"] = _instruction_share(
            [s[mode] for s in scored], seed=seed, n_resamples=n_resamples,
            help=f"share of all instructions followed ({mode}); interval from resampling prompts")
    return out


def by_instruction(records: Sequence[dict[str, Any]], scored: Sequence[dict[str, Any]], *, group: bool = False,
                   seed: int = 0, n_resamples: int = 2000) -> dict[str, dict[str, Metric]]:
    """Strict and loose accuracy per instruction type (or per group, the part before the colon)."""
    cells: dict[str, dict[str, list[bool]]] = {}
    for rec, s in zip(records, scored):
        for k, iid in enumerate(rec["instruction_id_list"]):
            key = iid.split(":")[0] if group else iid
            cell = cells.setdefault(key, {"strict": [], "loose": []})
            cell["strict"].append(s["strict"][k])
            cell["loose"].append(s["loose"][k])
    return {key: {f"{mode}_accuracy": _share(cell[mode], seed=seed, n_resamples=n_resamples,
                                             help=f"share of these instructions followed ({mode})")
                  for mode in ("strict", "loose")}
            for key, cell in sorted(cells.items())}
