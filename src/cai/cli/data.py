"""``cai data``: look inside cai data files. ``cai data stats FILE`` summarises a critique or
preference file as terminal tables."""

from __future__ import annotations

import argparse


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("data", help="inspect cai data files (critique and preference JSONL/Parquet)",
                       description="Inspect the data files cai writes.")
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
