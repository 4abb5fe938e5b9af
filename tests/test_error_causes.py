"""Errors that name their real cause and a fix the command has (issue 17, section 6).

Each row of CASES is one bad input: (id, files to create, argv, fragments the one error line must
hold, fragments it must not hold). ``{d}`` is the case's folder. As in tests/test_bad_inputs.py the
run must exit non-zero with exactly one ``cai: error:`` line, no traceback, and no file created or
changed, which also shows that it stopped before any model work."""

from __future__ import annotations

import json
import re

import pytest

from cai.cli import build_parser, main
from test_bad_inputs import _make, _snapshot, assert_one_line_error

SL = "".join(json.dumps({"prompt": f"q{i}", "completion": f"a{i}"}) + "\n" for i in range(2))
BINARY = b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR\x00\x01\xff\xfe"
QUICK = ["run", "--preset", "quickstart", "--dry-run", "-o", "{d}/run"]
HELPFUL = ["eval", "helpfulness", "-m", "mock:", "--baseline", "mock:", "--judge", "mock:", "-o", "{d}/h.json"]
XSTEST = "id,type,prompt,completion,final_label\n1,a,hi,sorry I cannot,2_full_refusal\n2,a,hey,sure,1_full_compliance\n"
PM_CONFIG = json.dumps({"architectures": ["LlamaForSequenceClassification"], "num_labels": 1})

CASES = [
    # -- `cai run --set` mistakes name the --set item, not the run file
    ("set-unknown-key", {}, QUICK + ["--set", "critique.limt=2"],
     ["--set critique.limt=2", "no option 'limt'", "did you mean 'limit'"], ["preset quickstart"]),
    ("set-unknown-section", {}, QUICK + ["--set", "critiqe.limit=2"],
     ["--set critiqe.limit=2", "'critiqe'", "did you mean 'critique'"], ["preset quickstart"]),
    ("set-wrong-type", {}, QUICK + ["--set", "critique.limit=two"],
     ["--set critique.limit=two", "limit must be a whole number"], ["preset quickstart", "config file"]),
    ("set-broken-yaml", {}, QUICK + ["--set", "critique.limit=[1,"],
     ["--set critique.limit=[1,", "limit must be a whole number", "not valid YAML"], ["preset quickstart"]),
    ("set-value-read-as-mapping", {}, QUICK + ["--set", "model=mock:"],
     ["--set model=mock:", "mapping", "quote", "'model=\"mock:\"'"], ["preset quickstart", "section critique"]),
    ("set-arm-unknown-key", {}, QUICK + ["--set", "arms.a.sft.epoch=2"],
     ["--set arms.a.sft.epoch=2", "did you mean 'epochs'"], ["preset quickstart"]),
    # -- advice names a flag the command has
    ("sft-weight-zero", {"sl.jsonl": SL}, ["sft", "--data", "{d}/sl.jsonl:0", "-o", "{d}/m"],
     ["sl.jsonl:0", "weight 0"], ["--min-margin"]),
    ("sft-weight-not-a-number", {"sl.jsonl": SL}, ["sft", "--data", "{d}/sl.jsonl:abc", "-o", "{d}/m"],
     ["sl.jsonl:abc", "'abc'", "weight"], ["file not found"]),
    ("helpfulness-no-prompt-column", {"q.jsonl": '{"q": "hi"}\n'}, HELPFUL + ["--data", "{d}/q.jsonl"],
     ["q.jsonl", "--field"], []),
    ("select-bogus", {}, ["critique", "-m", "mock:", "--data", "{d}/prompts.jsonl", "-o", "{d}/c.jsonl",
                          "--samples", "2", "--select", "bogus"],
     ["--select bogus", "filter", "refusal-strings", "module:function"], ["--reward"]),
    # -- a CSV or a JSON document where JSON Lines belong
    ("hhh-csv", {"x.csv": "a,b\n1,2\n"}, ["eval", "hhh", "-m", "mock:", "--data", "{d}/x.csv", "-o", "{d}/r.json"],
     ["x.csv", "CSV", "JSON Lines"], ["fix or remove that line"]),
    ("labeler-csv", {"x.csv": "a,b\n1,2\n"},
     ["eval", "labeler", "-m", "mock:", "--data", "{d}/x.csv", "-o", "{d}/r.json"],
     ["x.csv", "CSV", "JSON Lines"], ["fix or remove that line"]),
    ("hhh-json-document", {"v.json": '[\n  {"prompt": "a", "chosen": "b", "rejected": "c"}\n]\n'},
     ["eval", "hhh", "-m", "mock:", "--data", "{d}/v.json", "-o", "{d}/r.json"],
     ["v.json", "one JSON document", "JSON Lines", "one record per line"], ["fix or remove that line"]),
    # -- binary files and folders where a file belongs are named
    ("config-binary", {"run.yaml": BINARY}, ["critique", "--config", "{d}/run.yaml"],
     ["run.yaml", "binary"], []),
    ("run-file-binary", {"run.yaml": BINARY}, ["run", "{d}/run.yaml", "--dry-run"], ["run.yaml", "binary"], []),
    ("data-stats-binary", {"c.jsonl": BINARY}, ["data", "stats", "{d}/c.jsonl"], ["c.jsonl", "binary"], []),
    ("data-stats-not-utf8", {"c.jsonl": b'{"a": "caf\xe9"}\n'}, ["data", "stats", "{d}/c.jsonl"],
     ["c.jsonl", "not UTF-8"], []),
    ("config-folder", {"dir/x": ""}, ["critique", "--config", "{d}/dir"], ["dir", "is a folder"], ["not found"]),
    ("run-file-folder", {"dir/x": ""}, ["run", "{d}/dir", "--dry-run"], ["dir", "is a folder"], ["not found"]),
    ("sft-data-folder", {"dir/x": ""}, ["sft", "--data", "{d}/dir", "-o", "{d}/m"], ["dir", "is a folder"],
     ["not found"]),
    ("prompts-folder", {"dir/x": ""}, ["generate", "-m", "mock:", "--data", "{d}/dir", "-o", "{d}/o.jsonl"],
     ["dir", "is a folder"], ["no such file"]),
    ("data-stats-folder", {"dir/x": ""}, ["data", "stats", "{d}/dir"], ["dir", "is a folder"], ["not found"]),
    ("reward-score-folder", {"dir/x": ""}, ["reward", "score", "-m", "{d}/pm", "--data", "{d}/dir"],
     ["dir", "is a folder"], ["not found"]),
    # -- a missing model is one message, found before anything loads
    ("model-unknown-bare-name", {}, ["generate", "-m", "llama-9000", "hi"], ["'llama-9000'"], ["vLLM"]),
    ("grader-pm-missing", {}, ["eval", "harmlessness", "-m", "mock:", "--grader", "pm:{d}/nosuchdir", "--limit", "2",
                               "-o", "{d}/h.json"], ["--grader pm:", "nosuchdir", "no such folder"], []),
    ("reward-score-record-shape", {"pm/config.json": PM_CONFIG, "bad.jsonl": '{"id": "a", "text": "x"}\n'},
     ["reward", "score", "-m", "{d}/pm", "--data", "{d}/bad.jsonl"], ["bad.jsonl", "record 1", "nothing to score"],
     []),
    # -- smaller ones
    ("bootstrap-negative-grader", {"x.csv": XSTEST}, ["eval", "grader", "--data", "{d}/x.csv", "-o", "{d}/g.json",
                                                      "--bootstrap", "-1"],
     ["--bootstrap must be at least 1"], ["negative dimensions"]),
    ("bootstrap-negative-harmlessness", {}, ["eval", "harmlessness", "-m", "mock:", "--limit", "2", "-o",
                                             "{d}/h.json", "--bootstrap", "-1"], ["--bootstrap must be at least 1"], []),
    ("run-file-empty", {"empty.yaml": ""}, ["run", "{d}/empty.yaml", "--dry-run"],
     ["empty.yaml", "no stages"], ["None"]),
]


@pytest.mark.parametrize("name,files,argv,fragments,absent", CASES, ids=[c[0] for c in CASES])
def test_error_names_its_cause(name, files, argv, fragments, absent, tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.chdir(tmp_path)
    _make(tmp_path, files)
    before = _snapshot(tmp_path)
    rc = main([a.replace("{d}", str(tmp_path)) for a in argv])
    line = assert_one_line_error(rc, capsys.readouterr().err, [f.replace("{d}", str(tmp_path)) for f in fragments])
    for f in absent:
        assert f not in line, f"{f!r} should not be in: {line}"
    assert _snapshot(tmp_path) == before, "a failed run changed or created files"


def test_advice_names_only_flags_the_command_has(tmp_path, capsys, monkeypatch):
    """Every --flag an error line suggests exists on that command (sft was told to lower
    --min-margin, eval helpfulness to pass --field, critique --select about --reward)."""
    monkeypatch.chdir(tmp_path)
    parser = build_parser()
    for name, files, argv, _, _ in CASES:
        if argv[0] in ("run",):
            continue
        _make(tmp_path, files)
        main([a.replace("{d}", str(tmp_path)) for a in argv])
        line = capsys.readouterr().err.strip().splitlines()[-1]
        line = re.sub(r"`cai [^`]*`", "", line)  # another command's example keeps its own flags
        words = [w for w in argv if not w.startswith("-")][:2]
        sub = parser
        for w in words:
            action = next((a for a in sub._actions if isinstance(a, __import__("argparse")._SubParsersAction)), None)
            if action is None or w not in action.choices:
                break
            sub = action.choices[w]
        flags = {s for a in sub._actions for s in a.option_strings}
        for flag in re.findall(r"(?<![\w-])--[a-z][a-z-]*", line):
            assert flag in flags, f"{name}: the error names {flag}, which `cai {' '.join(words)}` lacks: {line}"


def test_overlong_prompt_names_the_overlong_flag(tmp_path, capsys, tiny_llama_dir):
    """The hf backend used to suggest the Python argument truncate='left'."""
    (tmp_path / "p.jsonl").write_text(json.dumps({"id": "huge", "prompt": "word " * 2100}) + "\n")
    rc = main(["generate", "-m", f"hf:{tiny_llama_dir}", "--data", str(tmp_path / "p.jsonl"), "-o",
               str(tmp_path / "o.jsonl"), "--max-tokens", "2", "--no-progress"])
    line = assert_one_line_error(rc, capsys.readouterr().err, ["context", "--overlong truncate"])
    assert "truncate='left'" not in line


def test_ctrl_c_on_one_prompt_does_not_promise_saved_batches(monkeypatch, capsys):
    import cai.generation

    def interrupted(*a, **k):
        raise KeyboardInterrupt

    monkeypatch.setattr(cai.generation, "generate_one", interrupted)
    assert main(["generate", "-m", "mock:", "hello"]) == 130
    err = capsys.readouterr().err
    assert "interrupted" in err and "saved" not in err and "resume" not in err


def test_ctrl_c_on_a_file_run_still_says_it_resumes(monkeypatch, capsys, tmp_path):
    import cai.generation

    def interrupted(*a, **k):
        raise KeyboardInterrupt

    monkeypatch.setattr(cai.generation, "generate_file", interrupted)
    (tmp_path / "p.jsonl").write_text('{"prompt": "a"}\n')
    assert main(["generate", "-m", "mock:", "--data", str(tmp_path / "p.jsonl"), "-o", str(tmp_path / "o.jsonl")]) == 130
    assert "run the same command again to resume" in capsys.readouterr().err


def test_compare_reads_an_eval_labeler_result(tmp_path, capsys):
    """`cai compare` called a `cai eval labeler` result "not written by cai eval"."""
    out = tmp_path / "lab.json"
    assert main(["eval", "labeler", "-m", "mock:", "--data", "hhh", "--limit", "4", "-o", str(out)]) == 0
    capsys.readouterr()
    assert main(["compare", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "labeler" in printed and "accuracy" in printed


def test_serve_names_malformed_json():
    from fastapi.testclient import TestClient

    from cai.backends.mock import MockBackend
    from cai.serve.app import create_app

    with TestClient(create_app(MockBackend(), "m")) as client:
        r = client.post("/v1/chat/completions", content=b'{"model": "m", "messages": [}',
                        headers={"content-type": "application/json"})
    assert r.status_code == 400
    msg = r.json()["error"]["message"]
    assert "not valid JSON" in msg and "character" in msg and "JSON decode error" not in msg
