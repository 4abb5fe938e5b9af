"""Experiments: several arms of one run file, planned apart, run in one folder, sharing work.

A run file with ``arms:`` maps each arm's name to an overlay of the top-level spec::

    model: smollm2-135m
    generate: {prompts: helpful, limit: 200}
    critique: {prompts: redteam, limit: 200}
    sft: {data: ["@critique/critique.jsonl", "@generate/generate.jsonl:0.5"]}
    eval: {tasks: [harmlessness, over-refusal]}
    arms:
      base: {stages: [eval]}
      sl-cai: {stages: [generate, critique, sft, eval]}
      sl-cai-dpo: {rl: dpo, stages: [generate, critique, sft, label, dpo, eval], label: {pairs: contrastive}}

An arm's spec is the top-level spec with its overlay deep-merged in (mappings merge key by key, any
other value replaces; ``null`` removes a key, so ``critique: null`` drops that stage from the arm).
Each arm is planned by :func:`cai.run.plan.build_plan` on its own; a step of two arms with the same
name and key (the shared critique, the SL-CAI model that every RL arm starts from) has the same
folder and runs once. The report is not part of any arm: one report covers the whole run. With
``eval: {baseline: true}`` the base-model evals (``eval-base-*``) are such shared steps, and an arm
that trains nothing has none: its own evals are of the base model.
"""

from __future__ import annotations

import copy
from typing import Any

from cai.errors import CAIError
from cai.run.plan import (BASELINE_PREFIX, RL_STAGES, STAGES, TOP_LEVEL, Step, build_plan, canonical_sections,
                          check_spec, keyed)

# What an arm's overlay may hold: what a run file holds, less what only the whole run can set.
ARM_KEYS = (TOP_LEVEL - {"arms", "output", "description"}) | set(STAGES) - {"report"}


def deep_merge(base: dict[str, Any], overlay: dict[str, Any]) -> dict[str, Any]:
    """``base`` with ``overlay`` merged in; ``None`` in the overlay removes the key."""
    out = copy.deepcopy(base)
    for k, v in overlay.items():
        if v is None:
            out.pop(k, None)
        elif isinstance(v, dict) and isinstance(out.get(k), dict):
            out[k] = deep_merge(out[k], v)
        else:
            out[k] = copy.deepcopy(v)
    return out


def arm_specs(spec: dict[str, Any], *, where: str) -> dict[str, dict[str, Any]]:
    """Arm name -> that arm's full spec (no report section), in the order the file lists them."""
    arms = spec.get("arms")
    if not isinstance(arms, dict) or not arms:
        raise CAIError(f"{where}: arms must be a mapping of arm name: overlay (e.g. base: {{stages: [eval]}}), "
                       f"got {arms!r}")
    check_spec(spec, where)  # a mistake at the top is named there, not once per arm
    spec = canonical_sections(spec)
    top = {k: v for k, v in spec.items() if k not in ("arms", "report", "output", "description")}
    if isinstance(top.get("stages"), list):
        top["stages"] = [s for s in top["stages"] if s != "report"]
    out = {}
    for name, overlay in arms.items():
        label = f"{where}, arm {name}"
        if not isinstance(name, str) or not name or "/" in name or "." in name or name.strip() != name:
            raise CAIError(f"{where}: arm name {name!r} must be a word without '/', '.' or spaces at the ends")
        if overlay is None:
            overlay = {}
        if not isinstance(overlay, dict):
            raise CAIError(f"{label}: an arm is a mapping of run-file keys to change for it (e.g. {{stages: [eval]}}), "
                           f"got {type(overlay).__name__}")
        unknown = set(overlay) - ARM_KEYS
        if unknown:
            raise CAIError(f"{label}: unknown key(s) {', '.join(sorted(unknown))}; an arm may set "
                           f"{', '.join(sorted(ARM_KEYS))}")
        if "report" in (overlay.get("stages") or []):
            raise CAIError(f"{label}: the report is not part of an arm; put `report: {{}}` at the top of the run "
                           "file and one report covers every arm")
        arm = deep_merge(top, overlay)
        # A section nulled out of the arm leaves its stage out too when the spec lists stages.
        dropped = [k for k, v in overlay.items() if v is None and k in STAGES]
        if dropped and "stages" not in overlay and isinstance(arm.get("stages"), list):
            arm["stages"] = [s for s in arm["stages"] if s not in dropped]
        out[name] = arm
    return out


def plan_arms(spec: dict[str, Any], base: Any, *, where: str) -> dict[str, list[Step]]:
    """Arm name -> its keyed steps. Steps are identified in the manifest by their folder."""
    plans = {}
    for name, arm in arm_specs(spec, where=where).items():
        steps = keyed(build_plan(arm, where=f"{where}, arm {name}"), base)
        if not any(s.stage in ("sft", *RL_STAGES) for s in steps):
            # An arm that trains nothing evaluates the base model already: its evals are the baseline,
            # beside every arm in compare.md. The other arms share one set of eval-base-* steps.
            steps = [s for s in steps if not s.name.startswith(BASELINE_PREFIX)]
        for s in steps:
            s.ident = s.folder
        plans[name] = steps
    return plans


def wants_report(spec: dict[str, Any]) -> bool:
    stages = spec.get("stages")
    return ("report" in stages) if isinstance(stages, list) else "report" in spec
