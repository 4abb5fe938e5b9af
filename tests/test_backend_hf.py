"""The hf backend: the shared contract on a tiny random Llama in float32 (so scores can be compared
with a direct forward pass at 1e-3), hf-specific behaviour, and one check on the real model."""

from __future__ import annotations

import pytest
from backend_contract import (
    check_batch_invariant_greedy,
    check_conversation_seeds,
    check_generate_contract,
    check_score_options_contract,
    check_score_options_matches_forward,
    check_seed_reproducible,
    build_tiny_llama,
)

from cai.backends import load_backend
from cai.errors import CAIError
from cai.types import SamplingParams


@pytest.fixture(scope="module")
def chatty_dir(tmp_path_factory, smollm2_path):
    return build_tiny_llama(smollm2_path, str(tmp_path_factory.mktemp("chatty-llama")))


@pytest.fixture(scope="module")
def tiny(chatty_dir):
    # float32 for the 1e-3 comparison; batch_size=2 so the contract's conversations span several
    # length-sorted batches.
    return load_backend(f"hf:{chatty_dir}", dtype="float32", batch_size=2)


def test_generate_contract(tiny):
    check_generate_contract(tiny)


def test_seed_reproducible(tiny):
    check_seed_reproducible(tiny)


def test_each_conversation_samples_from_its_own_seed(tiny):
    check_conversation_seeds(tiny)


def test_batched_greedy_matches_one_at_a_time(tiny):
    check_batch_invariant_greedy(tiny)


def test_score_options_contract(tiny):
    check_score_options_contract(tiny)


def test_score_options_matches_forward_pass(tiny, chatty_dir):
    check_score_options_matches_forward(tiny, chatty_dir, tol=1e-3)


def test_score_options_matches_forward_pass_tied_fixture(tiny_llama_dir):
    check_score_options_matches_forward(load_backend(f"hf:{tiny_llama_dir}", dtype="float32"), tiny_llama_dir, tol=1e-3)


def test_name_dtype_and_device(tiny, chatty_dir):
    import torch

    assert tiny.name == f"hf:{chatty_dir}"
    assert tiny.dtype == torch.float32 and next(tiny.model.parameters()).dtype == torch.float32
    assert tiny.device == "cpu"


def test_generate_leaves_global_rng_alone(tiny):
    import torch

    torch.manual_seed(42)
    expected = torch.rand(3)
    torch.manual_seed(42)
    tiny.generate([[{"role": "user", "content": "Hi"}]], SamplingParams(temperature=1.0, max_tokens=4, seed=5))
    assert torch.equal(torch.rand(3), expected), "generate consumed or reseeded the caller's RNG"


def test_unseeded_sampling_varies_and_reports_its_seed(tiny):
    conv = [[{"role": "user", "content": "Tell me anything."}]]
    a = tiny.generate(conv, SamplingParams(temperature=1.0, max_tokens=8))[0]
    b = tiny.generate(conv, SamplingParams(temperature=1.0, max_tokens=8))[0]
    assert a.meta["seed"] != b.meta["seed"]
    again = tiny.generate(conv, SamplingParams(temperature=1.0, max_tokens=8, seed=a.meta["seed"]))[0]
    assert again.text == a.text, "the reported seed must reproduce the sample"


def test_end_of_sequence_token_ends_with_stop(tiny):
    conv = [[{"role": "user", "content": "Say something."}]]
    import torch

    from cai.chat import render_prompt

    prompt = tiny.tokenizer(render_prompt(tiny.tokenizer, conv[0]), add_special_tokens=False, return_tensors="pt")
    with torch.inference_mode():
        ids = tiny.model.generate(**prompt, max_new_tokens=8, do_sample=False)[0, prompt["input_ids"].shape[1]:].tolist()
    saved = tiny.eos_ids
    tiny.eos_ids = saved | {ids[2]}  # pretend the third generated token ends the turn
    try:
        c = tiny.generate(conv, SamplingParams(temperature=0, max_tokens=8))[0]
    finally:
        tiny.eos_ids = saved
    assert c.finish_reason == "stop" and c.completion_tokens == 3, c
    assert c.text == tiny.tokenizer.decode(ids[:2])


def test_stop_string_stops_generation_early(tiny):
    conv = [[{"role": "user", "content": "Say something."}]]
    free = tiny.generate(conv, SamplingParams(temperature=0, max_tokens=16))[0]
    words = free.text.split()
    stop = words[2]  # the third word of the greedy answer
    calls = []
    handle = tiny.model.register_forward_hook(lambda *a: calls.append(1))
    try:
        cut = tiny.generate(conv, SamplingParams(temperature=0, max_tokens=16, stop=(stop,)))[0]
    finally:
        handle.remove()
    assert cut.text == free.text[: free.text.index(stop)] and cut.finish_reason == "stop"
    assert cut.completion_tokens < 16 and len(calls) <= cut.completion_tokens, "decoding went on past the stop string"


def test_batches_sorted_by_length_within_budgets(tiny):
    batches = tiny._batches([5, 50, 20, 40, 10], extra=8, rows_per_item=1)
    assert batches == [[1, 3], [2, 4], [0]]  # longest first, batch_size=2
    tiny.max_batch_tokens, saved = 100, tiny.max_batch_tokens
    try:
        # (50 + 8) * 2 rows > 100 tokens, so the two longest cannot share a batch.
        assert tiny._batches([5, 50, 20, 40, 10], extra=8, rows_per_item=1)[0] == [1]
    finally:
        tiny.max_batch_tokens = saved


def test_score_options_runs_each_prompt_once(tiny):
    """Prompts run once per batch; multi-token options then run on copies of their prompt's cache
    (never prompt + option from scratch), and single-token options need no second pass."""
    shapes = []
    handle = tiny.model.register_forward_pre_hook(lambda m, a, kw: shapes.append(tuple(kw["input_ids"].shape)),
                                                  with_kwargs=True)
    convs = [[{"role": "user", "content": "Pick one."}], [{"role": "user", "content": "Pick another."}]]
    try:
        tiny.score_options(convs, [" (A)", " (B)"])
        two_passes = list(shapes)
        shapes.clear()
        tiny.score_options(convs, [" yes", " no"])
        one_pass = list(shapes)
    finally:
        handle.remove()
    multi = len(tiny.tokenizer(" (A)", add_special_tokens=False)["input_ids"])
    assert multi > 1 and len(tiny.tokenizer(" yes", add_special_tokens=False)["input_ids"]) == 1
    prompt_width = max(len(tiny.tokenizer(tiny.tokenizer.apply_chat_template(c, tokenize=False, add_generation_prompt=True),
                                          add_special_tokens=False)["input_ids"]) for c in convs)
    # batch_size=2: both prompts in one pass, then 2 x 2 option rows of (option length - 1) tokens.
    assert two_passes == [(2, prompt_width), (4, multi - 1)]
    assert one_pass == [(2, prompt_width)]


def test_samples_of_one_prompt_share_one_prefill(tiny):
    """Best of n pays for one prefill per prompt: the prompts run once (all but their last token),
    and the n copies of each only decode. transformers' num_return_sequences would run n * rows."""
    shapes = []
    handle = tiny.model.register_forward_pre_hook(lambda m, a, kw: shapes.append(tuple(kw["input_ids"].shape)),
                                                  with_kwargs=True)
    convs = [[{"role": "user", "content": "Pick one."}], [{"role": "user", "content": "Pick another, please."}]]
    try:
        out = tiny.generate(convs, SamplingParams(temperature=1.0, max_tokens=5, n=3, seed=1))
    finally:
        handle.remove()
    width = max(len(tiny.tokenizer(tiny.tokenizer.apply_chat_template(c, tokenize=False, add_generation_prompt=True),
                                   add_special_tokens=False)["input_ids"]) for c in convs)
    assert len(out) == 6
    assert shapes[0] == (2, width - 1), shapes  # batch_size=2: both prompts, once each
    assert all(s == (6, 1) for s in shapes[1:]), f"the n copies recomputed their prompt: {shapes}"


def test_shared_prefill_samples_what_num_return_sequences_samples(tiny):
    """The same seed gives the same tokens as transformers' own n-copies path (float32), for
    prompts of different lengths (left padding) in one batch."""
    import torch
    from transformers import GenerationConfig

    convs = [[{"role": "user", "content": "Tell me a story about a cat."}], [{"role": "user", "content": "Hi"}]]
    params = SamplingParams(temperature=1.0, max_tokens=6, n=4, seed=9)
    ours = tiny.generate(convs, params)
    ids, mask = tiny._left_pad([tiny._prompt_ids(c, i, 1) for i, c in enumerate(convs)])
    cfg = GenerationConfig(max_new_tokens=6, do_sample=True, temperature=1.0, top_p=1.0, top_k=0, num_return_sequences=4,
                           eos_token_id=sorted(tiny.eos_ids), pad_token_id=tiny.pad_id)
    from cai.backends.hf_sampling import fast_multinomial
    from cai.types import stream_seed

    # the backend's sampler: a stream per conversation (the longer one first, as the backend sorts), one per sample
    rows_of = [torch.Generator().manual_seed(stream_seed(s, j)) for s in params.conversation_seeds(2, 9) for j in range(4)]
    with torch.random.fork_rng(), torch.inference_mode(), fast_multinomial(rows_of):
        rows = tiny.model.generate(input_ids=ids, attention_mask=mask, generation_config=cfg)[:, ids.shape[1]:].tolist()
    theirs = [tiny._completion(r, 0, params, 6, 9).text for r in rows]
    assert [c.text for c in ours] == theirs
    assert len(set(theirs)) > 2, "the check needs samples that differ"


def test_shared_prefill_cache_continues_each_row_like_its_full_prompt(tiny):
    """The copied cache, fed each row's last prompt token at the position generate gives it (from
    the attention mask), predicts what the whole left-padded prompt predicts: the padded rows'
    positions must count from their first real token, as generate counts them."""
    import torch

    convs = [[{"role": "user", "content": "Tell me a long story about a cat and a dog."}], [{"role": "user", "content": "Hi"}]]
    ids, mask = tiny._left_pad([tiny._prompt_ids(c, i, 1) for i, c in enumerate(convs)])
    positions = (mask.cumsum(-1) - 1).clamp(min=0)
    with torch.inference_mode():
        full = tiny.model(input_ids=ids, attention_mask=mask, position_ids=positions).logits[:, -1].float()
        cache = tiny._shared_prefill(ids[:, :-1], mask[:, :-1], 3)
        step = tiny.model(input_ids=ids[:, -1:].repeat_interleave(3, 0), attention_mask=mask.repeat_interleave(3, 0),
                          position_ids=positions[:, -1:].repeat_interleave(3, 0), past_key_values=cache).logits[:, -1]
    assert torch.allclose(step.float(), full.repeat_interleave(3, 0), atol=1e-4), (step.float() - full.repeat_interleave(3, 0)).abs().max()


def test_overlong_prompt_names_conversation_and_context(tiny, chatty_dir):
    long = [{"role": "user", "content": "word " * 2100}]
    short = [{"role": "user", "content": "Hi"}]
    with pytest.raises(CAIError, match=r"conversation 1 .*context of 2048"):
        tiny.generate([short, long], SamplingParams(temperature=0, max_tokens=4))
    with pytest.raises(CAIError, match=r"conversation 0 .*context of 2048"):
        tiny.score_options([long], [" A"])
    left = load_backend(f"hf:{chatty_dir}", dtype="float32", truncate="left")
    (c,) = left.generate([long], SamplingParams(temperature=0, max_tokens=4))
    assert c.prompt_tokens == 2048 - 4 and c.completion_tokens == 4


def test_unknown_model_offline_is_a_friendly_error(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(CAIError, match="not an alias, a local folder, or in the hub cache"):
        load_backend("hf:no-such-org/no-such-model")


def test_bad_options_are_errors(chatty_dir):
    with pytest.raises(CAIError, match="dtype"):
        load_backend(f"hf:{chatty_dir}", dtype="int3")
    with pytest.raises(CAIError, match="truncate"):
        load_backend(f"hf:{chatty_dir}", truncate="middle")


def test_cpu_bf16_flags(tmp_path):
    from cai.precision import cpu_has_bf16

    amx = tmp_path / "amx"
    amx.write_text("processor\t: 0\nflags\t\t: fpu sse2 avx512f amx_bf16 amx_tile\n")
    old = tmp_path / "old"
    old.write_text("processor\t: 0\nflags\t\t: fpu sse2 avx2\n")
    assert cpu_has_bf16(str(amx)) is True
    assert cpu_has_bf16(str(old)) is False
    assert cpu_has_bf16(str(tmp_path / "missing")) is False


@pytest.mark.integration
def test_real_model_names_colours(smollm2_path):
    backend = load_backend("hf:smollm2-135m")
    (c,) = backend.generate([[{"role": "user", "content": "Name three colors."}]],
                            SamplingParams(temperature=0, max_tokens=48))
    colours = {"red", "blue", "green", "yellow", "orange", "purple", "black", "white", "pink", "brown"}
    assert any(w in c.text.lower() for w in colours), c.text
    assert c.finish_reason in ("stop", "length") and c.completion_tokens > 0


def test_gpu_batch_budget_follows_free_memory():
    """On a GPU the token budget is what half the free memory holds in KV cache: SmolLM2-135M's
    shape (30 layers, 3 KV heads of 64) costs 23,040 bytes a token in bf16."""
    from types import SimpleNamespace

    import torch

    from cai.backends.hf import gpu_batch_tokens, kv_bytes_per_token

    cfg = SimpleNamespace(num_attention_heads=9, num_key_value_heads=3, hidden_size=576, num_hidden_layers=30)
    assert kv_bytes_per_token(cfg, 2) == 2 * 30 * 3 * 64 * 2 == 23040
    model = SimpleNamespace(config=cfg, dtype=torch.bfloat16)
    assert gpu_batch_tokens(model, "cuda", free_bytes=100 * 2**30) == 50 * 2**30 // 23040  # about 2.3M tokens
    assert gpu_batch_tokens(model, "cuda", free_bytes=2**20) == 32768  # never below the CPU default


def test_cpu_defaults_unchanged(chatty_dir):
    from cai.backends.hf import HFBackend

    backend = HFBackend(chatty_dir, dtype="float32")
    assert backend.device == "cpu" and backend.batch_size == 64 and backend.max_batch_tokens == 32768
    given = HFBackend(chatty_dir, dtype="float32", batch_size=3, max_batch_tokens=999)
    assert (given.batch_size, given.max_batch_tokens) == (3, 999)
