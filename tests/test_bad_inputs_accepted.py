"""Bad input that used to be accepted without a word (issue 17, section 5): each case now fails with
one ``cai: error:`` line naming the flag, file or line and the fix, before any model loads, and
leaves every file in its folder as it was. The table has the shape of ``test_bad_inputs.CASES``:
(id, files to create, argv, fragments the message must hold); ``{d}`` is the case's folder, which
always holds a three-prompt ``prompts.jsonl``."""

from __future__ import annotations

import json

import pytest

from cai.cli import main
from test_bad_inputs import _make, _snapshot, assert_one_line_error, run_bad

GEN = ["generate", "-m", "mock:", "-i", "{d}/prompts.jsonl", "-o", "{d}/o.jsonl"]
CRIT = ["critique", "-m", "mock:", "--prompts", "{d}/prompts.jsonl", "-o", "{d}/o.jsonl"]
LABEL = ["label", "--policy", "mock:", "--prompts", "{d}/prompts.jsonl", "-o", "{d}/o.jsonl"]
TOO_HOT = ["temperature must be at most 10", "0.7 to 1"]

CONSTITUTION = "name: c\nversion: '1'\ndescription: d\nprinciples:\n  - {id: a, critique: x, revision: y}\n"
LABELLED = "".join(json.dumps({"prompt": f"q{i}", "answer": "No.", "refused": bool(i % 2)}) + "\n" for i in range(4))
SFT_EMPTY_PROMPT = (json.dumps({"prompt": "Hi?", "completion": "Hello."}) + "\n"
                    + json.dumps({"prompt": "  ", "completion": "An answer to nothing."}) + "\n")
SFT_EMPTY_USER_TURN = json.dumps({"messages": [{"role": "user", "content": ""},
                                               {"role": "assistant", "content": "Hello."}]}) + "\n"
PREF_EMPTY_CHOSEN = (json.dumps({"prompt": "Hi?", "chosen": "Hello.", "rejected": "Go away."}) + "\n"
                     + json.dumps({"prompt": [{"role": "user", "content": "Hi?"}],
                                   "chosen": [{"role": "assistant", "content": " "}],
                                   "rejected": [{"role": "assistant", "content": "Go away."}]}) + "\n")
RUN = ("model: 'mock:'\nstages: [critique, label]\ncritique: {prompts: prompts.jsonl}\n"
       "label: {prompts: prompts.jsonl}\n")
RUN_ARGV = ["run", "{d}/run.yaml", "-o", "{d}/run", "--dry-run", "--set"]

CASES = [
    # -- a temperature that samples noise: one bound, in cai.types.SamplingParams, for every command
    ("generate-temperature-1e9", {}, GEN + ["--temperature", "1e9"], TOO_HOT),
    ("generate-temperature-1e300", {}, GEN + ["--temperature", "1e300"], TOO_HOT),
    ("critique-temperature-1e9", {}, CRIT + ["--temperature", "1e9"], TOO_HOT),
    ("critique-temperature-1e300", {}, CRIT + ["--temperature", "1e300"], TOO_HOT),
    ("label-temperature-1e9", {}, LABEL + ["--temperature", "1e9"], TOO_HOT),
    ("label-temperature-1e300", {}, LABEL + ["--temperature", "1e300"], TOO_HOT),
    # -- evals: every interval was written as null
    ("grader-bootstrap-zero", {"labels.jsonl": LABELLED},
     ["eval", "grader", "--grader", "refusal-strings", "--data", "{d}/labels.jsonl", "-o", "{d}/g.json",
      "--bootstrap", "0"], ["--bootstrap must be at least 1"]),
    # -- a YAML file that is not a mock script was taken as an empty one
    ("mock-script-is-a-constitution", {"c.yaml": CONSTITUTION}, GEN + ["-m", "mock:{d}/c.yaml"],
     ["c.yaml", "not a mock script", "'principles'", "generate"]),
    # -- training data that trains on nothing
    ("sft-empty-prompt", {"sft.jsonl": SFT_EMPTY_PROMPT},
     ["sft", "-m", "mock:", "--data", "{d}/sft.jsonl", "-o", "{d}/m"], ["sft.jsonl:2", "prompt is empty"]),
    ("sft-empty-user-turn", {"sft.jsonl": SFT_EMPTY_USER_TURN},
     ["sft", "-m", "mock:", "--data", "{d}/sft.jsonl", "-o", "{d}/m"], ["sft.jsonl:1", "prompt is empty"]),
    ("reward-empty-chosen", {"prefs.jsonl": PREF_EMPTY_CHOSEN},
     ["reward", "-m", "mock:", "--data", "{d}/prefs.jsonl", "-o", "{d}/m"], ["prefs.jsonl:2", "'chosen' is empty"]),
    ("dpo-empty-chosen", {"prefs.jsonl": PREF_EMPTY_CHOSEN},
     ["dpo", "-m", "mock:", "--data", "{d}/prefs.jsonl", "-o", "{d}/m"], ["prefs.jsonl:2", "'chosen' is empty"]),
    # -- RLOO with fewer prompts than one batch trained for 0 steps and saved the untrained policy
    ("rloo-fewer-prompts-than-a-batch", {},
     ["rloo", "-m", "mock:", "--reward", "math:fsum", "--prompts", "{d}/prompts.jsonl", "-o", "{d}/m",
      "--batch-size", "16"], ["3 prompts", "one batch needs 4", "--batch-size"]),
    # -- cai run: the dry run builds every step's config, so these fail in it, not at step 3
    ("run-critique-limit-zero", {"run.yaml": RUN}, RUN_ARGV + ["critique.limit=0"],
     ["section critique", "limit must be >= 1"]),
    ("run-label-limit-zero", {"run.yaml": RUN}, RUN_ARGV + ["label.limit=0"], ["section label", "limit must be >= 1"]),
    ("run-label-temperature-negative", {"run.yaml": RUN}, RUN_ARGV + ["label.temperature=-1"],
     ["section label", "temperature must be a finite number >= 0"]),
    # -- a file path where a prompt text goes; one prompt mixed with a prompt file
    ("generate-file-as-prompt", {}, ["generate", "-m", "mock:", "-o", "{d}/g.jsonl", "{d}/prompts.jsonl"],
     ["prompts.jsonl is a file", "--data"]),
    ("generate-prompt-with-output", {}, ["generate", "-m", "mock:", "-o", "{d}/g.jsonl", "hello"],
     ["-o/--output", "--data"]),
    ("critique-file-as-prompt", {}, ["critique", "-m", "mock:", "--prompt", "{d}/prompts.jsonl", "-o", "{d}/c.jsonl"],
     ["prompts.jsonl is a file", "--data"]),
    ("critique-prompt-and-prompts", {},
     ["critique", "-m", "mock:", "--prompt", "hi", "--prompts", "{d}/prompts.jsonl", "-o", "{d}/c.jsonl"],
     ["--prompt", "--data", "not both"]),
    # -- a margin below 0 filters nothing; one of 1 or more drops every pair
    ("label-min-margin-negative", {}, LABEL + ["--min-margin", "-1"], ["--min-margin must be in [0, 1)"]),
    ("label-min-margin-one", {}, LABEL + ["--min-margin", "1"], ["--min-margin must be in [0, 1)"]),
]


@pytest.mark.parametrize("name,files,argv,fragments", CASES, ids=[c[0] for c in CASES])
def test_bad_input_is_refused(name, files, argv, fragments, tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.chdir(tmp_path)  # cai run's default folder and relative paths stay in the case's folder
    _make(tmp_path, files)
    before = _snapshot(tmp_path)
    rc, err = run_bad([a.replace("{d}", str(tmp_path)) for a in argv], capsys)
    assert_one_line_error(rc, err, fragments)
    assert _snapshot(tmp_path) == before, "a failed run changed or created files"


@pytest.mark.parametrize("setting", ["critique.limit=0", "label.limit=0", "label.temperature=-1"])
def test_run_refuses_a_bad_setting_before_any_step_starts(setting, tmp_path, capsys, monkeypatch):
    """Not only the dry run: a real run fails in the same check, before the first step's process."""
    import cai.run.runner

    def no_step(*a, **k):
        raise AssertionError("a step was started")

    monkeypatch.setattr(cai.run.runner, "run_child", no_step)
    _make(tmp_path, {"run.yaml": RUN})
    rc, err = run_bad(["run", str(tmp_path / "run.yaml"), "-o", str(tmp_path / "run"), "--set", setting], capsys)
    assert_one_line_error(rc, err, [f"section {setting.split('.')[0]}"])
    assert not (tmp_path / "run").exists()


def test_one_temperature_bound_for_every_stage():
    """generate, critique, label, ppo, rloo and redteam all refuse a temperature of 1e9 when their
    config is built (the CLI, a run file section and the Python API alike), with the same words."""
    from cai.config import build_config
    from cai.critique import CritiqueConfig
    from cai.generation import GenerateConfig
    from cai.label import LabelConfig
    from cai.redteam.run import RedteamConfig
    from cai.train.ppo import PPORunConfig
    from cai.train.rloo import RlooConfig
    from cai.types import MAX_TEMPERATURE, SamplingParams

    assert SamplingParams(temperature=MAX_TEMPERATURE).temperature == MAX_TEMPERATURE  # the bound itself is allowed
    for cls, fields in ((GenerateConfig, {"temperature": 1e9}), (CritiqueConfig, {"temperature": 1e9}),
                        (LabelConfig, {"temperature": 1e9}), (PPORunConfig, {"temperature": 1e9}),
                        (RlooConfig, {"temperature": 1e9}), (RedteamConfig, {"temperature": 1e9}),
                        (RedteamConfig, {"attacker_temperature": 1e9})):
        with pytest.raises(ValueError, match=r"temperature must be at most 10 "):
            build_config(cls, fields)


def test_report_counts_labeler_results(tmp_path, capsys):
    """`cai report` on a `cai eval labeler` result used to say "0 stages, ... 0 eval results"."""
    out = tmp_path / "lab.json"
    assert main(["eval", "labeler", "-m", "mock:", "--data", "hhh", "--limit", "4", "-o", str(out)]) == 0
    capsys.readouterr()
    assert main(["report", str(tmp_path), "-o", str(tmp_path / "r.html")]) == 0
    err = capsys.readouterr().err
    assert "1 stages" in err and "1 eval results" in err, err
    html = (tmp_path / "r.html").read_text()
    assert "Labeller agreement with human labels" in html and "labeler" in html


TRAINERS = {  # each trainer's command with its data and model, but no -o
    "sft": ["sft", "-m", "mock:", "--data", "{d}/d.jsonl"],
    "dpo": ["dpo", "-m", "mock:", "--data", "{d}/d.jsonl"],
    "reward": ["reward", "-m", "mock:", "--data", "{d}/d.jsonl"],
    "ppo": ["ppo", "-m", "mock:", "--data", "{d}/d.jsonl", "--reward", "math:fsum"],
    "rloo": ["rloo", "-m", "mock:", "--data", "{d}/d.jsonl", "--reward", "math:fsum"],
}


@pytest.mark.parametrize("command", sorted(TRAINERS))
def test_every_trainer_words_a_missing_or_wrong_output_and_data_alike(command, tmp_path, capsys, monkeypatch):
    """`-o` missing, `-o` a file and `--data` missing are one line, in the same words, in every trainer."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    (tmp_path / "d.jsonl").write_text("{}\n")
    (tmp_path / "file").write_text("mine\n")
    argv = [a.replace("{d}", str(tmp_path)) for a in TRAINERS[command]]
    before = _snapshot(tmp_path)
    rc, err = run_bad(argv, capsys)
    assert_one_line_error(rc, err, ["no output folder; pass -o DIR"])
    rc, err = run_bad(argv + ["-o", str(tmp_path / "file")], capsys)
    assert_one_line_error(rc, err, ["is a file; pass a folder"])
    data_at = argv.index("--data")
    rc, err = run_bad(argv[:data_at] + argv[data_at + 2:] + ["-o", str(tmp_path / "m")], capsys)
    assert_one_line_error(rc, err, ["no ", "pass --data"])
    assert _snapshot(tmp_path) == before, "a refused command changed or created files"
