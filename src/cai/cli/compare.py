"""``cai compare``: eval results side by side, and the helpfulness/harmlessness trade-off plot."""

from __future__ import annotations

import argparse

EPILOG = """examples:
  cai compare base/*.json sft/*.json rl/*.json --labels base,sft,rl
  cai compare base/*.json rl/*.json --plot tradeoff.png          (writes tradeoff.png and tradeoff.svg)
  cai compare *.json --plot t.png --x hhh.helpful_accuracy --y hhh.harmless_accuracy
  cai compare *.json --markdown                                   (a table for docs)
Columns are the models named in the files (one per run); rows are TASK.METRIC."""


def register(sub: argparse._SubParsersAction) -> None:
    from cai.outputs import add_overwrite_argument

    p = sub.add_parser("compare", help="eval results side by side, and the helpfulness/harmlessness trade-off plot",
                       description="Reads result files written by `cai eval TASK` (and `cai redteam`), prints a table "
                       "with one column per model or run (value [95% CI]), and optionally draws the trade-off plot "
                       "of the CAI paper's Figure 2 with 95% error bars.",
                       epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("results", nargs="+", metavar="RESULT", help="result JSON files")
    p.add_argument("--labels", help="comma-separated column names, one per run in order (e.g. base,sft,rl)")
    p.add_argument("--plot", metavar="OUT.png", help="write the trade-off plot here (PNG and SVG)")
    p.add_argument("--x", metavar="TASK.METRIC", help="helpfulness axis (default: helpfulness.win_rate, else "
                   "hhh.helpful_accuracy, else ifeval.prompt_strict_accuracy)")
    p.add_argument("--y", metavar="TASK.METRIC", help="harmlessness axis (default: harmlessness.harmless_rate, else "
                   "hhh.harmless_accuracy)")
    p.add_argument("--title", default="", help="plot title")
    p.add_argument("--markdown", action="store_true", help="print the table as Markdown")
    add_overwrite_argument(p)
    p.set_defaults(func=_run)


def _run(args: argparse.Namespace) -> int:
    import sys

    from cai.evals.compare import describe, load, parse_labels, plot_outputs, plot_tradeoff, print_table

    out = plot_outputs(args.plot, inputs=args.results, overwrite=args.overwrite) if args.plot else None
    cols = load(args.results, parse_labels(args.labels))
    print_table(cols, markdown=args.markdown)
    for line in describe(cols):
        print(line, file=sys.stderr)
    if out is not None:
        files, skipped = plot_tradeoff(cols, out, x=args.x, y=args.y, title=args.title)
        for note in skipped:
            print(f"note: {note}", file=sys.stderr)
        print(f"wrote {', '.join(str(f) for f in files)}", file=sys.stderr)
    return 0
