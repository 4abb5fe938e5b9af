"""``cai dpo``: DPO on AI-labelled preference pairs, soft labels per pair (conservative DPO)."""

from __future__ import annotations

import argparse

EPILOG = """examples:
  cai dpo -m sft-model --data prefs.jsonl -o dpo-model
  cai dpo -m smollm2-135m --data sl.jsonl -o dpo-model --lora --lr 5e-5   (critique pairs: revision > first answer)
  cai dpo -m sft-model --data prefs.jsonl --min-margin 0.6 -o dpo-model   (keep pairs labelled p > 0.8 or < 0.2)
Each pair's label noise is eps = 1 - p_chosen (cai label's soft label); --hard-labels uses eps = 0.
Running the same command on the same -o folder resumes from its last checkpoint."""


def register(sub: argparse._SubParsersAction) -> None:
    from cai.cli.sft import add_data_argument
    from cai.config import add_stage_arguments
    from cai.train.dpo import DPORunConfig

    p = sub.add_parser(
        "dpo", help="DPO on preference pairs with per-pair soft labels (TRL DPOTrainer, conservative DPO)",
        description="Direct Preference Optimisation on cai label pairs (soft labels: each pair's p_chosen sets "
        "its label noise eps = 1 - p_chosen in the conservative-DPO loss) or on cai critique pairs (the revision "
        "chosen over the first answer). Writes a Hugging Face model folder with cai_run.json, metrics.jsonl, "
        "curves/ and checkpoints/ inside.",
        epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_data_argument(p)
    add_stage_arguments(p, DPORunConfig, skip=("data",))
    p.set_defaults(func=_run)


def _run(args: argparse.Namespace) -> int:
    import sys

    from cai.cli.sft import print_summary
    from cai.config import stage_config
    from cai.train.dpo import DPORunConfig, run_dpo

    config = stage_config(DPORunConfig, args)
    summary = run_dpo(config, show_progress=args.progress)
    print_summary(summary)
    from cai.train.rundir import is_main_process

    if not summary.get("already_done") and is_main_process():
        print(f"mean label noise eps over the pairs: {summary['mean_epsilon']:.3f}", file=sys.stderr)
    return 0
