"""``cai label``: RLAIF preference pairs labelled by a feedback model against a constitution."""

from __future__ import annotations

import argparse

EPILOG = """examples:
  cai label -m smollm2-135m -c hhh --data redteam -o prefs.jsonl --limit 100
  cai label -m hf:PATH --judge openai:http://host:8000/v1#judge -c default --data helpful \\
            -o prefs.jsonl -k 4 --principles all --min-margin 0.1
  cai label --config run.yaml            (YAML keys = the long flag names; flags override them)
Running the same command on an existing output resumes it. Records are TRL's conversational
preference format (prompt/chosen/rejected) plus p_chosen, the soft label."""


def register(sub: argparse._SubParsersAction) -> None:
    from cai.config import add_stage_arguments
    from cai.label import LabelConfig

    p = sub.add_parser(
        "label", help="sample answer pairs and label them with a feedback model (RLAIF preference data)",
        description="The AI-feedback stage of Constitutional AI: the policy samples K answers per prompt "
        "(temperature ~1), the answers are paired, and the feedback model picks the better one of each pair "
        "under a preference question from the constitution. The soft label is read from the log-probabilities "
        "of ' (A)' and ' (B)' (never from generated text), averaged over both presentation orders and, "
        "optionally, over several principles.",
        epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_stage_arguments(p, LabelConfig)
    p.set_defaults(func=_run)


def _run(args: argparse.Namespace) -> int:
    import sys

    from cai.config import stage_config
    from cai.label import LabelConfig, run_label

    config = stage_config(LabelConfig, args)
    s = run_label(config, show_progress=args.progress)
    print(f"labelled {s['pairs']} new pairs into {s['output']} ({s['total_records']} in total; "
          f"{s['already_done']} of {s['prompts']} prompts were already done); {s['dropped']} low-margin pairs "
          f"and {s['no_pairs']} prompts with identical samples went to {s['skipped_file']}", file=sys.stderr)
    return 0
