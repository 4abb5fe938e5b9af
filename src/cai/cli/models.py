"""``cai models``: list aliases and what is cached; ``cai models install ALIAS`` converts one."""

from __future__ import annotations

import argparse


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("models", help="list model aliases and cached models; install the embedded model",
                       description="List model aliases, whether each is cached, and where. "
                       "`cai models install smollm2-135m` converts the packaged GGUF once into a bf16 folder.")
    p.set_defaults(func=_list)
    s = p.add_subparsers(dest="models_command", metavar="ACTION")
    i = s.add_parser("install", help="convert an alias's packaged weights into the cache")
    i.add_argument("alias", help="an alias from `cai models`, e.g. smollm2-135m")
    i.add_argument("--force", action="store_true", help="convert again even if cached")
    i.set_defaults(func=_install)


def _list(args: argparse.Namespace) -> int:
    from rich.console import Console
    from rich.table import Table

    from cai.models import list_models, models_dir

    table = Table(title=f"models (cache: {models_dir()})")
    for col in ("name", "status", "path", "description"):
        table.add_column(col, overflow="fold")
    for row in list_models():
        table.add_row(*(row[c] for c in ("name", "status", "path", "description")))
    Console().print(table)
    return 0


def _install(args: argparse.Namespace) -> int:
    from cai.models import install

    print(install(args.alias, force=args.force))
    return 0
