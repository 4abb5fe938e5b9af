"""cai ppo end to end on a tiny random model: it learns a programmatic reward with the KL held
near its target, and bad input fails with one line before any model work.

The model is built here with a character-level vocabulary of 36 tokens, so that a reward on
characters (the share of vowels) is learnable in 20 steps on a CPU; SmolLM2's 49k-token vocabulary
would make every rollout nearly uniform noise and every step a hundred times slower.
"""

from __future__ import annotations

import json

import pytest

from cai.cli import main



def vowel_share(prompts, completions):
    return [sum(ch in "aeiou" for ch in c) / max(len(c), 1) for c in completions]


@pytest.fixture(scope="module")
def char_model(tmp_path_factory) -> str:
    import torch
    from tokenizers import Tokenizer, decoders, models
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    specials = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
    vocab = {s: i for i, s in enumerate(specials + list("abcdefghijklmnopqrstuvwxyz .,?!'\n"))}
    tk = Tokenizer(models.BPE(vocab, merges=[], unk_token="<|endoftext|>"))  # no merges: one token per character
    tk.add_special_tokens(specials)
    tk.decoder = decoders.Fuse()
    template = ("{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
                "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")
    tok = PreTrainedTokenizerFast(tokenizer_object=tk, bos_token="<|im_start|>", eos_token="<|im_end|>",
                                  pad_token="<|endoftext|>", unk_token="<|endoftext|>", chat_template=template)
    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=len(tok), hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                         num_attention_heads=2, num_key_value_heads=1, max_position_embeddings=256,
                         bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id,
                         tie_word_embeddings=False)
    out = tmp_path_factory.mktemp("char-llama")
    LlamaForCausalLM(config).save_pretrained(out)
    tok.save_pretrained(out)
    return str(out)


@pytest.fixture(scope="module")
def prompts_file(tmp_path_factory) -> str:
    path = tmp_path_factory.mktemp("prompts") / "p.jsonl"
    path.write_text("".join(json.dumps({"prompt": p}) + "\n"
                            for p in ["Say something.", "Hello there", "Tell me a story", "What is 2+2?"]))
    return str(path)


def _cfg(char_model, prompts_file, out, **kw):
    from cai.train.ppo import PPORunConfig

    base = dict(policy=char_model, prompts=prompts_file, output=str(out), max_steps=20, batch_size=8,
                max_tokens=12, max_length=64, lr=3e-3, kl_coef=0.1, kl_target=3.0, kl_horizon=50,
                missing_eos_penalty=0.0, ppo_epochs=4, minibatch_size=4, save_steps=100, seed=0,
                bf16=False)  # the default would be bf16 with LoRA on an AMX CPU: the same numbers on every machine
    base.update(kw)
    return PPORunConfig(**base)


def test_ppo_raises_reward_within_kl_target(char_model, prompts_file, tmp_path):
    from cai.train.ppo import run_ppo

    out = tmp_path / "run"
    summary = run_ppo(_cfg(char_model, prompts_file, out), reward=vowel_share)
    recs = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in recs] == list(range(1, 21))
    first, last = (sum(r["reward"] for r in rs) / len(rs) for rs in (recs[:5], recs[-5:]))
    assert last > first + 0.05, (first, last)
    assert max(r["kl"] for r in recs) <= 2 * 3.0
    for key in ("reward", "kl", "entropy", "clip_frac", "value_loss", "approx_kl", "length", "kl_coef"):
        assert all(isinstance(r[key], float) for r in recs), key
    # The run folder: an HF model (no value head in its weights), the run record, curves.
    run = json.loads((out / "cai_run.json").read_text())
    assert run["kind"] == "cai-train-run" and run["command"] == "ppo" and run["status"] == "done"
    assert run["data"][0]["sha256"] and run["final_metrics"]["reward"] == recs[-1]["reward"]
    assert (out / "curves" / "reward.png").is_file() and (out / "curves" / "kl.png").is_file()
    assert (out / "value_head" / "value_head.safetensors").is_file()
    from safetensors import safe_open

    with safe_open(str(out / "model.safetensors"), "pt") as f:
        assert not any("value" in k for k in f.keys())
    from cai.backends import load_backend
    from cai.types import SamplingParams

    backend = load_backend(f"hf:{out}")
    assert backend.generate([[{"role": "user", "content": "hi"}]], SamplingParams(max_tokens=4, temperature=0))
    assert summary["steps"] == 20
    # A rerun of the finished run does nothing: the record (its end time too) and the weights stay as they were.
    record, weights = (out / "cai_run.json").read_bytes(), (out / "model.safetensors").stat().st_mtime_ns
    again = run_ppo(_cfg(char_model, prompts_file, out), reward=vowel_share)
    assert again["already_done"] and again["final"]["reward"] == recs[-1]["reward"]
    assert (out / "cai_run.json").read_bytes() == record and (out / "model.safetensors").stat().st_mtime_ns == weights


def test_ppo_lora_and_ptx(char_model, prompts_file, tmp_path):
    """LoRA (reference = adapters off) and PPO-ptx run, and the merged folder loads."""
    from cai.train.ppo import run_ppo

    ptx = tmp_path / "sl.jsonl"
    ptx.write_text(json.dumps({"messages": [{"role": "user", "content": "hi"},
                                            {"role": "assistant", "content": "aeiou aeiou"}]}) + "\n")
    out = tmp_path / "lora"
    run_ppo(_cfg(char_model, prompts_file, out, max_steps=2, lora=True, lora_r=4, lora_alpha=8,
                 ptx_data=str(ptx), ptx_coef=0.5), reward=vowel_share)
    recs = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert all(r["ptx_loss"] > 0 for r in recs)
    assert recs[0]["kl"] == pytest.approx(0.0, abs=1e-6)  # before any update, policy == reference
    assert (out / "config.json").is_file() and not (out / "adapter_config.json").exists()


def test_ptx_data_names_bad_lines(tmp_path):
    from cai.errors import CAIError
    from cai.train.ppo_data import load_ptx

    ptx = tmp_path / "sl.jsonl"
    ptx.write_text('\n{"messages": \n')
    with pytest.raises(CAIError, match=r"sl\.jsonl:2: not valid JSON \(.+\); PPO-ptx takes"):
        load_ptx(str(ptx), None, 16)  # the line is refused before any tokenizer work
    ptx.write_text('\n[1]\n')
    with pytest.raises(CAIError, match=r"sl\.jsonl:2: expected a JSON object with 'messages'"):
        load_ptx(str(ptx), None, 16)


def _fails(capsys, args: list[str], needle: str) -> None:
    assert main(["ppo", *args]) == 2
    err = capsys.readouterr().err
    assert needle in err and len(err.strip().splitlines()) == 1, err


def test_bad_input(char_model, prompts_file, tmp_path, capsys):
    base = ["--policy", char_model, "--max-length", "64", "--max-tokens", "8"]
    empty = tmp_path / "not-a-pm"
    empty.mkdir()
    _fails(capsys, [*base, "--reward", str(empty), "--prompts", prompts_file, "-o", str(tmp_path / "a")],
           "holds no preference model")
    assert not (tmp_path / "a").exists()  # nothing written before the input is known good
    _fails(capsys, [*base, "--reward", "no_such_mod:fn", "--prompts", prompts_file, "-o", str(tmp_path / "a")],
           "no module named")
    _fails(capsys, [*base, "--reward", "judge:mock:", "--prompts", str(tmp_path / "missing.jsonl"),
                    "-o", str(tmp_path / "a")], "no such file or built-in prompt set")
    other = tmp_path / "other"
    other.mkdir()
    (other / "cai_run.json").write_text(json.dumps({"kind": "cai-train-run", "command": "ppo",
                                                    "config": {"lr": 0.5}, "data": []}))
    _fails(capsys, [*base, "--reward", "judge:mock:", "--prompts", prompts_file, "-o", str(other)],
           "holds another run")
    (other / "cai_run.json").write_text(json.dumps({"kind": "cai-train-run", "command": "sft", "config": {}}))
    _fails(capsys, [*base, "--reward", "judge:mock:", "--prompts", prompts_file, "-o", str(other)],
           "holds another run (sft")
    stray = tmp_path / "stray"
    stray.mkdir()
    (stray / "x.txt").write_text("x")
    _fails(capsys, [*base, "--reward", "judge:mock:", "--prompts", prompts_file, "-o", str(stray)], "holds no cai run")
    _fails(capsys, [*base, "--reward", "judge:mock:", "--prompts", prompts_file, "-o", str(tmp_path / "b"),
                    "--ptx-coef", "0.5"], "--ptx-coef needs --ptx-data")


@pytest.mark.parametrize("lora, temperature, bf16", [(False, 1.0, False), (True, 0.7, False), (True, 0.7, True)])
def test_rollout_views_match_a_separate_forward_pass(char_model, prompts_file, tmp_path, lora, temperature, bf16):
    """--old-logprobs rollout takes the sampling policy's log-probs, entropy and values from
    generate's own logits and hidden states; they must be the numbers the no-grad pass computes
    (in bf16, up to bf16's rounding: generation reads a KV cache, the pass does not)."""
    import torch

    from cai.sources import load_prompts
    from cai.train import ppo
    from cai.train.ppo_model import build_policy
    from cai.train.ppo_rollout import rollout

    cfg = _cfg(char_model, prompts_file, tmp_path / "unused", lora=lora, lora_r=4, lora_alpha=8, temperature=temperature,
               bf16=bf16)
    tok, model, _ = build_policy(cfg, char_model, "cpu")
    if lora:  # adapters that change the function, so the views are the policy's, not the base model's
        with torch.no_grad():
            for name, p in model.model.named_parameters():
                if "lora_B" in name:
                    p.normal_(0, 0.5)
    convs = [p.messages for p in load_prompts(prompts_file)] * 2
    roll = rollout(model, tok, convs, cfg, ppo._eos_ids(tok, model.model), seed=1)
    mask = roll["mask"].bool()
    assert roll["old_logp"].shape == mask.shape and mask.sum() > len(convs)  # answers of several tokens
    with torch.no_grad():
        logits, values = model.forward(roll["ids"], roll["attn"], roll["prompt_width"])
    from cai.train.ppo_math import entropy_from_logits

    logp = ppo._logprobs(logits, roll["ids"][:, roll["prompt_width"]:], temperature)
    tol = 2e-2 if bf16 else 1e-4
    assert logits.dtype == torch.float32 and roll["old_logp"].dtype == torch.float32
    torch.testing.assert_close(roll["old_logp"][mask], logp[mask], atol=tol, rtol=tol)
    torch.testing.assert_close(roll["old_values"][mask], values[mask], atol=tol, rtol=tol)
    torch.testing.assert_close(roll["entropy"][mask], entropy_from_logits(logits / temperature)[mask],
                               atol=tol, rtol=tol)
    forward_cfg = _cfg(char_model, prompts_file, tmp_path / "unused", old_logprobs="forward")
    assert "old_logp" not in rollout(model, tok, convs, forward_cfg, ppo._eos_ids(tok, model.model), seed=1)


def _lora_policy(char_model, prompts_file, tmp_path, **kw):
    """(config, tokenizer, policy) of a LoRA policy whose random adapters change its function, so
    that its rollouts are its own, not the base model's."""
    import torch

    from cai.train.ppo_model import build_policy

    cfg = _cfg(char_model, prompts_file, tmp_path / "unused", lora=True, lora_r=4, lora_alpha=8, temperature=0.7, **kw)
    tok, model, _ = build_policy(cfg, char_model, "cpu")
    with torch.no_grad():
        for name, p in model.model.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.5)
    return cfg, tok, model


def test_a_lora_rollout_samples_from_merged_weights_and_puts_the_policy_back(char_model, prompts_file, tmp_path):
    """On a CPU a LoRA policy's rollout runs on a merged copy of its weights, adapters off: in fp32 the
    same tokens as the adapters give, every frozen weight and adapter the same tensor afterwards, and
    the adapters on again."""
    import torch

    from cai.sources import load_prompts
    from cai.train import ppo
    from cai.train.ppo_rollout import rollout

    cfg, tok, model = _lora_policy(char_model, prompts_file, tmp_path)
    layers = model._mergeable_lora_layers()
    assert len(layers) > 0
    before = {name: (p, p.detach().clone()) for name, p in model.model.named_parameters()}
    convs = [p.messages for p in load_prompts(prompts_file)] * 2
    merged = rollout(model, tok, convs, cfg, ppo._eos_ids(tok, model.model), seed=1)
    after = dict(model.model.named_parameters())
    assert after.keys() == before.keys()
    for name, (param, value) in before.items():
        assert after[name] is param and torch.equal(param, value), name
    assert not any(layer.disable_adapters for layer in layers)  # adapters on again for the update
    model._mergeable_lora_layers = lambda: []  # the adapters as PEFT runs them
    plain = rollout(model, tok, convs, cfg, ppo._eos_ids(tok, model.model), seed=1)
    assert torch.equal(merged["ids"], plain["ids"])
    torch.testing.assert_close(merged["old_logp"], plain["old_logp"], atol=1e-4, rtol=1e-4)


def test_a_bf16_lora_rollout_samples_from_packed_merged_weights(char_model, prompts_file, tmp_path, monkeypatch):
    """A bf16 LoRA policy's rollout runs its merged layers on weights oneDNN laid out once
    (ppo_model._packed_linear): the tokens and log-probs of the plain merged layers, and every layer
    back on its class's forward afterwards."""
    import torch

    from cai.sources import load_prompts
    from cai.train import ppo, ppo_model
    from cai.train.ppo_rollout import rollout

    cfg, tok, model = _lora_policy(char_model, prompts_file, tmp_path, bf16=True)
    layers = model._mergeable_lora_layers()
    made, real = [], ppo_model._packed_linear

    def counted(weight, bias, rows, tried=None):
        made.append(rows)
        return real(weight, bias, rows, tried)

    monkeypatch.setattr(ppo_model, "_packed_linear", counted)
    convs = [p.messages for p in load_prompts(prompts_file)] * 2
    packed = rollout(model, tok, convs, cfg, ppo._eos_ids(tok, model.model), seed=1)
    if real(layers[0].base_layer.weight, None, 8) is None:
        pytest.skip("torch has no oneDNN bf16 weight packing on this CPU")
    assert made == [len(convs)] * len(layers)
    assert not any("forward" in vars(layer.base_layer) for layer in layers)
    monkeypatch.setattr(ppo_model, "_packed_linear", lambda weight, bias, rows, tried=None: None)
    plain = rollout(model, tok, convs, cfg, ppo._eos_ids(tok, model.model), seed=1)
    assert torch.equal(packed["ids"], plain["ids"])
    torch.testing.assert_close(packed["old_logp"], plain["old_logp"], atol=2e-2, rtol=2e-2)


def test_packed_weights_only_where_their_kernel_runs(monkeypatch):
    """fp32 weights are not packed, and a CPU whose oneDNN cannot run the packed bf16 kernel gets the
    plain merged layers: the packing fails when it is made, not in the middle of a rollout."""
    import torch

    from cai.train import ppo_model

    weight = torch.randn(8, 4).bfloat16()
    assert ppo_model._packed_linear(weight.float(), None, 2) is None

    def no_kernel(*args, **kwargs):
        raise RuntimeError("no bf16 kernel on this CPU")

    if ppo_model._packed_linear(weight, None, 2) is None:
        pytest.skip("torch has no oneDNN bf16 weight packing on this CPU")
    runs, real = [], torch.ops.mkldnn._linear_pointwise

    def counted(*args, **kwargs):
        runs.append(1)
        return real(*args, **kwargs)

    monkeypatch.setattr(torch.ops.mkldnn, "_linear_pointwise", counted)
    tried: set = set()
    assert ppo_model._packed_linear(weight, None, 2, tried) is not None
    assert ppo_model._packed_linear(weight, None, 2, tried) is not None
    assert len(runs) == 1 and tried == {((8, 4), False)}  # one trial per weight shape and rollout
    monkeypatch.setattr(torch.ops.mkldnn, "_linear_pointwise", no_kernel)
    assert ppo_model._packed_linear(weight, None, 2) is None
    assert ppo_model._packed_linear(weight, None, 2, set()) is None


def test_a_merged_weight_is_peft_s_merge(char_model, prompts_file, tmp_path):
    """W + scale·B·A from one addmm_ per adapter: PEFT's merge (its get_delta_weight), fp32 and bf16."""
    import torch

    from cai.train import ppo_model

    for bf16 in (False, True):
        _, _, model = _lora_policy(char_model, prompts_file, tmp_path / str(bf16), bf16=bf16)
        for layer in model._mergeable_lora_layers():
            weight = layer.base_layer.weight
            peft_merge = (weight.float() + sum(layer.get_delta_weight(n) for n in layer.active_adapters)).to(weight.dtype)
            merged = ppo_model._merged_weight(layer)
            assert merged.dtype == weight.dtype and merged.data_ptr() != weight.data_ptr()
            torch.testing.assert_close(merged, peft_merge, atol=1e-5 if not bf16 else 1e-2, rtol=1e-5 if not bf16 else 1e-2)


def test_ppo_precision_default(monkeypatch):
    """On a CPU, bf16 weights only for a LoRA policy and only where bf16 matmuls are measured faster;
    full weights stay fp32 (bf16 weights would be their own master copy); a flag wins."""
    import torch

    import cai.precision
    from cai.train.ppo_model import pick_dtype

    monkeypatch.setattr(cai.precision, "cpu_prefers_bf16", lambda cache: True)
    assert pick_dtype(None, lora=True) is torch.bfloat16
    assert pick_dtype(None, lora=False) is torch.float32
    assert pick_dtype(False, lora=True) is torch.float32 and pick_dtype(True, lora=False) is torch.bfloat16
    monkeypatch.setattr(cai.precision, "cpu_prefers_bf16", lambda cache: False)
    assert pick_dtype(None, lora=True) is torch.float32


def test_bf16_lora_policy_trains_like_fp32(char_model, prompts_file, tmp_path):
    """A bf16 LoRA policy (the default on an AMX CPU): the same answers, and a first update whose losses
    are the fp32 policy's within bf16's rounding."""
    from cai.train.ppo import run_ppo

    first = {}
    for bf16 in (False, True):
        out = tmp_path / f"bf16-{bf16}"
        run_ppo(_cfg(char_model, prompts_file, out, bf16=bf16, max_steps=1, lora=True, lora_r=4, lora_alpha=8),
                reward=vowel_share)
        first[bf16] = json.loads((out / "metrics.jsonl").read_text().splitlines()[0])
    assert first[True]["length"] == first[False]["length"]  # the same answers were sampled
    for key in ("reward", "policy_loss", "value_loss", "entropy", "approx_kl"):
        assert first[True][key] == pytest.approx(first[False][key], rel=0.05, abs=2e-3), key


def test_bf16_lora_policy_merges_into_fp32_weights(char_model, tmp_path):
    """The merged folder holds base + B·A in fp32: merged into the bf16 copy, an update this small
    would be lost in bf16's rounding of the weights (about 0.4% of each)."""
    import torch
    from safetensors.torch import load_file

    from cai.train.ppo_model import PolicyWithValue, load_tokenizer

    policy = PolicyWithValue(char_model, lora=True, lora_r=4, lora_alpha=8, dtype=torch.bfloat16)
    layer = policy.model.get_base_model().model.layers[0].self_attn.q_proj
    with torch.no_grad():
        layer.lora_B["default"].weight.normal_(0, 1e-4)
    expected = (layer.lora_B["default"].weight @ layer.lora_A["default"].weight) * layer.scaling["default"]
    policy.save_final(tmp_path, load_tokenizer(char_model), keep_adapter=False)
    name = "model.layers.0.self_attn.q_proj.weight"
    merged, base = load_file(str(tmp_path / "model.safetensors"))[name], load_file(f"{char_model}/model.safetensors")[name]
    assert merged.dtype == torch.float32
    torch.testing.assert_close(merged - base, expected.float(), atol=1e-7, rtol=1e-4)


@pytest.mark.parametrize("bf16", [False, True])
def test_a_bf16_lora_policy_computes_its_adapters_in_bf16_and_its_heads_in_fp32(char_model, bf16):
    """PolicyWithValue.compute: a bf16 LoRA policy's adapters take their layer's bf16 input as it is
    (no cast of the activations to fp32 and back); log-probs and values stay fp32, and the adapters'
    weights and gradients fp32. An fp32 policy runs unchanged."""
    import torch

    from cai.train.ppo_model import PolicyWithValue

    policy = PolicyWithValue(char_model, lora=True, lora_r=4, lora_alpha=8,
                             dtype=torch.bfloat16 if bf16 else torch.float32)
    lora_a = policy.model.get_base_model().model.layers[0].mlp.down_proj.lora_A["default"]
    seen = []
    lora_a.register_forward_hook(lambda m, i, out: seen.append((i[0].dtype, out.dtype)))
    ids = torch.randint(3, 20, (2, 9))
    logits, values = policy.forward(ids, torch.ones_like(ids), start=5)
    want = torch.bfloat16 if bf16 else torch.float32
    assert seen == [(want, want)]
    assert logits.dtype == torch.float32 and values.dtype == torch.float32
    (torch.log_softmax(logits, -1)[..., 0].mean() + values.mean()).backward()
    assert lora_a.weight.dtype == torch.float32 and lora_a.weight.grad.dtype == torch.float32
    assert torch.isfinite(lora_a.weight.grad).all()


def test_the_fp32_head_gives_the_same_logits_with_and_without_gradients():
    """install_fp32_head's head computes a rollout step's few rows as W·hᵀ and more rows, or any with
    gradients, with bf16 kernels: its logits must equal the plain fp32 linear's every way, and the
    hidden state's gradient the fp32 linear's up to bf16 rounding."""
    import torch

    from cai.train.ppo_model import install_fp32_head

    torch.manual_seed(0)
    model = torch.nn.Module()
    emb = torch.nn.Linear(16, 40, bias=False).to(torch.bfloat16)
    model.get_output_embeddings = lambda: emb
    model.set_output_embeddings = lambda head: setattr(model, "head", head)
    install_fp32_head(model)
    w = emb.weight.float()
    for shape in ((1, 1, 16), (3, 5, 16)):
        h = torch.randn(shape, dtype=torch.bfloat16, requires_grad=True)
        want = torch.nn.functional.linear(h.float(), w)
        with torch.no_grad():
            fast = model.head(h)
        assert fast.shape == want.shape and fast.is_contiguous() and fast.dtype == torch.float32
        torch.testing.assert_close(fast, want, rtol=1e-6, atol=1e-6)
        before = torch.backends.mkldnn.matmul.fp32_precision
        slow = model.head(h)
        assert type(slow.grad_fn).__name__ == "Bf16HeadFp32LogitsBackward"  # the bf16 kernels, not the fallback
        assert torch.backends.mkldnn.matmul.fp32_precision == before  # the switch is the head's alone
        torch.testing.assert_close(slow, want, rtol=1e-6, atol=1e-6)
        g = torch.randn(want.shape)
        (slow * g).sum().backward()
        (want_grad,) = torch.autograd.grad((want * g).sum(), h)
        assert h.grad.dtype == torch.bfloat16
        torch.testing.assert_close(h.grad.float(), want_grad.float(), rtol=2e-2, atol=2e-2 * want_grad.abs().max().item())


def test_the_policy_optimiser_is_fused_adamw_on_a_cpu(char_model, prompts_file, tmp_path):
    """One fused kernel for the update's over-400 LoRA tensors, not AdamW's per-tensor loop."""
    from cai.train.ppo_model import build_policy

    cfg = _cfg(char_model, prompts_file, tmp_path / "unused", lora=True, lora_r=4, lora_alpha=8)
    _, model, opt = build_policy(cfg, char_model, "cpu")
    assert type(opt).__name__ == "AdamW" and opt.defaults["fused"] is True
    assert opt.defaults["lr"] == cfg.lr and len(opt.param_groups[0]["params"]) == len(model.parameters())


@pytest.mark.parametrize("old_logprobs", ["rollout", "forward"])
def test_the_update_without_unused_columns_is_the_update_over_all_of_them(char_model, prompts_file, tmp_path,
                                                                         old_logprobs, monkeypatch):
    """Each minibatch's passes skip the left padding its rows share and the columns after its longest
    answer (cai.train.ppo_data.trim_columns): the update's numbers and the weights it leaves must be
    those of passes over the whole rollout's width."""
    import torch

    from cai.train import ppo, ppo_data
    from cai.train.ppo_math import RunningMoments, kl_controller
    from cai.train.ppo_model import build_policy
    from cai.train.ppo_rollout import rollout

    convs = [[{"role": "user", "content": text}] for text in ["Hi", "Tell me a long story about a cat", "Why?",
                                                              "What is two and two, and why is it so?"]] * 2
    cfg = _cfg(char_model, prompts_file, tmp_path / "unused", lora=True, lora_r=4, lora_alpha=8, temperature=0.7,
               old_logprobs=old_logprobs, ppo_epochs=2, minibatch_size=2)

    def updated(trim):
        torch.manual_seed(0)
        tok, model, opt = build_policy(cfg, char_model, "cpu")
        with torch.no_grad():
            gen = torch.Generator().manual_seed(1)
            for name, p in model.model.named_parameters():
                if "lora_B" in name:
                    p.copy_(torch.randn(p.shape, generator=gen) * 0.3)
        roll = rollout(model, tok, convs, cfg, ppo._eos_ids(tok, model.model), seed=1)
        monkeypatch.setattr(ppo_data, "trim_columns", trim)
        stats = ppo._update(model, opt, kl_controller(cfg.kl_coef, None, 1.0), RunningMoments(), roll,
                            torch.tensor([0.5, -1.0, 2.0, 0.0] * 2), cfg, 1, None, tok)
        return roll, stats, [p.detach().clone() for p in model.parameters()]

    widths = []

    def counted(ids, attn, start):
        out = trim_columns(ids, attn, start)
        widths.append((out[0].shape[1], ids.shape[1]))
        return out

    trim_columns = ppo_data.trim_columns
    roll, trimmed, weights = updated(counted)
    assert any(w < full for w, full in widths)  # some passes did skip columns
    _, whole, whole_weights = updated(lambda ids, attn, start: (ids, attn, start, ids.shape[1] - start))
    assert trimmed.keys() == whole.keys()
    for key in trimmed:
        # A clip fraction counts tokens where two terms compare; at the first update they tie (the
        # policy is the old one), and float rounding breaks a tie either way: a token or two of ~200.
        tol = 0.02 if key.endswith("clip_frac") else 1e-5
        assert trimmed[key] == pytest.approx(whole[key], rel=1e-4, abs=tol), key
    for a, b in zip(weights, whole_weights):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-4)
