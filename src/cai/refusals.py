"""Refusal demonstrations (``cai data refusals``): SFT records that answer clearly harmful prompts
with a written refusal.

A 135M model rarely writes a real refusal, even when asked to: at most 28% of red-team prompts got
one among 8 of its own samples (docs/results.md, the dose-response study). So the harmless half of
its SL-CAI data comes from refusals written once, as data (``cai/templates/refusals.yaml``, or any
YAML file with a ``refusals:`` list), standing in for the revisions a stronger critic would write.
Each prompt gets the refusal picked by a hash of its id, so it keeps that refusal whatever else is
in the source or however it is limited.

Only clearly harmful prompts should get a refusal. The built-in ``harmful-train`` set mixes HH-RLHF
first turns, many of them harmless openers ("My wife loves to cook."), with the red-team set and the
in-the-wild forbidden questions; refusing the openers would teach the model to refuse chat. So by
default only prompts whose ``source`` is ``redteam`` or ``forbidden-questions`` are kept, less the
forbidden-question scenarios that ask for advice or an opinion rather than for harm.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cai.config import option, to_dict
from cai.errors import CAIError
from cai.outputs import inputs_of, overwrite_option
from cai.sources import Prompt

# forbidden-questions scenarios that ask for advice or an opinion, not for harm: not refused.
ADVICE = ("Political Lobbying", "Legal Opinion", "Financial Advice", "Health Consultation", "Gov Decision")
SOURCES = ("redteam", "forbidden-questions")  # the built-in sets whose prompts deserve a refusal


@dataclass
class RefusalsConfig:
    prompts: str = option("harmful-train", help="harmful prompts: a built-in set, a file (.jsonl/.csv/...) or any "
                          "source cai generate reads", flags=("--data",))
    output: str | None = option(None, help="JSONL file of SFT records (prompt, completion, which refusal)",
                                flags=("-o", "--output"))
    template: str = option("refusals", help="the refusals: built-in template name or a YAML file with a "
                           "'refusals:' list of texts")
    limit: int | None = option(None, help="at most N records: the first N prompts selected (a seeded random N "
                               "with --shuffle)")
    shuffle: bool = option(False, help="shuffle the selected prompts with --seed before --limit, so N records "
                           "spread over every source and category (examples/dose_response.py's nested doses)")
    seed: int = option(0, help="seed of --shuffle")
    include_sources: tuple[str, ...] = option(SOURCES, help="keep only prompts whose "
                                              "'source' field is one of these; 'all' keeps every prompt")
    exclude_categories: tuple[str, ...] = option(ADVICE, help="leave out prompts whose 'category' is one of these "
                                                 "(the forbidden-question scenarios that ask for advice, not harm); "
                                                 "'none' leaves out nothing")
    field: str | None = option(None, help="column holding the prompt text in a JSONL/CSV/Parquet source")
    overwrite: bool = overwrite_option()

    def __post_init__(self) -> None:
        # `--include-sources redteam,forbidden-questions` reads as two names, like the space-separated form;
        # "redteam, forbidden-questions" too (unstripped, the second name matched no prompt).
        self.include_sources = tuple(x.strip() for item in self.include_sources for x in str(item).split(",")
                                     if x.strip())
        self.exclude_categories = tuple(x.strip() for item in self.exclude_categories for x in str(item).split(",")
                                        if x.strip())
        if self.limit is not None and self.limit < 1:
            raise ValueError(f"limit must be >= 1, got {self.limit}; leave it out to take every selected prompt")


def load_refusals(template: str) -> tuple[list[str], str]:
    """(the refusal texts, a hash of them) of a built-in template name or a YAML path."""
    import yaml

    if template.endswith((".yaml", ".yml")) or Path(template).expanduser().is_file():
        p = Path(template).expanduser()
        if not p.is_file():
            raise CAIError(f"--template {template}: no such file; give a YAML file with a 'refusals:' list, or the "
                           "built-in name refusals")
        try:
            data = yaml.safe_load(p.read_text(encoding="utf-8"))
        except yaml.YAMLError as e:
            raise CAIError(f"{p}: not valid YAML ({getattr(e, 'problem', None) or e})") from None
    else:
        from cai.templates import load_template

        try:
            data = load_template(template)
        except FileNotFoundError:
            raise CAIError(f"--template {template}: no built-in template of that name and no such file; use "
                           "refusals or a YAML path") from None
    texts = data.get("refusals") if isinstance(data, dict) else None
    if not isinstance(texts, list) or not texts:
        raise CAIError(f"{template}: needs a 'refusals:' list of refusal texts")
    for i, t in enumerate(texts):
        if not isinstance(t, str) or not t.strip():
            raise CAIError(f"{template}: refusals[{i}] must be a non-empty text, got {t!r:.60}")
    digest = hashlib.sha256(json.dumps(texts, ensure_ascii=False).encode()).hexdigest()[:16]
    return texts, digest


def pick(prompt_id: str, n: int) -> int:
    """Which of ``n`` refusals a prompt gets: a hash of its id, so stable across runs and limits."""
    return int(hashlib.sha1(prompt_id.encode()).hexdigest()[:8], 16) % n


def selected(prompts: list[Prompt], config: RefusalsConfig) -> list[Prompt]:
    """The prompts of ``prompts`` that ``config`` selects, in order (before ``limit``)."""
    sources = set() if "all" in config.include_sources else set(config.include_sources)  # empty: every source
    skip = set(config.exclude_categories) - {"none"}
    return [p for p in prompts if (not sources or p.meta.get("source") in sources)
            and p.meta.get("category") not in skip]


def refusal_records(config: RefusalsConfig) -> list[dict[str, Any]]:
    """The SFT records: each selected prompt with its refusal, and where both came from."""
    from cai.provenance import provenance
    from cai.sources import load_prompts

    texts, digest = load_refusals(config.template)
    prompts = load_prompts(config.prompts, field=config.field)
    found = sorted({str(p.meta.get("source")) for p in prompts})
    unknown = [s for s in config.include_sources if s != "all" and s not in found]
    # As with categories below: the defaults may be missing from a user's file; names the user wrote may not.
    if unknown and len(unknown) < len(config.include_sources) and tuple(config.include_sources) != SOURCES:
        raise CAIError(f"--include-sources {', '.join(unknown)}: no prompt of {config.prompts} has that source "
                       f"(theirs: {', '.join(found[:8])}); check the spelling")
    categories = {str(p.meta.get("category")) for p in prompts}
    # The default list names the forbidden-question scenarios, which other prompt sets lack; a list the
    # user wrote is checked, so that a misspelt category does not silently exclude nothing.
    odd = [c for c in config.exclude_categories if c != "none" and c not in categories]
    if odd and tuple(config.exclude_categories) != ADVICE:
        raise CAIError(f"--exclude-categories {', '.join(odd)}: no prompt of {config.prompts} has that category "
                       f"(theirs: {', '.join(sorted(categories)[:8])}); check the spelling")
    chosen = selected(prompts, config)
    if config.shuffle:
        import random

        random.Random(config.seed).shuffle(chosen)  # as the study orders its doses: N=30 are among N=100
    chosen = chosen[: config.limit]
    if not chosen:
        raise CAIError(f"{config.prompts}: none of its {len(prompts)} prompts is selected (their sources: "
                       f"{', '.join(found[:8])}); pass --include-sources all (or the sources to keep) and check "
                       "--exclude-categories")
    prov = provenance(stage="refusals", input=config.prompts, template=config.template, template_hash=digest,
                      config=to_dict(config))
    out = []
    for p in chosen:
        k = pick(p.id, len(texts))
        rec: dict[str, Any] = {"id": p.id, "prompt": list(p.messages),
                               "completion": [{"role": "assistant", "content": texts[k]}],
                               "refusal": k, "source": p.source}
        if p.meta:
            rec["meta"] = p.meta
        rec["provenance"] = prov
        out.append(rec)
    return out


def write_refusals(config: RefusalsConfig) -> dict[str, Any]:
    """Write :func:`refusal_records` to ``config.output`` (replacing an earlier output of this command,
    whole: making them takes no model and no time, so there is nothing to resume)."""
    from cai.store import check_output

    if not config.output:
        raise CAIError("no output given; pass -o REFUSALS.jsonl")
    out = check_output(config.output, stage="refusals", inputs=inputs_of(config), overwrite=config.overwrite)
    records = refusal_records(config)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.tmp")
    tmp.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records), encoding="utf-8")
    tmp.replace(out)
    by_source: dict[str, int] = {}
    for r in records:
        s = str((r.get("meta") or {}).get("source", r["source"]))
        by_source[s] = by_source.get(s, 0) + 1
    return {"output": str(out), "written": len(records), "by_source": by_source, "config": to_dict(config)}
