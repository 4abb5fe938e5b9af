"""`cai eval labeler`: loaders on the shared data, the statistics on hand-made cases, and the
whole evaluation on mock labellers whose answers we know."""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import pytest

from cai.backends.mock import MockBackend
from cai.errors import CAIError
from cai.evals.comparisons import ChoiceItem, Comparison, load_comparisons
from cai.evals.labeler import LabelerEvalConfig, evaluate_labeler, plot_reliability
from cai.evals.metrics import bootstrap_ci, calibration, credit, majority_baseline, random_baseline
from cai.label.prompts import swap_paper_options

from cai.templates import load_template

A, B = load_template("label")["options"]  # what the labeller scores for hhh / hh-rlhf pairs
PA, PB = " (A)", " (B)"  # options of the CAI paper's multiple-choice files
ln = math.log


# ---- loaders ----------------------------------------------------------------------------------------

def test_hhh_loader_reads_the_four_categories(shared_data):
    kind, items = load_comparisons("hhh", cwd=Path(__file__).resolve().parents[1])
    assert kind == "hhh" and len(items) == 221
    counts = {c: sum(it.category == c for it in items) for c in ("harmless", "helpful", "honest", "other")}
    assert counts == {"harmless": 58, "helpful": 59, "honest": 61, "other": 43}
    for it in items:
        assert it.messages[0]["role"] == "user" and it.messages[-1]["role"] == "user" and it.better != it.worse
    multi = [it for it in items if len(it.messages) > 1]  # transcripts inside `input` become turns
    assert multi and all(m["role"] in ("user", "assistant") for it in multi for m in it.messages)
    assert len({it.id for it in items}) == 221
    # an explicit folder of the same shape, and a single category folder
    _, same = load_comparisons(str(shared_data / "hhh_alignment"))
    assert [it.id for it in same] == [it.id for it in items]
    _, honest = load_comparisons(f"hhh:{shared_data / 'hhh_alignment' / 'honest'}")
    assert len(honest) == 61 and {it.category for it in honest} == {"honest"}


def test_hh_rlhf_loader_and_seeded_limit(shared_data):
    path = shared_data / "hh_rlhf_harmless_base" / "test.jsonl.gz"
    kind, items = load_comparisons(f"hh-rlhf:{path}", hh_pool="all")
    assert kind == "hh-rlhf" and len(items) > 2250  # a few pairs with nothing to prefer are skipped
    assert all(isinstance(it, Comparison) and it.messages[-1]["role"] == "user" for it in items)
    _, sub = load_comparisons(f"hh-rlhf:{path}", limit=500, seed=0)
    _, sub2 = load_comparisons(str(path), limit=500, seed=0)  # detected by content
    assert len(sub) == 500 and [i.id for i in sub] == [i.id for i in sub2]
    order = [int(i.id.split("/")[1]) for i in sub]
    assert order == sorted(order)  # a subset in file order
    _, sub3 = load_comparisons(str(path), limit=500, seed=1)
    assert [i.id for i in sub3] != [i.id for i in sub]


PAPER = {"prompt": "\n\nConsider the following conversation between a human and an assistant:\n\nHuman: hi?\n\n\n"
                   "Please choose the response that is the most helpful. Options:\n (A) [[[rude reply]]]\n"
                   " (B) [[[kind reply]]]\n\nThe answer is:", "corrects": [" (B)"], "incorrects": [" (A)"]}


def test_paper_format_loader_and_swap(tmp_path):
    f = tmp_path / "mc.jsonl"
    f.write_text(json.dumps(PAPER) + "\n" + json.dumps({**PAPER, "category": "x"}) + "\n")
    kind, items = load_comparisons(str(f))
    assert kind == "choice" and isinstance(items[0], ChoiceItem)
    assert items[0].corrects == (" (B)",) and items[0].category == "mc" and items[1].category == "x"
    swapped = swap_paper_options(PAPER["prompt"])
    assert "(A) [[[kind reply]]]\n (B) [[[rude reply]]]\n\nThe answer is:" in swapped
    assert swap_paper_options("no options here") is None
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps({"prompt": "x", "corrects": [], "incorrects": [" (A)"]}) + "\n")
    with pytest.raises(CAIError, match="non-empty lists"):
        load_comparisons(str(bad))
    bad.write_text(json.dumps(PAPER) + "\n\n{\"prompt\": \n")
    with pytest.raises(CAIError, match=r"bad\.jsonl:3: not valid JSON \(.+\); fix or remove that line"):
        load_comparisons(str(bad))
    with pytest.raises(CAIError, match="not found"):
        load_comparisons(str(tmp_path / "missing.jsonl"))
    # The built-in sets ship inside the package: found from any working directory.
    kind, hhh = load_comparisons("hhh", cwd=tmp_path)
    assert kind == "hhh" and len(hhh) == 221
    kind, hh = load_comparisons("hh-rlhf", cwd=tmp_path, limit=5)
    assert kind == "hh-rlhf" and len(hh) == 5
    with pytest.raises(CAIError, match="not found"):
        load_comparisons("hhh:no/such/folder", cwd=tmp_path)


# ---- statistics -------------------------------------------------------------------------------------

def test_bootstrap_ci():
    assert bootstrap_ci([1.0] * 30) == (1.0, 1.0)
    vals = [1.0, 0.0] * 100
    lo, hi = bootstrap_ci(vals, seed=0)
    # the mean is 0.5 with standard error sqrt(.25/200) = 0.035: the 95% interval is about 0.43..0.57
    assert 0.41 < lo < 0.47 and 0.53 < hi < 0.59
    spread = [i / 199 for i in range(200)]  # continuous values, so another seed moves the interval
    assert bootstrap_ci(spread, seed=0) == bootstrap_ci(spread, seed=0) != bootstrap_ci(spread, seed=1)
    assert all(math.isnan(x) for x in bootstrap_ci([]))


def test_ece_and_baselines_by_hand():
    # 10 bins of width 0.05 on [0.5, 1]. Bin [0.5, 0.55): confidences .52 .52, outcomes 1 0 -> |0.5 - 0.52| = 0.02
    # Bin [0.95, 1]: .97 .97, outcomes 1 1 -> |1 - 0.97| = 0.03. ECE = 0.02 * 2/4 + 0.03 * 2/4 = 0.025
    ece, bins = calibration([0.52, 0.52, 0.97, 0.97], [1, 0, 1, 1])
    assert ece == pytest.approx(0.025)
    assert bins[0]["count"] == 2 and bins[0]["accuracy"] == 0.5 and bins[9]["confidence"] == pytest.approx(0.97)
    assert bins[5]["count"] == 0 and bins[5]["accuracy"] is None
    assert calibration([1.0], [1])[0] == 0.0  # confidence 1 lands in the last bin
    assert credit(0.7) == 1 and credit(0.3) == 0 and credit(0.5) == 0.5
    assert majority_baseline([{"A"}, {"A"}, {"B"}, {"A"}]) == 0.75
    assert random_baseline([(1, 2), (1, 4)]) == pytest.approx(0.375)


# ---- the evaluation on mock labellers ----------------------------------------------------------------

def items(n: int = 8) -> list[Comparison]:
    return [Comparison(f"c/{i}", "harmless" if i % 2 else "helpful", [{"role": "user", "content": f"q{i}"}],
                       f"GOOD{i}", f"BAD{i}") for i in range(n)]


def letter_biased(conv, options):
    return {A: ln(0.9), B: ln(0.1)}  # always says (A)


def knows_best(conv, options):
    q = conv[-2]["content"]
    good_is_a = q.index("(A) ") < q.index("GOOD") < q.index("(B) ")
    return {A: ln(0.7), B: ln(0.3)} if good_is_a else {A: ln(0.3), B: ln(0.7)}


def run(fn, **kw):
    cfg = LabelerEvalConfig(constitution="hhh", bootstrap=200, **kw)
    return evaluate_labeler(cfg, backend=MockBackend(option_logprobs=fn), items=items(), show_progress=False)


def test_a_labeller_that_knows_best_scores_100():
    r = run(knows_best)
    o = r["overall"]
    assert o["accuracy"] == 1.0 and o["ci95"] == [1.0, 1.0] and o["position_bias_rate"] == 0.0
    # confidence 0.7 in every item, always right: ECE = |1 - 0.7| = 0.3
    assert o["ece"] == pytest.approx(0.3) and o["mean_p_correct"] == pytest.approx(0.7)
    assert set(r["categories"]) == {"harmless", "helpful"} and r["categories"]["helpful"]["n"] == 4
    assert all(it["p_orders"] == [pytest.approx(0.7), pytest.approx(0.7)] for it in r["items"])


def test_a_letter_biased_labeller_is_caught():
    # swap on: P(correct) = (0.9 + 0.1) / 2 = 0.5 for every item -> ties, half credit, always position-biased
    r = run(letter_biased)
    assert r["overall"]["accuracy"] == 0.5 and r["overall"]["position_bias_rate"] == 1.0
    # swap off: right exactly when the coin put the better answer first, i.e. the majority-of-"A" rate
    r = run(letter_biased, swap=False)
    first_a = [it["correct_options"] == ["A"] for it in r["items"]]
    assert 0 < sum(first_a) < len(first_a)  # the coin flips both ways on 8 items
    assert r["overall"]["accuracy"] == pytest.approx(sum(first_a) / 8)
    assert r["overall"]["position_bias_rate"] is None and r["overall"]["random_baseline"] == 0.5
    assert r["overall"]["majority_baseline"] == max(sum(first_a), 8 - sum(first_a)) / 8


def test_paper_format_items_are_scored_in_both_orders():
    def judge(conv, options):  # prefers the option whose text is "kind reply"
        q = conv[-2]["content"]
        kind_is_a = q.index("(A)") < q.index("kind reply") < q.index("(B)")
        return {PA: ln(0.8), PB: ln(0.2)} if kind_is_a else {PA: ln(0.4), PB: ln(0.6)}

    it = ChoiceItem("m/1", "mc", PAPER["prompt"], (PB,), (PA,))
    fb = MockBackend(option_logprobs=judge)
    r = evaluate_labeler(LabelerEvalConfig(bootstrap=50), backend=fb, items=[it], show_progress=False)
    # dataset order: kind is (B) -> P(B) = 0.6 ; swapped: kind is (A) -> P(A) = 0.8 ; mean 0.7
    assert r["items"][0]["p_orders"] == [pytest.approx(0.6), pytest.approx(0.8)]
    assert r["items"][0]["p_correct"] == pytest.approx(0.7) and r["overall"]["accuracy"] == 1.0
    convs = fb.calls[0][1][0]
    assert convs[0][-1] == {"role": "assistant", "content": "The answer is:"}
    assert convs[0][-2]["content"].endswith("[[[kind reply]]]") and "The answer is" not in convs[0][-2]["content"]


def test_paper_format_with_cot_keeps_the_papers_answer_prefix():
    def judge(conv, options):
        return {PA: ln(0.1), PB: ln(0.9)}  # P(B) = 0.9 in both orders: clamped to 0.6, then 0.4 once swapped

    it = ChoiceItem("m/1", "mc", PAPER["prompt"], (PB,), (PA,))
    fb = MockBackend(option_logprobs=judge, responses=lambda conv: "B is kinder.")
    r = evaluate_labeler(LabelerEvalConfig(bootstrap=50, cot=True), backend=fb, items=[it], show_progress=False)
    gen, score = fb.calls
    assert gen[1][0][-1]["content"] == "Let's think step by step:"
    assert score[1][0][0][-1]["content"] == "Let's think step by step: B is kinder.\n\nSo the answer is:"
    # order 1: correct is (B), P = 0.9 -> 0.6 ; swapped: correct is (A), P = 0.1 -> 0.4 ; mean 0.5 (a tie)
    assert r["items"][0]["p_orders"] == [pytest.approx(0.6), pytest.approx(0.4)]
    assert r["overall"]["accuracy"] == 0.5 and r["overall"]["position_bias_rate"] == 1.0


def test_cli_end_to_end_on_the_mock(shared_data, tmp_path, monkeypatch):
    from cai.cli import main

    # `--data hhh:PATH` reads a folder shaped like hhh_alignment: lay out two categories there
    folder = tmp_path / "shared" / "data" / "hhh_alignment"
    for cat in ("harmless", "honest"):
        (folder / cat).mkdir(parents=True)
        shutil.copy(shared_data / "hhh_alignment" / cat / "task.json", folder / cat / "task.json")
    (tmp_path / "main").mkdir()
    monkeypatch.chdir(tmp_path / "main")
    assert main(["eval", "labeler", "-m", "mock:", "--data", "hhh:../shared/data/hhh_alignment", "--limit", "20", "--plot", "rel.png",
                 "--bootstrap", "100", "--no-progress"]) == 0
    result = json.loads((tmp_path / "main" / "eval_labeler_hhh.json").read_text())
    assert result["overall"]["n"] == 20 and set(result["categories"]) == {"harmless", "honest"}
    assert result["model"] == "mock:" and result["provenance"]["constitution"]["name"] == "hhh"
    lo, hi = result["overall"]["ci95"]
    assert lo <= result["overall"]["accuracy"] <= hi
    assert (tmp_path / "main" / "rel.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert main(["eval", "labeler", "-m", "mock:", "--data", str(tmp_path / "nope")]) == 2


def test_plot_needs_only_the_result(tmp_path):
    r = run(knows_best)
    assert plot_reliability(r, tmp_path / "p.png").stat().st_size > 1000


@pytest.mark.integration
def test_real_model_labels_hhh_items(shared_data, smollm2_path):
    """The embedded model through the hf backend: probabilities are proper and both orders are read."""
    from cai.backends import load_backend

    _, some = load_comparisons(str(shared_data / "hhh_alignment"), limit=4, seed=0)
    backend = load_backend(f"hf:{smollm2_path}")
    r = evaluate_labeler(LabelerEvalConfig(bootstrap=100), backend=backend, items=some, show_progress=False)
    assert r["overall"]["n"] == 4
    for it in r["items"]:
        assert 0.0 < it["p_correct"] < 1.0 and None not in it["p_orders"]
        assert it["p_correct"] == pytest.approx(sum(it["p_orders"]) / 2)
