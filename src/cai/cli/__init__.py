"""The ``cai`` command. Each command group lives in its own module with a ``register`` function;
handlers import heavy libraries only when they run, so ``cai --help`` stays fast."""

from __future__ import annotations

import argparse
import errno
import importlib
import sys

# Module names under cai.cli, in the order ``cai --help`` lists them.
COMMANDS = ["models", "generate", "serve", "constitution", "critique", "data", "label", "sft", "reward", "dpo",
            "ppo", "rloo", "eval", "redteam", "compare", "report", "run"]

# Flags of `cai` itself that a command's own flags may be followed by -> their dest.
GLOBAL_FLAGS = {"--traceback": "traceback", "-v": "verbose", "--verbose": "verbose"}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="cai",
        description="Constitutional AI end to end: critique-revision data (SL-CAI), AI preference "
        "labels (RLAIF), training and evaluation, on the embedded SmolLM2 model or any HF model or "
        "OpenAI-compatible server.",
        epilog="Models: an alias (smollm2-135m), a local folder, a hub id, or a backend spec such as "
        "hf:PATH, vllm:PATH, openai:http://host:8000/v1#MODEL, mock:. Run `cai COMMAND --help` for more.",
    )
    parser.add_argument("--version", action=VersionAction,
                        help="show cai's version, Python's and the memory allocator this process runs on")
    parser.add_argument("--traceback", action="store_true", help="show full tracebacks on errors")
    parser.add_argument("-v", "--verbose", action="store_true", help="show the log lines, warnings and bars of "
                        "vLLM, transformers, torch and co., which cai keeps to errors otherwise (also CAI_VERBOSE=1)")
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


def command_parser(parser: argparse.ArgumentParser, args: argparse.Namespace) -> argparse.ArgumentParser:
    """The parser of the (sub)command ``args`` were parsed for: ``cai eval hhh``'s, not ``cai``'s."""
    while True:
        action = next((a for a in parser._actions if isinstance(a, argparse._SubParsersAction)), None)
        name = getattr(args, action.dest, None) if action is not None else None
        if name not in getattr(action, "choices", {}):
            return parser
        parser = action.choices[name]


class VersionAction(argparse.Action):
    """``--version``, its line made only when asked for (reading the package metadata takes about 25 ms)."""

    def __init__(self, option_strings, dest=argparse.SUPPRESS, default=argparse.SUPPRESS, help=None):
        super().__init__(option_strings, dest=dest, default=default, nargs=0, help=help)

    def __call__(self, parser, namespace, values, option_string=None):
        print(version_line())
        parser.exit()


def version_line() -> str:
    from importlib.metadata import PackageNotFoundError, version

    from cai.allocator import active

    try:
        own = version("cai")
    except PackageNotFoundError:  # run from a source tree that was never installed
        own = "(not installed)"
    return f"cai {own} (Python {sys.version.split()[0]}; memory allocator: {active()})"


def entry() -> int:
    """The ``cai`` command as a program (its console script and ``python -m cai``): first TCMalloc,
    by starting itself again where one is installed (:mod:`cai.allocator`), then :func:`main`."""
    from cai.allocator import restart_with_tcmalloc

    restart_with_tcmalloc()
    return main()


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    # argparse hands a subcommand's unknown flags up to `cai` itself, which would print its own usage;
    # the subcommand's usage and the flag it has nearest to the unknown one help more.
    args, extras = parser.parse_known_args(argv)
    # `cai`'s own switches read as naturally after the command (`cai run X --verbose`).
    for flag in [e for e in extras if e in GLOBAL_FLAGS]:
        setattr(args, GLOBAL_FLAGS[flag], True)
        extras.remove(flag)
    if extras:
        from cai.cli.names import unknown_flags_message

        command = command_parser(parser, args)
        command.error(unknown_flags_message(command, extras))
    if not getattr(args, "func", None):
        parser.print_help()
        return 0
    from cai.env_flags import odd_switches, set_on
    from cai.errors import CAIError
    from cai.quiet import quiet_libraries

    for warning in odd_switches():
        print(f"cai: warning: {warning}", file=sys.stderr)

    try:
        with quiet_libraries(verbose=args.verbose or getattr(args, "library_logs", False)):
            result = args.func(args)
        return int(result or 0)
    except KeyboardInterrupt as e:
        if getattr(args, "prompt", None) is not None:  # one prompt answered on the terminal: nothing to resume
            print("cai: interrupted", file=sys.stderr)
        else:
            print("cai: interrupted; finished batches are saved, run the same command again to resume",
                  file=sys.stderr)
        return getattr(e, "exit_code", 130)  # cai run's SIGTERM (cai.run.processes.Terminated): 143
    except (CAIError, ValueError, KeyError, OSError) as e:
        # OSError covers a missing file, a read-only folder, a full disk and dropped connections;
        # UnicodeDecodeError is a ValueError. Anything else is a bug and keeps its traceback.
        if args.traceback or set_on("CAI_TRACEBACK"):
            raise
        print(f"cai: error: {one_line(e)}", file=sys.stderr)
        return 2


def one_line(e: BaseException) -> str:
    """The message of an error the user can fix, as one line that says what to do."""
    if isinstance(e, UnicodeDecodeError):
        return (f"a file is not UTF-8 text (byte 0x{e.object[e.start]:02x} at offset {e.start}); "
                "re-save it as UTF-8, e.g. iconv -f latin1 -t utf-8 FILE > FILE.utf8")
    if isinstance(e, KeyError):
        return str(e.args[0]) if e.args else "missing key"
    if isinstance(e, OSError) and not isinstance(e, ConnectionError) and e.strerror:
        hint = {errno.ENOSPC: "free some space and run the same command again to resume",
                errno.EDQUOT: "free some space and run the same command again to resume",
                errno.EACCES: "pass a path you can write to", errno.EPERM: "pass a path you can write to",
                errno.EROFS: "pass a path on a writable file system",
                errno.EISDIR: "pass a file path, not a folder",
                errno.ENOENT: "check the path"}.get(e.errno, "")
        name = f"{e.filename}: " if e.filename else ""
        return f"{name}{e.strerror.lower()}" + (f"; {hint}" if hint else "")
    return " ".join(str(e).split()) or type(e).__name__
