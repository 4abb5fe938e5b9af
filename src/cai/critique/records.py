"""What a critique record carries about how it was made, and when an output may be resumed."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from cai.errors import CAIError
from cai.sources import same_source


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


def resume_check(store: Any, prov: dict[str, Any], *also: Any) -> None:
    """Refuse to append to a file made with other settings: records from two setups in one file
    would silently corrupt the dataset. ``also`` are sidecar stores (the dropped records) whose
    records count when the file itself is still empty."""
    first = next((rec for s in (store, *also) for rec in s), None)
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
    changed = [f"{flag} ({was!r} in the file, {now!r} now)" for flag, was, now in _setting_changes(old, prov)]
    if diffs or changed:
        raise CAIError(f"{store.path} was made with a different {', '.join(diffs + changed)}; resume with the same "
                       "settings or write to a new -o file")


def finished_models(specs: list[Any], store: Any, *also: Any, items: Any) -> list[Any]:
    """``specs`` (policy, critic), or unstarted stand-ins for them when ``store`` or a sidecar
    in ``also`` (the dropped records) already holds every item and the records name models the
    specs could load: a rerun on a finished output starts no engine (:mod:`cai.backends.unstarted`).
    The critic defaults to the policy, as when the models are loaded."""
    from cai.backends.unstarted import stand_ins

    if not items or any(all(it.id not in s for s in (store, *also)) for it in items):
        return specs
    first = next((rec for s in (store, *also) for rec in s), None)  # the record resume_check reads
    models = ((first or {}).get("provenance") or {}).get("models") or {}
    policy, critic = specs
    if critic is None or (isinstance(critic, str) and isinstance(policy, str) and critic == policy):
        critic = policy
    return stand_ins([policy, critic], [models.get("policy"), models.get("critic")]) or specs


def _setting_changes(old: dict[str, Any], new: dict[str, Any]) -> list[tuple[str, Any, Any]]:
    """(flag, value in the file, value now) for each setting that differs. A setting the file's
    provenance does not record (an older cai wrote it) is not compared."""
    out: list[tuple[str, Any, Any]] = []

    def cmp(flag: str, was: Any, now: Any, missing: Any = None) -> None:
        if was is not missing and was != now:
            out.append((flag, was, now))

    cmp("--seed", old.get("seed"), new.get("seed"))
    sampling, now_sampling = old.get("sampling") or {}, new.get("sampling") or {}
    for key, flag in (("temperature", "--temperature"), ("top_p", "--top-p")):
        cmp(flag, (sampling.get("answer") or {}).get(key), (now_sampling.get("answer") or {}).get(key))
    for kind in ("answer", "critique", "revision"):
        cmp(f"--{kind}-max-tokens", (sampling.get(kind) or {}).get("max_tokens"),
            (now_sampling.get(kind) or {}).get("max_tokens"))
    run, now_run = old.get("run") or {}, new.get("run") or {}
    all_shots = lambda n: -1 if n is None else n  # noqa: E731  (None and -1 both mean every example)
    if "few_shot" in run:
        cmp("--few-shot", all_shots(run["few_shot"]), all_shots(now_run.get("few_shot")))
    for key in ("principle_selection", "principles", "early_stop", "select"):
        cmp("--" + key.replace("_", "-"), run.get(key, _MISSING), now_run.get(key), _MISSING)
    if run.get("template_hash", now_run.get("template_hash")) != now_run.get("template_hash"):  # its wording changed
        was, now = run.get("template"), now_run.get("template")
        out.append(("--template", f"{was}, other wording" if was == now else was, now))
    if now_run.get("early_stop"):
        cmp("--early-stop-threshold", run.get("early_stop_threshold", _MISSING), now_run.get("early_stop_threshold"),
            _MISSING)
    cmp("--system-prompt", old.get("system_prompt", _MISSING), new.get("system_prompt"), _MISSING)
    if "prompts" in old and not same_source(old["prompts"], new.get("prompts")):
        out.append(("--data", old["prompts"], new.get("prompts")))
    return out


_MISSING = object()


def dropped_path(output: str | Path) -> Path:
    """``sl.jsonl`` -> ``sl.dropped.jsonl``: records the revision filter dropped, with their reasons."""
    p = Path(output)
    return p.with_name((p.name[: -len(".jsonl")] if p.name.endswith(".jsonl") else p.name) + ".dropped.jsonl")
