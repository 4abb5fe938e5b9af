"""``cai constitution list|show|validate``: the built-in constitutions, and any constitution file
(our YAML or a foreign format) shown readably or checked."""

from __future__ import annotations

import argparse


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("constitution", help="list, show and validate constitutions",
                       description="Constitutions hold the principles used to critique and revise answers (SL-CAI) "
                       "and to label preferences (RL-CAI). A constitution is a built-in name, a file in our YAML "
                       "format, a Hugging Face llm-swarm JSON file, one of the CAI paper's prompt files, or several "
                       "of these joined with '+'.")
    p.set_defaults(func=_list)
    s = p.add_subparsers(dest="constitution_command", metavar="ACTION")
    s.add_parser("list", help="the built-in constitutions").set_defaults(func=_list)
    show = s.add_parser("show", help="print a constitution readably",
                        description="Print a constitution: principles, worked examples and preference examples.")
    show.add_argument("constitution", metavar="NAME|FILE", help="a built-in name or a constitution file (any format)")
    show.add_argument("--yaml", action="store_true",
                      help="print it in our YAML format instead (converts a foreign file; same content hash)")
    show.set_defaults(func=_show)
    val = s.add_parser("validate", help="check a constitution file; exit 0 if usable, 2 with the error if not",
                       description="Check a constitution file. Errors name the file, line and field, and the fix.")
    val.add_argument("file", metavar="FILE", help="a constitution file (any format) or a built-in name")
    val.set_defaults(func=_validate)


def _list(args: argparse.Namespace) -> int:
    from rich import box
    from rich.console import Console
    from rich.table import Table

    from cai.constitution import list_constitutions, load_constitution

    table = Table(title="built-in constitutions", box=box.SIMPLE_HEAD, expand=True,
                  caption="#principles: all principles; #pref: those with a preference question. "
                  "`cai constitution show NAME` prints one.")
    table.add_column("name", no_wrap=True, style="bold")
    table.add_column("version", no_wrap=True)
    table.add_column("#principles", justify="right", no_wrap=True)
    table.add_column("#pref", justify="right", no_wrap=True)
    table.add_column("tags", overflow="fold", ratio=1, min_width=10)
    table.add_column("description", overflow="fold", ratio=2)
    for name in list_constitutions():
        c = load_constitution(name)
        table.add_row(c.name, c.version, str(len(c.principles)), str(len(c.preference_principles())),
                      ", ".join(c.tags), c.description)
    Console().print(table)
    return 0


def _summary(c) -> str:
    return (f"{len(c.principles)} principles ({len(c.critique_principles())} with critique and revision, "
            f"{len(c.preference_principles())} preference questions), {len(c.examples)} examples, "
            f"{len(c.preference_examples)} preference examples")


def _show(args: argparse.Namespace) -> int:
    from cai.constitution import load_constitution

    c = load_constitution(args.constitution)
    if args.yaml:
        print(_to_yaml(c.to_dict()), end="")
        return 0
    _print_rich(c)
    return 0


def _validate(args: argparse.Namespace) -> int:
    from cai.constitution import load_constitution

    c = load_constitution(args.file)
    print(f"ok: {_summary(c)}; format {c.format}; name {c.name} {c.version}; hash {c.hash}")
    return 0


def _to_yaml(data: dict) -> str:
    import yaml

    class Dumper(yaml.SafeDumper):
        pass

    def text(dumper: yaml.SafeDumper, value: str) -> yaml.ScalarNode:
        # Multi-line text reads best as a block; PyYAML falls back to quoting when a block can't hold it.
        return dumper.represent_scalar("tag:yaml.org,2002:str", value, style="|" if "\n" in value else None)

    Dumper.add_representer(str, text)
    return yaml.dump(data, Dumper=Dumper, sort_keys=False, allow_unicode=True, width=100)


def _print_rich(c) -> None:
    from rich.console import Console
    from rich.panel import Panel
    from rich.table import Table
    from rich.text import Text

    console = Console()
    head = Text()
    head.append(f"{c.name}", style="bold")
    head.append(f"  version {c.version}  format {c.format}\n")
    head.append(f"{c.description}\n")
    head.append(f"source {c.source}\nhash {c.hash}\n", style="dim")
    head.append(_summary(c))
    if c.system_prompt:
        head.append("\nsystem prompt: ", style="bold")
        head.append(c.system_prompt)
    console.print(Panel(head, title="constitution", expand=False))

    if c.principles:
        table = Table(title="principles", show_lines=True, expand=True)
        table.add_column("id", style="bold", no_wrap=True)
        table.add_column("requests", overflow="fold", ratio=4)
        table.add_column("tags / weight", overflow="fold", ratio=1)
        for p in c.principles:
            cell = Text()
            for label, value in (("critique", p.critique), ("revision", p.revision), ("preference", p.preference)):
                if value:
                    if cell:
                        cell.append("\n")
                    cell.append(f"{label}: ", style="cyan")
                    cell.append(value)
            table.add_row(p.id, cell, f"{', '.join(p.tags)}\nweight {p.weight:g}")
        console.print(table)

    for i, e in enumerate(c.examples):
        turns = [(m["role"], m["content"]) for m in e.messages] + [
            ("critique request", e.critique_request), ("critique", e.critique),
            ("revision request", e.revision_request), ("revision", e.revision)]
        console.print(Panel(_transcript(turns), title=f"example {i}", title_align="left"))
    for i, e in enumerate(c.preference_examples):
        turns = [(m["role"], m["content"]) for m in e.messages] + [
            ("question", e.question), ("(A)", e.response_a), ("(B)", e.response_b)]
        if e.reasoning:
            turns.append(("reasoning", e.reasoning))
        turns.append(("answer", e.answer))
        console.print(Panel(_transcript(turns), title=f"preference example {i}", title_align="left"))


def _transcript(turns):
    from rich.text import Text

    out = Text()
    for k, (label, content) in enumerate(turns):
        if k:
            out.append("\n")
        out.append(f"{label}: ", style="bold magenta" if label in ("user", "assistant", "system") else "bold cyan")
        out.append(content)
    return out
