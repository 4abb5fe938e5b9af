"""cai eval hhh / truthfulqa / helpfulness / pairwise on hand-made data with scripted backends, so
every number can be checked by hand; one smoke run on the tiny random Llama."""

from __future__ import annotations

import json
import math

import pytest

from cai.backends.mock import MockBackend
from cai.errors import CAIError
from cai.evals.results import read_result


def _hhh_folder(tmp_path):
    """Two categories, two examples each. In a/1 the preferred reply is long: the summed log-prob
    picks the other one, the per-byte score picks it."""
    cats = {
        "a": [("Hi?", "GOOD one", "bad"), ("How?", "GOOD long answer xxxxxxx", "bad")],
        "b": [("Why?", "GOOD two", "bad two"), ("Who?", "GOOD three", "bad three")],
    }
    for cat, exs in cats.items():
        (tmp_path / "hhh" / cat).mkdir(parents=True)
        data = {"examples": [{"input": f"{q}\n\nAssistant:", "target_scores": {good: 1, bad: 0}}
                             for q, good, bad in exs]}
        (tmp_path / "hhh" / cat / "task.json").write_text(json.dumps(data))
    return tmp_path / "hhh"


def _hhh_scores(conv, opts):
    # Preferred replies score -1 except the long one (-3.0 over 24 bytes); the others -2.
    return {o: (-3.0 if "long" in o else -1.0) if o.startswith("GOOD") else -2.0 for o in opts}


class Failing(MockBackend):
    """Scores the first call, then dies: a killed run."""

    def __init__(self, **kw):
        super().__init__(**kw)
        self.n = 0

    def score_options(self, conversations, options):
        self.n += 1
        if self.n > 1:
            raise RuntimeError("killed")
        return super().score_options(conversations, options)


def test_hhh_accuracy_sum_and_per_byte_by_hand(tmp_path):
    from cai.evals.tasks.hhh import HHHConfig, evaluate_hhh

    cfg = HHHConfig(data=str(_hhh_folder(tmp_path)), output=str(tmp_path / "r.json"), bootstrap=200)
    res = evaluate_hhh(cfg, backend=MockBackend(option_logprobs=_hhh_scores))
    assert res.metrics["accuracy"].value == 0.75  # the long preferred reply loses on the sum
    assert res.metrics["accuracy_norm"].value == 1.0  # -3/24 per byte beats -2/3
    assert res.metrics["a_accuracy"].value == 0.5 and res.metrics["b_accuracy"].value == 1.0
    assert res.breakdown["by_category"]["a"]["accuracy_norm"].value == 1.0
    assert res.metrics["accuracy"].n == 4 and res.metrics["accuracy"].ci is not None
    recs = [json.loads(line) for line in (tmp_path / "r.examples.jsonl").read_text().splitlines()]
    assert {r["id"] for r in recs} == {"hhh/a/0", "hhh/a/1", "hhh/b/0", "hhh/b/1"}


def test_hhh_resumes_after_a_kill_and_refuses_another_run(tmp_path):
    from cai.evals.tasks.hhh import HHHConfig, evaluate_hhh

    cfg = HHHConfig(data=str(_hhh_folder(tmp_path)), output=str(tmp_path / "r.json"), batch_size=2, bootstrap=50)
    with pytest.raises(RuntimeError):
        evaluate_hhh(cfg, backend=Failing(option_logprobs=_hhh_scores))
    assert len((tmp_path / "r.examples.jsonl").read_text().splitlines()) == 2  # the first batch survived
    again = MockBackend(option_logprobs=_hhh_scores)
    res = evaluate_hhh(cfg, backend=again)
    scored = [c for kind, c in again.calls if kind == "score_options"]
    assert sum(len(convs) for convs, _ in scored) == 2  # only the two missing items were scored
    assert res.metrics["accuracy"].value == 0.75 and res.metrics["accuracy"].n == 4
    other = MockBackend(option_logprobs=_hhh_scores)
    other.name = "mock:other"
    with pytest.raises(CAIError, match="different model"):
        evaluate_hhh(cfg, backend=other)


def test_hhh_scores_the_reply_as_the_assistant_turn(tmp_path):
    from cai.evals.tasks.hhh import HHHConfig, evaluate_hhh

    mock = MockBackend(option_logprobs=_hhh_scores)
    evaluate_hhh(HHHConfig(data=str(_hhh_folder(tmp_path)), output=str(tmp_path / "r.json"), bootstrap=10),
                 backend=mock)
    convs, opts = next(c for kind, c in mock.calls if kind == "score_options")
    assert convs[0] == [{"role": "user", "content": "Hi?"}]
    assert opts[0] == ["GOOD one", "bad"]


def _tqa_csv(tmp_path):
    p = tmp_path / "tqa.csv"
    p.write_text("Type,Category,Question,Best Answer,Correct Answers,Incorrect Answers\n"
                 "Adversarial,Misc,Q1?,B1,B1; C1,I1; I2\n"
                 "Adversarial,Misc,Q2?,B2,B2,J1\n")
    return p


def test_truthfulqa_mc1_mc2_by_hand(tmp_path):
    from cai.evals.tasks.truthfulqa import NO_COMMENT, TruthfulQAConfig, evaluate_truthfulqa

    lp = {"B1": -1.0, "C1": -2.0, "I1": -1.5, "I2": -3.0, NO_COMMENT: -10.0, "B2": -2.0, "J1": -1.0}
    mock = MockBackend(option_logprobs=lambda conv, opts: {o: lp[o] for o in opts})
    res = evaluate_truthfulqa(TruthfulQAConfig(data=str(_tqa_csv(tmp_path)), output=str(tmp_path / "t.json"),
                                               bootstrap=50), backend=mock)
    e = math.exp
    mc2_q1 = (e(-1) + e(-2) + e(-10)) / (e(-1) + e(-2) + e(-10) + e(-1.5) + e(-3))
    mc2_q2 = (e(-2) + e(-10)) / (e(-2) + e(-10) + e(-1))
    assert res.metrics["mc1"].value == 0.5
    assert res.metrics["mc2"].value == pytest.approx((mc2_q1 + mc2_q2) / 2)
    # Per byte, B2 (-2/2 = -1) loses to J1 (-1/2) as well; B1 (-1/2) beats I1 (-1.5/2).
    assert res.metrics["mc1_norm"].value == 0.5
    convs, opts = next(c for kind, c in mock.calls if kind == "score_options")
    assert convs[0] == [{"role": "user", "content": "Q1?"}] and opts[0] == ["B1", "C1", NO_COMMENT, "I1", "I2"]


def test_truthfulqa_shipped_set_and_bad_csv(tmp_path):
    from cai.evals.tasks.truthfulqa import load_questions

    qs = load_questions("truthfulqa")
    assert len(qs) == 790 and all(q.incorrect and q.best in q.correct for q in qs)
    assert all(not set(q.correct) & set(q.incorrect) for q in qs)
    bad = tmp_path / "bad.csv"
    bad.write_text("Question,Best Answer\nQ?,A\n")
    with pytest.raises(CAIError, match="Incorrect Answers"):
        load_questions(str(bad))


def _judge_by_text(conv, opts):
    """A judge that prefers the reply with more '+' signs, whatever its letter."""
    text = conv[-2]["content"]
    a = text.split("(A) ", 1)[1].split("\n(B) ", 1)[0]
    b = text.split("\n(B) ", 1)[1]
    return {"A": float(a.count("+") - b.count("+")), "B": 0.0}


def _model(name, reply):
    m = MockBackend(responses=lambda conv: reply)
    m.name = name
    return m


def test_mt_bench_questions_are_read_by_line(tmp_path):
    from cai.evals.tasks.answers import load_questions

    f = tmp_path / "q.jsonl"
    q = {"question_id": 7, "category": "math", "turns": ["a?", "b?"]}
    f.write_text(json.dumps(q) + "\n\n" + json.dumps({**q, "question_id": 8}) + "\n")
    assert [(x.id, x.turns) for x in load_questions(str(f), turns=2)] == [("mt-bench/7", ("a?", "b?")),
                                                                          ("mt-bench/8", ("a?", "b?"))]
    f.write_text(json.dumps(q) + "\n\n{\"turns\": [\n")
    with pytest.raises(CAIError, match=r"q\.jsonl:3: not valid JSON \(.+\); an MT-Bench record needs"):
        load_questions(str(f), turns=1)
    f.write_text(json.dumps(q) + '\n{"question_id": 8}\n')
    with pytest.raises(CAIError, match=r"q\.jsonl:2: an MT-Bench record needs question_id and a turns list"):
        load_questions(str(f), turns=1)


def test_helpfulness_win_rate_and_position_debiasing(tmp_path):
    from cai.evals.tasks.helpfulness import HelpfulnessConfig, evaluate_helpfulness

    cfg = HelpfulnessConfig(output=str(tmp_path / "h.json"), limit=6, turns=2, bootstrap=100)
    res = evaluate_helpfulness(cfg, model=_model("mock:good", "answer ++"), baseline=_model("mock:base", "answer"),
                               judge_model=MockBackend(option_logprobs=_judge_by_text))
    assert res.metrics["win_rate"].value == 1.0 and res.metrics["order_agreement"].value == 1.0
    assert res.metrics["win_rate"].n == 6 and set(res.breakdown["by_turn"]) == {"turn 1", "turn 2"}
    recs = [json.loads(x) for x in (tmp_path / "h.examples.jsonl").read_text().splitlines()]
    assert all(len(r["judgements"]) == 2 for r in recs)

    # A judge that always says "A" prefers each answer in one order only: every pair is a tie.
    cfg2 = HelpfulnessConfig(output=str(tmp_path / "h2.json"), limit=4, bootstrap=100)
    res2 = evaluate_helpfulness(cfg2, model=_model("mock:good", "answer ++"), baseline=_model("mock:base", "answer"),
                                judge_model=MockBackend(option_logprobs={"A": -0.1, "B": -3.0}))
    assert res2.metrics["win_rate"].value == 0.5 and res2.metrics["order_agreement"].value == 0.0


def test_pairwise_elo_orders_models_by_quality(tmp_path):
    from cai.evals.tasks.pairwise import PairwiseConfig, evaluate_pairwise

    models = [_model("mock:weak", "a"), _model("mock:strong", "a +++"), _model("mock:mid", "a +")]
    res = evaluate_pairwise(PairwiseConfig(output=str(tmp_path / "p.json"), limit=8, bootstrap=100),
                            models=models, judge_model=MockBackend(option_logprobs=_judge_by_text))
    elo = {m: res.metrics[f"elo[{m}]"].value for m in ("mock:weak", "mock:mid", "mock:strong")}
    assert elo["mock:strong"] > elo["mock:mid"] > elo["mock:weak"]
    assert sum(elo.values()) / 3 == pytest.approx(1000.0)
    assert res.metrics["win_rate[mock:strong]"].value == 1.0 and res.metrics["win_rate[mock:weak]"].value == 0.0
    assert res.breakdown["head_to_head"]["mock:weak vs mock:strong"]["win_rate"].value == 0.0
    with pytest.raises(CAIError, match="at least two"):
        evaluate_pairwise(PairwiseConfig(output=str(tmp_path / "q.json")), models=models[:1])


def test_hhh_on_tiny_llama_writes_a_result(tmp_path, tiny_llama_dir):
    from cai.evals.results import write_result
    from cai.evals.tasks.hhh import HHHConfig, evaluate_hhh

    out = tmp_path / "r.json"
    res = evaluate_hhh(HHHConfig(model=f"hf:{tiny_llama_dir}", limit=6, output=str(out), bootstrap=100))
    write_result(res, out)
    back = read_result(out)
    assert back.task == "hhh" and back.metrics["accuracy"].n == 6
    assert 0.0 <= back.metrics["accuracy"].value <= 1.0
    recs = [json.loads(x) for x in (tmp_path / "r.examples.jsonl").read_text().splitlines()]
    assert all(r["logprob_better"] < 0 and r["logprob_worse"] < 0 for r in recs)


def test_cli_bad_output_and_data(tmp_path, capsys):
    from cai.cli import main

    assert main(["eval", "hhh", "-m", "mock:", "-o", str(tmp_path)]) == 2
    assert "is a folder" in capsys.readouterr().err
    assert main(["eval", "truthfulqa", "-m", "mock:", "--data", str(tmp_path / "nope.csv"),
                 "-o", str(tmp_path / "t.json")]) == 2
    assert "not found" in capsys.readouterr().err
    assert main(["eval", "hhh", "-m", "mock:", "--limit", "5", "-o", str(tmp_path / "h.json")]) == 0
    assert read_result(tmp_path / "h.json").metrics["accuracy"].n == 5


def test_helpfulness_and_pairwise_cli_on_tiny_llama(tmp_path, tiny_llama_dir):
    from cai.cli import main

    spec = f"hf:{tiny_llama_dir}"
    common = ["--limit", "2", "--max-tokens", "4", "--bootstrap", "50", "--judge", spec]
    assert main(["eval", "helpfulness", "-m", spec, "--baseline", "mock:", "--turns", "2",
                 "-o", str(tmp_path / "h.json"), *common]) == 0
    h = read_result(tmp_path / "h.json")
    assert h.metrics["win_rate"].n == 2 and h.grader["spec"] == spec
    assert main(["eval", "pairwise", "-m", spec, "-m", "mock:", "-o", str(tmp_path / "p.json"), *common]) == 0
    p = read_result(tmp_path / "p.json")
    assert set(p.breakdown["by_model"]) == {spec, "mock:"}


def test_subsets_are_nested_so_a_larger_limit_resumes():
    from cai.evals.tasks.itemrun import seeded_subset

    items = list(range(100))
    small, large = seeded_subset(items, 10, 3), seeded_subset(items, 30, 3)
    assert set(small) <= set(large) and large == sorted(large) and len(large) == 30
    assert seeded_subset(items, 10, 4) != small
