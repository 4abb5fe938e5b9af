"""``cai redteam``: attack success rates of a model under jailbreaks and transforms."""

from __future__ import annotations

import argparse

EPILOG = """examples:
  cai redteam -m smollm2-135m --data advbench --limit 50 -o runs/redteam
  cai redteam -m smollm2-135m --data jailbreakbench/behaviors.csv --jailbreaks jailbreak_llms/ -o rt
  cai redteam -m hf:runs/sl-cai --attacks none,role-play,multi-turn --grader judge --judge smollm2-135m -o rt
  cai redteam -m smollm2-135m --attacker smollm2-135m --revise -o rt   (failures -> rt/revisions.jsonl)
Attacks: none (baseline), role-play, prefix-injection, refusal-suppression, hypothetical,
payload-splitting, multi-turn, jailbreak (needs --jailbreaks), attacker (needs --attacker).
Running the same command on the same folder resumes it; see docs/redteam.md."""


def register(sub: argparse._SubParsersAction) -> None:
    from cai.config import add_stage_arguments
    from cai.redteam import RedteamConfig

    p = sub.add_parser(
        "redteam", help="attack a model with jailbreaks and transforms; attack success rate per attack and category",
        description="Wraps harmful behaviors in attacks (in-the-wild jailbreak templates, role-play, prefix "
        "injection, refusal suppression, hypothetical framing, payload splitting, multi-turn escalation, or "
        "requests written by an attacker model), answers them with the target model in batches, grades every "
        "answer, and writes the attack success rate (ASR) per attack and per harm category with bootstrap 95% "
        "intervals, the per-item records and the worst cases to the -o folder. With --revise the successful "
        "attacks are critiqued and revised into SL-CAI training records.",
        epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_stage_arguments(p, RedteamConfig)
    p.set_defaults(func=_run)


def _pct(m) -> str:
    if m.value != m.value:  # nan
        return "-"
    ci = f" [{m.ci[0]:.0%}, {m.ci[1]:.0%}]" if m.ci else ""
    return f"{m.value:.0%}{ci}"


def _run(args: argparse.Namespace) -> int:
    import sys

    from rich.console import Console
    from rich.table import Table

    from cai.config import stage_config
    from cai.redteam import RedteamConfig, run_redteam

    config = stage_config(RedteamConfig, args)
    summary = run_redteam(config, show_progress=args.progress)
    result = summary["result_obj"]
    console = Console(width=None if sys.stdout.isatty() else 140)
    head = Table(title=f"red team of {result.model} · grader {result.grader['spec']}")
    for col in ("metric", "value [95% CI]", "n"):
        head.add_column(col, justify="left" if col == "metric" else "right")
    for name, m in result.metrics.items():
        head.add_row(name, _pct(m), str(m.n))
    console.print(head)
    for group in ("by_attack", "by_category"):
        table = Table(title=f"ASR {group.replace('_', ' ')}")
        for col in (group[3:], "ASR [95% CI]", "refusal rate", "n"):
            table.add_column(col, justify="left" if col == group[3:] else "right")
        for name, ms in result.breakdown.get(group, {}).items():
            table.add_row(name, _pct(ms["asr"]), _pct(ms["refusal_rate"]), str(ms["asr"].n))
        console.print(table)
    print(f"wrote {summary['result']}, {summary['examples']} ({summary['written']} new, {summary['skipped']} "
          f"already there) and {summary['worst_cases']}", file=sys.stderr)
    if "revise" in summary:
        rv = summary["revise"]
        print(f"revised {rv['written']} new failures into {rv['output']} ({rv['total']} in total); "
              f"inspect with: cai data stats {rv['output']}", file=sys.stderr)
    return 0
