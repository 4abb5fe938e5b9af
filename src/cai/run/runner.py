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
import os
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cai.errors import CAIError
from cai.run.plan import Step, build_plan, keyed, resolve_refs

MANIFEST = "manifest.json"


@dataclass
class RunOptions:
    run_dir: Path
    from_stage: str | None = None
    until_stage: str | None = None
    dry_run: bool = False
    base: Path = Path(".")  # where relative paths in the run file are read from


def _now() -> str:
    return dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")


def read_manifest(run_dir: Path) -> dict[str, Any]:
    path = run_dir / MANIFEST
    if not path.exists():
        return {"kind": "cai-run-manifest", "version": 1, "stages": {}}
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise CAIError(f"{path}: not a readable run manifest ({e}); move the run folder aside to start fresh") from None
    if data.get("kind") != "cai-run-manifest":
        raise CAIError(f"{path}: not a cai run manifest; pass another run folder")
    return data


def write_manifest(run_dir: Path, manifest: dict[str, Any]) -> None:
    tmp = run_dir / (MANIFEST + ".tmp")
    tmp.write_text(json.dumps(manifest, indent=2, default=str) + "\n", encoding="utf-8")
    tmp.replace(run_dir / MANIFEST)  # atomic: a kill leaves the old manifest or the new one


def _select(steps: list[Step], opts: RunOptions) -> tuple[int, int]:
    """Indices [first, last] of the steps to run, from --from and --until (stage or step names)."""
    def find(name: str, flag: str) -> int:
        for i, s in enumerate(steps):
            if name in (s.name, s.stage):
                return i
        raise CAIError(f"{flag} {name}: no such stage in this run; its steps are {', '.join(s.name for s in steps)}")

    first = find(opts.from_stage, "--from") if opts.from_stage else 0
    last = len(steps) - 1
    if opts.until_stage:
        find(opts.until_stage, "--until")
        last = max(i for i, s in enumerate(steps) if opts.until_stage in (s.name, s.stage))
    if first > last:
        raise CAIError(f"--from {opts.from_stage} comes after --until {opts.until_stage}")
    return first, last


def plan_run(spec: dict[str, Any], opts: RunOptions, *, where: str) -> tuple[list[Step], dict[str, Any]]:
    steps = keyed(build_plan(spec, where=where), opts.base)
    return steps, read_manifest(opts.run_dir)


def status_of(step: Step, manifest: dict[str, Any], run_dir: Path) -> str:
    entry = manifest["stages"].get(step.name)
    if entry and entry.get("key") == step.key and entry.get("status") == "done" \
            and (run_dir / step.folder / step.output).exists():
        return "done"
    if (run_dir / step.folder).exists():
        return "resume"
    return "changed" if entry else "todo"


def describe(steps: list[Step], manifest: dict[str, Any], opts: RunOptions) -> str:
    first, last = _select(steps, opts)
    lines = [f"run folder: {opts.run_dir}"]
    for i, s in enumerate(steps):
        state = status_of(s, manifest, opts.run_dir)
        if not first <= i <= last:
            state = "not selected"
        elif state == "done" and opts.from_stage and i >= first:
            state = "rerun (--from)"
        took = manifest["stages"].get(s.name, {}).get("seconds")
        lines.append(f"  {i + 1:2d}. {s.name:<22} {state:<14} {s.folder}"
                     + (f"   (took {took:.0f} s last time)" if took and state == "done" else ""))
    return "\n".join(lines)


def _child_env() -> dict[str, str]:
    env = dict(os.environ)
    src = str(Path(__file__).resolve().parents[2])
    env["PYTHONPATH"] = src + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    return env


def _run_child(step_file: Path) -> tuple[int, float]:
    """Run one step in its own process; (exit code, its peak RSS in MiB)."""
    proc = subprocess.Popen([sys.executable, "-m", "cai.run.stages", str(step_file)], env=_child_env())
    try:
        _, status, usage = os.wait4(proc.pid, 0)
    except KeyboardInterrupt:
        proc.wait()
        raise
    proc.returncode = os.waitstatus_to_exitcode(status)
    return proc.returncode, usage.ru_maxrss / 1024  # Linux reports KiB


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


def validate(steps: list[Step], opts: RunOptions, *, where: str) -> None:
    """Build every step's config before any step runs, so a typo in the last section fails now and
    not after hours of the first ones."""
    from cai.run.stages import build_stage_config

    folders = step_folders(steps, opts.run_dir)
    for step in steps:
        config = step_config(step, folders, opts.run_dir, opts.base)
        try:
            build_stage_config(step.stage, config, where=f"{where}, section {step.stage}")
        except (TypeError, ValueError) as e:
            raise CAIError(f"{where}, section {step.stage}: {e}") from None


def execute(spec: dict[str, Any], opts: RunOptions, *, where: str) -> dict[str, Any]:
    """Run the selected steps; returns the manifest. Raises CAIError when a step fails."""
    steps, manifest = plan_run(spec, opts, where=where)
    first, last = _select(steps, opts)
    validate(steps, opts, where=where)
    if opts.dry_run:
        print(describe(steps, manifest, opts))
        return manifest
    opts.run_dir.mkdir(parents=True, exist_ok=True)
    folders = step_folders(steps, opts.run_dir)
    todo = [s for i, s in enumerate(steps) if first <= i <= last
            and (status_of(s, manifest, opts.run_dir) != "done" or (opts.from_stage and i >= first))]
    # An estimate from what each step took last time, where the manifest remembers it.
    known = {s.name: manifest["stages"].get(s.name, {}).get("seconds") for s in todo}
    started = time.monotonic()
    for n, step in enumerate(todo, 1):
        folder = folders[step.name]
        entry = manifest["stages"].get(step.name, {})
        if entry.get("key") == step.key and entry.get("status") == "done" and folder.exists():
            # --from: run again from scratch, keeping the old outputs beside it
            folder.rename(folder.with_name(f"{folder.name}.old-{int(time.time())}"))
        folder.mkdir(parents=True, exist_ok=True)
        config = step_config(step, folders, opts.run_dir, opts.base)
        step_file = folder / "step.json"
        step_file.write_text(json.dumps({"name": step.name, "stage": step.stage, "section": step.stage,
                                         "key": step.key, "config": config}, indent=2))
        rest = [known.get(s.name) for s in todo[n - 1:]]
        eta = f", about {_fmt(sum(rest))} left" if all(rest) else ""
        print(f"cai run: [{n}/{len(todo)}] {step.name} (elapsed {_fmt(time.monotonic() - started)}{eta})",
              file=sys.stderr)
        manifest["stages"][step.name] = {"stage": step.stage, "key": step.key, "folder": step.folder,
                                        "config": config, "inputs": step.inputs, "reads": step.reads,
                                        "status": "running", "started": _now()}
        write_manifest(opts.run_dir, manifest)
        t0 = time.monotonic()
        code, peak = _run_child(step_file)
        record = manifest["stages"][step.name]
        record.update(ended=_now(), seconds=round(time.monotonic() - t0, 1), peak_rss_mb=round(peak, 1))
        if code != 0:
            record["status"] = "failed" if code != 130 else "interrupted"
            write_manifest(opts.run_dir, manifest)
            raise CAIError(f"step {step.name} {'was interrupted' if code == 130 else f'failed (exit {code})'}; "
                           f"fix the cause and run the same command again to resume from it")
        summary_file = folder / "summary.json"
        record.update(status="done", outputs={"output": config["output"]},
                      summary=json.loads(summary_file.read_text())["summary"] if summary_file.exists() else {})
        write_manifest(opts.run_dir, manifest)
    manifest["plan"] = [s.name for s in steps]
    write_manifest(opts.run_dir, manifest)
    total = time.monotonic() - started
    print(f"cai run: {len(todo)} step(s) run, {len(steps) - len(todo)} already done; {_fmt(total)}; "
          f"manifest: {opts.run_dir / MANIFEST}", file=sys.stderr)
    return manifest
