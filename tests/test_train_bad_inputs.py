"""Bad input to the trainers (sft, reward, dpo, ppo, rloo) that used to train on it without a word, or
stop with a Python traceback: each case is now one ``cai: error:`` line naming the file and line or
the flag, before any model loads, and leaves every file in its folder as it was. Same table shape as
``test_bad_inputs_accepted.CASES``; ``{d}`` is the case's folder."""

from __future__ import annotations

import json

import pytest

from test_bad_inputs import _snapshot, assert_one_line_error, refused_cleanly, run_bad


def _jsonl(*records) -> str:
    return "".join(json.dumps(r) + "\n" for r in records)


GOOD_SFT = {"prompt": "Hi?", "completion": "Hello."}
GOOD_PAIR = {"prompt": "Hi?", "chosen": "Hello.", "rejected": "Go away."}
SFT_ROLE = _jsonl(GOOD_SFT, {"messages": [{"role": "human", "content": "Hi?"}, {"role": "assistant", "content": "Yo"}]})
SFT_INT = _jsonl(GOOD_SFT, {"messages": [{"role": "user", "content": 5}, {"role": "assistant", "content": "Yo"}]})
PAIR_ROLE = _jsonl(GOOD_PAIR, {**GOOD_PAIR, "prompt": [{"role": "wizard", "content": "Hi?"}]})
PAIR_INT = _jsonl(GOOD_PAIR, {**GOOD_PAIR, "chosen": [{"role": "assistant", "content": 7}]})
PAIR_NULL = _jsonl(GOOD_PAIR, {**GOOD_PAIR, "prompt": [{"role": "user", "content": None}]})
PAIR_STRINGS = _jsonl(GOOD_PAIR, {**GOOD_PAIR, "prompt": ["Hi?", "there"]})
PAIR_SAME = _jsonl(*({"prompt": f"q{i}?", "chosen": "same", "rejected": "same"} for i in range(3)))
PAIR_TIES = _jsonl({**GOOD_PAIR, "p_chosen": 0.5}, {**GOOD_PAIR, "prompt": "Hello?", "p_chosen": 0.5})
ADAPTER = {"adapter/adapter_config.json": '{"peft_type": "LORA"}\n'}  # what --keep-adapter writes, less weights
FAKE_MODEL = {"model/config.json": "{}\n"}  # enough for the policy check, which comes before the reward's import

SFT = ["sft", "-m", "mock:", "--data", "{d}/d.jsonl", "-o", "{d}/m"]
DPO = ["dpo", "-m", "mock:", "--data", "{d}/d.jsonl", "-o", "{d}/m"]
REWARD = ["reward", "-m", "mock:", "--data", "{d}/d.jsonl", "-o", "{d}/m"]
PPO = ["ppo", "-m", "mock:", "--data", "{d}/prompts.jsonl", "--reward", "math:fsum", "-o", "{d}/m"]
RLOO = ["rloo", "-m", "mock:", "--data", "{d}/prompts.jsonl", "--reward", "math:fsum", "-o", "{d}/m",
        "--batch-size", "2", "-k", "2"]
SCORE = ["reward", "score", "-m", "{d}", "--data", "{d}/s.jsonl"]
FROM_ADAPTER = ["-m", "{d}/adapter", "the folder holds a LoRA adapter", "--keep-adapter"]

CASES = [
    # -- a role a chat template renders as it is, content that is not text (was a traceback in sft and dpo)
    ("sft-unknown-role", {"d.jsonl": SFT_ROLE}, SFT, ["d.jsonl:2", "role 'human'", "system, user, assistant"]),
    ("sft-content-not-text", {"d.jsonl": SFT_INT}, SFT, ["d.jsonl:2", "content must be text"]),
    ("dpo-unknown-role", {"d.jsonl": PAIR_ROLE}, DPO, ["d.jsonl:2", "role 'wizard'"]),
    ("dpo-content-not-text", {"d.jsonl": PAIR_INT}, DPO, ["d.jsonl:2", "chosen[0]", "content must be text"]),
    ("reward-unknown-role", {"d.jsonl": PAIR_ROLE}, REWARD, ["d.jsonl:2", "unknown role 'wizard'", "use one of"]),
    ("reward-content-null", {"d.jsonl": PAIR_NULL}, REWARD, ["d.jsonl:2", "content must be a string"]),
    ("reward-prompt-of-strings", {"d.jsonl": PAIR_STRINGS}, REWARD, ["d.jsonl:2", "needs 'role' and 'content'"]),
    # -- pairs that carry no preference (cai dpo already dropped them; cai reward trained on them)
    ("reward-all-pairs-identical", {"d.jsonl": PAIR_SAME}, REWARD, ["all 3 pairs", "same chosen and rejected"]),
    # -- --hard-labels made a tie (p_chosen 0.5) a certain preference for whichever answer came first
    ("dpo-hard-labels-all-ties", {"d.jsonl": PAIR_TIES}, DPO + ["--hard-labels"],
     ["2 of 2 pairs are ties (p_chosen 0.5)", "drop --hard-labels"]),
    # -- NaN passed every `x <= 0` check; inf was an OverflowError traceback or NaN weights
    ("sft-epochs-nan", {"d.jsonl": _jsonl(GOOD_SFT)}, SFT + ["--epochs", "nan"], ["--epochs must be a finite"]),
    ("sft-epochs-inf", {"d.jsonl": _jsonl(GOOD_SFT)}, SFT + ["--epochs", "inf"], ["--epochs must be a finite"]),
    ("dpo-lr-inf", {"d.jsonl": _jsonl(GOOD_PAIR)}, DPO + ["--lr", "inf"], ["--lr must be a finite"]),
    ("dpo-beta-nan", {"d.jsonl": _jsonl(GOOD_PAIR)}, DPO + ["--beta", "nan"], ["--beta must be a finite"]),
    ("ppo-kl-coef-nan", {}, PPO + ["--kl-coef", "nan"], ["--kl-coef must be a finite"]),
    # -- PPO options that were accepted and then ignored or passed on unchecked
    ("ppo-ptx-data-without-coef", {"sl.jsonl": _jsonl(GOOD_SFT)}, PPO + ["--ptx-data", "{d}/sl.jsonl"],
     ["--ptx-data", "needs --ptx-coef"]),
    ("ppo-top-p-zero", {}, PPO + ["--top-p", "0"], ["top-p must be in (0, 1]"]),
    ("ppo-top-p-two", {}, PPO + ["--top-p", "2"], ["top-p must be in (0, 1]"]),
    # -- a --keep-adapter folder as the model to train: loaded frozen, then a traceback in the first step
    ("sft-from-adapter", {"d.jsonl": _jsonl(GOOD_SFT), **ADAPTER}, SFT + FROM_ADAPTER[:2], FROM_ADAPTER[2:]),
    ("dpo-from-adapter", {"d.jsonl": _jsonl(GOOD_PAIR), **ADAPTER}, DPO + FROM_ADAPTER[:2], FROM_ADAPTER[2:]),
    ("reward-from-adapter", {"d.jsonl": _jsonl(GOOD_PAIR), **ADAPTER},
     REWARD + ["--eval-split", "0"] + FROM_ADAPTER[:2], FROM_ADAPTER[2:]),
    ("ppo-from-adapter", ADAPTER, PPO + FROM_ADAPTER[:2], FROM_ADAPTER[2:]),
    ("rloo-from-adapter", ADAPTER, RLOO + FROM_ADAPTER[:2], FROM_ADAPTER[2:]),
    # -- a --human-eval set that does not exist was read after training (and called --data)
    ("reward-human-eval-missing", {"d.jsonl": _jsonl(GOOD_PAIR), **FAKE_MODEL},
     REWARD + ["-m", "{d}/model", "--eval-split", "0", "--human-eval", "hhh", "{d}/nope.jsonl"],
     ["--human-eval ", "nope.jsonl: not found"]),
    # -- cai reward score: a template's traceback, "cai: error: content", or an int scored as the text "5"
    ("score-message-without-content", {"s.jsonl": _jsonl({"messages": [{"role": "user", "content": "hi"},
                                                                      {"role": "assistant"}]})},
     SCORE, ["s.jsonl: record 1", "messages[1]: a message needs 'role' and 'content'", "fix or drop"]),
    ("score-prompt-without-content", {"s.jsonl": _jsonl({"prompt": [{"role": "user"}], "completion": "yo"})},
     SCORE, ["s.jsonl: record 1", "prompt[0]: a message needs 'role' and 'content'"]),
    ("score-messages-of-strings", {"s.jsonl": _jsonl({"messages": ["hi", "yo"]})}, SCORE,
     ["s.jsonl: record 1: nothing to score"]),
    ("score-completion-not-text", {"s.jsonl": _jsonl({"prompt": "hi", "completion": "yo"},
                                                     {"prompt": "hi", "completion": 5})},
     SCORE, ["s.jsonl: record 2", "completion must be text"]),
    # -- an answer that does not reply to a user turn was scored as if it did
    ("score-prompt-ending-on-assistant", {"s.jsonl": _jsonl({"prompt": "hi", "completion": "yo"}, {
        "prompt": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "yo"}], "completion": "yo"})},
     SCORE, ["s.jsonl: record 2", "must reply to a user turn", "prompt has the assistant's turn before it"]),
    ("score-messages-two-answers", {"s.jsonl": _jsonl({"messages": [
        {"role": "user", "content": "hi"}, {"role": "assistant", "content": "a"}, {"role": "assistant", "content": "b"}]})},
     SCORE, ["s.jsonl: record 1", "must reply to a user turn", "messages has the assistant's turn before it"]),
    ("score-messages-answer-alone", {"s.jsonl": _jsonl({"messages": [{"role": "assistant", "content": "a"}]})},
     SCORE, ["s.jsonl: record 1", "messages has nothing before it"]),
    # -- a reward file that does not import (was the import's traceback)
    ("ppo-reward-file-does-not-import", {"r.py": "def f(p, c) return\n", **FAKE_MODEL},
     PPO + ["-m", "{d}/model", "--reward", "{d}/r.py:f"], ["importing", "r.py failed (SyntaxError", "fix the file"]),
]


@pytest.mark.parametrize("name,files,argv,fragments", CASES, ids=[c[0] for c in CASES])
def test_bad_training_input_is_refused(name, files, argv, fragments, tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.chdir(tmp_path)
    refused_cleanly(tmp_path, files, argv, fragments, capsys)


def test_reward_leaves_out_identical_pairs_and_says_so(tmp_path, capsys):
    from cai.train.prefdata import load_pairs

    data = tmp_path / "p.jsonl"
    data.write_text(_jsonl(GOOD_PAIR, {"prompt": "q?", "chosen": "same", "rejected": "same"}))
    pairs = load_pairs([data])
    assert [p.chosen for p in pairs] == ["Hello."]
    assert "left out 1 of 2 pairs whose chosen and rejected answers are the same" in capsys.readouterr().err


def test_a_reward_function_that_raises_is_one_line_naming_it():
    from cai.errors import CAIError
    from cai.train.rewards import Reward

    def down(prompts, completions):
        raise RuntimeError("the scoring service is down\nmore detail")

    with pytest.raises(CAIError, match=r"^reward my:fn raised RuntimeError: the scoring service is down \(called on "
                                       r"2 answers\); fix it") as e:
        Reward(down, "my:fn")([[{"role": "user", "content": "q"}]] * 2, ["a", "b"])
    assert "\n" not in str(e.value)
    with pytest.raises(CAIError, match="raised TypeError"):  # a function of the wrong shape
        Reward(lambda prompts: [1.0], "my:one_arg")([[{"role": "user", "content": "q"}]], ["a"])


def test_ppo_takes_a_keep_adapter_pm_folder_as_its_reward(tiny_llama_dir, tmp_path):
    """`cai reward --lora --keep-adapter` writes a folder `cai reward score` loads; `--reward DIR` refused it
    ("no config.json")."""
    from cai.train.reward import RewardTrainConfig, run_reward
    from cai.train.rewards import load_reward

    data = tmp_path / "p.jsonl"
    data.write_text(_jsonl(*({"prompt": f"q{i}?", "chosen": f"yes {i}", "rejected": "no"} for i in range(4))))
    out = tmp_path / "pm"
    run_reward(RewardTrainConfig(model=tiny_llama_dir, data=(str(data),), output=str(out), max_steps=1, batch_size=2,
                                 max_length=32, lora=True, keep_adapter=True, lora_r=2, lora_alpha=4, eval_split=0.0,
                                 human_eval=(), bf16=False))
    assert not (out / "config.json").exists()
    scores = load_reward(str(out))([[{"role": "user", "content": "hi"}]] * 2, ["a", "b"])
    assert len(scores) == 2


@pytest.mark.parametrize("command", ["sft", "dpo"])
def test_prompts_that_fill_max_length_are_named_not_dropped_silently(command, tiny_llama_dir, tmp_path, capsys,
                                                                    monkeypatch):
    """TRL drops an example whose prompt alone fills --max-length after cutting it: with every example
    so, the run died on "num_samples=0" (sft) or "torch.cat(): expected a non-empty list" (dpo),
    leaving a run folder; with some, it reported training on all of them."""
    from cai.train.model_io import drop_unfit, load_tokenizer

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    answer = {"completion": "A."} if command == "sft" else {"chosen": "A.", "rejected": "B"}
    long = {"prompt": "word " * 100, **answer}
    (tmp_path / "d.jsonl").write_text(_jsonl(long, long))
    before = _snapshot(tmp_path)
    rc, err = run_bad([command, "-m", tiny_llama_dir, "--data", str(tmp_path / "d.jsonl"), "-o", str(tmp_path / "m"),
                       "--max-length", "32"], capsys)
    assert_one_line_error(rc, err, ["every prompt fills --max-length 32 tokens", "pass a --max-length above"])
    assert _snapshot(tmp_path) == before

    short = [{"prompt": [{"role": "user", "content": "Hi?"}], "completion": [{"role": "assistant", "content": "A."}]}]
    kept = drop_unfit([{"prompt": [{"role": "user", "content": "word " * 100}]}] + short, load_tokenizer(tiny_llama_dir),
                      64)
    assert kept == short  # the template's default system prompt alone is about 30 tokens
    assert "left out 1 of 2 examples whose prompt fills --max-length 64" in capsys.readouterr().err


def test_held_out_prompts_that_fill_max_length_are_refused_before_training(tiny_llama_dir, tmp_path, capsys,
                                                                           monkeypatch):
    """TRL drops held-out examples that are too long as it drops training ones: with every one so, the
    first evaluation failed after the training before it; with some, the eval loss counted fewer."""
    from cai.train.model_io import drop_unfit, load_tokenizer
    from cai.train.sft import split_examples

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    short, long = {"prompt": "Hi?", "completion": "A."}, {"prompt": "word " * 100, "completion": "A."}
    examples = [dict(short, n=0), dict(short, n=1), dict(long, n=2), dict(short, n=3)]
    assert [e["n"] for e in split_examples(examples, 0.25, 0)[1]] == [2]  # the seed holds out the long one
    (tmp_path / "d.jsonl").write_text(_jsonl(*examples))
    before = _snapshot(tmp_path)
    rc, err = run_bad(["sft", "-m", tiny_llama_dir, "--data", str(tmp_path / "d.jsonl"), "-o", str(tmp_path / "m"),
                       "--max-length", "48", "--eval-split", "0.25"], capsys)
    assert_one_line_error(rc, err, ["every held-out prompt fills --max-length 48 tokens", "(or drop --eval-split)"])
    assert _snapshot(tmp_path) == before

    as_chat = [{"prompt": [{"role": "user", "content": e["prompt"]}]} for e in (long, short)]
    assert drop_unfit(as_chat, load_tokenizer(tiny_llama_dir), 48, held_out=True) == as_chat[1:]
    assert "left out 1 of 2 held-out examples whose prompt fills" in capsys.readouterr().err


def test_hard_labels_leave_out_ties_and_orient_the_rest():
    from cai.train.dpo import EPSILON, with_epsilon

    ex = [{"prompt": [], "chosen": ["c"], "rejected": ["r"], "p_chosen": p} for p in (0.5, 0.2)]
    hard = with_epsilon([dict(e) for e in ex], hard=True)
    assert [(e["chosen"], e[EPSILON]) for e in hard] == [(["r"], 0.0)]
    assert len(with_epsilon([dict(e) for e in ex], hard=False)) == 2  # soft labels keep ties (eps 0.5)


def test_reward_score_agreement_is_measured_as_cai_reward_measures_it():
    """Equal scores counted as agreeing with the rejected answer, and a tie label (p 0.5) as preferring
    chosen, so `cai reward score` and `cai reward`'s held-out accuracy differed on the same pairs."""
    from cai.train.pm_score import score_pairs

    class LengthPM:
        def score(self, prompts, answers):
            return [float(len(a)) for a in answers]

    recs = [{"prompt": "q", "chosen": "long answer", "rejected": "short", "p_chosen": 0.9},  # agrees: 1
            {"prompt": "q", "chosen": "same", "rejected": "same"},  # equal scores: 0.5
            {"prompt": "q", "chosen": "x", "rejected": "longer", "p_chosen": 0.5}]  # a tie label: left out
    summary, _ = score_pairs(LengthPM(), recs)
    assert summary["agreement"]["mean"] == 0.75 and summary["agreement"]["n"] == 2
    assert "agreement" not in score_pairs(LengthPM(), recs[2:])[0]


def test_reward_fingerprint_follows_what_the_reward_scores_with(tmp_path):
    from cai.train.rewards import reward_fingerprint

    pm = tmp_path / "pm"
    pm.mkdir()
    (pm / "cai_run.json").write_text('{"status": "done", "end": "1"}')
    first = reward_fingerprint(str(pm))
    assert first == reward_fingerprint(f"pm:{pm}") | {"path": str(pm)}
    (pm / "cai_run.json").write_text('{"status": "done", "end": "2"}')  # retrained into the same folder
    assert reward_fingerprint(str(pm))["sha256"] != first["sha256"]
    fn = tmp_path / "r.py"
    fn.write_text("def f(p, c): return [0.0] * len(c)\n")
    before = reward_fingerprint(f"{fn}:f")["sha256"]
    fn.write_text("def f(p, c): return [1.0] * len(c)\n")
    assert reward_fingerprint(f"{fn}:f")["sha256"] != before
    assert reward_fingerprint("math:fsum") is None and reward_fingerprint("judge:mock:") is None


def test_a_module_reward_is_fingerprinted_by_its_file_without_running_it(tmp_path, monkeypatch):
    # module:function was part of a run's identity only as its name: an edited reward resumed a run.
    from cai.train.rewards import reward_fingerprint

    pkg = tmp_path / "myrewards"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("raise RuntimeError('ran the package')\n")  # must not run
    (pkg / "scores.py").write_text("raise RuntimeError('ran the module')\n")
    (tmp_path / "flat.py").write_text("def f(p, c): return [0.0] * len(c)\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    before = reward_fingerprint("myrewards.scores:f")
    assert before["path"] == "myrewards.scores:f" and reward_fingerprint("flat:f")["sha256"]
    (pkg / "scores.py").write_text("raise RuntimeError('ran the edited module')\n")
    assert reward_fingerprint("myrewards.scores:f")["sha256"] != before["sha256"]
    assert reward_fingerprint("myrewards.missing:f") is None and reward_fingerprint("nowhere:f") is None


def test_ppo_does_not_resume_against_a_changed_reward(tiny_llama_dir, tmp_path, capsys, monkeypatch):
    """The reward was part of a run's identity only as its spec string."""
    from cai.cli import main

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    (tmp_path / "p.jsonl").write_text(_jsonl({"prompt": "Hi?"}, {"prompt": "Bye?"}))
    fn = tmp_path / "r.py"
    fn.write_text("def f(p, c): return [0.0] * len(c)\n")
    argv = ["ppo", "-m", tiny_llama_dir, "--reward", f"{fn}:f", "--data", str(tmp_path / "p.jsonl"), "-o",
            str(tmp_path / "m"), "--max-steps", "1", "--batch-size", "2", "--max-tokens", "4", "--max-length", "32"]
    assert main(argv) == 0
    capsys.readouterr()
    fn.write_text("def f(p, c): return [1.0] * len(c)\n")
    rc, err = run_bad(argv, capsys)
    assert_one_line_error(rc, err, ["holds another run (ppo; differs in data)"])


def test_a_kept_adapter_names_its_base_by_an_absolute_path(tiny_llama_dir, tmp_path, monkeypatch):
    """`cai sft -m ./base --lora --keep-adapter` wrote base_model_name_or_path "./base": from another
    working directory `cai generate -m hf:OUT` looked the base up on the hub."""
    import os
    from pathlib import Path

    from cai.train.sft import SFTRunConfig, run_sft

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    (tmp_path / "d.jsonl").write_text(_jsonl(GOOD_SFT, GOOD_SFT))
    monkeypatch.chdir(tmp_path)
    run_sft(SFTRunConfig(model=os.path.relpath(tiny_llama_dir), data=["d.jsonl"], output="out", max_steps=1,
                         batch_size=2, lora=True, keep_adapter=True, lora_r=2, lora_alpha=4, bf16=False))
    base = json.loads((tmp_path / "out" / "adapter_config.json").read_text())["base_model_name_or_path"]
    assert Path(base).is_absolute() and Path(base).resolve() == Path(tiny_llama_dir).resolve()
