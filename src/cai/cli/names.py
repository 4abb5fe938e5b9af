"""One name for one thing: the flag every command uses for a concept, the names it used to have,
and the hint for a flag a command does not know ("did you mean --data?").

A command that used an old name keeps it as a hidden alias for a release (``option(...,
aliases=...)`` in the stage's config); elsewhere an old name gets the hint to the new one.
``tests/test_cli_names.py`` walks every parser and fails when a command shows an old name.
"""

from __future__ import annotations

import argparse
import difflib

# The name of each concept -> the names some command (or an older release) used for it.
# rloo's old --beta (its KL coefficient, now --kl-coef) is not listed: --beta is DPO's own β.
CONCEPTS: dict[str, tuple[str, ...]] = {
    "--data": ("-i", "--input", "--prompts", "--behaviors"),  # what the command reads
    "--model": ("--policy",),  # the model the command runs or trains
    "--judge": ("--feedback",),  # the model that answers the preference question
    "--samples-per-prompt": ("--n",),  # answers sampled per prompt
    "--system-prompt": ("--system",),
}
_OLD = {old: new for new, olds in CONCEPTS.items() for old in olds}


def nearest_flag(parser: argparse.ArgumentParser, flag: str) -> str | None:
    """The flag of ``parser`` that the unknown ``flag`` most likely meant: the new name of an old
    one, else the closest spelling (hidden aliases count, and lead to the name --help shows)."""
    flag = flag.split("=", 1)[0]
    shown: dict[str, str] = {}  # any name of an option -> the long name --help shows for it
    by_dest: dict[str, str] = {}
    for a in parser._actions:
        if a.option_strings and a.help is not argparse.SUPPRESS:
            by_dest.setdefault(a.dest, next((s for s in a.option_strings if s.startswith("--")), a.option_strings[0]))
    for a in parser._actions:
        if a.option_strings and a.dest in by_dest:
            for s in a.option_strings:
                shown[s] = by_dest[a.dest]
    if _OLD.get(flag) in shown:
        return shown[_OLD[flag]]
    close = difflib.get_close_matches(flag, [s for s in shown if s.startswith("--")], n=1, cutoff=0.7)
    return shown[close[0]] if close else None


def unknown_flags_message(parser: argparse.ArgumentParser, extras: list[str]) -> str:
    """``unrecognized arguments: ...; did you mean --X?`` for the first unknown flag among ``extras``."""
    msg = f"unrecognized arguments: {' '.join(extras)}"
    flags = [e for e in extras if e.startswith("-") and len(e) > 1]
    hint = nearest_flag(parser, flags[0]) if flags else None
    if hint:
        return f"{msg}; did you mean {hint}?"
    return f"{msg}; `{parser.prog} --help` lists the options"
