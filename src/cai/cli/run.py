"""``cai run``: critique -> sft -> label -> reward -> ppo/dpo/rloo -> eval -> report from one file."""

from __future__ import annotations

import argparse

EPILOG = """examples:
  cai run --preset quickstart                       (the embedded model, end to end, on a laptop CPU)
  cai run my-run.yaml -o runs/mine
  cai run my-run.yaml --dry-run                     (print the plan: what is done, what will run)
  cai run my-run.yaml --from sft --until reward     (rerun sft and what follows it, up to reward)
  cai run --preset quickstart --set critique.limit=16 --set ppo.max_steps=4
  cai run examples/compare.yaml -o runs/compare     (an experiment: its arms in one folder, shared steps
                                                    run once, then compare.md and the trade-off plot)
Each section of a run file holds that stage's own options (the long flag names of `cai critique`,
`cai sft`, ...). A rerun skips finished steps and resumes an interrupted one; changing a setting
reruns that step and the ones after it, in new folders beside the old ones. A run file with `arms:`
(arm name: overlay of the run file) runs each arm in the same folder: docs/pipeline.md. vLLM,
transformers and torch print only their errors; -v/--verbose (or CAI_VERBOSE=1) shows all they say.
Presets: """


def register(sub: argparse._SubParsersAction) -> None:
    from cai.outputs import add_overwrite_argument
    from cai.run.presets import preset_names

    p = sub.add_parser("run", help="the whole pipeline from one run file, resumable",
                       description="Runs the stages of Constitutional AI in order from one YAML run file (or a "
                       "built-in preset) into one run folder with a manifest of every step's config, inputs, "
                       "outputs, time and peak memory.", epilog=EPILOG + ", ".join(preset_names()),
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("run_file", nargs="?", metavar="RUN.yaml", help="the run file")
    p.add_argument("--preset", metavar="NAME", help="a built-in run file instead: " + ", ".join(preset_names()))
    p.add_argument("-o", "--output", metavar="DIR", help="run folder (default: the run file's `output`, else "
                   "runs/NAME)")
    p.add_argument("--from", dest="from_stage", metavar="STAGE", help="start at this stage or step, rerunning it "
                   "and the ones after it even if done (earlier ones are reused)")
    p.add_argument("--until", dest="until_stage", metavar="STAGE", help="stop after this stage or step")
    p.add_argument("--dry-run", action="store_true", help="print the plan and what each step would do; run nothing")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="SECTION.KEY=VALUE",
                   help="override one setting (VALUE is read as YAML), e.g. --set sft.epochs=2, or one arm's: "
                   "--set arms.NAME.sft.epochs=2; repeatable")
    p.add_argument("--progress", action=argparse.BooleanOptionalAction, default=None,
                   help="progress bars with ETA in every step (default: when stderr is a terminal; in a log, "
                   "one line per step)")
    add_overwrite_argument(p)
    p.set_defaults(func=_run)


def _run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from cai.errors import CAIError
    from cai.run import RunOptions, execute
    from cai.run.presets import apply_overrides, load_run_file

    if bool(args.run_file) == bool(args.preset):
        raise CAIError("give a run file or --preset NAME (one of them)")
    spec, where, base = load_run_file(args.run_file, args.preset)
    spec = apply_overrides(spec, args.overrides)
    name = args.preset or Path(args.run_file).stem
    run_dir = Path(args.output or spec.get("output") or Path("runs") / name)
    options = RunOptions(run_dir=run_dir, from_stage=args.from_stage, until_stage=args.until_stage,
                         dry_run=args.dry_run, base=base, overwrite=args.overwrite)
    from cai.progress import PROGRESS_ENV
    from cai.quiet import env_vars

    # The steps run in processes of their own, which read the choice from their environment.
    choice = {} if args.progress is None else {PROGRESS_ENV: "1" if args.progress else "0"}
    with env_vars(choice, override=True):
        execute(spec, options, where=where)
    return 0
