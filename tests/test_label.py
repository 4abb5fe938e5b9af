"""RLAIF labelling: soft labels, position debiasing, principle ensembling and CoT clamping come out
as computed by hand from known option log-probabilities; pairs, records, filtering and resume."""

from __future__ import annotations

import json
import math
import random

import pytest

from cai.backends.mock import MockBackend
from cai.constitution import Constitution, PreferenceExample, Principle
from cai.errors import CAIError
from cai.label import LabelConfig, form_pairs, run_label, skipped_path
from cai.label.judge import JudgeConfig, label_pairs
from cai.label.preference import clamp, debias, ensemble, margin, orders_agree, two_option_prob
from cai.sources import Prompt

from cai.templates import load_template

A, B = load_template("label")["options"]  # the two option strings the labeller scores
ln = math.log


def constitution(w1: float = 1.0, w2: float = 1.0, examples=()) -> Constitution:
    return Constitution(name="t", version="1", description="d", principles=(
        Principle("p1", "crit", "rev", preference="Q1: which is kinder?", weight=w1),
        Principle("p2", "crit", "rev", preference="Q2: which is safer?", weight=w2),
        Principle("no-question", "crit", "rev")), preference_examples=tuple(examples))


# Raw (unnormalised) log-probs the feedback model gives, keyed by (question, which text is (A)).
# Normalising over the two options: P(A) = pA / (pA + pB).
#   p1, x as (A): ln .6 vs ln .2 -> P(A) = .6/.8 = 0.75        -> P(x) = 0.75
#   p1, x as (B): ln .2 vs ln .3 -> P(A) = .2/.5 = 0.40        -> P(x) = P(B) = 0.60
#   p2, x as (A): ln .9 vs ln .1 -> P(A) = 0.90                -> P(x) = 0.90
#   p2, x as (B): ln .7 vs ln .3 -> P(A) = 0.70                -> P(x) = P(B) = 0.30
TABLE = {("Q1", True): (ln(0.6), ln(0.2)), ("Q1", False): (ln(0.2), ln(0.3)),
         ("Q2", True): (ln(0.9), ln(0.1)), ("Q2", False): (ln(0.7), ln(0.3))}


def judge_logprobs(conv, options):
    question = conv[-2]["content"]
    q = "Q1" if "Q1:" in question else "Q2"
    x_is_a = "(A) XRESP" in question
    a, b = TABLE[(q, x_is_a)]
    return {A: a, B: b}


PAIR = ([{"role": "user", "content": "hello"}], "XRESP", "YRESP")


def test_pure_functions_by_hand():
    assert two_option_prob({A: ln(0.6), B: ln(0.2)}, A, B) == pytest.approx(0.75)
    # underflow-safe: exp(-2000) is 0.0 in floats, the logistic of the difference is not
    assert two_option_prob({A: -2000.0, B: -2001.0}, A, B) == pytest.approx(1 / (1 + math.exp(-1)))
    assert debias(0.75, 0.60) == pytest.approx(0.675)
    assert debias(0.75, None) == 0.75
    assert orders_agree(0.9, 0.3) is False and orders_agree(0.75, 0.6) is True and orders_agree(0.5, 0.9) is False
    assert ensemble([0.675, 0.6]) == pytest.approx(0.6375)
    assert ensemble([0.675, 0.6], [1, 3]) == pytest.approx(0.61875)  # (0.675 + 3*0.6) / 4
    assert clamp(0.9, (0.4, 0.6)) == 0.6 and clamp(0.3, (0.4, 0.6)) == 0.4 and clamp(0.45, (0.4, 0.6)) == 0.45
    assert margin(0.8) == pytest.approx(0.6) and margin(0.5) == 0.0


def test_soft_labels_debiasing_and_ensembling_by_hand():
    fb = MockBackend(option_logprobs=judge_logprobs)
    [lab] = label_pairs(fb, [PAIR], constitution(), JudgeConfig(principles="all"))
    p1, p2 = lab.principles
    # p1: (0.75 + 0.60) / 2 = 0.675, both orders pick x
    assert (p1.id, p1.p_x_as_a, p1.p_x_as_b, p1.p, p1.agree) == ("p1", pytest.approx(0.75), pytest.approx(0.6),
                                                                 pytest.approx(0.675), True)
    # p2: (0.90 + 0.30) / 2 = 0.60; order 1 picks x, order 2 picks y: position bias
    assert (p2.p_x_as_a, p2.p_x_as_b, p2.p, p2.agree) == (pytest.approx(0.9), pytest.approx(0.3),
                                                          pytest.approx(0.6), False)
    # ensemble: (0.675 + 0.60) / 2 = 0.6375; per order (0.75+0.9)/2 = 0.825 and (0.6+0.3)/2 = 0.45 disagree
    assert lab.p == pytest.approx(0.6375)
    assert (lab.p_x_as_a, lab.p_x_as_b, lab.agree) == (pytest.approx(0.825), pytest.approx(0.45), False)
    # one scoring call, 2 principles x 2 orders; the question without a preference text is never asked
    kinds = [c[0] for c in fb.calls]
    assert kinds == ["score_options"] and len(fb.calls[0][1][0]) == 4
    assert all("crit" not in c[-2]["content"] for c in fb.calls[0][1][0])


def test_weights_apply_to_the_mean_of_all_principles():
    fb = MockBackend(option_logprobs=judge_logprobs)
    [lab] = label_pairs(fb, [PAIR], constitution(w2=3.0), JudgeConfig(principles="all"))
    assert lab.p == pytest.approx((0.675 * 1 + 0.6 * 3) / 4)  # 0.61875


def test_no_swap_scores_one_order():
    fb = MockBackend(option_logprobs=judge_logprobs)
    [lab] = label_pairs(fb, [PAIR], constitution(), JudgeConfig(principles="p1", swap=False))
    assert lab.p == pytest.approx(0.75) and lab.p_x_as_b is None and lab.agree is None
    assert len(fb.calls[0][1][0]) == 1


def test_cot_reasons_first_then_scores_with_clamping_by_hand():
    fb = MockBackend(option_logprobs=judge_logprobs, responses=lambda conv: "  x is kinder than y. ")
    [lab] = label_pairs(fb, [PAIR], constitution(), JudgeConfig(principles="all", cot=True))
    # clamp each order's P(x) into [0.4, 0.6] before averaging:
    #   p1: 0.75 -> 0.6, 0.60 -> 0.6 => 0.6 ;  p2: 0.90 -> 0.6, 0.30 -> 0.4 => 0.5 ;  mean 0.55
    assert [s.p for s in lab.principles] == [pytest.approx(0.6), pytest.approx(0.5)]
    assert lab.p == pytest.approx(0.55)
    gen, score = fb.calls
    assert gen[0] == "generate" and score[0] == "score_options"
    assert all(c[-1] == {"role": "assistant", "content": "Let's think step by step:"} for c in gen[1])
    assert score[1][0][0][-1]["content"] == "Let's think step by step: x is kinder than y.\n\nSo the answer is: ("
    assert lab.principles[0].reasoning == ("x is kinder than y.", "x is kinder than y.")
    # a wider clamp [0.3, 0.8]: p1 (0.75 + 0.6)/2 = 0.675 ; p2 (0.8 + 0.3)/2 = 0.55 ; mean 0.6125
    fb = MockBackend(option_logprobs=judge_logprobs, responses=lambda conv: "hmm")
    [lab] = label_pairs(fb, [PAIR], constitution(), JudgeConfig(principles="all", cot=True, cot_clamp=(0.3, 0.8)))
    assert lab.p == pytest.approx(0.6125)


def test_sampled_principle_is_seeded_per_pair():
    fb = MockBackend(option_logprobs=judge_logprobs)
    keys = [f"k{i}" for i in range(40)]
    labs = label_pairs(fb, [PAIR] * 40, constitution(), JudgeConfig(principles="sample"), keys=keys)
    ids = [lab.principles[0].id for lab in labs]
    assert set(ids) == {"p1", "p2"} and all(len(lab.principles) == 1 for lab in labs)
    # each pair's label is its principle's: 0.675 under p1, 0.60 under p2
    assert all(lab.p == pytest.approx(0.675 if i == "p1" else 0.6) for lab, i in zip(labs, ids))
    # same keys -> same draw whatever the batch; another seed -> another draw
    again = label_pairs(fb, [PAIR] * 20, constitution(), JudgeConfig(principles="sample"), keys=keys[20:])
    assert [lab.principles[0].id for lab in again] == ids[20:]
    other = label_pairs(fb, [PAIR] * 40, constitution(), JudgeConfig(principles="sample", seed=1), keys=keys)
    assert [lab.principles[0].id for lab in other] != ids
    # a principle with zero weight is never drawn
    zero = label_pairs(fb, [PAIR] * 20, constitution(w1=0.0), JudgeConfig(principles="sample"), keys=keys[:20])
    assert {lab.principles[0].id for lab in zero} == {"p2"}


def test_n_principles_and_errors():
    fb = MockBackend(option_logprobs=judge_logprobs)
    [lab] = label_pairs(fb, [PAIR], constitution(), JudgeConfig(principles="2"))
    assert sorted(s.id for s in lab.principles) == ["p1", "p2"] and lab.p == pytest.approx(0.6375)
    [lab] = label_pairs(fb, [PAIR], constitution(), JudgeConfig(principles="1"))
    assert len(lab.principles) == 1
    with pytest.raises(CAIError, match="no preference question"):
        label_pairs(fb, [PAIR], constitution(), JudgeConfig(principles="no-question"))
    with pytest.raises(CAIError, match="known ids"):
        label_pairs(fb, [PAIR], constitution(), JudgeConfig(principles="nope"))
    bare = Constitution(name="bare", version="1", description="d", principles=(Principle("a", "c", "r"),))
    with pytest.raises(CAIError, match="no preference questions"):
        label_pairs(fb, [PAIR], bare, JudgeConfig())
    with pytest.raises(CAIError, match="no preference_examples"):
        label_pairs(fb, [PAIR], constitution(), JudgeConfig(few_shot=1))
    with pytest.raises(ValueError, match="0 <= LO"):
        label_pairs(fb, [PAIR], constitution(), JudgeConfig(cot=True, cot_clamp=(0.6, 0.9)))


def test_few_shot_examples_come_before_the_question():
    ex = PreferenceExample(messages=[{"role": "user", "content": "EXAMPLE PROMPT"}], response_a="ea",
                           response_b="eb", question="Which is better? Options:", answer="B", reasoning="eb wins.")
    fb = MockBackend(option_logprobs=judge_logprobs)
    label_pairs(fb, [PAIR], constitution(examples=[ex]), JudgeConfig(principles="p1", few_shot=1, swap=False))
    conv = fb.calls[0][1][0][0]
    assert [m["role"] for m in conv] == ["user", "assistant", "user", "assistant"]
    assert "EXAMPLE PROMPT" in conv[0]["content"] and "(A) ea" in conv[0]["content"]
    assert conv[0]["content"].count("Options:") == 1  # the paper's trailing "Options:" is not doubled
    assert conv[1]["content"] == "The answer is: (B)"
    assert "XRESP" in conv[2]["content"] and conv[3]["content"] == "The answer is: ("
    fb = MockBackend(option_logprobs=judge_logprobs, responses=["r"])
    label_pairs(fb, [PAIR], constitution(examples=[ex]), JudgeConfig(principles="p1", few_shot=-1, cot=True))
    assert fb.calls[0][1][0][1]["content"] == "Let's think step by step: eb wins.\n\nSo the answer is: (B)"


def test_form_pairs():
    rng = random.Random(0)
    assert form_pairs(["a", "b", "c"], "all", 10, rng) == [(0, 1), (0, 2), (1, 2)]
    assert form_pairs(["a", "b", "c"], "adjacent", 10, rng) == [(0, 1), (1, 2)]
    assert form_pairs(["a", " a ", "c"], "all", 10, rng) == [(0, 2), (1, 2)]  # identical answers make no pair
    capped = form_pairs([str(i) for i in range(6)], "all", 4, random.Random(1))
    assert len(capped) == 4 and capped == sorted(capped) and len(set(capped)) == 4
    assert capped == form_pairs([str(i) for i in range(6)], "all", 4, random.Random(1))


# ---- the stage: sampling, records, filtering, resume -------------------------------------------------

def prompts(n: int) -> list[Prompt]:
    return [Prompt(id=f"p{i}", messages=[{"role": "user", "content": f"question {i}"}], source="t") for i in range(n)]


def good_bad_judge(conv, options):
    """Prefers the option holding GOOD: P(GOOD) = 0.8 in either position (no position bias)."""
    q = conv[-2]["content"]
    good_is_a = q.index("(A) ") < q.index("GOOD") < q.index("(B) ")
    return {A: ln(0.8), B: ln(0.2)} if good_is_a else {A: ln(0.2), B: ln(0.8)}


def test_a_prompts_sampled_answers_do_not_depend_on_its_batch(tmp_path):
    # The policy's answers are drawn with a seed per prompt (its id), so another --batch-size (or a
    # resumed run's smaller batch) samples the same pairs.
    def pairs(name, batch_size, seed=0):
        cfg = LabelConfig(prompts="x", output=str(tmp_path / name), samples_per_prompt=2, constitution="t",
                          principles="p1", batch_size=batch_size, seed=seed, temperature=1.0)
        judge = MockBackend(option_logprobs=lambda conv, options: {A: ln(0.7), B: ln(0.3)})
        run_label(cfg, policy=MockBackend(), feedback=judge, prompts=prompts(5), constitution=constitution())
        return {r["prompt_id"]: sorted([r["chosen"][-1]["content"], r["rejected"][-1]["content"]])
                for r in map(json.loads, (tmp_path / name).read_text().splitlines())}

    by_two = pairs("a.jsonl", 2)
    assert pairs("b.jsonl", 5) == by_two and len(by_two) == 5
    assert pairs("c.jsonl", 2, seed=1) != by_two


def test_run_label_writes_trl_preference_records(tmp_path):
    # K=3 answers per prompt, conversation-major: BAD, GOOD, BAD again -> pairs (0,1), (1,2); (0,2) identical
    policy = MockBackend(responses=["BAD answer", "GOOD answer", "BAD answer"])
    fb = MockBackend(option_logprobs=good_bad_judge)
    out = tmp_path / "prefs.jsonl"
    cfg = LabelConfig(prompts="x", output=str(out), samples_per_prompt=3, constitution="t", principles="p1",
                      batch_size=2, seed=3)
    s = run_label(cfg, policy=policy, feedback=fb, prompts=prompts(3), constitution=constitution())
    assert (s["pairs"], s["dropped"], s["no_pairs"]) == (6, 0, 0)
    recs = [json.loads(line) for line in out.read_text().splitlines()]
    assert [r["id"] for r in recs[:2]] == ["p0:0-1", "p0:1-2"]
    for r in recs:
        assert r["prompt"] == [{"role": "user", "content": f"question {r['prompt_id'][1:]}"}]
        assert r["chosen"] == [{"role": "assistant", "content": "GOOD answer"}]
        assert r["rejected"] == [{"role": "assistant", "content": "BAD answer"}]
        assert r["p_chosen"] == pytest.approx(0.8) and r["agree"] is True and r["tie"] is False
        assert r["orders"] == {"chosen_as_a": pytest.approx(0.8), "chosen_as_b": pytest.approx(0.8)}
        assert r["principles"] == [{"id": "p1", "p_chosen": pytest.approx(0.8), "chosen_as_a": pytest.approx(0.8),
                                    "chosen_as_b": pytest.approx(0.8), "agree": True}]
        assert r["samples"]["chosen"] == 1
        prov = r["provenance"]
        assert prov["constitution"]["name"] == "t" and prov["models"] == {"policy": "mock:", "feedback": "mock:"}
        assert prov["sampling"]["n"] == 3 and prov["sampling"]["temperature"] == 1.0 and prov["seed"] == 3
        assert prov["label"]["principles"] == "p1" and prov["label"]["swap"] is True
    # (0,1): x = BAD lost, so chosen is sample 1 and the orders were re-expressed for it
    assert recs[0]["samples"] == {"chosen": 1, "rejected": 0}
    # one generate call per batch of prompts, n=K
    gens = [c for c in policy.calls if c[0] == "generate"]
    assert [len(g[1]) for g in gens] == [2, 1]


def test_min_margin_and_identical_samples_go_to_the_sidecar(tmp_path):
    policy = MockBackend(responses=["same", "same", "one", "two"])  # p0: identical; p1: a pair
    fb = MockBackend(option_logprobs={A: ln(0.55), B: ln(0.45)})  # P(A) = 0.55 both orders -> exactly 0.5
    out = tmp_path / "prefs.jsonl"
    cfg = LabelConfig(prompts="x", output=str(out), constitution="t", principles="p1", min_margin=0.0)
    s = run_label(cfg, policy=policy, feedback=fb, prompts=prompts(2), constitution=constitution())
    assert (s["pairs"], s["dropped"], s["no_pairs"]) == (0, 1, 1)
    assert not out.exists() or out.read_text() == ""
    side = [json.loads(x) for x in skipped_path(out).read_text().splitlines()]
    assert {r["prompt_id"] for r in side} == {"p0", "p1"}
    tie = next(r for r in side if r["prompt_id"] == "p1")
    assert tie["tie"] is True and tie["p_chosen"] == 0.5 and tie["reason"].startswith("margin 0.0000")
    # both prompts count as done: a rerun samples nothing
    again = MockBackend(responses=["x", "y"])
    s = run_label(cfg, policy=again, feedback=fb, prompts=prompts(2), constitution=constitution())
    assert s["already_done"] == 2 and again.calls == []


class Crash(RuntimeError):
    pass


def test_resume_after_a_crash_continues_without_duplicates(tmp_path):
    out = tmp_path / "prefs.jsonl"
    cfg = LabelConfig(prompts="x", output=str(out), constitution="t", principles="sample", batch_size=2)
    calls = {"n": 0}

    def flaky(conv, options):
        calls["n"] += 1
        if calls["n"] > 4:  # the first batch (2 prompts x 1 pair x 2 orders) succeeds, then it dies
            raise Crash()
        return good_bad_judge(conv, options)

    policy = MockBackend(responses=["GOOD a", "BAD b"])
    with pytest.raises(Crash):
        run_label(cfg, policy=policy, feedback=MockBackend(option_logprobs=flaky), prompts=prompts(5),
                  constitution=constitution())
    first = [json.loads(x) for x in out.read_text().splitlines()]
    assert [r["prompt_id"] for r in first] == ["p0", "p1"]
    policy2 = MockBackend(responses=["GOOD a", "BAD b"])
    s = run_label(cfg, policy=policy2, feedback=MockBackend(option_logprobs=good_bad_judge), prompts=prompts(5),
                  constitution=constitution())
    assert s["already_done"] == 2 and s["pairs"] == 3
    recs = [json.loads(x) for x in out.read_text().splitlines()]
    ids = [r["id"] for r in recs]
    assert len(ids) == 5 == len(set(ids)) and sorted(r["prompt_id"] for r in recs) == [f"p{i}" for i in range(5)]
    # only the unfinished prompts were sampled again
    assert sum(len(c[1]) for c in policy2.calls if c[0] == "generate") == 3
    # the principle a pair got does not depend on the batch it ran in
    fresh = tmp_path / "fresh.jsonl"
    run_label(LabelConfig(prompts="x", output=str(fresh), constitution="t", principles="sample", batch_size=5),
              policy=MockBackend(responses=["GOOD a", "BAD b"]), feedback=MockBackend(option_logprobs=good_bad_judge),
              prompts=prompts(5), constitution=constitution())
    by_id = {r["id"]: r["principles"][0]["id"] for r in recs}
    assert {r["id"]: r["principles"][0]["id"] for r in map(json.loads, fresh.read_text().splitlines())} == by_id


def test_config_errors_name_the_fix(tmp_path):
    with pytest.raises(CAIError, match="--data"):
        LabelConfig(output="x").check()
    with pytest.raises(CAIError, match="-o"):
        LabelConfig(prompts="x").check()
    with pytest.raises(CAIError, match="at least 2"):
        LabelConfig(prompts="x", output="o", samples_per_prompt=1).check()
    with pytest.raises(CAIError, match="all, adjacent, revision or contrastive"):
        LabelConfig(prompts="x", output="o", pairs="random").check()


def test_cli_end_to_end_on_the_mock(tmp_path, monkeypatch):
    from cai.cli import main

    src = tmp_path / "prompts.jsonl"
    src.write_text("".join(json.dumps({"prompt": f"How do I do thing {i}?"}) + "\n" for i in range(4)))
    out = tmp_path / "prefs.jsonl"
    argv = ["label", "--policy", "mock:", "--feedback", "mock:", "-c", "hhh", "--prompts", str(src), "-o", str(out),
            "-k", "3", "--principles", "all", "--no-progress"]
    assert main(argv) == 0
    recs = [json.loads(x) for x in out.read_text().splitlines()]
    assert len(recs) == 12  # 4 prompts x C(3,2) pairs (mock samples differ)
    r = recs[0]
    assert set(r["principles"][0]) == {"id", "p_chosen", "chosen_as_a", "chosen_as_b", "agree"}
    assert len(r["principles"]) == 4  # hhh has four preference questions
    assert 0.5 <= r["p_chosen"] <= 1 and r["p_chosen"] == pytest.approx(sum(p["p_chosen"] for p in r["principles"]) / 4)
    assert main(argv) == 0  # resumed: nothing new
    assert len(out.read_text().splitlines()) == 12
    assert main(["label", "--policy", "mock:", "--prompts", str(src), "-o", str(out), "-k", "1"]) == 2


def test_datasets_and_dpo_trainer_take_the_output(tmp_path, tiny_llama_dir):
    pytest.importorskip("trl")
    import torch
    from datasets import load_dataset
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import DPOConfig, DPOTrainer
    from trl.data_utils import is_conversational

    out = tmp_path / "prefs.jsonl"
    run_label(LabelConfig(prompts="x", output=str(out), constitution="t", principles="all"),
              policy=MockBackend(responses=["GOOD answer", "BAD answer"]),
              feedback=MockBackend(option_logprobs=good_bad_judge), prompts=prompts(4), constitution=constitution())
    ds = load_dataset("json", data_files=str(out), split="train")
    assert ds.num_rows == 4 and is_conversational(ds[0])
    model = AutoModelForCausalLM.from_pretrained(tiny_llama_dir, dtype=torch.float32)
    tok = AutoTokenizer.from_pretrained(tiny_llama_dir)
    args = DPOConfig(output_dir=str(tmp_path / "dpo"), max_steps=1, per_device_train_batch_size=2, report_to=[],
                     save_strategy="no", use_cpu=True, max_length=128)
    trainer = DPOTrainer(model=model, args=args, train_dataset=ds, processing_class=tok)
    row = trainer.train_dataset[0]
    assert "GOOD answer" in tok.decode(row["chosen_ids"]) and "BAD answer" in tok.decode(row["rejected_ids"])
    assert trainer.train().training_loss > 0


def test_run_label_on_a_real_transformers_backend(tmp_path, tiny_llama_dir):
    """The tiny random Llama through the hf backend: real sampling, real option scoring."""
    from cai.backends import load_backend

    backend = load_backend(f"hf:{tiny_llama_dir}", dtype="float32")
    out = tmp_path / "prefs.jsonl"
    cfg = LabelConfig(prompts="x", output=str(out), constitution="t", principles="all", max_tokens=8,
                      samples_per_prompt=3)
    s = run_label(cfg, policy=backend, prompts=prompts(2), constitution=constitution())
    recs = [json.loads(x) for x in out.read_text().splitlines()]
    assert s["pairs"] == len(recs) > 0
    for r in recs:
        assert 0.5 <= r["p_chosen"] < 1.0 and r["chosen"] != r["rejected"]
        for p in r["principles"]:
            # both orders were read and averaged
            assert 0 < p["chosen_as_a"] < 1 and 0 < p["chosen_as_b"] < 1
            assert p["p_chosen"] == pytest.approx((p["chosen_as_a"] + p["chosen_as_b"]) / 2)


def test_label_does_not_redraw_what_generate_drew_under_the_same_seed(tmp_path):
    # Seeds are keyed by stage as well as by prompt: run with one --seed on the same prompts, `cai
    # generate` and `cai label` would otherwise sample the same answers from the same model.
    from cai.generation import GenerateConfig, generate_file

    class Recorder(MockBackend):
        def generate(self, conversations, params):
            self.seen.extend(params.seeds or ())
            return super().generate(conversations, params)

    src = tmp_path / "prompts.jsonl"
    src.write_text("".join(json.dumps({"id": p.id, "prompt": p.messages[0]["content"]}) + "\n" for p in prompts(3)))
    gen, pol = Recorder(), Recorder()
    gen.seen, pol.seen = [], []
    generate_file(GenerateConfig(model="mock:", input=str(src), output=str(tmp_path / "g.jsonl"), temperature=1.0,
                                 n=2, seed=4), gen)
    judge = MockBackend(option_logprobs=lambda conv, options: {A: ln(0.7), B: ln(0.3)})
    run_label(LabelConfig(prompts="x", output=str(tmp_path / "l.jsonl"), samples_per_prompt=2, constitution="t",
                          principles="p1", seed=4, temperature=1.0),
              policy=pol, feedback=judge, prompts=prompts(3), constitution=constitution())
    assert len(gen.seen) == len(pol.seen) == 3 and not set(gen.seen) & set(pol.seen)
    generated = {r["messages"][-1]["content"] for r in map(json.loads, (tmp_path / "g.jsonl").read_text().splitlines())}
    labelled = {m["content"] for r in map(json.loads, (tmp_path / "l.jsonl").read_text().splitlines())
                for m in (r["chosen"][-1], r["rejected"][-1])}
    assert generated and labelled and not generated & labelled
