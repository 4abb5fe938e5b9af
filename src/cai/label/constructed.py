"""Preference pairs whose label comes from how they were made, not from a judge.

* ``revision`` (the Hugging Face CAI recipe): a ``cai critique`` record's final revision is chosen
  over its first answer.
* ``contrastive`` (RLCD, Yang et al. 2023): for a principle, the chosen answer is sampled under a
  system prompt asking for replies that meet its standard and the rejected one under a prompt
  asking for the opposite.

A small feedback model labels pairs at about chance (docs/results.md); these sources need none.
``p_chosen`` is 1 by construction. With ``judge_filter`` the feedback model is still asked, its
opinion is recorded as ``judge_p_chosen``, and pairs it rejects (p < 0.5) go to the skipped file.
"""

from __future__ import annotations

import random
from typing import Any, Sequence

from cai.errors import CAIError
from cai.label.judge import PrinciplePlan, label_pairs
from cai.label.prompts import clean_question, label_template
from cai.templates import fill
from cai.types import SamplingParams, keyed_seed

SOURCES = ("revision", "contrastive")


def revision_pairs(records: Sequence[dict[str, Any]], where: str) -> list[tuple[Any, str, str, dict[str, Any]]]:
    """(prompt, chosen, rejected, extra) for each critique record whose revision changed the answer."""
    from cai.sources import Prompt

    out = []
    for n, rec in enumerate(records, 1):
        if not all(k in rec for k in ("id", "prompt", "initial", "final")):
            raise CAIError(f"{where}:{n}: --pairs revision reads a `cai critique` file; this record has no "
                           "id/prompt/initial/final fields")
        if rec.get("dropped") or not rec["final"].strip() or rec["final"].strip() == rec["initial"].strip():
            continue
        prompt = Prompt(str(rec["id"]), list(rec["prompt"]), where)
        principles = [s.get("principle_id") for s in rec.get("steps", []) if s.get("revision")]
        out.append((prompt, rec["final"], rec["initial"], {"principles": principles}))
    return out


def contrastive_conversations(prompt: Any, principle: Any, tpl: dict[str, Any]) -> tuple[list, list]:
    """The prompt's conversation under the positive and under the negative system prompt."""
    question = clean_question(principle.preference, tpl)
    user = [m for m in prompt.messages if m["role"] != "system"]
    pos = [{"role": "system", "content": fill(tpl["contrastive_positive"], question=question)}] + user
    neg = [{"role": "system", "content": fill(tpl["contrastive_negative"], question=question)}] + user
    return pos, neg


def contrastive_pairs(policy: Any, prompts: Sequence[Any], constitution: Any, config: Any,
                      params: SamplingParams) -> list[tuple[Any, str, str, dict[str, Any]]]:
    """One pair per prompt: an answer sampled under the positive prompt, one under the negative,
    for a principle drawn per prompt (seeded by its id, so resumed runs draw the same)."""
    tpl = label_template()
    plan = PrinciplePlan(constitution, config.principles)
    convs, chosen_principles = [], []
    for p in prompts:
        principles, _ = plan.choose(random.Random(f"{config.seed}:{p.id}:contrastive"))
        pos, neg = contrastive_conversations(p, principles[0], tpl)
        convs += [pos, neg]
        chosen_principles.append(principles[0])
    # Each answer its own seed, from the prompt's id: the same whatever batch a resumed run puts it in.
    seeds = [keyed_seed(config.seed, p.id, side) for p in prompts for side in ("positive", "negative")]
    outs = policy.generate(convs, SamplingParams(**{**params.to_dict(), "n": 1, "seeds": seeds}))
    pairs = []
    for k, (p, pr) in enumerate(zip(prompts, chosen_principles)):
        good, bad = outs[2 * k].text.strip(), outs[2 * k + 1].text.strip()
        pairs.append((p, good, bad, {"principles": [pr.id], "system_prompts": [convs[2 * k][0]["content"],
                                                                               convs[2 * k + 1][0]["content"]]}))
    return pairs


def constructed_records(pairs: Sequence[tuple[Any, str, str, dict[str, Any]]], source: str, prov: dict[str, Any], *,
                        feedback: Any = None, constitution: Any = None, method: Any = None,
                        judge_filter: bool = False) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """(kept, dropped) records in the shape ``cai label`` writes, p_chosen = 1 by construction."""
    judged = [None] * len(pairs)
    if judge_filter:
        labels = label_pairs(feedback, [(p.messages, c, r) for p, c, r, _ in pairs], constitution, method,
                             keys=[f"{p.id}:{source}" for p, *_ in pairs])
        judged = [lab.p for lab in labels]
    keep, drop = [], []
    for (prompt, chosen, rejected, extra), jp in zip(pairs, judged):
        rec: dict[str, Any] = {
            "id": f"{prompt.id}:{source}", "prompt_id": prompt.id, "prompt": list(prompt.messages),
            "chosen": [{"role": "assistant", "content": chosen}],
            "rejected": [{"role": "assistant", "content": rejected}],
            "p_chosen": 1.0, "tie": False, "label_source": source,
            "principles": [{"id": i} for i in extra.get("principles", []) if i],
        }
        if "system_prompts" in extra:
            rec["system_prompts"] = {"chosen": extra["system_prompts"][0], "rejected": extra["system_prompts"][1]}
        if jp is not None:
            rec["judge_p_chosen"] = jp
        rec["provenance"] = prov
        if chosen == rejected:
            drop.append({**rec, "reason": "identical answers"})
        elif jp is not None and jp < 0.5:
            drop.append({**rec, "reason": f"the judge prefers the rejected answer (p_chosen {jp:.3f})"})
        else:
            keep.append(rec)
    return keep, drop
