"""The quickstart's wall time and peak memory: ``cai run --preset quickstart`` end to end.

Runs ``cai run --preset quickstart -o DIR`` in a subprocess twice: first into an empty run folder
(every step runs), then again into the same folder (every step is done: the rerun does no work,
and this measures what that costs). For each run it records the wall time and the peak RSS of the
process tree: ``os.wait4`` on ``cai run`` returns the largest of its own peak and those of the
step processes it waited for (Linux folds the children's ``maxrss`` into it). ``cai run`` starts
each step as a process of its own and writes each step's seconds and peak RSS to manifest.json;
the section lists those too.

``--cold-cache`` points ``CAI_HOME`` and the compile caches (torch inductor, triton, vLLM, HF
datasets) at an empty folder, so nothing compiled or converted before is reused; the embedded
model's converted folder is linked into the new ``CAI_HOME/models`` (the model must still be there;
the OS page cache is not dropped, so its files may still be in memory).

    python bench/quickstart.py                       # writes its section of bench/RESULTS.md
    python bench/quickstart.py --cold-cache
    python bench/quickstart.py --quick                       # a smoke test: a few items per stage; writes nothing
    python bench/quickstart.py --quick -- --set critique.limit=2   # ... with your own overrides instead
    python bench/quickstart.py --preset hf-recipe    # any preset or run file (--run-file)

Arguments after ``--`` go to ``cai run`` as they are (``--set``, ``--until``, ...); the section
says which were given, since the run is then no longer the quickstart as shipped.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from report import finish, header  # bench/report.py, shared by the bench scripts

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "RESULTS.md"
SECTION = "## Quickstart: wall time and peak RSS of `cai run --preset quickstart` (bench/quickstart.py)"
TARGET_S, TARGET_RSS_MB = 15 * 60, 8 * 1024  # issue 11: at most 15 minutes and 8 GB on a 2-core CPU
# Compile and dataset caches a cold run must not reuse (CAI_HOME is handled on its own).
CACHE_VARS = ("TORCHINDUCTOR_CACHE_DIR", "TRITON_CACHE_DIR", "VLLM_CACHE_ROOT", "HF_DATASETS_CACHE")
# --quick without overrides of its own: every stage runs, on a handful of items (minutes, not 15).
QUICK_SETS = ["critique.limit=4", "critique.batch_size=4", "label.limit=4", "reward.human_limit=4",
              "ppo.limit=4", "ppo.max_steps=1", "ppo.batch_size=2", "eval.limit=4", "eval.max_tokens=16"]


def parse_args(argv=None) -> argparse.Namespace:
    argv = list(sys.argv[1:] if argv is None else argv)
    extra = argv[argv.index("--") + 1:] if "--" in argv else []
    argv = argv[: argv.index("--")] if "--" in argv else argv
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--preset", default="quickstart", help="preset to run (default: quickstart)")
    p.add_argument("--run-file", help="a run file instead of --preset")
    p.add_argument("-o", "--output", help="run folder (default: a fresh temporary folder, removed afterwards)")
    p.add_argument("--cold-cache", action="store_true", help="empty CAI_HOME and compile caches (model linked in)")
    p.add_argument("--keep", action="store_true", help="keep the temporary run folder")
    p.add_argument("--quick", action="store_true", help="smoke run on a few items per stage (or your own overrides "
                   "after --); writes nothing")
    p.add_argument("--results", default=str(RESULTS), help="results file (default: bench/RESULTS.md)")
    args = p.parse_args(argv)
    if args.quick and not extra:
        extra = [a for item in QUICK_SETS for a in ("--set", item)]
    args.extra = extra
    return args


def heading(args) -> str:
    """One section per run file and cache state, so that the cold and the warm measurement of each
    preset all stay in RESULTS.md (another preset must not replace the quickstart's section)."""
    what = SECTION
    if args.run_file or args.preset != "quickstart":
        target = f"cai run {args.run_file}" if args.run_file else f"cai run --preset {args.preset}"
        what = f"## Wall time and peak RSS of `{target}` (bench/quickstart.py)"
    return f"{what}, {'cold' if args.cold_cache else 'warm'} cache"


def cold_env(root: Path) -> dict[str, str]:
    """An environment whose caches are empty folders under ``root``, with the embedded model linked in."""
    from cai.models import resolve

    model = Path(resolve("smollm2-135m"))  # converts it first if this machine has never done so
    home = root / "cai-home"
    (home / "models").mkdir(parents=True)
    (home / "models" / model.name).symlink_to(model, target_is_directory=True)
    env = {"CAI_HOME": str(home)}
    for var in CACHE_VARS:
        env[var] = str(root / var.lower())
    return env


def run_once(cmd: list[str], env: dict[str, str]) -> dict:
    """Wall seconds, exit code and the process tree's peak RSS (MiB) of one ``cai run``."""
    t = time.monotonic()
    proc = subprocess.Popen(cmd, env=env)
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    return {"seconds": time.monotonic() - t, "code": proc.returncode, "tree_peak_mb": usage.ru_maxrss / 1024}


def steps_of(run_dir: Path) -> list[dict]:
    path = run_dir / "manifest.json"
    if not path.is_file():
        return []
    manifest = json.loads(path.read_text())
    order = manifest.get("plan") or list(manifest.get("stages", {}))
    stages = manifest.get("stages", {})
    return [{"name": n, **stages[n]} for n in order if n in stages]


def section(args, cmd: list[str], first: dict, second: dict, steps: list[dict], load: float, env_note: str) -> tuple[str, bool]:
    step_peak = max((s.get("peak_rss_mb") or 0 for s in steps), default=0.0)
    peak = max(first["tree_peak_mb"], step_peak)
    ok = first["code"] == 0 and first["seconds"] <= TARGET_S and peak <= TARGET_RSS_MB
    shown = " ".join(["cai", *cmd[cmd.index("run"):]]).replace(str(args.run_dir), "DIR")
    lines = [
        heading(args), "",
        *header(load),
        f"- command: `{shown}`, run twice: into an empty run folder, then again into the same one",
        f"- caches: {env_note}",
    ]
    if args.extra:
        lines.append(f"- **overrides given** (`{' '.join(args.extra)}`): not the quickstart as shipped")
    lines += [
        "", "| run | exit | wall time | peak RSS, process tree |",
        "|---|---:|---:|---:|",
        f"| first (empty run folder) | {first['code']} | {first['seconds']:.1f} s ({first['seconds'] / 60:.1f} min) "
        f"| {peak:.0f} MiB |",
        f"| rerun (same folder: no work) | {second['code']} | {second['seconds']:.1f} s | {second['tree_peak_mb']:.0f} MiB |",
        "", "Per step, from the run's manifest.json (each step is a process of its own):", "",
        "| step | seconds | share | peak RSS |", "|---|---:|---:|---:|",
    ]
    total = sum(s.get("seconds") or 0 for s in steps) or 1.0
    for s in steps:
        secs = s.get("seconds") or 0
        lines.append(f"| {s['name']} | {secs:.1f} | {secs / total:.0%} | {s.get('peak_rss_mb') or 0:.0f} MiB |")
    lines += ["", f"Peak RSS is the largest of any step and the runner ({step_peak:.0f} MiB over the steps, "
              f"{first['tree_peak_mb']:.0f} MiB for the tree by wait4). The steps' seconds add to {total:.0f} s of "
              f"{first['seconds']:.0f} s; the rest is the runner's start and its checks. Targets (issue 11): at most "
              f"{TARGET_S // 60} minutes and {TARGET_RSS_MB // 1024} GiB: "
              f"**{'PASS' if ok else 'FAIL'}**.", ""]
    return "\n".join(lines), ok


def main(argv=None) -> int:
    args = parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    load = os.getloadavg()[0]
    scratch = Path(tempfile.mkdtemp(prefix="cai-bench-quickstart-"))
    args.run_dir = Path(args.output) if args.output else scratch / "run"
    env = dict(os.environ)
    src = str(HERE.parent / "src")
    env["PYTHONPATH"] = src + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    env_note = "as they are on this machine (converted model and compile caches from earlier runs reused)"
    if args.cold_cache:
        env.update(cold_env(scratch))
        env_note = (f"empty: CAI_HOME and {', '.join(CACHE_VARS)} in a new folder, the converted model linked in "
                    "(the OS page cache was not dropped)")
    target = [args.run_file] if args.run_file else ["--preset", args.preset]
    cmd = [sys.executable, "-m", "cai", "run", *target, "-o", str(args.run_dir), *args.extra]
    try:
        print(f"first run: {' '.join(cmd)}", file=sys.stderr)
        first = run_once(cmd, env)
        print("rerun (expects no work)", file=sys.stderr)
        second = run_once(cmd, env) if first["code"] == 0 else {"seconds": 0.0, "code": -1, "tree_peak_mb": 0.0}
        text, ok = section(args, cmd, first, second, steps_of(args.run_dir), load, env_note)
    finally:
        if not args.keep:
            shutil.rmtree(scratch, ignore_errors=True)
    if first["code"] != 0:
        print(text + f"\ncai run failed (exit {first['code']}): nothing written to {args.results}", file=sys.stderr)
        return 1
    return finish(text, ok, quick=args.quick, results=args.results, heading=heading(args))


if __name__ == "__main__":
    raise SystemExit(main())
