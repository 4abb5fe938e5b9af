"""When a ``cai label`` output may be resumed, and when a rerun on it needs no model.

A preference dataset must come from one labelling setup, so every way of making pairs (sampled
and judged, or constructed from revisions or contrastive prompts) checks the stored records
against the settings of this run before it adds to them, or before it reports a finished output
as done.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

from cai.errors import CAIError


def first_record(*stores: Any) -> dict[str, Any] | None:
    """The record the settings are read from: the output's first, else its skipped file's (a run
    whose every prompt was skipped has only those)."""
    return next((rec for s in stores for rec in s), None)


def done_prompts(*stores: Any) -> set[str]:
    done: set[str] = set()
    for store in stores:
        for rec in store:
            done.add(prompt_id(rec))
    return done


def prompt_id(rec: dict[str, Any]) -> str:
    return str(rec.get("prompt_id", str(rec["id"]).rsplit(":", 1)[0]))


def check_prompts(stores: Sequence[Any], prompts: Sequence[Any], source: str) -> None:
    """Refuse stored pairs of a prompt whose text has changed since (:mod:`cai.same_prompts`)."""
    from cai.same_prompts import check_same_prompts

    check_same_prompts(stores, {p.id: p.messages for p in prompts}, source=source,
                       prompt_of=lambda rec: rec.get("prompt"), id_of=prompt_id)


def finished(config: Any, policy: Any, feedback: Any, prompts: Sequence[Any], store: Any,
             skipped: Any) -> list[Any] | None:
    """Unstarted stand-ins for (policy, feedback) when every prompt is already labelled (its pairs
    kept or skipped) by models of the names the records carry; else None. A rerun on a finished
    output then starts no engine (:mod:`cai.backends.unstarted`)."""
    from cai.backends.unstarted import stand_ins

    done = done_prompts(store, skipped)
    if not prompts or any(p.id not in done for p in prompts):
        return None
    models = ((first_record(store, skipped) or {}).get("provenance") or {}).get("models") or {}
    return stand_ins(list(model_specs(config, policy, feedback)), [models.get("policy"), models.get("feedback")])


def model_specs(config: Any, policy: Any, feedback: Any) -> tuple[Any, Any]:
    """(policy, feedback) as given, else as ``config`` names them, none loaded: the feedback model is
    the policy where the policy labels its own pairs."""
    policy = policy if policy is not None else config.policy
    if feedback is None:
        feedback = policy if config.self_judged else config.feedback
    return policy, feedback


def unloaded_name(spec: Any, stored: Any) -> Any:
    """The name a model not loaded (the output is finished) would carry: ``stored`` where ``spec``
    could load it or only a load can tell (as for judged pairs), else the name ``spec`` loads first."""
    from cai.backends.unstarted import named, stand_in

    found = stand_in(spec, stored) or named(spec)
    return stored if isinstance(found, str) else found.name


def sampling_key(config: Any, n: int | None = None) -> dict[str, Any]:
    return {"temperature": config.temperature, "top_p": config.top_p, "max_tokens": config.max_tokens,
            "n": config.samples_per_prompt if n is None else n}


def pairing(config: Any) -> dict[str, Any]:
    """How the judged pairs were formed and kept, beside the judge's method."""
    return {"pairs": config.pairs, "max_pairs_per_prompt": config.max_pairs_per_prompt,
            "min_margin": config.min_margin}


def resume_check(path: Path, first: dict[str, Any] | None, now: dict[str, Any]) -> None:
    """Refuse to add pairs made another way (constitution, method, models, sampling, prompt
    source) to a file. A setting the stored records do not carry (an older cai wrote them) is not
    compared."""
    from cai.sources import same_source

    prov = (first or {}).get("provenance") or {}
    if not prov:
        return
    old = {"constitution": (prov.get("constitution") or {}).get("hash"), "label": prov.get("label"),
           "seed": prov.get("seed"), "models": prov.get("models"), "pairing": prov.get("pairing"),
           "sampling": {k: (prov.get("sampling") or {}).get(k) for k in ("temperature", "top_p", "max_tokens", "n")}}
    diff = [k for k in now if k in old and old[k] is not None and old[k] != now[k]]
    if "prompts" in now and prov.get("prompts") is not None and not same_source(prov["prompts"], now["prompts"]):
        diff.append(f"--data ({prov['prompts']!r} in the file, {now['prompts']!r} now)")
    if diff:
        raise CAIError(f"{path} was labelled with a different {', '.join(diff)}; rerun with those settings to resume, "
                       "or pass a new -o/--output to start fresh")
