"""``cai eval``: evaluations, one subcommand each. ``cai eval labeler`` measures how often the AI
preference labeller agrees with human labels."""

from __future__ import annotations

import argparse

LABELER_EPILOG = """examples:
  cai eval labeler -m smollm2-135m --data hhh                   (BIG-bench HHH, per category)
  cai eval labeler -m smollm2-135m --data hh-rlhf --limit 500   (HH-RLHF harmless-base pairs)
  cai eval labeler -m hf:PATH --data 438HHHEvaluations.jsonl    (CAI paper multiple-choice format)
  cai eval labeler -m smollm2-135m --data hhh --cot --principles all --plot reliability.png
The method flags (-c, --principles, --few-shot, --cot, --no-swap) mean what they mean for
`cai label`: the same code labels both."""


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("eval", help="evaluations (labeller agreement with humans, ...)",
                       description="Evaluations. Run `cai eval EVAL --help` for one of them.")
    p.set_defaults(func=lambda args: (p.print_help(), 0)[1])
    evals = p.add_subparsers(dest="eval_command", metavar="EVAL")
    _register_labeler(evals)


def _register_labeler(evals: argparse._SubParsersAction) -> None:
    from cai.config import add_stage_arguments
    from cai.evals.labeler import LabelerEvalConfig

    p = evals.add_parser(
        "labeler", help="agreement of the AI preference labeller with human-labelled comparisons",
        description="Scores the labelling method of `cai label` on human-labelled comparisons: accuracy with a "
        "95% bootstrap interval, position-bias rate, calibration (ECE, optional reliability diagram) and the "
        "majority and random baselines. Writes a JSON result and prints a table (per category for hhh).",
        epilog=LABELER_EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_stage_arguments(p, LabelerEvalConfig)
    p.set_defaults(func=_labeler)


def _labeler(args: argparse.Namespace) -> int:
    import sys

    from rich.console import Console

    from cai.config import stage_config
    from cai.evals.labeler import (LabelerEvalConfig, default_output, evaluate_labeler, examples_path,
                                   plot_reliability, result_table, write_result)
    from cai.store import check_output

    config = stage_config(LabelerEvalConfig, args)
    # Every path this run writes is checked before the model loads.
    out = check_output(default_output(config), records=False)
    if config.plot:
        check_output(config.plot, records=False)
    result = evaluate_labeler(config, show_progress=args.progress, examples=examples_path(out))
    out = write_result(result, out)
    # Off a terminal rich would wrap to 80 columns and cut the numbers; keep the table whole.
    Console(width=None if sys.stdout.isatty() else 140).print(result_table(result))
    print(f"wrote {out}", file=sys.stderr)
    if config.plot:
        print(f"wrote {plot_reliability(result, config.plot)}", file=sys.stderr)
    return 0
