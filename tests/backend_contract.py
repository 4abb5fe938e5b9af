"""The backend contract: plain functions every backend's test file calls with its own backend.

Each ``check_*`` function takes a loaded backend (anything with ``generate``, ``score_options`` and
``name``) and raises AssertionError when the backend breaks the contract in cai.backends. They are
written to hold for scripted (mock) and real-model backends alike, so they check structure, order,
grouping, the effect of sampling parameters, and determinism rather than particular texts.

Real-model backends also call :func:`check_score_options_matches_forward`, which compares
``score_options`` with :func:`reference_option_logprobs`: a direct, unbatched float32 forward pass
with transformers that renders the prompt independently of cai.chat.

Usage::

    from backend_contract import check_generate_contract
    def test_contract(backend):
        check_generate_contract(backend)
"""

from __future__ import annotations

import functools
import math
from typing import Any, Sequence

import pytest

from cai.errors import CAIError
from cai.types import Completion, SamplingParams, group

# Chosen so that every conversation renders to a different number of tokens (and words), in an
# order that is neither sorted nor reverse-sorted: backends that sort by length must restore order.
CONVERSATIONS: list[list[dict[str, str]]] = [
    [
        {"role": "system", "content": "You are a concise assistant who answers in one sentence."},
        {"role": "user", "content": "Explain in detail why the sky looks blue during the day but red at sunset."},
    ],
    [{"role": "user", "content": "Hi!"}],
    [
        {"role": "user", "content": "What is two plus two?"},
        {"role": "assistant", "content": "Four."},
        {"role": "user", "content": "And three plus three?"},
    ],
]
# Ends with an assistant message: that message is an unfinished answer to be continued.
CONTINUATION = [
    {"role": "user", "content": "Which is a fruit? (A) apple (B) brick"},
    {"role": "assistant", "content": "The answer is"},
]
LONG_TASK = [{"role": "user", "content": "Write a long essay about the history of the Roman Empire."}]
BAD_INPUTS: list[Any] = [
    [],  # an empty conversation
    [{"role": "robot", "content": "beep"}],  # an unknown role
    [{"role": "user"}],  # no content
]
ERRORS = (ValueError, CAIError)


def _greedy(max_tokens: int = 8, **kw: Any) -> SamplingParams:
    return SamplingParams(temperature=0.0, max_tokens=max_tokens, **kw)


def _check_completions(out: Any, expected: int, params: SamplingParams) -> None:
    assert isinstance(out, list), f"generate must return a list, got {type(out).__name__}"
    assert len(out) == expected, f"expected {expected} completions, got {len(out)}"
    for c in out:
        assert isinstance(c, Completion), f"expected Completion, got {type(c).__name__}"
        assert isinstance(c.text, str)
        assert c.finish_reason in ("stop", "length"), c.finish_reason
        assert c.prompt_tokens > 0, "prompt_tokens must count the prompt"
        assert 0 <= c.completion_tokens <= params.max_tokens, (c.completion_tokens, params.max_tokens)
        for s in params.stop:
            assert s not in c.text, f"stop string {s!r} left in {c.text!r}"


# -- generate ----------------------------------------------------------------------------------


def check_generate_contract(backend: Any) -> None:
    """Count and order, n>1 grouping, max_tokens -> "length", stop strings, greedy determinism,
    continuation of a final assistant message, and errors on bad input."""
    check_generate_order(backend)
    check_greedy_deterministic(backend)
    check_max_tokens_length(backend)
    check_stop_strings(backend)
    check_n_grouping(backend)
    check_continuation_generate(backend)
    check_generate_bad_input(backend)


def check_generate_order(backend: Any) -> None:
    """One completion per conversation, in input order (checked through each prompt's own token count)."""
    params = _greedy(6)
    assert backend.generate([], params) == [], "no conversations -> no completions"
    batch = backend.generate(CONVERSATIONS, params)
    _check_completions(batch, len(CONVERSATIONS), params)
    single = [backend.generate([c], params)[0] for c in CONVERSATIONS]
    assert len({c.prompt_tokens for c in single}) == len(CONVERSATIONS), "test prompts must differ in length"
    assert [c.prompt_tokens for c in batch] == [c.prompt_tokens for c in single], (
        "completions are not in the order of the conversations (or prompt_tokens depends on the batch)"
    )


def check_greedy_deterministic(backend: Any) -> None:
    """temperature 0 is greedy: the same call twice gives the same texts, whatever the seed."""
    a = backend.generate(CONVERSATIONS, _greedy(8, seed=1))
    b = backend.generate(CONVERSATIONS, _greedy(8, seed=2))
    assert [c.text for c in a] == [c.text for c in b], "greedy decoding must not depend on the seed or the call"


def check_max_tokens_length(backend: Any) -> None:
    """Hitting max_tokens ends the completion with finish_reason "length" and exactly max_tokens tokens."""
    params = _greedy(3)
    (c,) = backend.generate([LONG_TASK], params)
    _check_completions([c], 1, params)
    assert c.finish_reason == "length", f"3 tokens of a long essay must end by length, got {c.finish_reason!r}: {c.text!r}"
    assert c.completion_tokens == 3, f"finish_reason 'length' must mean max_tokens were generated, got {c.completion_tokens}"


def check_stop_strings(backend: Any) -> None:
    """A stop string cuts the text just before its first occurrence and gives finish_reason "stop"."""
    (free,) = backend.generate([LONG_TASK], _greedy(16))
    text = free.text
    # A stop string taken from the middle of the greedy answer, so generation must meet it (no
    # whitespace at its ends, no replacement character from a token that splits a UTF-8 sequence).
    start = next((i for i in range(len(text) // 3, len(text) - 1)
                  if text[i : i + 2].strip() == text[i : i + 2] and "\ufffd" not in text[i : i + 2]), None)
    stop = text[start : start + 2] if start is not None else text[len(text) // 2 : len(text) // 2 + 1]
    assert stop, f"greedy answer too short to pick a stop string from: {text!r}"
    params = _greedy(16, stop=(stop, "\x00never\x00"))
    (cut,) = backend.generate([LONG_TASK], params)
    _check_completions([cut], 1, params)
    assert cut.text == text[: text.index(stop)], f"stop {stop!r}: expected {text[: text.index(stop)]!r}, got {cut.text!r}"
    assert cut.finish_reason == "stop", f"a stop string ends with finish_reason 'stop', got {cut.finish_reason!r}"


def check_n_grouping(backend: Any, *, expect_diverse: bool = True) -> None:
    """n samples per conversation come back conversation-major, each group from its own prompt."""
    convs = [CONVERSATIONS[0], CONVERSATIONS[1]]
    params = SamplingParams(temperature=1.0, max_tokens=8, n=3, seed=7)
    out = backend.generate(convs, params)
    _check_completions(out, 6, params)
    groups = group(out, 3)
    singles = [backend.generate([c], _greedy(1))[0].prompt_tokens for c in convs]
    for g, expected in zip(groups, singles):
        assert [c.prompt_tokens for c in g] == [expected] * 3, (
            f"samples are not grouped conversation-major: {[c.prompt_tokens for c in out]}, expected groups of {singles}"
        )
    if expect_diverse:
        assert any(len({c.text for c in g}) > 1 for g in groups), "n>1 at temperature 1 gave identical samples"
    greedy = backend.generate(convs, _greedy(6, n=2))
    _check_completions(greedy, 4, _greedy(6, n=2))
    for g in group(greedy, 2):
        assert g[0].text == g[1].text, "greedy samples of one conversation must be identical"


def check_continuation_generate(backend: Any) -> None:
    """A final assistant message is continued: it is accepted and the result is new text only."""
    params = _greedy(4)
    out = backend.generate([CONTINUATION, CONVERSATIONS[1]], params)
    _check_completions(out, 2, params)
    assert not out[0].text.startswith(CONTINUATION[-1]["content"]), "return only the continuation, not the prefix"
    plain = backend.generate([CONTINUATION[:1]], params)[0]
    assert out[0].prompt_tokens > plain.prompt_tokens, "the assistant prefix must be part of the prompt"


def check_generate_bad_input(backend: Any) -> None:
    for bad in BAD_INPUTS:
        with pytest.raises(ERRORS):
            backend.generate([CONVERSATIONS[1], bad], _greedy(2))


def check_batch_invariant_greedy(backend: Any) -> None:
    """Greedy texts do not depend on batching and padding. Only for float32 backends: in bf16,
    padding legitimately shifts logits enough to flip near-ties."""
    params = _greedy(8)
    batch = backend.generate(CONVERSATIONS + [CONTINUATION], params)
    single = [backend.generate([c], params)[0] for c in CONVERSATIONS + [CONTINUATION]]
    assert [c.text for c in batch] == [c.text for c in single], "batched greedy output differs from one at a time"
    assert [c.completion_tokens for c in batch] == [c.completion_tokens for c in single]


def check_seed_reproducible(backend: Any) -> None:
    """The same inputs and seed give the same samples, even with other calls in between; another
    seed gives other samples."""
    params = SamplingParams(temperature=1.0, max_tokens=8, n=2, seed=123)
    a = backend.generate(CONVERSATIONS, params)
    backend.generate(CONVERSATIONS[:1], SamplingParams(temperature=1.0, max_tokens=5, seed=999))
    b = backend.generate(CONVERSATIONS, params)
    assert [c.text for c in a] == [c.text for c in b], "same seed, same inputs -> same outputs"
    c = backend.generate(CONVERSATIONS, SamplingParams(temperature=1.0, max_tokens=8, n=2, seed=124))
    assert [x.text for x in a] != [x.text for x in c], "a different seed should change at least one sample"


def check_conversation_seeds(backend: Any) -> None:
    """With ``seeds``, each conversation's samples are its own: the same in any batch, in any order,
    as on their own, and as a call ``seed=s`` on that conversation alone. For backends whose logits do
    not depend on the batch (float32, or the greedy check above holds)."""
    convs = CONVERSATIONS[:3]
    seeds = (11, 22, 33)
    params = SamplingParams(temperature=1.0, max_tokens=8, n=2, seeds=seeds)
    together = group([c.text for c in backend.generate(convs, params)], 2)
    backwards = group([c.text for c in backend.generate(convs[::-1], SamplingParams(
        temperature=1.0, max_tokens=8, n=2, seeds=seeds[::-1]))], 2)[::-1]
    alone = [[c.text for c in backend.generate([conv], SamplingParams(temperature=1.0, max_tokens=8, n=2, seeds=(s,)))]
             for conv, s in zip(convs, seeds)]
    by_seed = [[c.text for c in backend.generate([conv], SamplingParams(temperature=1.0, max_tokens=8, n=2, seed=s))]
               for conv, s in zip(convs, seeds)]
    assert together == backwards == alone == by_seed, "a conversation's seeded samples depend on its batch"
    other = group([c.text for c in backend.generate(convs, SamplingParams(temperature=1.0, max_tokens=8, n=2,
                                                                             seeds=(12, 22, 33)))], 2)
    assert other[1:] == together[1:] and other[0] != together[0], "only the conversation whose seed changed changes"
    with pytest.raises(ValueError, match="2 seeds for 3 conversations"):
        backend.generate(convs, SamplingParams(temperature=1.0, max_tokens=8, seeds=(1, 2)))


# -- score_options ------------------------------------------------------------------------------


def _check_scores(out: Any, per_conv: Sequence[Sequence[str]]) -> None:
    assert isinstance(out, list) and len(out) == len(per_conv), f"expected {len(per_conv)} dicts, got {out!r:.200}"
    for d, opts in zip(out, per_conv):
        assert isinstance(d, dict)
        assert list(d) == list(opts), f"keys must be the options in order: {list(d)} vs {list(opts)}"
        for o, v in d.items():
            assert isinstance(v, float), f"{o!r}: log-prob must be a float, got {type(v).__name__}"
            assert math.isfinite(v) and v <= 0.0, f"{o!r}: log-prob must be finite and <= 0, got {v}"


def check_score_options_contract(backend: Any, *, batch_tol: float = 1e-3) -> None:
    """Shapes and keys, shared vs per-conversation options, order independence of the batch,
    the continuation convention, and errors on bad input."""
    shared = [" (A)", " (B)"]
    assert backend.score_options([], shared) == []
    convs = [CONTINUATION, CONVERSATIONS[1], CONVERSATIONS[0]]
    out = backend.score_options(convs, shared)
    _check_scores(out, [shared] * 3)

    per = [[" A", " B", " C and D"], [" yes", " no"], [" maybe"]]
    out_per = backend.score_options(convs, per)
    _check_scores(out_per, per)

    # The batch must not mix conversations up: scoring alone gives the same numbers.
    for conv, opts, got in zip(convs, per, out_per):
        (alone,) = backend.score_options([conv], opts)
        for o in opts:
            assert abs(alone[o] - got[o]) <= batch_tol, f"{o!r}: {got[o]} in a batch vs {alone[o]} alone"

    # The final assistant message is part of the prompt (continued), so it changes the scores.
    (without,) = backend.score_options([CONTINUATION[:1]], shared)
    assert any(abs(out[0][o] - without[o]) > 1e-6 for o in shared), "the assistant prefix was ignored"

    for bad_opts in ([], [" A", " A"], [" A", ""]):
        with pytest.raises(ERRORS):
            backend.score_options(convs[:1], bad_opts)
    with pytest.raises(ERRORS):
        backend.score_options(convs, [[" A"], [" B"]])  # 2 option lists for 3 conversations
    for bad in BAD_INPUTS:
        with pytest.raises(ERRORS):
            backend.score_options([bad], shared)


SCORING_CASES: list[tuple[list[dict[str, str]], list[str]]] = [
    (CONTINUATION, [" (A)", " (B)", " apple, because it grows on trees"]),
    (CONVERSATIONS[0], ["The sky", "Because", " Rayleigh scattering"]),
    (CONVERSATIONS[1], ["Hello", "Hi! How can I help you today?"]),
    # All single tokens: backends may score these from the prompt's last position in one pass.
    (CONTINUATION, ["A", "B"]),
]


def check_score_options_matches_forward(backend: Any, model_dir: str, tol: float = 1e-3) -> None:
    """score_options equals a direct unbatched float32 forward pass (``reference_option_logprobs``)."""
    convs = [c for c, _ in SCORING_CASES]
    per = [o for _, o in SCORING_CASES]
    got = backend.score_options(convs, per)
    _check_scores(got, per)
    for i, (conv, opts) in enumerate(SCORING_CASES):
        ref = reference_option_logprobs(model_dir, conv, opts)
        for o in opts:
            assert abs(got[i][o] - ref[o]) <= tol, f"conversation {i}, option {o!r}: backend {got[i][o]:.6f} vs forward pass {ref[o]:.6f}"


# -- models for the tests ---------------------------------------------------------------------------


def build_tiny_llama(tokenizer_dir: str, out_dir: str, *, seed: int = 0) -> str:
    """Save a 2-layer random Llama with the tokenizer (and chat template) of ``tokenizer_dir``.

    Its embeddings are untied: a tiny random model with tied embeddings mostly repeats its last
    input token, which would make greedy, stop-string and batching checks pass vacuously.
    """
    import torch
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    tok = AutoTokenizer.from_pretrained(tokenizer_dir)
    torch.manual_seed(seed)
    config = LlamaConfig(
        vocab_size=len(tok), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=2048,
        bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id,
        tie_word_embeddings=False,
    )
    LlamaForCausalLM(config).to(torch.bfloat16).save_pretrained(out_dir)
    tok.save_pretrained(out_dir)
    return str(out_dir)


# -- the reference ---------------------------------------------------------------------------------


@functools.lru_cache(maxsize=2)
def _load_fp32(model_dir: str):
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32).eval()
    return tok, model


def reference_prompt(tokenizer: Any, conversation: Sequence[dict[str, str]]) -> str:
    """The prompt text, built without cai.chat: a final assistant message is the generation prompt
    followed by its raw text (true for ChatML-style templates such as SmolLM2's)."""
    from cai.chat import ensure_chat_template

    ensure_chat_template(tokenizer)
    conv = list(conversation)
    if conv[-1]["role"] == "assistant":
        head = tokenizer.apply_chat_template(conv[:-1], tokenize=False, add_generation_prompt=True)
        return head + conv[-1]["content"]
    return tokenizer.apply_chat_template(conv, tokenize=False, add_generation_prompt=True)


def reference_option_logprobs(model_dir: str, conversation: Sequence[dict[str, str]], options: Sequence[str]) -> dict[str, float]:
    """log p(ids(option) | ids(prompt)) summed over the option's tokens: one plain float32 forward
    pass per option, no batching, no padding, no cache."""
    import torch

    tok, model = _load_fp32(str(model_dir))
    prompt_ids = tok(reference_prompt(tok, conversation), add_special_tokens=False)["input_ids"]
    out = {}
    for o in options:
        opt_ids = tok(o, add_special_tokens=False)["input_ids"]
        ids = torch.tensor([prompt_ids + opt_ids])
        with torch.no_grad():
            logits = model(input_ids=ids).logits[0].float()
        logp = torch.log_softmax(logits, dim=-1)
        n = len(prompt_ids)
        out[o] = float(sum(logp[n - 1 + k, t] for k, t in enumerate(opt_ids)))
    return out
