"""``cai generate``: answer one prompt, or a prompt file into a resumable JSONL."""

from __future__ import annotations

import argparse
import sys

EPILOG = """examples:
  cai generate -m smollm2-135m "Name three colors."
  cai generate -m hf:smollm2-135m --system-prompt "Answer in French." --temperature 0 "Hello!"
  cai generate -m smollm2-135m --data prompts.jsonl --output answers.jsonl --limit 100
  cai generate --data borderline+benign --temperature 0 --max-tokens 128 --filter -o own.jsonl
  cai generate --config run.yaml            (YAML keys = the long flag names; flags override them)
Running the same batch command on an existing output resumes it."""


def register(sub: argparse._SubParsersAction) -> None:
    from cai.config import add_stage_arguments
    from cai.generation import GenerateConfig

    p = sub.add_parser(
        "generate", help="answer a prompt, or a file of prompts (resumable JSONL)",
        description="Chat completions from any backend. With a PROMPT argument, prints the answer. With "
        "--data and --output, answers every prompt with a progress bar and writes one JSONL record per "
        "prompt (messages including the answer, token counts, finish reason, provenance).",
        epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("prompt", nargs="?", metavar="PROMPT", help="a user prompt to answer (omit with --data)")
    add_stage_arguments(p, GenerateConfig)
    p.set_defaults(func=_run)


def _run(args: argparse.Namespace) -> int:
    from cai.config import stage_config
    from cai.errors import CAIError
    from cai.generation import GenerateConfig, generate_file, generate_one

    config = stage_config(GenerateConfig, args)
    if args.prompt is not None:
        if config.input:
            raise CAIError("pass either a PROMPT or --data FILE, not both")
        if names_a_file(args.prompt):
            raise CAIError(f"{args.prompt} is a file, but a PROMPT argument is answered as text; to answer the "
                           f"prompts in it, pass --data {args.prompt} -o OUT.jsonl")
        if config.output:
            raise CAIError("-o/--output is for a prompt file (--data FILE); the answer to a PROMPT argument is "
                           "printed. Drop -o, or put the prompt in a file and pass it with --data")
        completions = generate_one(config, args.prompt)
        print("\n\n---\n\n".join(c.text for c in completions))
        return 0
    if not config.input:
        raise CAIError('nothing to answer; pass a prompt (cai generate "Name three colors.") or --data FILE --output OUT.jsonl')
    summary = generate_file(config, show_progress=args.progress)
    print(f"wrote {summary['written']} new records to {summary['output']}; {summary['total']} in total "
          f"({summary['skipped']} were already there)", file=sys.stderr)
    if config.filter:
        from cai.store import sidecar

        print(f"the filter set aside {summary['dropped']} new answers; {summary['dropped_total']} in total in "
              f"{sidecar(summary['output'], 'dropped')}, each with its reason", file=sys.stderr)
    return 0


def names_a_file(text: str) -> bool:
    """Whether a prompt argument names an existing file (a path mistaken for the prompt)."""
    from pathlib import Path

    try:
        return "\n" not in text and len(text) < 4096 and Path(text).expanduser().is_file()
    except (OSError, ValueError):  # a name too long for the file system, a NUL byte
        return False
