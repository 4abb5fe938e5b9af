"""`cai eval grader`, `harmlessness` and `over-refusal`: statistics by hand, the XSTest completions
reader, whole runs on mock models whose answers we know, resuming after a kill, bad input."""

from __future__ import annotations

import csv
import json
import re

import pytest

from cai.backends.mock import MockBackend
from cai.cli import main
from cai.errors import CAIError
from cai.evals.datasets import dataset_path
from cai.evals.graders.agreement import (
    GraderEvalConfig,
    agreement_metrics,
    auroc,
    evaluate_grader,
    kappa,
)
from cai.evals.graders.human_labels import read_human_labels
from cai.evals.results import read_result
from cai.evals.tasks.harmlessness import HarmlessnessConfig, evaluate_harmlessness
from cai.evals.tasks.over_refusal import OverRefusalConfig, evaluate_over_refusal
from cai.templates import load_template

REFUSAL = "I'm sorry, but I can't help with that."
with open(dataset_path("xstest"), encoding="utf-8") as _f:
    UNSAFE = {r["prompt"] for r in csv.DictReader(_f) if r["label"] == "unsafe"}
COMPLETIONS = "xstest/xstest_v2_completions_llama2new.csv"


# ---- statistics -----------------------------------------------------------------------------------

def test_kappa_and_auroc_by_hand():
    # 4 of 6 agree; both raters say yes half the time: po = 2/3, pe = 1/2, kappa = 1/3
    assert kappa([1, 1, 1, 0, 0, 0], [1, 1, 0, 1, 0, 0]) == pytest.approx(1 / 3)
    assert kappa([1, 0], [1, 0]) == 1.0 and kappa([1, 0], [0, 1]) == -1.0
    assert auroc([0.9, 0.4, 0.5, 0.1], [True, True, False, False]) == pytest.approx(0.75)
    m, conf = agreement_metrics([1, 1, 0, 0], [1, 0, 0, 0], [0.9, 0.6, 0.2, 0.1], n_resamples=200)
    assert m["accuracy"].value == 0.75 and m["auroc"].value == 1.0 and m["kappa"].ci is not None
    assert conf["human_complied"]["grader_refused"].value == 0.25
    assert sum(c.value for row in conf.values() for c in row.values()) == pytest.approx(1.0)


# ---- cai eval grader ------------------------------------------------------------------------------

def test_xstest_completions_reader(shared_data):
    items = read_human_labels(shared_data / COMPLETIONS)
    assert len(items) == 450 and sum(it.refused for it in items) == 230 + 44
    assert sum(bool(it.unsafe) for it in items) == 200 and items[0].prompt[0]["role"] == "user"


def test_cai_eval_grader_on_a_slice_of_xstest(shared_data, tmp_path, capsys):
    out = tmp_path / "g.json"
    assert main(["eval", "grader", "--grader", "refusal-strings", "--data", str(shared_data / COMPLETIONS),
                 "--limit", "60", "-o", str(out)]) == 0
    res = read_result(out)
    assert res.task == "grader" and res.grader["spec"] == "refusal-strings:xstest"
    assert res.metrics["accuracy"].n == 60 and res.metrics["accuracy"].value > 0.8
    lo, hi = res.metrics["kappa"].ci
    assert lo <= res.metrics["kappa"].value <= hi
    recs = [json.loads(x) for x in (tmp_path / "g.examples.jsonl").read_text().splitlines()]
    assert len(recs) == 60 and set(res.breakdown) >= {"confusion", "by_prompt"}
    # the recomputed accuracy from the records matches the headline
    assert sum(r["grade"]["refused"] == r["human_refused"] for r in recs) / 60 == res.metrics["accuracy"].value
    assert "kappa" in capsys.readouterr().out


def test_grader_eval_on_a_perfect_and_a_wrong_grader(tmp_path):
    data = tmp_path / "h.jsonl"
    rows = [{"prompt": f"q{i}", "answer": REFUSAL if i % 2 else "Sure.", "refused": bool(i % 2)} for i in range(20)]
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    good = evaluate_grader(GraderEvalConfig(data=str(data), output=str(tmp_path / "a.json"), bootstrap=100))
    assert good.metrics["accuracy"].value == 1.0 and good.metrics["kappa"].value == 1.0
    always = evaluate_grader(GraderEvalConfig(data=str(data), output=str(tmp_path / "b.json"), bootstrap=100,
                                              grader="refusal-strings", grader_template=str(_always(tmp_path))))
    assert always.metrics["accuracy"].value == 0.5 and always.metrics["kappa"].value == 0.0  # chance


def _always(tmp_path):
    p = tmp_path / "always.yaml"
    p.write_text("sets:\n  all:\n    starts_with: ['']\n")
    return p


def test_grader_eval_with_the_judge_on_mock(tmp_path):
    choices = load_template("grade")["choices"]

    def judge(conv, opts):  # refuses_explains when the answer apologises, else complies_safe
        text = conv[-2]["content"]
        label = "refuses_explains" if "Assistant: I'm sorry" in text else "complies_safe"
        letter = re.search(r"\((\w)\) " + re.escape(choices[label]), text).group(1)
        return {o: (0.0 if o == letter else -5.0) for o in opts}

    data = tmp_path / "h.jsonl"
    data.write_text("".join(json.dumps({"prompt": "q", "answer": REFUSAL if i < 5 else "Sure.", "refused": i < 5})
                            + "\n" for i in range(10)))
    cfg = GraderEvalConfig(data=str(data), output=str(tmp_path / "j.json"), grader="judge", bootstrap=100)
    res = evaluate_grader(cfg, grader=cfg.build_grader(MockBackend(option_logprobs=judge)))
    assert res.metrics["accuracy"].value == 1.0 and res.metrics["auroc"].value == 1.0
    assert res.breakdown["grader_labels"]["refuses_explains"]["share"].value == 0.5


# ---- harmlessness and over-refusal ----------------------------------------------------------------

def _refuse_if(words):
    return MockBackend(responses=lambda conv: REFUSAL if any(w in conv[-1]["content"].lower() for w in words)
                       else "Sure, here is how to do it step by step.")


def test_harmlessness_end_to_end_on_mock(tmp_path):
    out = tmp_path / "h.json"
    cfg = HarmlessnessConfig(model="mock:", data="advbench", limit=40, output=str(out), batch_size=16, bootstrap=100)
    backend = _refuse_if(["bomb", "hack"])
    res = evaluate_harmlessness(cfg, backend=backend)
    recs = [json.loads(x) for x in (tmp_path / "h.examples.jsonl").read_text().splitlines()]
    expected = sum(any(w in r["prompt"][-1]["content"].lower() for w in ("bomb", "hack")) for r in recs) / 40
    assert len(recs) == 40 and res.metrics["harmless_rate"].value == pytest.approx(expected)
    assert res.metrics["refusal_rate"].value == res.metrics["harmless_rate"].value  # strings: harmless = refused
    assert "explained_refusal_share" not in res.metrics  # refusal-strings cannot tell
    assert res.grader["spec"] == "refusal-strings:xstest" and res.grader["agreement"] is None
    assert len([c for c in backend.calls if c[0] == "generate"]) == 3  # batched: 16 + 16 + 8


def test_harmlessness_with_categories_and_the_judge(shared_data, tmp_path):
    choices = load_template("grade")["choices"]

    def judge(conv, opts):  # every answer: an evasive refusal
        letter = re.search(r"\((\w)\) " + re.escape(choices["refuses_evasive"]), conv[-2]["content"]).group(1)
        return {o: (0.0 if o == letter else -5.0) for o in opts}

    cfg = HarmlessnessConfig(model="mock:", data=str(shared_data / "jailbreakbench/behaviors.csv"), limit=30,
                             output=str(tmp_path / "j.json"), grader="judge", bootstrap=100)
    res = evaluate_harmlessness(cfg, backend=MockBackend(option_logprobs=judge))
    assert res.metrics["explained_refusal_share"].value == 0.0
    assert res.metrics["harmless_rate"].value == 1.0 and res.metrics["harmless_not_evasive_rate"].value == 0.0
    assert len(res.breakdown["by_category"]) > 3 and res.grader["spec"] == "judge:mock:"


def test_over_refusal_end_to_end_on_mock(tmp_path):
    backend = MockBackend(responses=lambda conv: REFUSAL if conv[-1]["content"] in UNSAFE else "Here you go.")
    cfg = OverRefusalConfig(model="mock:", output=str(tmp_path / "x.json"), batch_size=100, bootstrap=100)
    res = evaluate_over_refusal(cfg, backend=backend)
    assert res.metrics["compliance_rate_safe"].n == 250 and res.metrics["refusal_rate_unsafe"].n == 200
    assert res.metrics["compliance_rate_safe"].value == 1.0 and res.metrics["refusal_rate_unsafe"].value == 1.0
    types = res.breakdown["by_type"]
    assert len(types) == 18 and "refusal_rate" in types["contrast_homonyms"] and "compliance_rate" in types["homonyms"]


def test_a_killed_eval_resumes_where_it_stopped(tmp_path):
    cfg = OverRefusalConfig(model="mock:", output=str(tmp_path / "x.json"), limit=50, batch_size=20, bootstrap=100)

    class Killed(Exception):
        pass

    def die(records):
        raise Killed

    from cai.evals.tasks import answering
    from cai.evals.tasks.over_refusal import load_xstest

    backend = MockBackend()
    items = load_xstest(cfg)
    b, g, _, store = answering.setup(cfg, backend=backend)
    with pytest.raises(Killed):
        answering.answer_and_grade(items, cfg, b, g, store, task="over-refusal", on_batch=die)
    assert len((tmp_path / "x.examples.jsonl").read_text().splitlines()) == 20
    again = MockBackend()
    res = evaluate_over_refusal(cfg, backend=again)
    asked = sum(len(c[1]) for c in again.calls if c[0] == "generate")
    assert asked == 30 and res.metrics["correct_rate"].n == 50
    # a different model must not be mixed into the same file
    other = tmp_path / "other.yaml"
    other.write_text("generate:\n  - reply: hello\n")
    with pytest.raises(CAIError, match="different models"):
        evaluate_over_refusal(OverRefusalConfig(model=f"mock:{other}", output=cfg.output, limit=60, bootstrap=100))


def test_an_answering_eval_opens_its_records_file_once(tmp_path, monkeypatch):
    """Opening a RecordStore reads and checks the whole file: the finished-output check in setup and
    the answering share one open, on the first run and on a rerun with nothing left to do."""
    import cai.store

    opened: list[str] = []
    real = cai.store.RecordStore.__init__

    def counting(self, path, **kw):
        opened.append(str(path))
        real(self, path, **kw)

    monkeypatch.setattr(cai.store.RecordStore, "__init__", counting)
    cfg = OverRefusalConfig(model="mock:", output=str(tmp_path / "x.json"), limit=5, bootstrap=50)
    evaluate_over_refusal(cfg)
    evaluate_over_refusal(cfg)
    assert opened == [str(tmp_path / "x.examples.jsonl")] * 2


def test_grader_agreement_is_copied_and_checked(shared_data, tmp_path):
    g = tmp_path / "g.json"
    assert main(["eval", "grader", "--data", str(shared_data / COMPLETIONS), "--limit", "30", "-o", str(g)]) == 0
    cfg = OverRefusalConfig(model="mock:", output=str(tmp_path / "x.json"), limit=10, grader_agreement=str(g),
                            bootstrap=100)
    res = evaluate_over_refusal(cfg)
    assert res.grader["agreement"]["n"] == 30 and "kappa" in res.grader["agreement"]
    bad = OverRefusalConfig(model="mock:", output=str(tmp_path / "y.json"), limit=10, grader_agreement=str(g),
                            grader="refusal-strings:extended")
    with pytest.raises(CAIError, match="measured refusal-strings:xstest"):
        evaluate_over_refusal(bad)


def test_human_labels_jsonl_names_bad_lines(tmp_path):
    f = tmp_path / "h.jsonl"
    good = json.dumps({"prompt": "q", "answer": "a", "refused": True})
    f.write_text(f"{good}\n\n{good}\n")
    assert [x.id for x in read_human_labels(f)] == ["line1", "line3"]
    f.write_text(f"{good}\n[1]\n")
    with pytest.raises(CAIError, match=r"h\.jsonl:2: expected a JSON object, got a list; .*prompt, answer, refused"):
        read_human_labels(f)
    f.write_text(f"{good}\n{{\n")
    with pytest.raises(CAIError, match=r"h\.jsonl:2: not valid JSON \(.+\); .*prompt, answer, refused"):
        read_human_labels(f)


@pytest.mark.parametrize("argv, message", [
    (["eval", "over-refusal", "-m", "mock:"], "pass -o RESULT.json"),
    (["eval", "over-refusal", "-m", "mock:", "-o", "x.jsonl"], "is a .json file"),
    (["eval", "over-refusal", "-m", "mock:", "-o", "x.json", "--data", "nope.csv"], "nope.csv: no such file"),
    (["eval", "harmlessness", "-m", "mock:", "-o", "x.json", "--grader", "regex"], "unknown grader"),
    (["eval", "harmlessness", "-m", "mock:", "-o", "x.json", "--batch-size", "0"], "--batch-size"),
    (["eval", "grader", "-o", "x.json"], "pass --data FILE"),
    (["eval", "grader", "-o", "x.json", "--data", "bad.jsonl"], "bad.jsonl:2: needs 'refused'"),
    (["eval", "over-refusal", "-m", "mock:", "-o", "x.json", "--data", "cols.csv"], "missing column(s) label, type"),
])
def test_bad_input_is_one_line(tmp_path, monkeypatch, capsys, argv, message):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "bad.jsonl").write_text('{"prompt": "q", "answer": "a", "refused": true}\n{"prompt": "q", "answer": "a"}\n')
    (tmp_path / "cols.csv").write_text("id,prompt\n1,hi\n")
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1 and "Traceback" not in err
