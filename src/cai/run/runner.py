"""``cai run``: execute a plan in one run folder, skipping what is done and resuming what is not.

The run folder holds one folder per step, named by the step and its key, and ``manifest.json``:
for every step its stage, key, config, inputs, outputs, status, start and end time, seconds and
peak memory. A step whose key is in the manifest as done is skipped; a step that was interrupted
runs again in the same folder, where its own stage resumes (record stores skip what is written,
trainers restart from their last checkpoint). A changed setting gives new keys, hence new folders,
from that step on; the old folders stay, so nothing computed is lost.
"""

from __future__ import annotations

import datetime as dt
import json
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cai.errors import CAIError
from cai.run.plan import Step, build_plan, keyed, resolve_refs
from cai.run.processes import (Prepared, engine_groups, failure_advice, now, record_group, run_child,
                               sigterm_as_interrupt)
from cai.run.step_server import step_server

MANIFEST = "manifest.json"


@dataclass
class RunOptions:
    run_dir: Path
    from_stage: str | None = None
    until_stage: str | None = None
    dry_run: bool = False
    base: Path = Path(".")  # where relative paths in the run file are read from
    overwrite: bool = False  # --overwrite: every selected step afresh (old folders moved aside), any folder



def read_manifest(run_dir: Path, *, replace_foreign: bool = False) -> dict[str, Any]:
    """The run folder's manifest (an empty one if there is none yet; also, with ``replace_foreign``,
    in place of a manifest.json that cai did not write)."""
    path = run_dir / MANIFEST
    fresh = {"kind": "cai-run-manifest", "version": 1, "stages": {}}
    if not path.exists():
        return fresh
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        if replace_foreign:
            return fresh
        raise CAIError(f"{path}: not a readable run manifest ({e}); move the run folder aside to start fresh, or "
                       "add --overwrite to replace it") from None
    if not isinstance(data, dict) or data.get("kind") != "cai-run-manifest":
        if replace_foreign:
            return fresh
        raise CAIError(f"{path}: not a cai run manifest; pass another run folder, or add --overwrite to replace it")
    return data


def check_run_folder(opts: RunOptions, run_file: str | None, steps: list[Step]) -> None:
    """Before any step: the run folder is a folder (or nothing yet) that takes new files, not the
    run file, and holds a cai run (its manifest, or only folders of this plan's steps: a run
    killed before its first manifest) or nothing, unless --overwrite."""
    from cai.outputs import check_target

    run_dir = check_target(opts.run_dir, flag="-o", folder=True, inputs=[run_file] if run_file else [])
    if opts.overwrite or not run_dir.is_dir() or (run_dir / MANIFEST).exists():
        return
    own = {Path(s.folder).parts[0] for s in steps if s.folder}
    found = sorted(e.name for e in run_dir.iterdir() if e.name not in own)
    if found:
        shown = ", ".join(found[:3]) + (", ..." if len(found) > 3 else "")
        raise CAIError(f"-o {run_dir} holds no cai run (no {MANIFEST}; it holds {shown}); pass a new -o folder, or "
                       "add --overwrite to run in this one")


def write_manifest(run_dir: Path, manifest: dict[str, Any]) -> None:
    tmp = run_dir / (MANIFEST + ".tmp")
    tmp.write_text(json.dumps(manifest, indent=2, default=str) + "\n", encoding="utf-8")
    tmp.replace(run_dir / MANIFEST)  # atomic: a kill leaves the old manifest or the new one


@dataclass
class Plan:
    """The steps of a run, each once, in the order they run; with arms, also each arm's own steps."""
    steps: list[Step]
    folders: dict[str, dict[str, Path]]  # step id -> the step-name -> folder map its references resolve in
    arms: dict[str, list[Step]] | None = None


def _groups(plan: Plan) -> list[list[Step]]:
    """The step lists --from and --until count along: the run, or each arm (with the run's report)."""
    if not plan.arms:
        return [plan.steps]
    report = [s for s in plan.steps if s.stage == "report"]
    return [steps + report for steps in plan.arms.values()]


def _select(plan: Plan, opts: RunOptions) -> tuple[set[str], set[str]]:
    """(ids of the steps to run, ids to run again even if done) from --from and --until (stage or
    step names). With arms each arm counts on its own; an arm without that stage runs nothing."""
    every = [s for g in _groups(plan) for s in g]

    def has(name: str | None, flag: str) -> None:
        if name and not any(name in (s.name, s.stage) for s in every):
            names = ", ".join(dict.fromkeys(s.name for s in every))
            raise CAIError(f"{flag} {name}: no such stage in this run; its steps are {names}")

    has(opts.from_stage, "--from")
    has(opts.until_stage, "--until")
    selected: set[str] = set()
    forced: set[str] = set()
    order_ok = False
    for steps in _groups(plan):
        match = lambda name: [i for i, s in enumerate(steps) if name in (s.name, s.stage)]  # noqa: E731
        first = (match(opts.from_stage) or [None])[0] if opts.from_stage else 0
        last = max(match(opts.until_stage), default=None) if opts.until_stage else len(steps) - 1
        if first is None or last is None or first > last:
            continue
        order_ok = True
        for s in steps[first:last + 1]:
            selected.add(s.id)
            if opts.from_stage or opts.overwrite:
                forced.add(s.id)
    if not order_ok:
        raise CAIError(f"--from {opts.from_stage} comes after --until {opts.until_stage}")
    return selected, forced


def plan_run(spec: dict[str, Any], opts: RunOptions, *, where: str) -> tuple[Plan, dict[str, Any]]:
    manifest = read_manifest(opts.run_dir, replace_foreign=opts.overwrite)
    if "arms" not in spec:
        steps = keyed(build_plan(spec, where=where), opts.base)
        folders = step_folders(steps, opts.run_dir)
        return Plan(steps, {s.id: folders for s in steps}), manifest
    from cai.run.arms import plan_arms, wants_report

    arms = plan_arms(spec, opts.base, where=where)
    steps: list[Step] = []
    by_id: dict[str, dict[str, Path]] = {}
    for arm_steps in arms.values():
        folders = step_folders(arm_steps, opts.run_dir)
        for s in arm_steps:
            if s.id not in by_id:  # the same name and key in another arm: the same step, run once
                steps.append(s)
                by_id[s.id] = folders
    if wants_report(spec):
        steps.append(_report_step(spec, steps, opts, by_id, where=where))
    return Plan(steps, by_id, arms), manifest


def _report_step(spec: dict[str, Any], steps: list[Step], opts: RunOptions, by_id: dict[str, dict[str, Path]],
                 *, where: str) -> Step:
    """One report over every arm: it reads the comparison and every step's folder."""
    import hashlib

    from cai.run.experiment import EXPERIMENT

    section = spec.get("report") or {}
    if not isinstance(section, dict):
        raise CAIError(f"{where}: section 'report' must be a mapping of option: value")
    report = Step("report", "report", {**section, "output": "report.html"}, [EXPERIMENT] + [s.id for s in steps],
                  "report.html")
    payload = {"stage": "report", "config": report.config, "reads": [s.key for s in steps]}
    report.key = hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()
    report.ident = report.folder
    by_id[report.id] = {**{s.id: (opts.run_dir / s.folder).resolve() for s in steps},
                        EXPERIMENT: (opts.run_dir / EXPERIMENT).resolve(),
                        "report": (opts.run_dir / report.folder).resolve()}
    return report


def status_of(step: Step, manifest: dict[str, Any], run_dir: Path) -> str:
    entry = manifest["stages"].get(step.id)
    if entry and entry.get("key") == step.key and entry.get("status") == "done" \
            and (run_dir / step.folder / step.output).exists():
        return "done"
    if (run_dir / step.folder).exists():
        return "resume"
    return "changed" if entry else "todo"


def _state(step: Step, manifest: dict[str, Any], opts: RunOptions, selected: set[str], forced: set[str]) -> str:
    state = status_of(step, manifest, opts.run_dir)
    if step.id not in selected:
        return "not selected"
    return "rerun (--from)" if state == "done" and step.id in forced else state


def _line(i: int, s: Step, state: str, manifest: dict[str, Any], note: str = "") -> str:
    took = manifest["stages"].get(s.id, {}).get("seconds")
    return (f"  {i:2d}. {s.name:<22} {state:<14} {s.folder}"
            + (f"   (took {took:.0f} s last time)" if took and state == "done" else "") + note)


def _sharing(plan: Plan, manifest: dict[str, Any], opts: RunOptions, selected: set[str],
             forced: set[str]) -> dict[str, str]:
    """Step id -> a note naming the step whose process and engine it would share, for the steps to
    run that join a group (:func:`cai.run.processes.engine_groups`)."""
    todo = [s for s in plan.steps if _state(s, manifest, opts, selected, forced) not in ("done", "not selected")]
    configs = {s.id: step_config(s, plan.folders[s.id], opts.run_dir, opts.base) for s in todo}
    return {s.id: f"   (sharing the engine of {g[0].name})" for g in engine_groups(todo, configs) for s in g[1:]}


def describe(plan: Plan, manifest: dict[str, Any], opts: RunOptions) -> str:
    selected, forced = _select(plan, opts)
    sharing = _sharing(plan, manifest, opts, selected, forced)
    lines = [f"run folder: {opts.run_dir}"]
    if not plan.arms:
        lines += [_line(i, s, _state(s, manifest, opts, selected, forced), manifest, sharing.get(s.id, ""))
                  for i, s in enumerate(plan.steps, 1)]
        return "\n".join(lines)
    owners: dict[str, list[str]] = {}
    for arm, steps in plan.arms.items():
        for s in steps:
            owners.setdefault(s.id, []).append(arm)
    for arm, steps in plan.arms.items():
        lines.append(f"arm {arm}:")
        for i, s in enumerate(steps, 1):
            others = [a for a in owners[s.id] if a != arm]
            note = ("" if not others else f"   shared with {', '.join(others)}" if len(others) <= 2
                    else f"   shared with {len(others)} other arms") + sharing.get(s.id, "")
            lines.append(_line(i, s, _state(s, manifest, opts, selected, forced), manifest, note))
    for s in plan.steps:
        if s.stage == "report":
            lines.append("after all arms: compare.md, tradeoff.png/.svg, then")
            lines.append(_line(1, s, _state(s, manifest, opts, selected, forced), manifest))
    total = sum(len(v) for v in plan.arms.values())
    arm_steps = len([s for s in plan.steps if s.stage != "report"])
    lines.append(f"{len(plan.arms)} arms, {total} steps, {arm_steps} to compute ({total - arm_steps} shared)")
    return "\n".join(lines)


def _fmt(seconds: float) -> str:
    return str(dt.timedelta(seconds=int(seconds)))


def _absolute_inputs(config: dict[str, Any], inputs: dict[str, str], base: Path) -> dict[str, Any]:
    """A run file's relative paths (``prompts: prompts.jsonl``) name files beside the run file, as
    the step key already assumes; the step's process runs in the caller's folder, so hand it the
    absolute path. Only values found as files at planning time (``step.inputs``) are rewritten."""
    def fix(v: Any) -> Any:
        if isinstance(v, list):
            return [fix(x) for x in v]
        if not isinstance(v, str) or v not in inputs:
            return v
        prefix = v.split(":", 1)[0] + ":" if v.startswith(("hh-rlhf:", "hhh:")) else ""
        path = Path(v[len(prefix):]).expanduser()
        return v if path.is_absolute() else prefix + str((base / path).resolve())

    return {k: fix(v) for k, v in config.items()}


def step_folders(steps: list[Step], run_dir: Path) -> dict[str, Path]:
    return {s.name: (run_dir / s.folder).resolve() for s in steps}


def step_config(step: Step, folders: dict[str, Path], run_dir: Path, base: Path) -> dict[str, Any]:
    """The config a step's process gets: references to earlier steps and relative input files made
    absolute, its output inside its folder, and for the report everything it reads."""
    config = _absolute_inputs(resolve_refs(step.config, folders), step.inputs, base)
    config["output"] = str(folders[step.name] / step.output)
    if step.stage == "report":
        config["inputs"] = [str(run_dir / MANIFEST)] + [str(folders[r]) for r in step.reads]
    return config


def validate(plan: Plan, opts: RunOptions, *, where: str) -> None:
    """Build every step's config before any step runs, so a typo in the last section fails now and
    not after hours of the first ones."""
    from cai.run.stages import build_stage_config

    for step in plan.steps:
        config = step_config(step, plan.folders[step.id], opts.run_dir, opts.base)
        place = f"{where}, section {step.stage}"
        try:
            build_stage_config(step.stage, config, where=place)
        except (TypeError, ValueError) as e:
            raise CAIError(str(e) if str(e).startswith(place) else f"{place}: {e}") from None


def execute(spec: dict[str, Any], opts: RunOptions, *, where: str) -> dict[str, Any]:
    """Run the selected steps; returns the manifest. Raises CAIError when a step fails, or before
    any step when an eval set is not held out from the run's training prompts."""
    from cai.run.heldout import check_held_out

    plan, manifest = plan_run(spec, opts, where=where)
    if not plan.steps:
        from cai.run.plan import STAGES

        raise CAIError(f"{where}: no stages to run; add a section per stage ({', '.join(STAGES)}), e.g. "
                       "`critique: {data: redteam}`, or start from `cai run --preset quickstart`")
    selected, forced = _select(plan, opts)
    validate(plan, opts, where=where)
    check_held_out(plan, opts, where=where)
    if opts.dry_run:
        print(describe(plan, manifest, opts))
        return manifest
    check_run_folder(opts, where, plan.steps)
    opts.run_dir.mkdir(parents=True, exist_ok=True)
    steps = plan.steps
    todo = [s for s in steps if s.id in selected
            and (status_of(s, manifest, opts.run_dir) != "done" or s.id in forced)]
    owners: dict[str, list[str]] = {}
    for arm, arm_steps in (plan.arms or {}).items():
        for s in arm_steps:
            owners.setdefault(s.id, []).append(arm)
    if plan.arms:
        manifest["arms"] = {arm: [s.id for s in arm_steps] for arm, arm_steps in plan.arms.items()}
    # An estimate from what each step took last time, where the manifest remembers it.
    known = {s.id: manifest["stages"].get(s.id, {}).get("seconds") for s in todo}
    configs = {s.id: step_config(s, plan.folders[s.id], opts.run_dir, opts.base) for s in todo}
    started = time.monotonic()
    with sigterm_as_interrupt(), step_server(configs.values()) as server:
        _run_groups(todo, configs, plan, opts, manifest, owners, known, started, server)
    manifest["plan"] = [s.id for s in steps]
    if plan.arms:
        manifest["experiment"] = _compare(plan, opts.run_dir)
    write_manifest(opts.run_dir, manifest)
    total = time.monotonic() - started
    print(f"cai run: {len(todo)} step(s) run, {len(steps) - len(todo)} already done; {_fmt(total)}; "
          f"manifest: {opts.run_dir / MANIFEST}", file=sys.stderr)
    from cai.run.headline import print_headline

    print_headline(plan, opts.run_dir)
    return manifest


def _run_groups(todo, configs, plan, opts, manifest, owners, known, started, server) -> None:
    """Run the steps to do, a group of steps (one process each) at a time; stop at the first that fails."""
    n = 0
    for group in engine_groups(todo, configs):
        prepared = []
        for step in group:
            n += 1
            rest = [known.get(s.id) or 0.0 for s in todo[n - 1:]]
            prepared.append(_prepare(step, plan, opts, manifest, configs[step.id], group, owners,
                                     line=f"[{n}/{len(todo)}]", elapsed=time.monotonic() - started,
                                     eta=sum(rest) if all(rest) else None))
        write_manifest(opts.run_dir, manifest)
        t0 = time.monotonic()
        try:
            code, peak = run_child(*(p.folder / "step.json" for p in prepared), server=server)
        except KeyboardInterrupt:  # Ctrl-C reaches the runner and the step's process alike; SIGTERM is passed on
            record_group(manifest["stages"], group, prepared, 130, None, time.monotonic() - t0, now())
            write_manifest(opts.run_dir, manifest)
            raise
        stopped = record_group(manifest["stages"], group, prepared, code, peak, time.monotonic() - t0, now())
        write_manifest(opts.run_dir, manifest)
        if stopped is not None:
            arms = f" (arm {', '.join(owners[stopped.id])})" if stopped.id in owners else ""
            raise CAIError(failure_advice(f"step {stopped.name}{arms}", code))


def _prepare(step: Step, plan: Plan, opts: RunOptions, manifest: dict[str, Any], config: dict[str, Any],
             group: list[Step], owners: dict[str, list[str]], *, line: str, elapsed: float,
             eta: float | None) -> Prepared:
    """Make a step's folder and step.json, say that it starts, and enter it in the manifest as
    running; what was there before is kept in the result, to put back if its group stops first."""
    folder = plan.folders[step.id][step.name]
    before = manifest["stages"].get(step.id)
    entry = before or {}
    moved, made = None, not folder.exists()
    if folder.exists() and (opts.overwrite or (entry.get("key") == step.key and entry.get("status") == "done")):
        # --from (or --overwrite): run again from scratch, keeping the old outputs beside it
        moved = folder.with_name(f"{folder.name}.old-{int(time.time())}")
        folder.rename(moved)
    if plan.arms and step.stage == "report":
        _compare(plan, opts.run_dir, quiet=True)  # the report shows the comparison, so it is written first
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "summary.json").unlink(missing_ok=True)  # only the summary written now says the step finished
    arms = f" (arm {', '.join(owners[step.id])})" if step.id in owners else ""
    first = group[0]
    if step is first:
        left = f", about {_fmt(eta)} left" if eta else ""
        print(f"cai run: {line} {step.name}{arms} (elapsed {_fmt(elapsed)}{left})", file=sys.stderr)
        announce = None
    else:  # its group's process prints it when the step starts
        announce = f"cai run: {line} {step.name}{arms} (sharing the engine of {first.name}, in its process)"
    (folder / "step.json").write_text(json.dumps({"name": step.name, "stage": step.stage, "section": step.stage,
                                                  "key": step.key, "config": config,
                                                  **({"announce": announce} if announce else {})}, indent=2))
    shared = [s.name for s in group if s is not step]
    manifest["stages"][step.id] = {"name": step.name, "stage": step.stage, "key": step.key, "folder": step.folder,
                                   **({"arms": owners[step.id]} if step.id in owners else {}),
                                   "config": config, "inputs": step.inputs, "reads": step.reads,
                                   "status": "running", "started": now(),
                                   **({"shared_process_with": shared} if shared else {})}
    return Prepared(folder, before, moved, made)


def _compare(plan: Plan, run_dir: Path, *, quiet: bool = False) -> dict[str, Any]:
    from cai.run.experiment import write_experiment

    written = write_experiment(run_dir, plan.arms or {})
    if written.get("table") and not quiet:
        print(f"cai run: compared {len(plan.arms or {})} arms in {run_dir / written['table']}", file=sys.stderr)
    return written
