"""RLAIF preference data: sample K answers per prompt, pair them, and let a feedback model label
each pair against the constitution (``cai label``).

Output records are TRL's conversational preference format, so ``DPOTrainer`` and
``RewardTrainer`` take the file as it is::

    {"id": "redteam-1a2b3c:0-1", "prompt_id": "redteam-1a2b3c",
     "prompt": [{"role": "user", "content": ...}],
     "chosen": [{"role": "assistant", "content": ...}], "rejected": [{"role": "assistant", ...}],
     "p_chosen": 0.71,                   # soft label: P(chosen is better), debiased and ensembled
     "orders": {"chosen_as_a": 0.83, "chosen_as_b": 0.59}, "agree": true,
     "principles": [{"id": ..., "p_chosen": ..., "chosen_as_a": ..., "chosen_as_b": ..., "agree": ...}],
     "samples": {"chosen": 0, "rejected": 1}, "provenance": {...}}

A run is resumable: the prompt is the unit of work (its K samples are drawn together, and all
its pairs are written in the same batch), so running the same command again skips finished
prompts. Pairs dropped by ``--min-margin`` and prompts whose samples were all identical are
kept in a sidecar ``OUT.skipped.jsonl``: the work is not lost, and a resumed run knows they are
done.
"""

from __future__ import annotations

import dataclasses
import itertools
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

from cai.config import option
from cai.errors import CAIError
from cai.outputs import inputs_of, overwrite_option
from cai.overlong import check_overlong, load_for_overlong
from cai.label.judge import (JudgeConfig, PairLabel, PrincipleScore, PrinciplePlan, few_shot_examples, label_pairs,
                             method_summary)
from cai.label.constructed import SOURCES, constructed_records, contrastive_pairs, revision_pairs
from cai.label.preference import check_clamp, is_tie, margin
from cai.label.resume import (check_prompts, done_prompts, finished, first_record, model_specs, pairing,
                              resume_check, sampling_key, unloaded_name)
from cai.progress import batched, progress
from cai.provenance import provenance
from cai.sources import list_builtin_prompt_sets
from cai.store import RecordStore
from cai.types import SamplingParams, group, keyed_seed

__all__ = ["LabelConfig", "JudgeConfig", "PairLabel", "label_pairs", "run_label", "form_pairs", "skipped_path"]


@dataclass
class LabelConfig(JudgeConfig):
    """``cai label``: options of the RLAIF labelling stage (CLI flags, YAML run file, Python API)."""

    policy: str = option("smollm2-135m", help="the policy: the model that writes the answers to compare",
                         flags=("-m", "--model"), aliases=("--policy",))
    feedback: str | None = option(None, help="the feedback model, which labels the pairs (default: the policy)",
                                  flags=("--judge",), aliases=("--feedback",))
    prompts: str = option("", help="prompt source: file (.jsonl/.json/.csv/.txt/.parquet), built-in set "
                          f"({', '.join(list_builtin_prompt_sets())}), hh-rlhf:PATH or hf:DATASET[:SPLIT]",
                          flags=("--data",), aliases=("--prompts",))
    output: str = option("", help="output JSONL (resumed if it exists)", flags=("-o", "--output"))
    samples_per_prompt: int = option(2, help="answers sampled per prompt (K >= 2)", flags=("-k", "--samples-per-prompt"))
    pairs: str = option("all", help="how pairs are made: 'all' (every two of the K answers) or 'adjacent' (0-1, "
                        "1-2, ...), labelled by the feedback model; 'revision' (a `cai critique` file given as "
                        "--data: its final revision over its first answer) or 'contrastive' (RLCD: an answer "
                        "sampled to meet a principle over one sampled to break it), labelled by construction")
    judge_filter: bool = option(False, help="with --pairs revision/contrastive: ask the feedback model too, record "
                                "its judge_p_chosen, and skip pairs it rejects")
    max_pairs_per_prompt: int = option(6, help="at most this many pairs per prompt (a seeded random subset)")
    temperature: float = option(1.0, help="sampling temperature of the policy")
    top_p: float = option(1.0, help="nucleus sampling of the policy")
    max_tokens: int = option(256, help="most tokens per sampled answer")
    min_margin: float | None = option(None, help="drop pairs whose |P(chosen) - P(rejected)| is at most this "
                                      "(0 drops exact ties); dropped pairs go to OUT.skipped.jsonl")
    limit: int | None = option(None, help="label only the first N prompts")
    field: str | None = option(None, help="column holding the prompt in a JSONL/CSV/Parquet source")
    shuffle: bool = option(False, help="shuffle prompts (with --seed) before --limit")
    batch_size: int = option(16, help="prompts per step (one generate call with n=K, one scoring call)")
    overlong: str = option("error", help="a conversation longer than the model's context: error (stop and name "
                           "it) or truncate (keep its last tokens; hf backend)")
    overwrite: bool = overwrite_option()

    @property
    def self_judged(self) -> bool:
        """Whether the policy labels its own pairs (no --judge, or the same model): one model then."""
        return self.feedback in (None, "", self.policy)

    def __post_init__(self) -> None:
        # Values are checked when the config is built, so `cai run`'s dry run refuses them too;
        # check() adds what a run needs (prompts, an output) before it starts.
        if self.limit is not None and self.limit < 1:
            raise ValueError(f"limit must be >= 1, got {self.limit}; leave it out to label every prompt")
        # |P(chosen) - P(rejected)| lies in [0, 1]: below 0 drops nothing, 1 or more drops every pair.
        if self.min_margin is not None and not 0 <= self.min_margin < 1:
            raise ValueError(f"--min-margin must be in [0, 1), got {self.min_margin}; 0 drops exact ties, "
                             "0.1 pairs the feedback model barely separates")
        SamplingParams(temperature=self.temperature, top_p=self.top_p, max_tokens=self.max_tokens)

    def check(self) -> None:
        if not self.prompts:
            raise CAIError(f"no prompts given; pass --data SRC (a file, {', '.join(list_builtin_prompt_sets())}, "
                           "hh-rlhf:PATH)")
        if not self.output:
            raise CAIError("no output file given; pass -o prefs.jsonl")
        if self.samples_per_prompt < 2:
            raise CAIError(f"--samples-per-prompt must be at least 2 to form pairs, got {self.samples_per_prompt}")
        if self.pairs not in ("all", "adjacent", "revision", "contrastive"):
            raise CAIError(f"--pairs must be all, adjacent, revision or contrastive, got {self.pairs!r}")
        if self.judge_filter and self.pairs in ("all", "adjacent"):
            raise CAIError("--judge-filter is for --pairs revision or contrastive; sampled pairs are always judged")
        if self.max_pairs_per_prompt < 1:
            raise CAIError("--max-pairs-per-prompt must be at least 1")
        if self.batch_size < 1:
            raise CAIError("--batch-size must be at least 1")
        try:
            check_overlong(self.overlong, ("error", "truncate"))
        except ValueError as e:
            raise CAIError(str(e)) from None


def skipped_path(output: str | Path) -> Path:
    """``prefs.jsonl`` -> ``prefs.skipped.jsonl``: pairs and prompts that produced no record."""
    p = Path(output)
    stem = p.name[: -len(".jsonl")] if p.name.endswith(".jsonl") else p.name
    return p.with_name(stem + ".skipped.jsonl")


def form_pairs(texts: Sequence[str], mode: str, cap: int, rng: random.Random) -> list[tuple[int, int]]:
    """Index pairs (i < j) of distinct answers: all of them or adjacent ones, at most ``cap``
    (a random subset, returned in order). Identical answers make no pair: nothing to prefer."""
    n = len(texts)
    cand = itertools.combinations(range(n), 2) if mode == "all" else ((i, i + 1) for i in range(n - 1))
    pairs = [(i, j) for i, j in cand if texts[i].strip() != texts[j].strip()]
    if len(pairs) > cap:
        pairs = sorted(rng.sample(pairs, cap))
    return pairs


def _oriented(s: PairLabel | PrincipleScore, x_wins: bool) -> dict[str, Any]:
    """Re-express P(x better) as P(chosen better): if y won, y as (A) was order 2, so
    P(y | y is A) = 1 - p_x_as_b and P(y | y is B) = 1 - p_x_as_a."""
    if x_wins:
        return {"p_chosen": s.p, "chosen_as_a": s.p_x_as_a, "chosen_as_b": s.p_x_as_b}
    return {"p_chosen": 1.0 - s.p, "chosen_as_a": None if s.p_x_as_b is None else 1.0 - s.p_x_as_b,
            "chosen_as_b": 1.0 - s.p_x_as_a}


def pair_record(prompt: Any, texts: Sequence[str], i: int, j: int, label: PairLabel, prov: dict[str, Any]) -> dict[str, Any]:
    tie = is_tie(label.p)
    x_wins = tie or label.p > 0.5  # a tie keeps sample order: the lower index is "chosen", marked tie
    c, r = (i, j) if x_wins else (j, i)
    top = _oriented(label, x_wins)
    rec: dict[str, Any] = {
        "id": f"{prompt.id}:{i}-{j}", "prompt_id": prompt.id, "prompt": list(prompt.messages),
        "chosen": [{"role": "assistant", "content": texts[c]}],
        "rejected": [{"role": "assistant", "content": texts[r]}],
        "p_chosen": top["p_chosen"], "tie": tie,
        "orders": {"chosen_as_a": top["chosen_as_a"], "chosen_as_b": top["chosen_as_b"]},
        "agree": label.agree,
        "principles": [{"id": s.id, **_oriented(s, x_wins), "agree": s.agree} for s in label.principles],
        "samples": {"chosen": c, "rejected": r},
    }
    if any(s.reasoning for s in label.principles):
        # Reasoning is written per order: order 1 had x as (A), order 2 had y as (A).
        rec["reasoning"] = [{"principle": s.id, "texts": list(s.reasoning)} for s in label.principles]
    rec["provenance"] = prov
    return rec


def _stores(config: LabelConfig) -> tuple[RecordStore, RecordStore]:
    """The output and its skipped-pairs sidecar; a bad output path fails here, before any model work."""
    mine = dict(stage="label", overwrite=config.overwrite, inputs=inputs_of(config))
    return RecordStore(config.output, **mine), RecordStore(skipped_path(config.output), **mine)


def run_label(config: LabelConfig, *, policy: Any = None, feedback: Any = None, prompts: Sequence[Any] | None = None,
              constitution: Any = None, show_progress: bool | None = None) -> dict[str, Any]:
    """Run the labelling stage; returns counts and paths. Backends, prompts and the constitution
    may be passed in (objects) instead of being loaded from the config's names."""
    config.check()
    # A bad output path fails before any model loads or any answer is sampled.
    store, skipped = _stores(config)
    if constitution is None:
        from cai.constitution import load_constitution

        constitution = load_constitution(config.constitution)
    if config.pairs in SOURCES:
        return _run_constructed(config, policy=policy, feedback=feedback, prompts=prompts,
                                constitution=constitution, show_progress=show_progress)
    if prompts is None:
        from cai.sources import load_prompts

        prompts = load_prompts(config.prompts, field=config.field, limit=config.limit, shuffle=config.shuffle,
                               seed=config.seed)
    # Fail on a bad method before any model is loaded or any answer sampled.
    PrinciplePlan(constitution, config.principles)
    few_shot_examples(constitution, config.few_shot)
    check_clamp(config.cot_clamp)
    method_info = method_summary(config, constitution)
    check_prompts((store, skipped), prompts, config.prompts)
    first = first_record(store, skipped)
    resume_check(store.path, first, {"constitution": constitution.hash, "label": method_info, "seed": config.seed,
                                     "sampling": sampling_key(config), "pairing": pairing(config),
                                     "prompts": config.prompts})

    ready = finished(config, policy, feedback, prompts, store, skipped)
    if ready:
        policy, feedback = ready
    policy = load_for_overlong(policy if policy is not None else config.policy, config.overlong)
    if feedback is None:
        feedback = policy if config.self_judged else load_for_overlong(config.feedback, config.overlong)
    else:
        feedback = load_for_overlong(feedback, config.overlong)

    resume_check(store.path, first, {"models": {"policy": policy.name, "feedback": feedback.name}})
    done = done_prompts(store, skipped)
    todo = [p for p in prompts if p.id not in done]
    base = SamplingParams(temperature=config.temperature, top_p=config.top_p, max_tokens=config.max_tokens,
                          n=config.samples_per_prompt, seed=config.seed)
    counts = {"prompts": len(prompts), "already_done": len(prompts) - len(todo), "pairs": 0, "dropped": 0,
              "no_pairs": 0}
    bar = progress(len(prompts), "label", unit="prompt", initial=len(prompts) - len(todo), enabled=show_progress)
    try:
        for batch in batched(todo, config.batch_size):
            # One seed per prompt: a prompt samples the same whatever batch a resumed run puts it in.
            params = dataclasses.replace(base, seeds=tuple(keyed_seed(config.seed, "label", p.id) for p in batch))
            prov = provenance(constitution=constitution, models={"policy": policy.name, "feedback": feedback.name},
                              sampling=base.to_dict(), seed=config.seed, stage="label", label=method_info,
                              pairing=pairing(config), prompts=config.prompts)
            samples = [[c.text for c in g] for g in group(policy.generate([p.messages for p in batch], params),
                                                          config.samples_per_prompt)]
            items, keep, drop = [], [], []
            for prompt, texts in zip(batch, samples):
                pairs = form_pairs(texts, config.pairs, config.max_pairs_per_prompt,
                                   random.Random(f"{config.seed}:{prompt.id}:pairs"))
                if not pairs:
                    drop.append({"id": f"{prompt.id}:-", "prompt_id": prompt.id, "reason": "identical samples",
                                 "samples": texts, "provenance": prov})
                    counts["no_pairs"] += 1
                items += [(prompt, texts, i, j) for i, j in pairs]
            labels = label_pairs(feedback, [(p.messages, t[i], t[j]) for p, t, i, j in items], constitution, config,
                                 keys=[f"{p.id}:{i}-{j}" for p, _, i, j in items])
            for (prompt, texts, i, j), lab in zip(items, labels):
                rec = pair_record(prompt, texts, i, j, lab, prov)
                if config.min_margin is not None and margin(lab.p) <= config.min_margin:
                    drop.append({**rec, "reason": f"margin {margin(lab.p):.4f} <= {config.min_margin}"})
                    counts["dropped"] += 1
                else:
                    keep.append(rec)
            # The dataset first: a crash between the two writes can lose only dropped pairs.
            store.append(keep)
            skipped.append(drop)
            counts["pairs"] += len(keep)
            bar.update(len(batch))
    finally:
        bar.close()
    counts.update(output=str(config.output), skipped_file=str(skipped_path(config.output)), total_records=len(store))
    return counts


def _run_constructed(config: LabelConfig, *, policy: Any, feedback: Any, prompts: Sequence[Any] | None,
                     constitution: Any, show_progress: bool | None) -> dict[str, Any]:
    """``--pairs revision`` and ``--pairs contrastive``: pairs labelled by how they were made."""
    from cai.backends import load_backend

    if config.pairs == "contrastive":
        PrinciplePlan(constitution, config.principles)
    if config.pairs == "revision":
        from cai.store import read_records

        made = revision_pairs(read_records(config.prompts), config.prompts)
        if config.limit is not None:
            made = made[: config.limit]
        units: list[Any] = made
    else:
        if prompts is None:
            from cai.sources import load_prompts

            prompts = load_prompts(config.prompts, field=config.field, limit=config.limit, shuffle=config.shuffle,
                                   seed=config.seed)
        units = list(prompts)
    unit_id = (lambda u: u[0].id) if config.pairs == "revision" else (lambda u: u.id)
    store, skipped = _stores(config)
    check_prompts((store, skipped), [u[0] if config.pairs == "revision" else u for u in units], config.prompts)
    label_info = {"pairs": config.pairs, "judge_filter": config.judge_filter,
                  **(method_summary(config, constitution) if config.judge_filter else {})}
    first = first_record(store, skipped)
    # The records depend on the constitution where it writes the system prompts or the judge's questions,
    # and on the sampling where the policy answers; a revision pair's prompt source is a critique file.
    now: dict[str, Any] = {"label": label_info}
    if config.pairs == "contrastive":
        now.update(constitution=constitution.hash, seed=config.seed, sampling=sampling_key(config, n=1),
                   prompts=config.prompts)
    elif config.judge_filter:
        now["constitution"] = constitution.hash
    resume_check(store.path, first, now)
    done = done_prompts(store, skipped)
    todo = [u for u in units if unit_id(u) not in done]
    # Nothing left to make: no model is started, and the stored names are checked against the specs.
    policy_spec, feedback_spec = model_specs(config, policy, feedback)
    need_policy = config.pairs == "contrastive" and bool(todo)
    policy = load_backend(policy_spec) if need_policy else None
    if config.judge_filter and todo:
        if feedback is not None:
            feedback = load_backend(feedback)
        elif policy is not None and config.self_judged:
            feedback = policy  # one model in memory when the policy judges itself
        else:
            feedback = load_backend(config.feedback or config.policy)
    counts = {"prompts": len(units), "already_done": len(units) - len(todo), "pairs": 0, "dropped": 0, "no_pairs": 0}
    base = SamplingParams(temperature=config.temperature, top_p=config.top_p, max_tokens=config.max_tokens,
                          seed=config.seed)
    stored = ((first or {}).get("provenance") or {}).get("models") or {}
    models = {"policy": (policy.name if policy else unloaded_name(policy_spec, stored.get("policy")))
              if config.pairs == "contrastive" else None,
              "feedback": (feedback.name if todo else unloaded_name(feedback_spec, stored.get("feedback")))
              if config.judge_filter else None}
    resume_check(store.path, first, {"models": models})
    with progress(len(units), f"label ({config.pairs})", unit="prompt", initial=len(units) - len(todo),
                  enabled=show_progress) as bar:
        for batch in batched(todo, config.batch_size):
            prov = provenance(constitution=constitution, models=models, sampling=base.to_dict(), seed=config.seed,
                              stage="label", label=label_info, prompts=config.prompts)
            made = batch if config.pairs == "revision" else contrastive_pairs(policy, batch, constitution, config, base)
            keep, drop = constructed_records(made, config.pairs, prov, feedback=feedback, constitution=constitution,
                                             method=config, judge_filter=config.judge_filter)
            store.append(keep)
            skipped.append(drop)
            counts["pairs"] += len(keep)
            counts["dropped"] += len(drop)
            bar.update(len(batch))
    counts.update(output=str(config.output), skipped_file=str(skipped_path(config.output)), total_records=len(store))
    return counts
