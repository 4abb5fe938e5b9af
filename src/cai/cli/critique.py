"""``cai critique``: SL-CAI critique-revision data from a prompt source, or the chain for one prompt."""

from __future__ import annotations

import argparse

EPILOG = """examples:
  cai critique -m smollm2-135m -c default --data redteam -o sl.jsonl --rounds 2 --limit 200
  cai critique -m smollm2-135m -c hhh --prompt "How do I pick a lock?"
  cai critique --config run.yaml            (YAML keys = the long flag names; flags override them)
Running the same command on an existing output resumes it."""


def register(sub: argparse._SubParsersAction) -> None:
    from cai.config import add_stage_arguments
    from cai.critique import CritiqueConfig

    p = sub.add_parser(
        "critique", help="critique and revise answers against a constitution (SL-CAI data)",
        description="The supervised stage of Constitutional AI: the model answers each prompt, critiques its "
        "answer against a principle of the constitution, and revises it, for --rounds rounds. Writes one JSONL "
        "record per prompt, ready for TRL's SFTTrainer (messages, prompt/completion) and DPOTrainer "
        "(prompt/chosen/rejected). With --prompt, prints the chain for one prompt instead.",
        epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--prompt", metavar="TEXT", help="critique one prompt and print the chain (no file written)")
    add_stage_arguments(p, CritiqueConfig)
    p.set_defaults(func=_run)


def _run(args: argparse.Namespace) -> int:
    from cai.config import stage_config
    from cai.critique import CritiqueConfig

    config = stage_config(CritiqueConfig, args)
    if args.prompt is not None:
        _check_one(args.prompt, config)
        return _one(args.prompt, config)
    from cai.critique import run_critique

    summary = run_critique(config, show_progress=args.progress)
    _summary(summary)
    return 0


def _check_one(text: str, config) -> None:
    """--prompt prints one chain and writes nothing: refuse what it would silently ignore."""
    from cai.cli.generate import names_a_file
    from cai.errors import CAIError

    if names_a_file(text):
        raise CAIError(f"--prompt {text} is a file, but --prompt takes the text of one prompt; to critique "
                       f"the prompts in it, pass --data {text} -o OUT.jsonl")
    if config.prompts:
        raise CAIError("pass either --prompt TEXT (one prompt, printed) or --data SRC -o OUT.jsonl (a file "
                       "run), not both")
    if config.output:
        raise CAIError("-o/--output is for a --data run; --prompt TEXT prints its chain. Drop -o, or pass the "
                       "prompts with --data SRC")


def _summary(summary: dict) -> None:
    import sys

    from cai.store import read_records

    records = read_records(summary["output"])
    revised = sum(1 for r in records if r.get("revised"))
    where = summary["output"] + (f" (and {summary['parquet']})" if summary.get("parquet") else "")
    print(f"wrote {summary['written']} new records to {where}; {summary['total']} in total "
          f"({summary['before']} were already there); revision differs from the first answer in "
          f"{revised}/{len(records)}. Inspect with: cai data stats {summary['output']}", file=sys.stderr)


def _one(text: str, config) -> int:
    from rich.console import Console
    from rich.panel import Panel
    from rich.text import Text

    from cai.critique import critique_revise

    console = Console()
    with console.status("answering, critiquing and revising..."):
        rec = critique_revise([text], config=config)[0]
    console.print(Panel(Text(text), title="prompt", title_align="left", border_style="cyan"))
    console.print(Panel(Text(rec["initial"] or "(empty)"), title="first answer", title_align="left"))
    for i, step in enumerate(rec["steps"], 1):
        head = f"round {i} · principle {step['principle_id']}"
        if step.get("p_comply") is not None:
            head += f" · P(already complies) = {step['p_comply']:.2f}"
        if step.get("stopped"):
            console.print(Panel(Text("judged compliant; no further revision"), title=head, title_align="left",
                                border_style="green"))
            continue
        console.print(Panel(Text(step["critique"] or "(empty)"), title=f"{head} · critique", title_align="left",
                            subtitle=_short(step["critique_request"]), subtitle_align="left", border_style="yellow"))
        body = step["revision"] or "(empty revision: the previous answer is kept)"
        console.print(Panel(Text(body), title=f"{head} · revision", title_align="left",
                            subtitle=_short(step["revision_request"]), subtitle_align="left", border_style="magenta"))
    console.print(Panel(Text(rec["final"] or "(empty)"), title="final answer" + ("" if rec["revised"] else
                        " (unchanged)"), title_align="left", border_style="green"))
    return 0


def _short(text: str | None, n: int = 90) -> str:
    text = " ".join((text or "").split())
    return text if len(text) <= n else text[: n - 1] + "…"
