"""The backend contract on the mock backend, plus what only the mock does: scripts, fixed replies,
fixed option scores, and the record of calls."""

from __future__ import annotations

import pytest
from backend_contract import (
    check_conversation_seeds,
    check_generate_contract,
    check_score_options_contract,
    check_seed_reproducible,
)

from cai.backends import load_backend
from cai.backends.mock import MockBackend
from cai.types import SamplingParams


@pytest.fixture()
def mock():
    return load_backend("mock:")


def test_generate_contract(mock):
    check_generate_contract(mock)


def test_seed_reproducible(mock):
    check_seed_reproducible(mock)


def test_each_conversation_samples_from_its_own_seed(mock):
    check_conversation_seeds(mock)


def test_score_options_contract(mock):
    check_score_options_contract(mock)


def test_load_backend_spec_and_name(mock):
    assert isinstance(mock, MockBackend)
    assert mock.name == "mock:"
    assert load_backend(mock) is mock  # an instance passes through


def test_script_rules(tmp_path):
    script = tmp_path / "script.yaml"
    script.write_text(
        "generate:\n"
        "  - match: '(?i)critique'\n"
        "    reply: 'It is harmful.'\n"
        "  - reply: 'Safe answer.'\n"
        "options:\n"
        "  - match: 'answer is'\n"
        "    logprobs: {' (A)': -0.2, ' (B)': -1.7}\n"
    )
    b = load_backend(f"mock:{script}")
    out = b.generate([[{"role": "user", "content": "Please CRITIQUE this"}], [{"role": "user", "content": "hello"}]],
                     SamplingParams(temperature=0))
    assert [c.text for c in out] == ["It is harmful.", "Safe answer."]
    scores = b.score_options([[{"role": "user", "content": "q"}, {"role": "assistant", "content": "The answer is"}]],
                             [" (A)", " (B)"])
    assert scores == [{" (A)": -0.2, " (B)": -1.7}]


def test_script_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="not found"):
        load_backend(f"mock:{tmp_path / 'missing.yaml'}")
    bad = tmp_path / "bad.yaml"
    bad.write_text("generate:\n  - match: x\n")
    with pytest.raises(ValueError, match="reply"):
        load_backend(f"mock:{bad}")


def test_responses_cycle_and_calls_recorded():
    b = MockBackend(responses=["one", "two"], option_logprobs={" A": -0.5, " B": -2.0})
    conv = [{"role": "user", "content": "x"}]
    out = b.generate([conv, conv, conv], SamplingParams(temperature=0))
    assert [c.text for c in out] == ["one", "two", "one"]
    assert b.score_options([conv], [" B", " A"]) == [{" B": -2.0, " A": -0.5}]
    assert [kind for kind, _ in b.calls] == ["generate", "score_options"]
    assert b.calls[0][1] == [conv, conv, conv]


def test_sampling_depends_on_seed_greedy_does_not():
    b = MockBackend()
    conv = [[{"role": "user", "content": "Tell me a story."}]]
    s1 = b.generate(conv, SamplingParams(temperature=1.0, seed=1))[0].text
    s2 = b.generate(conv, SamplingParams(temperature=1.0, seed=2))[0].text
    g1 = b.generate(conv, SamplingParams(temperature=0.0, seed=1))[0].text
    g2 = b.generate(conv, SamplingParams(temperature=0.0, seed=2))[0].text
    assert s1 != s2 and g1 == g2
