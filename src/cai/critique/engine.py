"""The SL-CAI engine: first answers, then rounds of critique and revision against a constitution.

The whole batch advances one step at a time through the backend: one ``generate`` call for every
first answer of the batch, then per round (optionally) one ``score_options`` call for the early-stop
judgement, one ``generate`` for all critiques and one for all revisions. A batch of B prompts and R
rounds therefore costs 1 + 2R backend calls, not B * (1 + 2R), which is what lets vLLM or the
batched hf backend run at full throughput.

Records are written in TRL's formats (``messages``; ``prompt``/``chosen``/``rejected``;
``prompt``/``completion``) so that a critique file trains with SFTTrainer or DPOTrainer as it is.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Callable, Sequence

from cai.critique import prompts as cp
from cai.config import option, to_dict
from cai.critique.filter import example_texts, filter_record, kept_nothing
from cai.critique.records import dropped_path, finished_models, provenance_of, resume_check
from cai.critique.plan import PromptItem, choose_principles, principle_pool, prompt_id, prompt_items  # noqa: F401
from cai.errors import CAIError
from cai.outputs import inputs_of, overwrite_option
from cai.overlong import check_overlong, load_for_overlong
from cai.sources import list_builtin_prompt_sets
from cai.types import SamplingParams, group, keyed_seed

SELECTIONS = ("random", "round-robin", "list")


@dataclass
class CritiqueConfig:
    model: str = option("smollm2-135m", help="policy model that writes the first answers (alias, folder or "
                        "backend spec such as hf:PATH, vllm:PATH, openai:URL#MODEL, mock:)", flags=("-m", "--model"))
    critic: str | None = option(None, help="model that critiques and revises (default: the policy model)")
    constitution: str = option("default", help="constitution: built-in name or file", flags=("-c", "--constitution"))
    prompts: str | None = option(None, help="prompt source: file (.jsonl/.json/.csv/.txt/.parquet), built-in set "
                                 f"({', '.join(list_builtin_prompt_sets())}), hh-rlhf:PATH or hf:DATASET[:SPLIT]",
                                 flags=("--data",), aliases=("--prompts",))
    output: str | None = option(None, help="output file (.jsonl; .parquet writes a JSONL beside it and exports)",
                                flags=("-o", "--output"))
    rounds: int = option(1, help="critique-revision rounds per prompt")
    principle_selection: str = option("random", help="how each round picks its principle: random (seeded per "
                                      "prompt, weighted), round-robin, or list (--principles in order)")
    principles: tuple[str, ...] = option((), help="principle ids: the order for 'list', else restricts the pool")
    seed: int = option(0, help="seed for principle choice, prompt shuffling and sampling")
    limit: int | None = option(None, help="use at most N prompts")
    shuffle: bool = option(False, help="shuffle the prompts (with --seed) before --limit")
    field: str | None = option(None, help="column holding the prompt text in a JSONL/CSV/Parquet source")
    batch_size: int = option(64, help="prompts advanced together per backend call; also the unit of saving. Larger "
                             "batches keep vllm busier (on a 2-core CPU, 200 ran 200 prompts x 2 rounds a tenth faster "
                             "than 64) but a kill loses the whole batch in flight")
    temperature: float = option(0.7, help="sampling temperature for answers, critiques and revisions (0 = greedy)")
    top_p: float = option(1.0, help="nucleus sampling top-p")
    answer_max_tokens: int = option(256, help="token limit of the first answer")
    critique_max_tokens: int = option(192, help="token limit of each critique")
    revision_max_tokens: int = option(256, help="token limit of each revision")
    few_shot: int | None = option(None, help="how many of the constitution's worked examples to show the critic "
                                  "(default and -1: all, as in cai label; 0 for none)")
    early_stop: bool = option(False, help="before each critique, ask the critic (scored yes/no, no generation) whether "
                              "the answer already meets the principle, and stop revising it if so")
    early_stop_threshold: float = option(0.5, help="P(yes) at or above which a prompt stops revising")
    system_prompt: str | None = option(None, help="system message for every call of the chain (first answer, "
                                       "critiques, revisions; default: the constitution's own; '' for none). Records "
                                       "keep the source prompt without it, so training distils its effect")
    template: str = option("critique", help="wording of the critic's turns: built-in template name or YAML path")
    revision_mode: str = option("critique", help="critique: the critic revises inside its chat (the paper's way); "
                                "distill: the revision is a fresh answer to the user's message with the principle and "
                                "critique in a system prompt, so it is always shaped as an answer")
    samples: int = option(1, help="best of K: revisions sampled per round, of which --select keeps one")
    select: str = option("filter", help="how best of K picks a revision: 'filter' (the first that passes the "
                         "revision filter), 'refusal-strings' (prefers one that refuses, then one that passes the "
                         "filter), or a reward spec (a PM folder, module:function) whose highest score wins")
    filter: bool = option(False, help="drop records whose revisions are not answers (commentary, copies of the "
                          "critique or an example, off topic, loops) to OUT.dropped.jsonl, and keep the last good "
                          "revision as the final answer; `cai data stats` counts the reasons")
    format: str = option("jsonl", help="output format: jsonl or parquet (JSONL is always kept for resuming)")
    overlong: str = option("error", help="a conversation longer than the model's context: error (stop and name "
                           "it) or truncate (keep its last tokens; hf backend)")
    overwrite: bool = overwrite_option()

    def __post_init__(self) -> None:
        if self.rounds < 1:
            raise ValueError(f"rounds must be >= 1, got {self.rounds} (0 rounds would write chosen == rejected); "
                             "for plain answers use cai generate")
        if self.principle_selection not in SELECTIONS:
            raise ValueError(f"principle_selection {self.principle_selection!r} is unknown; use one of {', '.join(SELECTIONS)}")
        if self.principle_selection == "list" and not self.principles:
            raise ValueError("principle_selection 'list' needs principle ids: pass --principles ID [ID ...]")
        if self.batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {self.batch_size}")
        if self.limit is not None and self.limit < 1:
            raise ValueError(f"limit must be >= 1, got {self.limit}; leave it out to use every prompt")
        if not 0.0 <= self.early_stop_threshold <= 1.0:
            raise ValueError(f"early_stop_threshold must be within [0, 1], got {self.early_stop_threshold}")
        if self.few_shot is not None and self.few_shot < -1:
            raise ValueError(f"few_shot must be -1 (all), 0 (none) or a count, got {self.few_shot}")
        if self.revision_mode not in ("critique", "distill"):
            raise ValueError(f"revision_mode {self.revision_mode!r} is unknown; use critique or distill")
        if self.samples < 1:
            raise ValueError(f"samples must be >= 1, got {self.samples}")
        check_overlong(self.overlong, ("error", "truncate"))
        if self.format not in ("jsonl", "parquet"):
            raise ValueError(f"format {self.format!r} is unknown; use jsonl or parquet")
        self.principles = tuple(self.principles)
        for kind in ("answer", "critique", "revision"):
            self.sampling(kind)  # temperature, top_p and token limits fail now, not after the model loads

    def sampling(self, kind: str, stop: Sequence[str] = (), *, keys: Sequence[str] | None = None) -> SamplingParams:
        """Sampling for one step. ``keys`` name the step of each conversation (its prompt's id and
        round), so each draws its own random stream, reproducibly and whatever batch it is in."""
        tokens = {"answer": self.answer_max_tokens, "critique": self.critique_max_tokens,
                  "revision": self.revision_max_tokens}[kind]
        seeds = None if keys is None else tuple(keyed_seed(self.seed, f"{kind}:{k}") for k in keys)
        return SamplingParams(temperature=self.temperature, top_p=self.top_p, max_tokens=tokens,
                              stop=tuple(stop) if kind != "answer" else (), seed=self.seed, seeds=seeds,
                              n=self.samples if kind == "revision" else 1)


# -- the engine -----------------------------------------------------------------------------------

@dataclass
class _State:
    item: PromptItem
    principles: list[Any]
    initial: str = ""
    answer: str = ""
    steps: list[dict[str, Any]] = field(default_factory=list)
    active: bool = True
    prompt_tokens: int = 0
    completion_tokens: int = 0

    def add_usage(self, completion: Any) -> None:
        self.prompt_tokens += int(completion.prompt_tokens or 0)
        self.completion_tokens += int(completion.completion_tokens or 0)


class _Engine:
    def __init__(self, policy: Any, critic: Any, constitution: Any, config: CritiqueConfig) -> None:
        self.policy, self.critic, self.constitution, self.config = policy, critic, constitution, config
        self.template = cp.CritiqueTemplate.load(config.template)
        self.pool = principle_pool(constitution, config)
        examples = tuple(constitution.examples)
        if config.few_shot is not None and config.few_shot >= 0:  # -1, like None, means all
            examples = examples[: config.few_shot]
        self.shots = cp.few_shot_turns(examples, self.template)
        # One system message for the whole chain (first answer and critic turns); "" turns it off.
        self.system = (config.system_prompt if config.system_prompt is not None else constitution.system_prompt) or None
        if config.revision_mode == "distill" and not self.template.distill_system:
            raise CAIError(f"{self.template.source} has no distill_system wording, which --revision-mode distill needs")
        from cai.critique.select import Selector

        self.selector = Selector(config.select, constitution)

    def run(self, items: Sequence[PromptItem], on_step: Callable[[str], None] | None = None) -> list[dict[str, Any]]:
        """Advance the whole batch step by step; ``on_step`` hears the name of each step as it starts."""
        cfg, t = self.config, self.template
        note = on_step or (lambda _: None)
        states = [_State(it, choose_principles(it.id, it.index, cfg.rounds, self.pool, cfg)) for it in items]
        if not states:
            return []
        note("first answers")
        answers = self.policy.generate([cp.with_system(s.item.messages, self.system) for s in states],
                                       cfg.sampling("answer", keys=[s.item.id for s in states]))
        _check_count(answers, states, "first answers")
        for s, c in zip(states, answers):
            s.add_usage(c)
            s.initial = s.answer = c.text.strip()

        for r in range(cfg.rounds):
            live = [s for s in states if s.active]
            if not live:
                break
            contexts = [cp.critic_context(s.item.messages, s.answer, system=self.system, shots=self.shots)
                        for s in live]
            p_comply: list[float | None] = [None] * len(live)
            if cfg.early_stop:
                note(f"round {r + 1}/{cfg.rounds}: compliance")
                # The yes/no judgement needs no worked critique chains, only the conversation.
                bare = [cp.critic_context(s.item.messages, s.answer, system=self.system, shots=[]) for s in live]
                convs = [cp.compliance_conversation(b, s.principles[r].critique, t) for b, s in zip(bare, live)]
                scores = self.critic.score_options(convs, [t.yes, t.no])
                _check_count(scores, live, "compliance scores")
                p_comply = [cp.p_yes(sc, t) for sc in scores]
                for s, p in zip(live, p_comply):
                    if p >= cfg.early_stop_threshold:
                        s.steps.append(self._step(s.principles[r], None, None, p, stopped=True))
                        s.active = False
                keep = [i for i, s in enumerate(live) if s.active]
                live, contexts, p_comply = [live[i] for i in keep], [contexts[i] for i in keep], [p_comply[i] for i in keep]
                if not live:
                    break

            note(f"round {r + 1}/{cfg.rounds}: critiques")
            crit_convs = [cp.critique_conversation(ctx, s.principles[r].critique, t) for ctx, s in zip(contexts, live)]
            keys = [f"{s.item.id}:{r}" for s in live]
            critiques = self.critic.generate(crit_convs, cfg.sampling("critique", t.stop, keys=keys))
            _check_count(critiques, live, "critiques")
            crit_texts = []
            for s, c in zip(live, critiques):
                s.add_usage(c)
                crit_texts.append(cp.clean_output(c.text, "critique", t))

            note(f"round {r + 1}/{cfg.rounds}: revisions")
            if cfg.revision_mode == "distill":
                rev_convs = [cp.distill_conversation(s.item.messages, ct, s.principles[r].revision, t, system=self.system)
                             for ct, s in zip(crit_texts, live)]
            else:
                rev_convs = [cp.revision_conversation(cc, ct, s.principles[r].revision, t)
                             for cc, ct, s in zip(crit_convs, crit_texts, live)]
            revisions = self.critic.generate(rev_convs, cfg.sampling("revision", t.stop, keys=keys))
            groups = group(revisions, cfg.samples)  # the K samples of each live prompt
            _check_count(groups, live, "groups of revisions")
            candidates = [[cp.clean_output(c.text, "revision", t) for c in g] for g in groups]
            picks = self.selector.pick(live, candidates, crit_texts) if cfg.samples > 1 else [(0, None)] * len(live)
            for k, (s, ct, p) in enumerate(zip(live, crit_texts, p_comply)):
                for c in groups[k]:
                    s.add_usage(c)
                best, scores = picks[k]
                revision = candidates[k][best]
                step = self._step(s.principles[r], ct, revision, p, stopped=False)
                if scores is not None:
                    step.update(candidates=candidates[k], candidate_scores=scores, picked=best)
                s.steps.append(step)
                if revision:  # an empty revision would erase the answer: keep the previous one
                    s.answer = revision
        return [self._record(s) for s in states]

    def _step(self, principle: Any, critique: str | None, revision: str | None, p: float | None,
              *, stopped: bool) -> dict[str, Any]:
        step: dict[str, Any] = {
            "principle_id": principle.id,
            "critique_request": None if stopped else principle.critique,
            "critique": critique,
            "revision_request": None if stopped else principle.revision,
            "revision": revision,
            "empty_revision": (not stopped) and not revision,
        }
        if self.config.early_stop:
            step["p_comply"] = p
            step["stopped"] = stopped
        return step

    def _record(self, s: _State) -> dict[str, Any]:
        final = s.answer
        prompt = s.item.messages
        return {
            "id": s.item.id,
            "prompt": prompt,
            "initial": s.initial,
            "steps": s.steps,
            "final": final,
            "revised": final != s.initial,
            "messages": prompt + [{"role": "assistant", "content": final}],
            # prompt + completion makes SFTTrainer train on the revision only, and is what it picks
            # when a record also carries "prompt" for DPO.
            "completion": [{"role": "assistant", "content": final}],
            "chosen": [{"role": "assistant", "content": final}],
            "rejected": [{"role": "assistant", "content": s.initial}],
            "usage": {"prompt_tokens": s.prompt_tokens, "completion_tokens": s.completion_tokens},
        }


def _check_count(out: Sequence[Any], states: Sequence[Any], what: str) -> None:
    if len(out) != len(states):
        raise RuntimeError(f"backend returned {len(out)} {what} for {len(states)} prompts")


# -- public API -----------------------------------------------------------------------------------

def _load(policy: Any, critic: Any, constitution: Any, overlong: str = "error"):
    policy_b = load_for_overlong(policy, overlong)
    if critic is None or (isinstance(critic, str) and isinstance(policy, str) and critic == policy):
        critic_b = policy_b  # one model in memory when the policy critiques itself, as in the paper
    else:
        critic_b = load_for_overlong(critic, overlong)
    if isinstance(constitution, (str, Path)):
        from cai.constitution import load_constitution

        constitution = load_constitution(str(constitution))
    return policy_b, critic_b, constitution


def critique_revise(prompts: Sequence[Any], *, policy: Any = None, critic: Any = None, constitution: Any = None,
                    config: CritiqueConfig | None = None, **overrides: Any) -> list[dict[str, Any]]:
    """Critique and revise ``prompts`` (strings, conversations, ``cai.sources.Prompt``s or dicts with
    ``messages``/``id``) and return one record per prompt, in order.

    ``policy``/``critic`` are backends or spec strings (default: the config's ``model``/``critic``;
    the critic defaults to the policy); ``constitution`` is a Constitution, a built-in name or a file
    (default: the config's). ``overrides`` set config fields,
    e.g. ``rounds=2``. The batch is processed ``config.batch_size`` prompts at a time.
    """
    config = replace(config or CritiqueConfig(), **overrides) if overrides else (config or CritiqueConfig())
    policy_b, critic_b, constitution = _load(policy if policy is not None else config.model,
                                             critic if critic is not None else config.critic,
                                             constitution if constitution is not None else config.constitution,
                                             config.overlong)
    engine = _Engine(policy_b, critic_b, constitution, config)
    prov = provenance_of(engine)
    items = prompt_items(prompts)
    out: list[dict[str, Any]] = []
    for start in range(0, len(items), config.batch_size):
        for rec in engine.run(items[start : start + config.batch_size]):
            rec["provenance"] = prov
            out.append(rec)
    return out


def run_critique(config: CritiqueConfig, *, policy: Any = None, critic: Any = None, constitution: Any = None,
                 show_progress: bool | None = None,
                 on_batch: Callable[[list[dict[str, Any]]], None] | None = None) -> dict[str, Any]:
    """Run a critique job from files: read ``config.prompts``, append records to ``config.output``.

    Resumable: prompts whose id is already in the output are skipped, and each batch is written
    (and fsynced) as soon as it is done. Returns a summary dict. ``policy``/``critic``/
    ``constitution`` override the config's specs with ready objects (used by tests and benches).
    """
    from cai.progress import progress
    from cai.same_prompts import check_same_prompts
    from cai.sources import load_prompts
    from cai.store import RecordStore, export_parquet

    if not config.prompts:
        raise CAIError(f"no prompts given; pass --data SRC (a file, {', '.join(list_builtin_prompt_sets())}, "
                       "hh-rlhf:PATH)")
    if not config.output:
        raise CAIError("no output given; pass -o OUT.jsonl (running the same command again resumes it)")
    out = Path(config.output)
    fmt = "parquet" if out.suffix == ".parquet" else config.format
    jsonl = out.with_suffix(".jsonl") if out.suffix == ".parquet" else out
    parquet = out if out.suffix == ".parquet" else out.with_suffix(".parquet")

    # A bad output path fails before any model loads.
    mine = dict(stage="critique", overwrite=config.overwrite, inputs=inputs_of(config))
    store, dropped = RecordStore(jsonl, **mine), RecordStore(dropped_path(jsonl), **mine)
    if fmt == "parquet":
        from cai.outputs import check_file

        check_file(parquet, "parquet", overwrite=config.overwrite, inputs=mine["inputs"], example="out.parquet")
    prompts = load_prompts(config.prompts, field=config.field, limit=config.limit, shuffle=config.shuffle,
                           seed=config.seed)
    items = prompt_items(prompts)
    check_same_prompts((store, dropped), {it.id: it.messages for it in items}, source=config.prompts,
                       prompt_of=lambda rec: rec.get("prompt"))
    specs = [policy or config.model, critic if critic is not None else config.critic]
    # Every prompt stored: the models are named, not started (cai.backends.unstarted).
    specs = finished_models(specs, store, dropped, items=items)
    policy_b, critic_b, constitution = _load(*specs, constitution if constitution is not None else config.constitution,
                                             config.overlong)
    engine = _Engine(policy_b, critic_b, constitution, config)
    base_prov = provenance_of(engine, prompts=config.prompts)
    resume_check(store, base_prov, dropped)
    todo = [it for it in store.todo(items, key=lambda it: it.id) if it.id not in dropped]
    done_before = len(items) - len(todo)
    there_before = len(store)
    written = 0
    examples = example_texts(constitution) if config.filter else []
    with progress(len(items), "critique", unit="prompt", initial=done_before, enabled=show_progress) as bar:
        for start in range(0, len(todo), config.batch_size):
            records = engine.run(todo[start : start + config.batch_size], on_step=bar.set_postfix_str)
            prov = provenance_of(engine, prompts=config.prompts)
            for rec in records:
                rec["provenance"] = prov
            if config.filter:
                records = [filter_record(rec, examples) for rec in records]
                # The dataset first: a crash between the two writes can lose only dropped records.
                written += store.append([r for r in records if "dropped" not in r])
                dropped.append([r for r in records if "dropped" in r])
            else:
                written += store.append(records)
            bar.update(len(records))
            if on_batch:
                on_batch(records)
    if config.filter and not len(store) and len(dropped):
        raise CAIError(kept_nothing(dropped))
    if fmt == "parquet" and len(store):
        export_parquet(jsonl, parquet)
    return {"output": str(jsonl), "parquet": str(parquet) if fmt == "parquet" else None, "prompts": len(items),
            "skipped": done_before, "before": there_before, "written": written, "total": len(store),
            "dropped": len(dropped), "config": to_dict(config)}
