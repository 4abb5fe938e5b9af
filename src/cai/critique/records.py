"""What a critique record carries about how it was made, and when an output may be resumed."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from cai.errors import CAIError


def provenance_of(engine: Any, **extra: Any) -> dict[str, Any]:
    from cai.provenance import provenance

    config, stop = engine.config, list(engine.template.stop)
    return provenance(
        constitution=engine.constitution,
        models={"policy": engine.policy.name, "critic": engine.critic.name},
        sampling={k: {**config.sampling(k).to_dict(), "stop": stop if k != "answer" else []}
                  for k in ("answer", "critique", "revision")},
        seed=config.seed,
        stage="critique",
        system_prompt=engine.system,
        run={"rounds": config.rounds, "principle_selection": config.principle_selection,
             "principles": list(config.principles), "few_shot": config.few_shot, "early_stop": config.early_stop,
             "early_stop_threshold": config.early_stop_threshold, "template": config.template,
             "template_hash": engine.template.hash, "revision_mode": config.revision_mode,
             "samples": config.samples, "select": config.select if config.samples > 1 else None,
             "filter": config.filter},
        **extra,
    )


def resume_check(store: Any, prov: dict[str, Any]) -> None:
    """Refuse to append to a file made with a different constitution, models or rounds: mixing them
    would silently corrupt the dataset."""
    first = next(iter(store), None)
    if first is None or "provenance" not in first:
        return
    old = first["provenance"]
    diffs = []
    if (old.get("constitution") or {}).get("hash") != (prov.get("constitution") or {}).get("hash"):
        diffs.append("constitution")
    if old.get("models") != prov.get("models"):
        diffs.append("models")
    for key, default in (("rounds", None), ("revision_mode", "critique"), ("samples", 1), ("filter", False)):
        if (old.get("run") or {}).get(key, default) != prov["run"][key]:
            diffs.append(key.replace("_", " "))
    if diffs:
        raise CAIError(f"{store.path} was made with a different {', '.join(diffs)}; resume with the same settings "
                       "or write to a new -o file")


def dropped_path(output: str | Path) -> Path:
    """``sl.jsonl`` -> ``sl.dropped.jsonl``: records the revision filter dropped, with their reasons."""
    p = Path(output)
    return p.with_name((p.name[: -len(".jsonl")] if p.name.endswith(".jsonl") else p.name) + ".dropped.jsonl")
