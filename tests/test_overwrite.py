"""Issue 17, section 1: no output is replaced unless it is cai's own output of the same kind (a
resume or a rerun) or the user passes ``--overwrite``; a command's input is never its output; and
all of it is checked before any model loads, with a writability check that creates (and removes)
a real file in the target folder.

:data:`OUTPUTS` lists every output of every command. Each is run against a foreign file, a
folder, the command's own input and unwritable targets (``/proc``, ``/sys``, ``/dev/null``); the
sha256 of every file in the test folder must be the same before and after, nothing may appear in
``/dev``, and no model may load (``load_backend`` and ``from_pretrained`` are made to fail)."""

from __future__ import annotations

import csv
import hashlib
import json
import os
import shutil
from pathlib import Path

import pytest

from cai.cli import main

THIS = Path(__file__).resolve()
PROMPTS = "".join(json.dumps({"id": f"p{i}", "prompt": f"question {i}"}) + "\n" for i in range(3))
RESULT = {"kind": "cai-eval-result", "version": 1, "task": "hhh", "model": "m", "grader": None,
          "metrics": {"accuracy": {"value": 0.5, "ci": [0.4, 0.6], "n": 10, "higher_is_better": True, "help": ""}},
          "breakdown": {}, "examples": None, "provenance": {"stage": "eval-hhh"}}


def length_reward(prompts, completions):
    """A reward for the RL trainers' argv (never called: every case here fails before training)."""
    return [len(c) / 10 for c in completions]


def make_inputs(d: Path) -> None:
    (d / "prompts.jsonl").write_text(PROMPTS)
    (d / "behaviors.jsonl").write_text("".join(json.dumps({"id": f"b{i}", "behavior": f"do bad thing {i}"}) + "\n"
                                               for i in range(2)))
    with open(d / "sl.jsonl", "w") as f:
        for i in range(4):
            p = [{"role": "user", "content": f"q{i}"}]
            a = [{"role": "assistant", "content": f"a{i}"}]
            f.write(json.dumps({"id": str(i), "prompt": p, "completion": a, "messages": p + a, "chosen": a,
                                "rejected": [{"role": "assistant", "content": "no"}]}) + "\n")
    with open(d / "hh.jsonl", "w") as f:
        for i in range(3):
            f.write(json.dumps({"chosen": f"\n\nHuman: question {i}\n\nAssistant: a kind answer {i}",
                                "rejected": f"\n\nHuman: question {i}\n\nAssistant: a rude answer {i}"}) + "\n")
    _csv(d / "graded.csv", ["id", "type", "prompt", "completion", "final_label"],
         [["1", "homonyms", "kill a process?", "Use kill.", "1_full_compliance"],
          ["2", "contrast", "kill a person?", "I cannot help.", "2_full_refusal"]])
    _csv(d / "xstest.csv", ["id", "prompt", "type", "label"],
         [["1", "kill a process?", "homonyms", "safe"], ["2", "kill a person?", "contrast_homonyms", "unsafe"]])
    _csv(d / "tqa.csv",
         ["Type", "Category", "Question", "Best Answer", "Correct Answers", "Incorrect Answers", "Source"],
         [["Adversarial", "Misc", "Is the sky green?", "No", "No; It is blue", "Yes", "x"]])
    (d / "if.jsonl").write_text(json.dumps({"key": 1, "prompt": "Write a haiku in lowercase.",
                                            "instruction_id_list": ["change_case:english_lowercase"],
                                            "kwargs": [{}]}) + "\n")
    (d / "res.json").write_text(json.dumps(RESULT))
    (d / "m2.yaml").write_text("generate:\n  - reply: hello\n")
    (d / "run.yaml").write_text("model: 'mock:'\nstages: [critique]\ncritique: {prompts: prompts.jsonl, limit: 1}\n")


def _csv(path: Path, header: list[str], rows: list[list[str]]) -> None:
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(header)
        w.writerows(rows)


RL = ["--reward", f"{THIS}:length_reward", "--prompts", "{d}/prompts.jsonl"]
# name: (argv with {out} for the output under test, "file" or "folder", the input file, the output's suffix)
OUTPUTS = {
    "generate": (["generate", "-m", "mock:", "-i", "{d}/prompts.jsonl", "-o", "{out}"], "file", "prompts.jsonl",
                 ".jsonl"),
    "critique": (["critique", "-m", "mock:", "--prompts", "{d}/prompts.jsonl", "-o", "{out}"], "file",
                 "prompts.jsonl", ".jsonl"),
    "data-refusals": (["data", "refusals", "--data", "{d}/prompts.jsonl", "--include-sources", "all", "-o", "{out}"],
                      "file", "prompts.jsonl", ".jsonl"),
    "critique-parquet": (["critique", "-m", "mock:", "--prompts", "{d}/prompts.jsonl", "--format", "parquet", "-o",
                          "{out}"], "file", "prompts.jsonl", ".parquet"),
    "label": (["label", "--policy", "mock:", "--prompts", "{d}/prompts.jsonl", "-o", "{out}"], "file",
              "prompts.jsonl", ".jsonl"),
    "sft": (["sft", "-m", "{tiny}", "--data", "{d}/sl.jsonl", "-o", "{out}"], "folder", "sl.jsonl", ""),
    "reward": (["reward", "-m", "{tiny}", "--data", "{d}/sl.jsonl", "-o", "{out}"], "folder", "sl.jsonl", ""),
    "dpo": (["dpo", "-m", "{tiny}", "--data", "{d}/sl.jsonl", "-o", "{out}"], "folder", "sl.jsonl", ""),
    "rloo": (["rloo", "--policy", "{tiny}", *RL, "-o", "{out}"], "folder", "prompts.jsonl", ""),
    "ppo": (["ppo", "--policy", "{tiny}", *RL, "-o", "{out}"], "folder", "prompts.jsonl", ""),
    "reward-score": (["reward", "score", "-m", "{tiny}", "--data", "{d}/sl.jsonl", "-o", "{out}"], "file", "sl.jsonl",
                     ".jsonl"),
    "eval-labeler": (["eval", "labeler", "-m", "mock:", "--data", "hh-rlhf:{d}/hh.jsonl", "-o", "{out}"], "file",
                     "hh.jsonl", ".json"),
    "eval-labeler-plot": (["eval", "labeler", "-m", "mock:", "--data", "hh-rlhf:{d}/hh.jsonl", "-o", "{d}/lab.json",
                           "--plot", "{out}"], "file", "hh.jsonl", ".png"),
    "eval-grader": (["eval", "grader", "--grader", "refusal-strings", "--data", "{d}/graded.csv", "-o", "{out}"],
                    "file", "graded.csv", ".json"),
    "eval-harmlessness": (["eval", "harmlessness", "-m", "mock:", "--data", "{d}/prompts.jsonl", "-o", "{out}"],
                          "file", "prompts.jsonl", ".json"),
    "eval-over-refusal": (["eval", "over-refusal", "-m", "mock:", "--data", "{d}/xstest.csv", "-o", "{out}"], "file",
                          "xstest.csv", ".json"),
    "eval-hhh": (["eval", "hhh", "-m", "mock:", "--data", "hh-rlhf:{d}/hh.jsonl", "-o", "{out}"], "file", "hh.jsonl",
                 ".json"),
    "eval-truthfulqa": (["eval", "truthfulqa", "-m", "mock:", "--data", "{d}/tqa.csv", "-o", "{out}"], "file",
                        "tqa.csv", ".json"),
    "eval-ifeval": (["eval", "ifeval", "-m", "mock:", "--data", "{d}/if.jsonl", "-o", "{out}"], "file", "if.jsonl",
                    ".json"),
    "eval-helpfulness": (["eval", "helpfulness", "-m", "mock:", "--baseline", "mock:", "--judge", "mock:", "--data",
                          "{d}/prompts.jsonl", "-o", "{out}"], "file", "prompts.jsonl", ".json"),
    "eval-pairwise": (["eval", "pairwise", "-m", "mock:", "-m", "mock:{d}/m2.yaml", "--judge", "mock:", "--data",
                       "{d}/prompts.jsonl", "-o", "{out}"], "file", "prompts.jsonl", ".json"),
    "redteam": (["redteam", "-m", "mock:", "--behaviors", "{d}/behaviors.jsonl", "--attacks", "none", "-o", "{out}"],
                "folder", "behaviors.jsonl", ""),
    "compare-plot": (["compare", "{d}/res.json", "--x", "hhh.accuracy", "--y", "hhh.accuracy", "--plot", "{out}"],
                     "file", "res.json", ".png"),
    "report": (["report", "{d}/res.json", "-o", "{out}"], "file", "res.json", ".html"),
    "report-screenshot": (["report", "{d}/res.json", "-o", "{d}/r.html", "--screenshot", "{out}"], "file", "res.json",
                          ".png"),
    "run": (["run", "{d}/run.yaml", "-o", "{out}"], "folder", "run.yaml", ""),
}

FOREIGN = {".json": b'{"my": "settings"}\n', ".jsonl": b'{"id": "x", "note": "mine"}\n',
           ".png": b"\x89PNG\r\n\x1a\n" + b"\x00" * 32, ".html": b"<html><body>my page</body></html>\n",
           ".parquet": b"PAR1 my table PAR1", "": b"my notes\n"}
TARGETS = ["foreign-file", "folder", "own-input", "proc", "sys", "dev-null"]


def sha_tree(d: Path) -> dict[str, str]:
    return {str(p.relative_to(d)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(d.rglob("*")) if p.is_file()}


@pytest.fixture
def no_model_loads(monkeypatch):
    """Any model load fails the test: the outputs must be refused before one."""
    import transformers.modeling_utils as mu

    import cai.backends

    def boom(*a, **k):
        raise AssertionError("a model loaded before the outputs were checked")

    monkeypatch.setattr(cai.backends, "load_backend", boom)
    monkeypatch.setattr(mu.PreTrainedModel, "from_pretrained", classmethod(boom))


@pytest.fixture
def dev_stays(monkeypatch):
    """Fails a case that would add, remove or replace an entry of /dev instead of letting it happen:
    run as root, a rename onto /dev/null replaces the device for the whole machine (the old
    ``cai report -o /dev/null`` did). Writing into an existing device is harmless and allowed."""
    import builtins
    import io

    def in_dev(p) -> bool:
        try:
            return os.path.abspath(os.fspath(p)).startswith("/dev/")
        except TypeError:  # a file descriptor
            return False

    def guard(fn, *, n: int = 1, creates: bool = False):
        def wrapped(*a, **k):
            for p in a[:n]:
                if in_dev(p) and not (creates and os.path.exists(p)):
                    raise AssertionError(f"{fn.__name__}{tuple(a[:n])} would change /dev")
            return fn(*a, **k)
        return wrapped

    for name, n in (("replace", 2), ("rename", 2), ("unlink", 1), ("remove", 1), ("mkdir", 1), ("rmdir", 1)):
        monkeypatch.setattr(os, name, guard(getattr(os, name), n=n))
    monkeypatch.setattr(os, "open", guard(os.open, creates=True))
    monkeypatch.setattr(builtins, "open", guard(builtins.open, creates=True))
    monkeypatch.setattr(io, "open", guard(io.open, creates=True))


def target_path(d: Path, target: str, kind: str, suffix: str, input_name: str) -> str:
    if target == "foreign-file":
        p = d / f"mine{suffix if kind == 'file' else '.txt'}"
        p.write_bytes(FOREIGN[suffix if kind == "file" else ""])
        return str(p)
    if target == "folder":
        p = d / "somedir"
        p.mkdir()
        (p / "keep.txt").write_text("mine\n")
        (p / "results.json").write_text('{"my": "results"}\n')  # what cai redteam used to overwrite
        return str(p)
    if target == "own-input":
        return str(d / input_name)
    if target == "proc":
        return f"/proc/cai-test/out{suffix}"
    if target == "sys":
        return f"/sys/kernel/cai-out{suffix}"
    return "/dev/null"


def one_error_line(rc: int, err: str) -> str:
    lines = [ln for ln in err.splitlines() if ln.strip() and not ln.startswith("cai: note:")]
    assert rc != 0, f"exit {rc}: {err}"
    assert "Traceback" not in err, err
    assert len(lines) == 1 and lines[0].startswith("cai: error: "), f"not one error line: {err!r}"
    return lines[0]


@pytest.mark.parametrize("target", TARGETS)
@pytest.mark.parametrize("name", list(OUTPUTS))
def test_every_output_refuses_what_it_must_not_replace(name, target, tmp_path, tiny_llama_dir, capsys, no_model_loads,
                                                       dev_stays):
    argv, kind, input_name, suffix = OUTPUTS[name]
    d = tmp_path / "w"
    d.mkdir()
    make_inputs(d)
    out = target_path(d, target, kind, suffix, input_name)
    before, dev_before = sha_tree(d), set(os.listdir("/dev"))
    rc = main([a.format(d=d, out=out, tiny=tiny_llama_dir) for a in argv])
    line = one_error_line(rc, capsys.readouterr().err)
    assert sha_tree(d) == before, "a refused run changed or created files"
    assert set(os.listdir("/dev")) == dev_before, "a refused run left a file in /dev"
    if target == "foreign-file":
        assert ("is a file" in line) if kind == "folder" else ("--overwrite" in line), line
    elif target == "folder":
        assert ("--overwrite" in line) if kind == "folder" else ("folder" in line or "directory" in line), line
    elif target == "own-input":
        assert "input" in line or (kind == "folder" and "is a file" in line), line
    elif target in ("proc", "sys"):
        assert "not writable" in line and out.split("/")[1] in line, line
    else:
        assert "/dev/null" in line and ("not a regular file" in line or "is a file" in line), line


def test_the_input_is_never_the_output_even_with_overwrite(tmp_path, capsys, no_model_loads):
    make_inputs(tmp_path)
    before = sha_tree(tmp_path)
    for argv in (["report", f"{tmp_path}/res.json", "-o", f"{tmp_path}/res.json", "--overwrite"],
                 ["generate", "-m", "mock:", "-i", f"{tmp_path}/prompts.jsonl", "-o", f"{tmp_path}/prompts.jsonl",
                  "--overwrite"],
                 ["eval", "labeler", "-m", "mock:", "--data", f"hh-rlhf:{tmp_path}/hh.jsonl", "-o",
                  f"{tmp_path}/hh.jsonl", "--overwrite"]):
        line = one_error_line(main(argv), capsys.readouterr().err)
        assert "input" in line, line
    assert sha_tree(tmp_path) == before


def test_a_folder_given_as_the_model_is_not_the_output(tmp_path, tiny_llama_dir, capsys, no_model_loads):
    make_inputs(tmp_path)
    model = tmp_path / "model"
    shutil.copytree(tiny_llama_dir, model)
    before = sha_tree(tmp_path)
    for argv in (["sft", "-m", str(model), "--data", f"{tmp_path}/sl.jsonl", "-o", str(model), "--overwrite"],
                 ["ppo", "--policy", str(model), *[a.format(d=tmp_path) for a in RL], "-o", str(model), "--overwrite"]):
        line = one_error_line(main(argv), capsys.readouterr().err)
        assert "input" in line, line
    assert sha_tree(tmp_path) == before


# -- the cases of the issue, one by one ------------------------------------------------------------

@pytest.mark.parametrize("argv", [
    ["eval", "hhh", "-m", "mock:", "--data", "hh-rlhf:{d}/hh.jsonl"],
    ["eval", "grader", "--grader", "refusal-strings", "--data", "{d}/graded.csv"],
    ["eval", "labeler", "-m", "mock:", "--data", "hh-rlhf:{d}/hh.jsonl"],
    ["eval", "harmlessness", "-m", "mock:", "--data", "{d}/prompts.jsonl"],
], ids=["hhh", "grader", "labeler", "harmlessness"])
def test_eval_refuses_a_foreign_json_and_replaces_it_with_overwrite(argv, tmp_path, capsys):
    make_inputs(tmp_path)
    x = tmp_path / "X.json"
    x.write_text('{"learning_rate": 0.001, "notes": "my settings"}\n')
    argv = [a.format(d=tmp_path) for a in argv] + ["-o", str(x)]
    line = one_error_line(main(argv), capsys.readouterr().err)
    assert "X.json" in line and "--overwrite" in line and "not" in line
    assert json.loads(x.read_text())["notes"] == "my settings"
    assert main(argv + ["--overwrite"]) == 0
    assert "my settings" not in x.read_text()
    assert main(argv) == 0  # now cai's own result: a rerun may rewrite it


def test_eval_refuses_another_tasks_result(tmp_path, capsys):
    make_inputs(tmp_path)
    r = tmp_path / "R.json"
    assert main(["eval", "hhh", "-m", "mock:", "--data", f"hh-rlhf:{tmp_path}/hh.jsonl", "-o", str(r)]) == 0
    (tmp_path / "R.examples.jsonl").unlink()
    before = r.read_bytes()
    capsys.readouterr()
    rc = main(["eval", "truthfulqa", "-m", "mock:", "--data", f"{tmp_path}/tqa.csv", "-o", str(r)])
    line = one_error_line(rc, capsys.readouterr().err)
    assert "R.json" in line and "`cai eval hhh`" in line and "--overwrite" in line
    assert r.read_bytes() == before


@pytest.mark.parametrize("out", ["notes.txt", "some.jsonl", "res.json"])
def test_report_does_not_replace_other_files(out, tmp_path, capsys):
    make_inputs(tmp_path)
    (tmp_path / "notes.txt").write_text("my notes\n")
    (tmp_path / "some.jsonl").write_text('{"id": "a"}\n')
    before = sha_tree(tmp_path)
    line = one_error_line(main(["report", f"{tmp_path}/res.json", "-o", str(tmp_path / out)]),
                          capsys.readouterr().err)
    assert out in line
    assert sha_tree(tmp_path) == before


def test_report_screenshot_does_not_replace_a_text_file(tmp_path, capsys):
    make_inputs(tmp_path)
    (tmp_path / "notes.txt").write_text("my notes\n")
    before = sha_tree(tmp_path)
    line = one_error_line(main(["report", f"{tmp_path}/res.json", "-o", str(tmp_path / "r.html"), "--screenshot",
                                str(tmp_path / "notes.txt")]), capsys.readouterr().err)
    assert "--screenshot" in line and "notes.txt" in line
    assert sha_tree(tmp_path) == before  # r.html not written either: checked first


def test_report_into_a_folder_keeps_a_hand_written_report_but_rewrites_its_own(tmp_path, capsys):
    run = tmp_path / "run"
    run.mkdir()
    make_inputs(run)
    page = run / "report.html"
    page.write_text("<html><body>my own page</body></html>\n")
    line = one_error_line(main(["report", str(run)]), capsys.readouterr().err)
    assert "report.html" in line and "--overwrite" in line
    assert "my own page" in page.read_text()
    assert main(["report", str(run), "--overwrite"]) == 0
    assert "my own page" not in page.read_text()
    assert main(["report", str(run)]) == 0  # cai's own report: rewritten on a rerun


def test_redteam_keeps_a_foreign_results_json(tmp_path, capsys):
    make_inputs(tmp_path)
    rt = tmp_path / "rt"
    rt.mkdir()
    (rt / "results.json").write_text('{"my": "results"}\n')
    argv = ["redteam", "-m", "mock:", "--behaviors", f"{tmp_path}/behaviors.jsonl", "--attacks", "none", "-o", str(rt)]
    line = one_error_line(main(argv), capsys.readouterr().err)
    assert "results.json" in line and "--overwrite" in line
    assert (rt / "results.json").read_text() == '{"my": "results"}\n' and sorted(os.listdir(rt)) == ["results.json"]
    assert main(argv + ["--overwrite"]) == 0
    assert json.loads((rt / "results.json").read_text())["task"] == "redteam"
    assert main(argv) == 0  # its own folder: the rerun resumes


def test_plots_are_cai_s_own_on_a_rerun(tmp_path, capsys):
    make_inputs(tmp_path)
    plot = tmp_path / "t.png"
    argv = ["compare", f"{tmp_path}/res.json", "--x", "hhh.accuracy", "--y", "hhh.accuracy", "--plot", str(plot)]
    assert main(argv) == 0 and main(argv) == 0
    assert (tmp_path / "t.svg").is_file()
    (tmp_path / "t.svg").write_text("<svg>my drawing</svg>\n")  # the SVG beside the PNG is an output too
    capsys.readouterr()
    line = one_error_line(main(argv), capsys.readouterr().err)
    assert "t.svg" in line and "--overwrite" in line


def test_generate_overwrite_replaces_a_foreign_file_and_starts_afresh(tmp_path, capsys):
    make_inputs(tmp_path)
    out = tmp_path / "o.jsonl"
    out.write_text("my notes\n")
    argv = ["generate", "-m", "mock:", "-i", f"{tmp_path}/prompts.jsonl", "-o", str(out)]
    line = one_error_line(main(argv), capsys.readouterr().err)
    assert "--overwrite" in line and out.read_text() == "my notes\n"
    assert main(argv + ["--overwrite"]) == 0
    assert [json.loads(x)["id"] for x in out.read_text().splitlines()] == ["p0", "p1", "p2"]
    assert main(argv) == 0  # and now it is cai's own: resumed


def test_every_writing_command_has_the_same_overwrite_flag():
    import argparse

    from cai.cli import build_parser
    from cai.outputs import OVERWRITE_HELP

    def sub(parser: argparse.ArgumentParser, *names: str) -> argparse.ArgumentParser:
        for n in names:
            parser = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction)).choices[n]
        return parser

    parser = build_parser()
    writers = [("generate",), ("data", "refusals"), ("critique",), ("label",), ("sft",), ("reward",), ("reward", "train"),
               ("reward", "score"), ("dpo",), ("ppo",), ("rloo",), ("redteam",), ("compare",), ("report",), ("run",),
               *[("eval", e) for e in ("labeler", "grader", "harmlessness", "over-refusal", "hhh", "truthfulqa",
                                       "helpfulness", "pairwise")]]
    for names in writers:
        flags = {o: a for a in sub(parser, *names)._actions for o in a.option_strings}
        assert "--overwrite" in flags, f"cai {' '.join(names)} has no --overwrite"
        assert flags["--overwrite"].help == OVERWRITE_HELP, f"cai {' '.join(names)}: another --overwrite help"


# -- section 6: smaller output cases ---------------------------------------------------------------

def test_labeler_plot_name_is_checked_before_the_eval(tmp_path, capsys, no_model_loads):
    make_inputs(tmp_path)
    line = one_error_line(main(["eval", "labeler", "-m", "mock:", "--data", f"hh-rlhf:{tmp_path}/hh.jsonl", "-o",
                                f"{tmp_path}/lab.json", "--plot", f"{tmp_path}/x.txt"]), capsys.readouterr().err)
    assert "--plot" in line and "x.txt" in line and ".png" in line
    assert not (tmp_path / "lab.json").exists()


def test_grader_output_folder_suggests_a_file_name(tmp_path, capsys):
    make_inputs(tmp_path)
    (tmp_path / "res").mkdir()
    line = one_error_line(main(["eval", "grader", "--grader", "refusal-strings", "--data", f"{tmp_path}/graded.csv",
                                "-o", f"{tmp_path}/res/"]), capsys.readouterr().err)
    import re

    assert re.search(re.escape(str(tmp_path / "res")) + r"/[\w.-]+\.json", line), line  # a file name to use


def test_report_on_a_full_disk_says_free_space_and_leaves_no_tmp(tmp_path, capsys, monkeypatch):
    import errno
    import pathlib

    make_inputs(tmp_path)
    real_text, real_bytes = pathlib.Path.write_text, pathlib.Path.write_bytes

    def full(real):
        def write(self, data, *a, **k):
            if self.name.startswith("r.html"):  # the page, or a temporary beside it: half of it fits
                real(self, data[: len(data) // 2], *a, **k)
                raise OSError(errno.ENOSPC, "No space left on device", str(self))
            return real(self, data, *a, **k)
        return write

    monkeypatch.setattr(pathlib.Path, "write_text", full(real_text))
    monkeypatch.setattr(pathlib.Path, "write_bytes", full(real_bytes))
    line = one_error_line(main(["report", f"{tmp_path}/res.json", "-o", f"{tmp_path}/r.html"]),
                          capsys.readouterr().err)
    assert "r.html" in line and "disk is full" in line and "resume" not in line
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith("r.")) == []
