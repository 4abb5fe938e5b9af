"""``cai report``: one self-contained HTML page about a run folder or a set of cai files."""

from __future__ import annotations

import argparse

EPILOG = """examples:
  cai report runs/quickstart                      (writes runs/quickstart/report.html)
  cai report sl.jsonl prefs.jsonl evals/*.json -o report.html
  cai report runs/quickstart --screenshot report.png   (needs Chromium)
The page works offline: open it in any browser, or send it as one file."""


def register(sub: argparse._SubParsersAction) -> None:
    from cai.config import add_stage_arguments
    from cai.report import ReportConfig

    p = sub.add_parser(
        "report", help="one self-contained HTML report of a run: stages, curves, evals, examples",
        description="Write one HTML file about a run folder (what cai run writes) or any cai files: the stages that "
        "ran, training curves, eval tables with intervals and the helpfulness-harmlessness trade-off, revision "
        "statistics per principle, labelled pairs, red-team results, and a searchable list of examples. The file "
        "loads nothing from the network.",
        epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("inputs", nargs="*", metavar="PATH", default=argparse.SUPPRESS,
                   help="run folders to search, or files: eval results (.json), cai_run.json, critique or "
                   "preference files (.jsonl)")
    add_stage_arguments(p, ReportConfig, skip=("inputs",))
    p.set_defaults(func=_run)


def _run(args: argparse.Namespace) -> int:
    import sys

    from cai.config import stage_config
    from cai.report import ReportConfig, build_report

    summary = build_report(stage_config(ReportConfig, args))
    from pathlib import Path

    kinds = ", ".join(f"{n} {k}" for k, n in summary["examples"].items()) or "no examples"
    print(f"wrote {summary['output']} ({summary['bytes'] / 1e6:.1f} MB): {summary['stages']} stages, "
          f"{summary['training_runs']} training runs, {summary['eval_results']} eval results, {kinds}"
          + (f"; screenshot {summary['screenshot']}" if summary["screenshot"] else ""), file=sys.stderr)
    print(f"open {Path(summary['output']).resolve().as_uri()}", file=sys.stderr)
    return 0
