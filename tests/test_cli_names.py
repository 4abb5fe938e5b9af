"""One name for one thing (issue 17, section 7): every command calls the same concept by the same
flag, old names keep working for a release without showing in --help, a mistyped flag gets the
subcommand's usage and the nearest flag, and the trainers keep stdout clean under --no-progress."""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from cai.cli import build_parser, main
from cai.cli.names import CONCEPTS

ROOT = Path(__file__).resolve().parents[1]


def _walk(parser: argparse.ArgumentParser, path: tuple[str, ...] = ()):
    """(command words, parser) for every parser that takes options, subcommands included."""
    yield path, parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield from _walk(sub, path + (name,))


def _options(parser: argparse.ArgumentParser, *, visible: bool):
    for a in parser._actions:
        if not a.option_strings or isinstance(a, argparse._HelpAction):
            continue
        if (a.help is not argparse.SUPPRESS) == visible:
            yield a


def _names(action: argparse.Action) -> list[str]:
    """An action's names, without the --no-X twin of a --X/--no-X switch."""
    return [s for s in action.option_strings
            if not (isinstance(action, argparse.BooleanOptionalAction) and s.startswith("--no-"))]


PARSERS = list(_walk(build_parser()))
# Config fields that share a name across stages but are different things, so their flags differ.
SAME_FIELD_NAME_OTHER_CONCEPT = {"beta"}  # DPO's β (--beta) vs RLOO's KL coefficient (--kl-coef, as in ppo)


def test_every_command_shows_one_name_per_concept():
    """The parser walk: no command shows a second name for a concept, whether an old name of it
    (CONCEPTS), two long flags on one option, or a flag other commands spell differently."""
    problems = []
    by_dest: dict[str, dict[tuple[str, ...], str]] = {}
    by_short: dict[str, dict[str, str]] = {}
    for path, parser in PARSERS:
        cmd = " ".join(("cai",) + path)
        for a in _options(parser, visible=True):
            names = _names(a)
            longs = [s for s in names if s.startswith("--")]
            shorts = [s for s in names if not s.startswith("--")]
            if len(longs) > 1 or len(shorts) > 1:
                problems.append(f"{cmd}: {'/'.join(names)} is one option with several names")
            for s in names:
                for canonical, old in CONCEPTS.items():
                    if s in old:
                        problems.append(f"{cmd}: shows {s}; the name for this is {canonical}")
            by_dest.setdefault(a.dest, {}).setdefault(tuple(sorted(names)), cmd)
            for s in shorts:
                by_short.setdefault(s, {}).setdefault(longs[0] if longs else "", cmd)
    for dest, spellings in by_dest.items():
        if len(spellings) > 1 and dest not in SAME_FIELD_NAME_OTHER_CONCEPT:
            problems.append(f"option {dest!r} is spelled " + "; ".join(f"{'/'.join(k)} in {c}"
                                                                       for k, c in spellings.items()))
    for short, longs in by_short.items():
        if len(longs) > 1:
            problems.append(f"{short} means " + "; ".join(f"{lng} in {c}" for lng, c in longs.items()))
    assert not problems, "\n".join(problems)


def test_the_same_concept_has_the_same_flag_everywhere():
    """The concepts of the issue, by their flags: the main input is --data, the model -m/--model,
    the output -o/--output, the feedback model --judge."""
    seen = {"-m": set(), "-o": set()}
    for path, parser in PARSERS:
        shown = {s for a in _options(parser, visible=True) for s in a.option_strings}
        for short, long in (("-m", "--model"), ("-o", "--output")):
            if long in shown:
                assert short in shown, f"cai {' '.join(path)} has {long} but not {short}"
                seen[short].add(path)
    assert ("label",) in seen["-m"] and ("ppo",) in seen["-m"]  # they used to lack it
    for cmd in [("generate",), ("critique",), ("label",), ("ppo",), ("rloo",), ("redteam",), ("sft",), ("dpo",),
                ("reward",), ("eval", "hhh"), ("eval", "harmlessness")]:
        parser = dict(PARSERS)[cmd]
        assert "--data" in {s for a in _options(parser, visible=True) for s in a.option_strings}, cmd


def test_hidden_names_are_aliases_of_a_shown_option():
    """A hidden option is only ever an old name of an option --help shows (same destination)."""
    for path, parser in PARSERS:
        shown = {a.dest for a in _options(parser, visible=True)}
        for a in _options(parser, visible=False):
            assert a.dest in shown, f"cai {' '.join(path)}: {a.option_strings} hides an option with no shown name"


def test_the_walk_covers_the_options_every_command_gained():
    """Options added beside the renames are in the walk, so the checks above hold them to one name
    too: --overwrite (every command that writes), --train-prompts (every eval that answers prompts,
    repeatable), --eval-split (the trainers that hold examples out)."""
    shown: dict[str, set[tuple[str, ...]]] = {}
    for path, parser in PARSERS:
        for a in _options(parser, visible=True):
            for s in a.option_strings:
                shown.setdefault(s, set()).add(path)
    writers = {("generate",), ("critique",), ("label",), ("sft",), ("reward",), ("dpo",), ("rloo",), ("ppo",),
               ("redteam",), ("eval", "hhh"), ("eval", "labeler"), ("report",), ("compare",), ("run",)}
    assert writers <= shown["--overwrite"]
    assert {("eval", "hhh"), ("eval", "harmlessness"), ("eval", "helpfulness"), ("eval", "ifeval")} <= \
        shown["--train-prompts"]
    assert ("sft",) in shown["--eval-split"]
    args = build_parser().parse_args(["eval", "hhh", "--train-prompts", "a", "--train-prompts", "b", "c"])
    assert args.train_prompts == ["a", "b", "c"]


def test_an_option_takes_flags_aliases_lists_and_recorded_together():
    """`cai.config.option` carries every feature at once: an old name of a list field collects into
    the same list, a list flag used once replaces its default, and a field that is not recorded stays
    out of to_dict."""
    from dataclasses import dataclass

    from cai.config import add_config_arguments, build_config, option, to_dict

    @dataclass
    class Cfg:
        data: list[str] = option([], help="sources", flags=("--data",), aliases=("--prompts",))
        quiet: bool = option(False, help="not part of the identity", recorded=False)
        stop: tuple[str, ...] = option(("x",), help="a list flag used once replaces its default")

    parser = argparse.ArgumentParser()
    add_config_arguments(parser, Cfg)
    args = parser.parse_args(["--data", "a", "--prompts", "b", "--data", "c", "--quiet", "--stop", "y", "z"])
    cfg = build_config(Cfg, args)
    assert cfg.data == ["a", "b", "c"] and cfg.quiet is True and tuple(cfg.stop) == ("y", "z")
    assert to_dict(cfg) == {"data": ["a", "b", "c"], "stop": ["y", "z"]}
    assert "--prompts" not in parser.format_help()


def test_help_shows_defaults_as_they_are_typed():
    """A list default reads as the words to type (quoted where one holds a space), not Python's
    tuple; a switch that is on unless turned off says so, one that is off says nothing."""
    from dataclasses import dataclass

    from cai.config import add_config_arguments, option

    @dataclass
    class Cfg:
        sets: tuple[str, ...] = option(("hh-rlhf", "hhh"), help="sets")
        clamp: tuple[float, ...] = option((0.4, 0.6), help="clamp")
        cats: tuple[str, ...] = option(("Legal Opinion", "x"), help="cats")
        swap: bool = option(True, help="swap")
        lora: bool = option(False, help="lora")

    parser = argparse.ArgumentParser()
    add_config_arguments(parser, Cfg)
    helps = {a.dest: a.help for a in parser._actions}
    assert helps["sets"] == "sets (default: hh-rlhf hhh)"
    assert helps["clamp"] == "clamp (default: 0.4 0.6)"
    assert helps["cats"] == "cats (default: 'Legal Opinion' x)"
    assert helps["swap"] == "swap (default: on)"
    assert helps["lora"] == "lora"
    for path, p in PARSERS:  # no command shows a Python tuple or list as a default
        for a in _options(p, visible=True):
            assert "(default: (" not in (a.help or "") and "(default: [" not in (a.help or ""), (path, a.help)


def test_every_list_flag_collects_each_use():
    """`cai reward --data a.jsonl --data b.jsonl` trained on b.jsonl alone: a flag that takes several
    values and kept only its last use dropped the rest without a word. Every such flag now collects."""
    lists = [(path, a.option_strings) for path, p in PARSERS for a in _options(p, visible=True)
             if a.nargs in ("+", "*")]
    assert len(lists) > 20
    for path, flags in lists:
        p = dict(PARSERS)[path]
        action = next(a for a in p._actions if a.option_strings == flags)
        assert isinstance(action, argparse._ExtendAction), (path, flags)
    args = build_parser().parse_args(["reward", "--data", "a.jsonl", "--data", "b.jsonl"])
    assert list(args.data) == ["a.jsonl", "b.jsonl"]


OLD_NAMES = [
    (["generate", "-m", "mock:", "-i", "p.jsonl"], "input", "p.jsonl"),
    (["generate", "-m", "mock:", "--input", "p.jsonl"], "input", "p.jsonl"),
    (["generate", "-m", "mock:", "--prompts", "p.jsonl"], "input", "p.jsonl"),  # the key run files used
    (["generate", "-m", "mock:", "--n", "3"], "n", 3),
    (["generate", "-m", "mock:", "--system", "be brief"], "system", "be brief"),
    (["critique", "--prompts", "redteam"], "prompts", "redteam"),
    (["label", "--policy", "mock:"], "policy", "mock:"),
    (["label", "--feedback", "mock:"], "feedback", "mock:"),
    (["label", "--prompts", "redteam"], "prompts", "redteam"),
    (["ppo", "--policy", "x"], "policy", "x"),
    (["ppo", "--prompts", "redteam"], "prompts", "redteam"),
    (["dpo", "--policy", "x"], "policy", "x"),
    (["rloo", "--policy", "x"], "policy", "x"),
    (["rloo", "--beta", "0.1"], "beta", 0.1),
    (["redteam", "--behaviors", "advbench"], "behaviors", "advbench"),
]


@pytest.mark.parametrize("argv,dest,value", OLD_NAMES, ids=[" ".join(c[0][:1] + c[0][-2:-1]) for c in OLD_NAMES])
def test_old_names_still_work(argv, dest, value):
    assert getattr(build_parser().parse_args(argv), dest) == value


NEW_NAMES = [
    (["generate", "--data", "p.jsonl", "-k", "2", "--system-prompt", "s"], {"input": "p.jsonl", "n": 2, "system": "s"}),
    (["label", "-m", "mock:", "--judge", "j", "--data", "redteam"], {"policy": "mock:", "feedback": "j",
                                                                    "prompts": "redteam"}),
    (["ppo", "--model", "x", "--data", "redteam"], {"policy": "x", "prompts": "redteam"}),
    (["rloo", "-m", "x", "--kl-coef", "0.2", "--data", "p"], {"policy": "x", "beta": 0.2, "prompts": "p"}),
    (["redteam", "--data", "advbench"], {"behaviors": "advbench"}),
]


@pytest.mark.parametrize("argv,values", NEW_NAMES, ids=[c[0][0] for c in NEW_NAMES])
def test_new_names(argv, values):
    args = build_parser().parse_args(argv)
    assert {k: getattr(args, k) for k in values} == values


def test_config_files_take_the_flag_names_as_keys():
    """`--config` says its keys are the long flag names; old keys still work, both at once is an error."""
    from cai.config import build_config
    from cai.label.engine import LabelConfig

    cfg = build_config(LabelConfig, {"model": "mock:", "data": "redteam", "judge": "mock:x"})
    assert (cfg.policy, cfg.prompts, cfg.feedback) == ("mock:", "redteam", "mock:x")
    cfg = build_config(LabelConfig, {"policy": "mock:", "prompts": "redteam"})
    assert (cfg.policy, cfg.prompts) == ("mock:", "redteam")
    with pytest.raises(ValueError, match="'model' and 'policy'"):
        build_config(LabelConfig, {"model": "a", "policy": "b"}, where="run.yaml")


def test_run_file_sections_take_the_flag_names(tmp_path):
    """`cai run` sections read the same keys: `label: {data: ...}` is label's prompt source."""
    from cai.run.plan import build_plan

    spec = {"model": "mock:", "label": {"data": "p.jsonl", "judge": "mock:j"}, "ppo": {"reward": "m:f",
                                                                                    "data": "q.jsonl"}}
    steps = {s.stage: s.config for s in build_plan(spec)}
    assert steps["label"]["prompts"] == "p.jsonl" and steps["label"]["feedback"] == "mock:j"
    assert steps["ppo"]["prompts"] == "q.jsonl" and "data" not in steps["ppo"]
    assert build_plan({"generate": {"prompts": "helpful"}})[0].config["input"] == "helpful"  # its old run-file key


def test_an_arm_overrides_an_option_whatever_name_either_side_uses(tmp_path):
    from cai.run.arms import arm_specs
    from cai.run.plan import build_plan

    spec = {"model": "mock:", "critique": {"data": "redteam", "limit": 2},
            "arms": {"a": {"critique": {"prompts": "helpful"}}, "b": {}}}
    arms = {name: build_plan(arm)[0].config for name, arm in arm_specs(spec, where="run.yaml").items()}
    assert arms["a"]["prompts"] == "helpful" and arms["b"]["prompts"] == "redteam" and arms["a"]["limit"] == 2


WRONG_FLAGS = [
    (["label", "--polcy", "mock:"], "cai label", "--model"),
    (["ppo", "--modle", "x"], "cai ppo", "--model"),
    (["generate", "--promts", "p.jsonl"], "cai generate", "--data"),
    (["sft", "--prompts", "p.jsonl"], "cai sft", "--data"),
    (["critique", "--input", "p.jsonl"], "cai critique", "--data"),
    (["redteam", "--prompts", "p.jsonl"], "cai redteam", "--data"),
    (["eval", "helpfulness", "--feild", "q"], "cai eval helpfulness", "--field"),
    (["rloo", "--samples-per-promt", "4"], "cai rloo", "--samples-per-prompt"),
    (["reward", "score", "--dta", "x"], "cai reward score", "--data"),
]


@pytest.mark.parametrize("argv,usage,nearest", WRONG_FLAGS, ids=[" ".join(c[0][:2]) for c in WRONG_FLAGS])
def test_a_wrong_flag_gets_the_subcommands_usage_and_the_nearest_flag(argv, usage, nearest, capsys):
    with pytest.raises(SystemExit) as e:
        main(argv)
    err = capsys.readouterr().err
    assert e.value.code == 2
    assert f"usage: {usage} " in err, err  # not the top-level `usage: cai [-h] ...`
    assert f"did you mean {nearest}?" in err, err
    assert err.strip().splitlines()[-1].startswith(f"{usage}: error: unrecognized arguments: {argv[-2]}"), err


def test_a_flag_nothing_is_near_still_names_the_subcommand(capsys):
    with pytest.raises(SystemExit):
        main(["generate", "--zzzz-qqqq", "x"])
    err = capsys.readouterr().err
    assert "usage: cai generate " in err and "did you mean" not in err and "cai generate --help" in err


# -- trainers: --no-progress, nothing on stdout, one warning once -------------------------------------------------

def _env() -> dict[str, str]:
    env = dict(os.environ, HF_HUB_OFFLINE="1", OMP_NUM_THREADS="1", TOKENIZERS_PARALLELISM="false")
    env["PYTHONPATH"] = str(ROOT / "src") + os.pathsep + env.get("PYTHONPATH", "")
    return env


def _sl_file(path: Path) -> str:
    rows = [{"prompt": [{"role": "user", "content": f"question {i}"}],
             "completion": [{"role": "assistant", "content": f"answer {i}"}]} for i in range(4)]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return str(path)


BAR = ("it/s]", "examples/s]", "%|")


def test_sft_no_progress_prints_no_bars_and_keeps_stdout_clean(tmp_path, tiny_llama_dir):
    """Hugging Face's own bars (loading weights, datasets, writing shards) and the Trainer's raw
    log dicts used to print with --no-progress; the dicts went to stdout."""
    cmd = [sys.executable, "-m", "cai", "sft", "-m", tiny_llama_dir, "--data", _sl_file(tmp_path / "sl.jsonl"),
           "-o", str(tmp_path / "out"), "--max-steps", "2", "--batch-size", "2", "--logging-steps", "1",
           "--no-progress"]
    r = subprocess.run(cmd, env=_env(), capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr
    assert r.stdout == "", r.stdout
    assert not any(b in r.stderr for b in BAR), r.stderr
    assert "{'loss'" not in r.stderr
    assert "trained 2 steps" in r.stderr
    logged = [json.loads(x) for x in (tmp_path / "out" / "metrics.jsonl").read_text().splitlines()]
    assert any("loss" in m for m in logged)  # the numbers still go where they belong


def test_trl_version_warning_is_not_repeated():
    """Importing TRL's RLOO trainer raised the same vLLM-version warning from five places."""
    code = "import cai.train.rloo; from trl import RLOOTrainer, DPOTrainer"
    r = subprocess.run([sys.executable, "-c", code], env=_env(), capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    assert r.stderr.count("TRL currently supports vLLM") <= 1, r.stderr  # it was printed five times
