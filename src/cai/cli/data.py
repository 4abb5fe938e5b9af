"""``cai data``: look inside cai data files, and make data that takes no model.
``cai data stats FILE`` summarises a critique or preference file as terminal tables;
``cai data refusals`` writes refusal demonstrations for clearly harmful prompts (:mod:`cai.refusals`)."""

from __future__ import annotations

import argparse


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("data", help="inspect cai data files; write refusal demonstrations",
                       description="Inspect the data files cai writes, or write data that needs no model.")
    s = p.add_subparsers(dest="data_command", metavar="ACTION")
    p.set_defaults(func=lambda args: (p.print_help(), 0)[1])
    st = s.add_parser("stats", help="counts per principle, how often revisions change the answer, mean lengths, examples",
                      description="Summarise a critique file (cai critique) or a preference file (cai label): records, "
                      "counts per principle, how often the revision differs from the first answer, mean lengths "
                      "and a few examples.")
    st.add_argument("file", help="a .jsonl or .parquet file written by cai critique or cai label")
    st.add_argument("--examples", type=int, default=3, metavar="N", help="how many random examples to show (default: 3)")
    st.add_argument("--seed", type=int, default=0, help="seed for picking the examples (default: 0)")
    st.add_argument("--json", action="store_true", help="print the summary as JSON instead of tables")
    st.set_defaults(func=_stats)

    from cai.config import add_stage_arguments
    from cai.refusals import RefusalsConfig

    rf = s.add_parser("refusals", help="SFT records answering clearly harmful prompts with written refusals",
                      description="Answer the clearly harmful prompts of a source with refusals written as data "
                      "(cai/templates/refusals.yaml or your own YAML), one picked per prompt by a hash of its id: "
                      "SL-CAI demonstrations for a model too small to write its own refusals. By default only "
                      "the red-team and forbidden-question prompts of harmful-train get one (its HH-RLHF first "
                      "turns are often harmless openers).",
                      epilog="examples:\n  cai data refusals -o refusals.jsonl\n"
                      "  cai data refusals --data harmful-train --limit 200 --template my-refusals.yaml -o r.jsonl\n"
                      "  cai data refusals --data my-harmful.jsonl --include-sources all -o r.jsonl",
                      formatter_class=argparse.RawDescriptionHelpFormatter)
    add_stage_arguments(rf, RefusalsConfig)
    rf.set_defaults(func=_refusals)


def _refusals(args: argparse.Namespace) -> int:
    import sys

    from cai.config import stage_config
    from cai.refusals import RefusalsConfig, write_refusals

    summary = write_refusals(stage_config(RefusalsConfig, args))
    parts = ", ".join(f"{s} {n}" for s, n in summary["by_source"].items())
    print(f"wrote {summary['written']} refusal records to {summary['output']} ({parts})", file=sys.stderr)
    return 0


def _stats(args: argparse.Namespace) -> int:
    import json

    from cai.data_stats import render, summarize
    from cai.store import read_records

    if args.examples < 0:
        raise ValueError(f"--examples must be >= 0, got {args.examples}")
    from cai.critique.records import dropped_path

    side = dropped_path(args.file)
    dropped = read_records(side) if str(args.file).endswith(".jsonl") and side.is_file() else []
    summary = summarize(read_records(args.file), examples=args.examples, seed=args.seed, dropped=dropped)
    if args.json:
        print(json.dumps(summary, indent=2, ensure_ascii=False))
        return 0
    from rich.console import Console

    render(summary, Console(), title=f"{args.file} ({summary['kind']})")
    return 0
