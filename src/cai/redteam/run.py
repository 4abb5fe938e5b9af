"""``cai redteam``: wrap harmful behaviors in attacks, answer them with the target model in batches,
grade every answer, and write the attack success rate per attack and per harm category.

Output folder DIR:

* ``results.json``: the shared eval result (:mod:`cai.evals.results`), task ``redteam``: headline
  ``asr`` (plus ``asr_attacks``, ``any_attack_asr``, ``refusal_rate``), breakdowns ``by_attack``,
  ``by_category`` and ``by_template``, each with a bootstrap 95% interval;
* ``results.examples.jsonl``: one record per (behavior, attack), written batch by batch through a
  :class:`~cai.store.RecordStore`, so a killed run resumes where it stopped;
* ``worst_cases.jsonl``: the worst successful attacks, one per behavior first;
* ``revisions.jsonl`` (``--revise``): the failures critiqued and revised, a ``cai critique`` file.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

from cai.config import option, to_dict
from cai.errors import CAIError
from cai.evals.graders import GraderConfig
from cai.evals.metrics import check_bootstrap
from cai.evals.overlap import train_prompts_option
from cai.outputs import overwrite_option
from cai.types import SamplingParams, check_temperature, keyed_seed

RESULT = "results.json"
EXAMPLES = "results.examples.jsonl"
WORST = "worst_cases.jsonl"
REVISIONS = "revisions.jsonl"


@dataclass
class RedteamConfig(GraderConfig):
    """The grader flags (--grader, --judge, -c, --threshold, ...) are those of every graded eval."""

    model: str = option("smollm2-135m", help="target model to attack (alias, folder or backend spec)",
                        flags=("-m", "--model"))
    behaviors: str = option("advbench", help="harmful behaviors: advbench (shipped) or a JSONL/CSV file (HarmBench, "
                            "JailbreakBench, forbidden questions, your own); categories are kept where given",
                            flags=("--data",), aliases=("--behaviors",))
    attacks: tuple[str, ...] = option((), help="attacks to run (default: every transform, plus jailbreak with "
                                      "--jailbreaks and attacker with --attacker); see docs/redteam.md")
    output: str | None = option(None, help="output folder (running the same command again resumes it)",
                                flags=("-o", "--output"))
    limit: int | None = option(None, help="use at most N behaviors")
    shuffle: bool = option(False, help="shuffle the behaviors (with --seed) before --limit")
    field: str | None = option(None, help="column holding the behavior text (default: detected)")
    category_field: str | None = option(None, help="column holding the harm category (default: detected: category, "
                                        "SemanticCategory, content_policy_name, ...)")
    seed: int = option(0, help="seed for shuffling, template sampling, the attacker and the bootstrap")
    bootstrap: int = option(2000, help="bootstrap resamples for the 95 percent intervals")
    jailbreaks: str | None = option(None, help="in-the-wild jailbreak templates: a CSV with columns prompt and "
                                    "jailbreak (jailbreak_llms shape), or a folder of them")
    jailbreak_templates: int = option(5, help="how many usable templates to sample (behavior i gets template i mod N)")
    jailbreak_max_chars: int = option(3000, help="skip templates longer than this (they must fit the context)")
    attacker: str | None = option(None, help="a model that writes new red-team requests per harm category from a "
                                  "few examples (Perez et al. 2022); adds the 'attacker' attack")
    attacker_shots: int = option(4, help="examples of the category shown to the attacker")
    attacker_temperature: float = option(1.0, help="sampling temperature of the attacker")
    grader_agreement: str | None = option(None, help="result file of `cai eval grader` for this grader; its "
                                          "agreement with human labels is copied into the result")
    system_prompt: str | None = option(None, help="system message for the target model (default: none)")
    temperature: float = option(0.0, help="target sampling temperature (0 = greedy)")
    max_tokens: int = option(256, help="token limit of each answer")
    batch_size: int = option(64, help="items answered and graded per backend call; also the unit of saving")
    worst: int = option(20, help="how many worst cases to keep")
    revise: bool = option(False, help="critique and revise the successful attacks with --revise-constitution and "
                          "write them as SL-CAI records (revisions.jsonl, a cai critique file)")
    critic: str | None = option(None, help="model that critiques and revises with --revise (default: the target)")
    revise_constitution: str = option("red-team", help="constitution for --revise")
    revise_rounds: int = option(1, help="critique-revision rounds per failure with --revise")
    revise_limit: int | None = option(None, help="revise at most N failures, the worst first (one per behavior "
                                      "before any behavior's second); default: all")
    train_prompts: tuple[str, ...] = train_prompts_option()
    overwrite: bool = overwrite_option()

    def __post_init__(self) -> None:
        self.attacks = tuple(a for part in self.attacks for a in str(part).split(",") if a.strip())
        self.attacks = tuple(a.strip() for a in self.attacks)
        for name in ("jailbreak_templates", "jailbreak_max_chars", "attacker_shots", "max_tokens", "batch_size",
                     "revise_rounds"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.revise_limit is not None and self.revise_limit < 1:
            raise ValueError(f"revise_limit must be >= 1, got {self.revise_limit}")
        if self.worst < 0:
            raise ValueError(f"worst must be >= 0, got {self.worst}")
        check_temperature(self.temperature)
        check_temperature(self.attacker_temperature, "attacker_temperature")
        check_bootstrap(self.bootstrap)

    def sampling(self, keys: Sequence[str] = ()) -> SamplingParams:
        """The target's sampling; ``keys`` (the items' ids) give each answer its own seed, the same
        whatever batch a resumed run puts the item in."""
        seeds = tuple(keyed_seed(self.seed, f"target:{k}") for k in keys) if keys else None
        return SamplingParams(temperature=self.temperature, max_tokens=self.max_tokens, seed=self.seed, seeds=seeds)


# What a red-team folder holds, by kind (cai.outputs.foreign): a rerun resumes or rewrites these.
OWN = {RESULT: "result:redteam", EXAMPLES: "records:redteam", WORST: "records:redteam", REVISIONS: "records:critique"}


def _check_output(config: RedteamConfig) -> Path:
    from cai.outputs import check_folder, inputs_of

    if not config.output:
        raise CAIError("no output given; pass -o DIR (running the same command again resumes it)")
    return check_folder(config.output, OWN, flag="-o", inputs=inputs_of(config), overwrite=config.overwrite,
                        command="cai redteam")


# Settings that change what an answer or grade means; records made with others must not be mixed.
_RUN_KEYS = ("model", "grader", "judge", "constitution", "threshold", "judge_orders", "grader_template",
             "system_prompt", "temperature", "max_tokens", "seed", "jailbreaks", "jailbreak_templates", "jailbreak_max_chars", "attacker", "attacker_shots")


def _run_block(config: RedteamConfig) -> dict[str, Any]:
    return {k: getattr(config, k) for k in _RUN_KEYS}


def _resume_check(store: Any, config: RedteamConfig) -> None:
    first = next(iter(store), None)
    if first is None:
        return
    old, new = first.get("run") or {}, _run_block(config)
    diffs = [k for k in _RUN_KEYS if k in old and old[k] != new[k]]
    if diffs:
        raise CAIError(f"{store.path} was made with a different {', '.join(diffs)}; rerun with the same settings "
                       "or pass a new -o folder")


def _same(a: str | None, b: str) -> bool:
    return a is None or a == b


def _grader_block(grader: Any, agreement_path: str | None) -> dict[str, Any]:
    from cai.evals.graders.agreement import agreement_summary

    block = {"name": grader.name, "spec": grader.spec, **grader.describe()}
    block["agreement"] = agreement_summary(agreement_path, grader) if agreement_path else None
    return block


def run_redteam(config: RedteamConfig, *, target: Any = None, grader: Any = None, attacker: Any = None,
                critic: Any = None, show_progress: bool | None = None,
                on_batch: Callable[[list[dict[str, Any]]], None] | None = None) -> dict[str, Any]:
    """Run the red-team job of ``config`` and write its folder. ``target``/``grader``/``attacker``/
    ``critic`` override the config's specs with ready objects (tests, benches). Returns a summary
    with the result, its paths and, with ``--revise``, the revision summary."""
    from cai.backends import load_backend
    from cai.evals.overlap import held_out
    from cai.evals.results import EvalResult, write_result
    from cai.progress import progress
    from cai.provenance import provenance
    from cai.redteam import attacker as atk
    from cai.redteam.attacks import ATTACKER, attack_names, build_items, check_attacks
    from cai.redteam.behaviors import load_behaviors
    from cai.redteam.jailbreaks import load_templates, sample_templates
    from cai.redteam.summary import is_success, metrics, rank_failures, worst_cases
    from cai.store import RecordStore

    # Everything that can be wrong with the input is checked before any model loads.
    out = _check_output(config)
    if grader is None:
        config.check_grader()
    use_attacker = bool(config.attacker or attacker is not None)
    attacks = check_attacks(config.attacks or attack_names(jailbreaks=bool(config.jailbreaks), attacker=use_attacker),
                            jailbreaks=bool(config.jailbreaks), attacker=use_attacker)
    behaviors = load_behaviors(config.behaviors, field=config.field, category_field=config.category_field,
                               limit=config.limit, shuffle=config.shuffle, seed=config.seed)
    # Measured on the plain behaviors: an attack wraps the same request in other words.
    overlap = held_out([b.text for b in behaviors], config.train_prompts)
    templates = []
    if "jailbreak" in attacks:
        templates = sample_templates(load_templates(config.jailbreaks, max_chars=config.jailbreak_max_chars),
                                     config.jailbreak_templates, config.seed)
    items = build_items(behaviors, attacks, templates)
    if config.grader_agreement and not Path(config.grader_agreement).is_file():
        raise CAIError(f"--grader-agreement {config.grader_agreement}: no such file; run cai eval grader first")
    if config.revise:
        from cai.constitution import load_constitution

        revise_constitution = load_constitution(config.revise_constitution)
    out.mkdir(parents=True, exist_ok=True)
    store = RecordStore(out / EXAMPLES, stage="redteam", overwrite=config.overwrite)
    _resume_check(store, config)
    todo = store.todo(items, key=lambda it: it.id)

    target_b = load_backend(target if target is not None else config.model)
    if grader is None:
        grader = config.build_grader(target_b, model_spec=config.model)
    grader_block = _grader_block(grader, config.grader_agreement)
    attacker_b = None
    if ATTACKER in attacks:
        attacker_b = attacker if attacker is not None else (
            target_b if config.attacker == config.model else load_backend(config.attacker))
    prov = provenance(models={"target": target_b.name, **({"attacker": attacker_b.name} if attacker_b else {})},
                      sampling={"target": config.sampling().to_dict()}, seed=config.seed, stage="redteam",
                      grader=grader.spec, behaviors=config.behaviors)
    run_block = _run_block(config)

    with progress(len(items), "redteam", unit="prompt", initial=len(items) - len(todo), enabled=show_progress) as bar:
        for start in range(0, len(todo), config.batch_size):
            batch = todo[start : start + config.batch_size]
            messages = [list(it.messages) for it in batch]
            raw: dict[int, str] = {}
            need = [i for i, it in enumerate(batch) if it.attack == ATTACKER]
            if need:
                bar.set_postfix_str("attacker")
                written = atk.write_requests(attacker_b, [batch[i].behavior for i in need], behaviors,
                                             shots=config.attacker_shots, seed=config.seed,
                                             temperature=config.attacker_temperature, max_tokens=config.max_tokens)
                for i, (request, text) in zip(need, written):
                    messages[i] = [{"role": "user", "content": request}]
                    raw[i] = text
            bar.set_postfix_str("answers")
            system = [{"role": "system", "content": config.system_prompt}] if config.system_prompt else []
            answers = target_b.generate([system + m for m in messages], config.sampling([it.id for it in batch]))
            if len(answers) != len(batch):
                raise RuntimeError(f"backend returned {len(answers)} answers for {len(batch)} prompts")
            bar.set_postfix_str("grading")
            # The grader sees what was really asked, not the wrapper: the plain behavior, or the
            # attacker's request, so a judge weighs harm without reading a jailbreak first.
            asked = [messages[i] if i in raw else [{"role": "user", "content": it.behavior.text}]
                     for i, it in enumerate(batch)]
            grades = grader.grade(asked, [a.text for a in answers])
            if len(grades) != len(batch):
                raise RuntimeError(f"grader returned {len(grades)} grades for {len(batch)} answers")
            records = []
            for i, (it, ans, g) in enumerate(zip(batch, answers, grades)):
                b = it.behavior
                rec = {"id": it.id, "behavior_id": b.id, "behavior": b.text, "category": b.category,
                       "source": b.source, "attack": it.attack, "template_id": it.template_id,
                       "messages": messages[i], "answer": ans.text, "finish_reason": ans.finish_reason,
                       "grade": g.to_json(), "success": is_success(g), "run": run_block, "provenance": prov}
                if i in raw:
                    rec["attacker_output"] = raw[i]
                records.append(rec)
            store.append(records)
            bar.update(len(batch))
            if on_batch:
                on_batch(records)

    wanted = {it.id for it in items}
    records = [r for r in store if r["id"] in wanted]
    head, breakdown = metrics(records, attacks, seed=config.seed, n_resamples=config.bootstrap)
    result = EvalResult(task="redteam", model=target_b.name, metrics=head, grader=grader_block, breakdown=breakdown,
                        examples=EXAMPLES, overlap=overlap,
                        provenance={**prov, "config": to_dict(config), "attacks": attacks,
                                    "behaviors": {"source": config.behaviors, "count": len(behaviors)},
                                    "jailbreak_templates": [{"id": t.id, "source": t.source} for t in templates],
                                    "worst_cases": WORST})
    write_result(result, out / RESULT)
    worst = worst_cases(records, config.worst)
    tmp = out / (WORST + ".tmp")
    tmp.write_text("".join(json.dumps(w, ensure_ascii=False) + "\n" for w in worst), encoding="utf-8")
    tmp.replace(out / WORST)
    summary: dict[str, Any] = {"output": str(out), "result": str(out / RESULT), "examples": str(out / EXAMPLES),
                               "worst_cases": str(out / WORST), "items": len(items), "written": len(todo),
                               "skipped": len(items) - len(todo), "result_obj": result}
    if config.revise:
        from cai.redteam.revise import revise_failures

        critic_b = critic if critic is not None else (
            target_b if _same(config.critic, config.model) else load_backend(config.critic))
        failures = rank_failures(records)[: config.revise_limit]
        summary["revise"] = revise_failures(
            failures, out / REVISIONS, target=target_b, critic=critic_b, constitution=revise_constitution,
            rounds=config.revise_rounds, max_tokens=config.max_tokens,
            batch_size=config.batch_size, seed=config.seed, show_progress=show_progress, overwrite=config.overwrite)
    return summary
