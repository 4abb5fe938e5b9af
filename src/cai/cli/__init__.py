"""The ``cai`` command. Each command group lives in its own module with a ``register`` function;
handlers import heavy libraries only when they run, so ``cai --help`` stays fast."""

from __future__ import annotations

import argparse
import importlib
import os
import sys

# Module names under cai.cli, in the order ``cai --help`` lists them.
COMMANDS = ["models", "generate", "serve", "constitution", "critique", "data", "label", "eval", "ppo"]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="cai",
        description="Constitutional AI end to end: critique-revision data (SL-CAI), AI preference "
        "labels (RLAIF), training and evaluation, on the embedded SmolLM2 model or any HF model or "
        "OpenAI-compatible server.",
        epilog="Models: an alias (smollm2-135m), a local folder, a hub id, or a backend spec such as "
        "hf:PATH, vllm:PATH, openai:http://host:8000/v1#MODEL, mock:. Run `cai COMMAND --help` for more.",
    )
    parser.add_argument("--traceback", action="store_true", help="show full tracebacks on errors")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMANDS:
        try:
            module = importlib.import_module(f"cai.cli.{name}")
        except ModuleNotFoundError as e:
            if e.name == f"cai.cli.{name}":
                continue
            raise
        module.register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 0
    from cai.errors import CAIError

    try:
        result = args.func(args)
        return int(result or 0)
    except KeyboardInterrupt:
        print("cai: interrupted; finished batches are saved, run the same command again to resume", file=sys.stderr)
        return 130
    except (CAIError, ValueError, FileNotFoundError, KeyError, ConnectionError) as e:
        if args.traceback or os.environ.get("CAI_TRACEBACK"):
            raise
        msg = e.args[0] if isinstance(e, KeyError) and e.args else e
        print(f"cai: error: {msg}", file=sys.stderr)
        return 2
