"""From a run file to a list of steps: which stage runs, with which config, reading what.

A run file names the base model and constitution once, and holds one section per stage whose keys
are that stage's own config fields (the same names as its command's long flags)::

    model: smollm2-135m
    constitution: default
    rl: ppo                  # or dpo, rloo
    rl_rounds: 1             # label -> reward -> RL repeated with the newest policy
    critique: {prompts: redteam, limit: 64, rounds: 1}
    sft: {lora: true}
    label: {prompts: redteam, limit: 100}
    reward: {}
    ppo: {max_steps: 10}
    eval: {tasks: [harmlessness, over-refusal], limit: 50, baseline: true}
    report: {}

The plan wires each step's inputs to the outputs of the steps before it (SFT reads the critique
file and the refusal demonstrations, with the model's own filtered answers beside the refusals; the
PM reads the labels; RL starts from the newest policy) and fills in output paths inside
the step's folder. Each step gets a key: the hash of its stage, its config and the keys of the
steps it reads, so changing one setting changes that step's key and every key after it.

With ``eval: {baseline: true}`` each eval task also runs on the base model, as step
``eval-base-TASK`` just before the final evals, so the run shows its effect beside the model it
started from. That step reads no other step, so no training setting changes its key.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cai.config import canonical_keys
from cai.errors import CAIError

STAGES = ("generate", "refusals", "critique", "sft", "label", "reward", "ppo", "dpo", "rloo", "eval", "report")
RL_STAGES = ("ppo", "dpo", "rloo")
# Eval steps of the run's base model (`eval: {baseline: true}`): "eval-base-harmlessness", beside
# "eval-harmlessness" of the final policy.
BASELINE_PREFIX = "eval-base-"
TOP_LEVEL = {"model", "constitution", "seed", "rl", "rl_rounds", "stages", "output", "description", "arms"}


@dataclass
class Step:
    name: str                 # unique in the run: "critique", "label-1", "eval-harmlessness"
    stage: str                # which stage function runs it
    config: dict[str, Any]    # the stage config's fields; outputs point inside ``folder``
    reads: list[str]          # names of the steps whose outputs this one reads
    output: str               # the file or folder the step writes, relative to the run folder
    key: str = ""             # filled by :func:`keyed`
    inputs: dict[str, str] = field(default_factory=dict)  # external files read, path -> sha256
    # The step's entry in the manifest: its name in a plain run; its folder in a run with arms,
    # where two arms may hold different steps of the same name.
    ident: str = ""
    # An eval step's training prompt sources -> the run-file field each comes from ("critique.prompts").
    trained_on: dict[str, str] = field(default_factory=dict)

    @property
    def folder(self) -> str:
        return f"{self.name}-{self.key[:10]}"

    @property
    def id(self) -> str:
        return self.ident or self.name


def _file_hash(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _external_inputs(config: dict[str, Any], base: Path) -> dict[str, str]:
    """Files a config names that exist outside the run (a prompt file, a constitution file): their
    content is part of the key, so editing one reruns the steps that read it."""
    found = {}
    for value in config.values():
        for v in value if isinstance(value, (list, tuple)) else [value]:
            if isinstance(v, str) and v and not v.startswith("@"):
                p = Path(v.split(":", 1)[-1] if v.startswith(("hh-rlhf:", "hhh:")) else v).expanduser()
                p = p if p.is_absolute() else base / p
                if p.is_file():
                    found[v] = _file_hash(p)
    return found


def keyed(steps: list[Step], base: Path) -> list[Step]:
    """Give each step its key, in order, from its stage, config, external files and upstream keys."""
    keys: dict[str, str] = {}
    for step in steps:
        step.inputs = _external_inputs(step.config, base)
        payload = {"stage": step.stage, "config": step.config, "inputs": step.inputs,
                   "reads": {r: keys[r] for r in step.reads}}
        step.key = hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()
        keys[step.name] = step.key
    return steps


def _section(spec: dict[str, Any], name: str) -> dict[str, Any]:
    """A stage's section, its keys as the stage config's field names (a section may use the flag
    names: ``data:`` for label's ``prompts``, ``model:`` for its ``policy``)."""
    section = spec.get(name) or {}
    if not isinstance(section, dict):
        raise CAIError(f"run file: section {name!r} must be a mapping of option: value, got {type(section).__name__}")
    from cai.run.stages import STAGES, stage_class

    if name not in STAGES:
        return dict(section)
    try:
        return canonical_keys(stage_class(name), section, f"run file, section {name}")
    except ValueError as e:
        raise CAIError(str(e)) from None


def canonical_sections(spec: dict[str, Any]) -> dict[str, Any]:
    """``spec`` with the keys of each stage section (and of each arm's) as field names, so that an
    arm's ``prompts:`` and the top's ``data:`` merge as the one option they are."""
    out = dict(spec)
    for name, section in spec.items():
        if name in STAGES and isinstance(section, dict):
            out[name] = _section(spec, name)
    if isinstance(spec.get("arms"), dict):
        out["arms"] = {arm: canonical_sections(o) if isinstance(o, dict) else o for arm, o in spec["arms"].items()}
    return out


def check_spec(spec: dict[str, Any], where: str) -> None:
    unknown = set(spec) - TOP_LEVEL - set(STAGES)
    if unknown:
        raise CAIError(f"{where}: unknown key(s) {', '.join(sorted(unknown))}; a run file has the keys "
                       f"{', '.join(sorted(TOP_LEVEL))} and one section per stage ({', '.join(STAGES)})")
    rl = spec.get("rl", "ppo")
    if rl not in RL_STAGES:
        raise CAIError(f"{where}: rl must be one of {', '.join(RL_STAGES)}, got {rl!r}")
    rounds = spec.get("rl_rounds", 1)
    if not isinstance(rounds, int) or isinstance(rounds, bool) or rounds < 0:
        raise CAIError(f"{where}: rl_rounds must be a whole number >= 0, got {rounds!r}")
    stages = spec.get("stages")
    if stages is not None and (not isinstance(stages, list) or set(stages) - set(STAGES)):
        raise CAIError(f"{where}: stages must be a list drawn from {', '.join(STAGES)}, got {stages!r}")


def build_plan(spec: dict[str, Any], *, where: str = "run file") -> list[Step]:
    """The steps of a run, in order, wired to each other (keys not yet computed)."""
    check_spec(spec, where)
    model = spec.get("model", "smollm2-135m")
    constitution = spec.get("constitution", "default")
    seed = spec.get("seed", 0)
    rl = spec.get("rl", "ppo")
    wanted = spec.get("stages") or [s for s in STAGES if s in spec]
    common = {"constitution": constitution, "seed": seed}
    steps: list[Step] = []
    policy, policy_step = model, None  # the newest policy and the step that wrote it
    sl_data, sl_step = None, None
    gen_step, refusals_step = None, None
    trained_on: dict[str, str] = {}  # every prompt source a training step of this run reads -> its field

    def trains_on(where_from: str, value: Any) -> None:
        from cai.evals.overlap import weightless

        for v in value if isinstance(value, (list, tuple)) else [value]:
            if isinstance(v, str) and v:
                trained_on.setdefault(weightless(v), where_from)

    def add(step: Step) -> Step:
        # A section may name an earlier step's output itself ("@critique/critique.jsonl"): it reads it.
        names = {s.name for s in steps}
        for value in step.config.values():
            for v in value if isinstance(value, (list, tuple)) else [value]:
                if isinstance(v, str) and v.startswith("@"):
                    ref = v[1:].partition("/")[0]
                    if ref not in names:
                        raise CAIError(f"{where}: {step.stage} refers to {v}, but no earlier step is called {ref!r}; "
                                       f"earlier steps: {', '.join(names) or 'none'}")
                    if ref not in step.reads:
                        step.reads.append(ref)
        steps.append(step)
        return step

    if "generate" in wanted:
        # The model's own answers to a prompt set (`cai generate`): helpfulness data that sft can mix in
        # as "@generate/generate.jsonl:0.5".
        section = _section(spec, "generate")
        cfg = {"model": model, "seed": seed, "input": "helpful", **section, "output": "generate.jsonl"}
        gen_step = add(Step("generate", "generate", cfg, [], "generate.jsonl"))
        trains_on("generate.prompts", cfg["input"])  # its answers are SFT data
    if "refusals" in wanted:
        # Written refusals for clearly harmful prompts (`cai data refusals`): SL-CAI demonstrations
        # for a model too small to write its own.
        cfg = {"prompts": "harmful-train", **_section(spec, "refusals"), "output": "refusals.jsonl"}
        refusals_step = add(Step("refusals", "refusals", cfg, [], "refusals.jsonl"))
        trains_on("refusals.prompts", cfg["prompts"])
    if "critique" in wanted:
        out = "critique.jsonl"
        # The revision filter is on by default in a run: commentary is no training data.
        cfg = {**common, "model": model, "filter": True, **_section(spec, "critique"), "output": out}
        add(Step("critique", "critique", cfg, [], out))
        trains_on("critique.prompts", cfg.get("prompts"))
        sl_data, sl_step = out, "critique"
    if "sft" in wanted:
        # By default SFT reads the run's SL-CAI data; beside written refusals it also reads the
        # model's own answers, so that it does not learn "a chat question gets a refusal" (the mix of
        # the dose-response study, docs/results.md). Mixing them into critique data is a choice of
        # weight, made in sft's data list.
        default = [f"@critique/{sl_data}"] if sl_step else []
        if refusals_step:
            default += ["@refusals/refusals.jsonl"] + (["@generate/generate.jsonl"] if gen_step else [])
        if not default and not _section(spec, "sft").get("data"):
            raise CAIError(f"{where}: sft needs SL-CAI data: add a critique or refusals section, or give sft a "
                           "data file")
        data = _section(spec, "sft").get("data") or default
        cfg = {"model": model, "seed": seed, **_section(spec, "sft"), "data": data, "output": "model"}
        add(Step("sft", "sft", cfg, [sl_step] if sl_step else [], "model"))
        trains_on("sft.data", data)
        policy, policy_step = "@sft/model", "sft"
    rounds = spec.get("rl_rounds", 1) if any(s in wanted for s in ("label", "reward", *RL_STAGES)) else 0
    for r in range(1, rounds + 1):
        reads = [policy_step] if policy_step else []
        label = None
        if "label" in wanted:
            cfg = {**common, "policy": policy, **_section(spec, "label"), "output": "prefs.jsonl"}
            if cfg.get("pairs") == "revision" and not cfg.get("prompts") and sl_step:
                cfg["prompts"] = f"@{sl_step}/{sl_data}"  # revision pairs come from this run's critique file
            label = add(Step(f"label-{r}", "label", cfg, reads, "prefs.jsonl"))
            trains_on("label.prompts", cfg.get("prompts"))
        reward = None
        if "reward" in wanted and rl != "dpo":
            if label is None:
                raise CAIError(f"{where}: reward needs preference labels: add a label section")
            cfg = {"model": model, "seed": seed, **_section(spec, "reward"), "data": [f"@{label.name}/prefs.jsonl"],
                   "output": "model"}
            reward = add(Step(f"reward-{r}", "reward", cfg, [label.name], "model"))
        if rl in wanted:
            section = _section(spec, rl)
            if rl == "dpo":
                if label is None:
                    raise CAIError(f"{where}: dpo needs preference labels: add a label section")
                cfg = {"seed": seed, **section, "policy": policy, "data": [f"@{label.name}/prefs.jsonl"], "output": "model"}
                step = add(Step(f"dpo-{r}", "dpo", cfg, reads + [label.name], "model"))
            else:
                if reward is None and not section.get("reward"):
                    raise CAIError(f"{where}: {rl} needs a reward: add a reward section, or give {rl} a reward spec")
                prompts = section.get("prompts") or _section(spec, "label").get("prompts") or "redteam"
                cfg = {"seed": seed, **section, "policy": policy, "prompts": prompts, "output": "model"}
                if reward is not None:
                    cfg["reward"] = f"@{reward.name}/model"
                step = add(Step(f"{rl}-{r}", rl, cfg, reads + ([reward.name] if reward else []), "model"))
                trains_on(f"{rl}.prompts", prompts)
                trains_on(f"{rl}.ptx_data", cfg.get("ptx_data"))
            policy, policy_step = f"@{step.name}/model", step.name
    if "eval" in wanted:
        section = _section(spec, "eval")
        tasks = section.pop("tasks", ["harmlessness", "over-refusal"])
        # `baseline: true` is the run's own switch; a model name there stays helpfulness's opponent.
        baseline = section.pop("baseline") if isinstance(section.get("baseline"), bool) else False
        # A mapping under a task's name holds options of that task only (a grader for harmlessness
        # that hhh, scored by log-likelihood, has no flag for).
        per_task = {k: section.pop(k) for k in list(section) if isinstance(section[k], dict)}
        unknown = set(per_task) - set(tasks)
        if unknown:
            raise CAIError(f"{where}: eval has option group(s) {', '.join(sorted(unknown))} for task(s) not in its "
                           f"tasks list ({', '.join(tasks)}); add them to tasks or remove the group")
        if baseline:
            for task in tasks:
                # The same eval of the base model. It reads no step and knows nothing of what the run
                # trains on, so no training setting reaches its key: it runs once, whatever changes.
                cfg = {"seed": seed, **section, **per_task.get(task, {}), "task": task, "model": model,
                       "output": "results.json"}
                given = cfg.pop("train_prompts", None) or []
                given = [g for g in ([given] if isinstance(given, str) else given) if not str(g).startswith("@")]
                if given:
                    cfg["train_prompts"] = given
                add(Step(f"{BASELINE_PREFIX}{task}", "eval", cfg, [], "results.json"))
        for task in tasks:
            cfg = {"seed": seed, **section, **per_task.get(task, {}), "task": task, "model": policy,
                   "output": "results.json"}
            given = cfg.get("train_prompts") or []
            given = [given] if isinstance(given, str) else list(given)
            if given or trained_on:
                # The result records its overlap with what this run trains on; `cai run` checks it first.
                cfg["train_prompts"] = list(dict.fromkeys([*given, *trained_on]))
            step = add(Step(f"eval-{task}", "eval", cfg, [policy_step] if policy_step else [], "results.json"))
            step.trained_on = dict(trained_on)
    if "report" in wanted:
        cfg = {**_section(spec, "report"), "output": "report.html"}
        add(Step("report", "report", cfg, [s.name for s in steps], "report.html"))
    return steps


def baseline_pairs(steps: list[Step]) -> list[tuple[str, Step, Step]]:
    """(task, base-model eval step, final eval step) for every task a plan evaluates both ways."""
    by_name = {s.name: s for s in steps if s.stage == "eval"}
    pairs = []
    for name, step in by_name.items():
        task = name.removeprefix(BASELINE_PREFIX)
        if name.startswith(BASELINE_PREFIX) and f"eval-{task}" in by_name:
            pairs.append((task, step, by_name[f"eval-{task}"]))
    return pairs


def resolve_refs(value: Any, folders: dict[str, Path]) -> Any:
    """Replace ``@step/path`` references with the path inside that step's folder."""
    if isinstance(value, dict):
        return {k: resolve_refs(v, folders) for k, v in value.items()}
    if isinstance(value, list):
        return [resolve_refs(v, folders) for v in value]
    if isinstance(value, str) and value.startswith("@"):
        name, _, rest = value[1:].partition("/")
        if name not in folders:
            raise CAIError(f"the plan refers to step {name!r}, which is not part of this run")
        return str(folders[name] / rest) if rest else str(folders[name])
    return value
