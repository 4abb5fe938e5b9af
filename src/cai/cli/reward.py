"""``cai reward``: train a soft-label preference model (``cai reward [train]``) or score a file with
one (``cai reward score``)."""

from __future__ import annotations

import argparse

EPILOG = """actions:
  cai reward [train] ...   train a PM (plain `cai reward` means train)
  cai reward score ...     score a file with a trained PM (`cai reward score --help`)

examples:
  cai reward -m smollm2-135m --data prefs.jsonl -o runs/pm --epochs 1
  cai reward train -m smollm2-135m --data prefs.jsonl -o runs/pm --lora --lr 1e-4
  cai reward score -m runs/pm --data sl.jsonl        (per-round PM scores of a `cai critique` file)
Running the same training command on the same -o folder resumes it from its last checkpoint."""

TRAIN_DESCRIPTION = (
    "Trains the preference model of RL-CAI: a one-score head on a base LM, fitted to AI preference labels with "
    "the soft-label Bradley-Terry loss -[p log sigmoid(r_c - r_r) + (1 - p) log sigmoid(r_r - r_c)], p = p_chosen "
    "(1 when a record has none). Reads `cai label` files and TRL preference files. Writes a Hugging Face folder "
    "with cai_run.json, metrics.jsonl and curves/, then reports accuracy with 95% CIs on held-out AI labels and "
    "on human labels (HH-RLHF harmless, BIG-bench HHH).")


def register(sub: argparse._SubParsersAction) -> None:
    from cai.config import add_stage_arguments
    from cai.train.pm_score import RewardScoreConfig
    from cai.train.reward import RewardTrainConfig

    p = sub.add_parser("reward", help="train a preference model on AI labels, or score a file with one",
                       description=TRAIN_DESCRIPTION, epilog=EPILOG,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    add_stage_arguments(p, RewardTrainConfig)
    p.set_defaults(func=_train)
    actions = p.add_subparsers(dest="reward_action", metavar="{train,score}")
    t = actions.add_parser("train", help="train a PM (the default action)", description=TRAIN_DESCRIPTION)
    add_stage_arguments(t, RewardTrainConfig)
    t.set_defaults(func=_train)
    s = actions.add_parser(
        "score", help="score a file's answers with a trained PM",
        description="Scores answers with a trained PM. On a `cai critique` file: the mean score of the first answer "
        "and of the answer after each revision round, with 95% CIs and the paired change from the first answer "
        "(CAI paper, Figure 5). On a preference file: mean scores of both sides and agreement with the label. On "
        "messages or prompt/completion records: the mean score of the final answer.")
    add_stage_arguments(s, RewardScoreConfig)
    s.set_defaults(func=_score)


def _train(args: argparse.Namespace) -> int:
    from cai.config import stage_config
    from cai.train.reward import RewardTrainConfig, accuracy_rows, run_reward

    config = stage_config(RewardTrainConfig, args)
    run = run_reward(config, show_progress=args.progress)
    if not run.get("final_metrics"):
        return 0  # another rank of a multi-process run: rank 0 reports
    m = run["final_metrics"]
    _table(f"preference model {config.output}: {m.get('global_step')} steps on {m.get('train_pairs')} pairs, "
           f"final train loss {m.get('train_loss', float('nan')):.4f}",
           ("set", "pairs", "accuracy", "95% CI"), accuracy_rows(run.get("evaluation") or {}))
    return 0


def _score(args: argparse.Namespace) -> int:
    from cai.config import stage_config
    from cai.train.pm_score import RewardScoreConfig, run_score

    summary = run_score(stage_config(RewardScoreConfig, args))
    title = f"PM {summary['model']} on {summary['data']} ({summary['records']} records)"
    ci = lambda r: f"[{r['ci95'][0]:+.3f}, {r['ci95'][1]:+.3f}]"  # noqa: E731
    if summary["kind"] == "critique":
        rows = [(str(r["round"]), f"{r['mean']:+.3f}", ci(r),
                 f"{r['change']['mean']:+.3f}" if "change" in r else "", ci(r["change"]) if "change" in r else "")
                for r in summary["rounds"]]
        _table(title + "; round 0 is the first answer", ("round", "mean PM score", "95% CI", "vs round 0", "95% CI"),
               rows)
    elif summary["kind"] == "preference":
        rows = [(k, f"{summary[k]['mean']:+.3f}", ci(summary[k])) for k in ("chosen", "rejected", "agreement")
                if k in summary]  # no agreement when every label is a tie
        _table(title, ("", "mean", "95% CI"), rows)
    else:
        _table(title, ("", "mean PM score", "95% CI"), [("answers", f"{summary['score']['mean']:+.3f}",
                                                        ci(summary["score"]))])
    return 0


def _table(title: str, header: tuple[str, ...], rows: list[tuple[str, ...]]) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title=title, title_justify="left")
    for h in header:
        table.add_column(h, no_wrap=True)
    for r in rows:
        table.add_row(*r)
    Console().print(table)
