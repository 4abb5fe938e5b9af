"""The models PPO trains and consults: the policy (a causal LM, full weights or LoRA), its value
head, and the frozen reference.

With LoRA the reference is the policy's own weights with the adapters switched off (PEFT's
``disable_adapter``), so only one copy of the model is in memory; with full weights it is a
frozen copy. The value head is a linear layer on the policy's last hidden state; it is saved
beside the model's weights (``value_head/value_head.safetensors``), never inside the model's weights, so the
folder loads as a plain causal LM.
"""

from __future__ import annotations

import contextlib
import copy
from pathlib import Path
from typing import Any

from cai.errors import CAIError
from cai.train.model_io import anchor_adapter_base, check_not_adapter

# In a subfolder: vLLM loads every *.safetensors at the top of a model folder.
VALUE_HEAD_FILE = "value_head/value_head.safetensors"


def pick_dtype(bf16: bool | None, *, lora: bool, device: str = "cpu"):
    """The dtype of the policy's weights: ``--bf16/--no-bf16`` when given; else bf16 on a GPU that supports
    it, and on a CPU only for a LoRA policy where a measured bf16 matmul beats fp32 (AMX:
    :func:`cai.precision.cpu_prefers_bf16`, the test ``cai sft`` and ``cai reward`` use).

    Why LoRA only on a CPU: its base weights are frozen, so bf16 copies of them lose nothing to the
    optimiser (the adapters train in fp32); full weights in bf16 would be their own master copy, and
    updates smaller than bf16's rounding would vanish. The log-probs that PPO's ratio and KL are made
    of stay fp32 either way: the LM head of a bf16 LoRA policy computes in fp32 (:func:`install_fp32_head`)."""
    import torch

    from cai.train.model_io import use_bf16

    if bf16 is None and not str(device).startswith("cuda"):
        from cai.precision import cpu_prefers_bf16, home_cache

        bf16 = lora and cpu_prefers_bf16(home_cache())
    return torch.bfloat16 if use_bf16(bf16, device=device) else torch.float32


def install_fp32_head(model: Any) -> None:
    """Give ``model`` (a causal LM with bf16 weights) an LM head that computes in fp32: its hidden state
    cast up, times an fp32 copy of the head's weights. A bf16 logit of 20 is off by up to 0.06, and
    PPO's ratio and KL are differences of log-probs; the head is a fifth of a SmolLM2-135M token's
    FLOPs, and PPO runs it on answer tokens only. For a frozen head only (LoRA): the copy is not tied
    to the input embeddings, and it is never saved (the adapters are, and
    :meth:`PolicyWithValue.save_final` merges them into weights loaded afresh)."""
    import torch

    class Bf16HeadFp32Logits(torch.autograd.Function):
        """The fp32 logits h·Wᵀ from bf16 kernels. Forward: h and W hold bf16 values, so oneDNN's bf16
        math mode for fp32 matmuls (bf16 inputs, fp32 accumulation and output) gives the fp32 product,
        up to the order of summation; the logits are never rounded to bf16. Backward: the hidden
        state's gradient is a bf16 tensor, so it comes from a bf16 product, as autocast makes every
        other layer's."""

        @staticmethod
        def forward(ctx: Any, hidden: Any, weight: Any, bf16_weight: Any) -> Any:
            ctx.save_for_backward(bf16_weight)
            backend = torch.backends.mkldnn.matmul
            before, backend.fp32_precision = backend.fp32_precision, "bf16"
            try:
                return torch.nn.functional.linear(hidden.to(torch.float32), weight)
            finally:
                backend.fp32_precision = before

        @staticmethod
        def backward(ctx: Any, grad: Any) -> Any:
            (bf16_weight,) = ctx.saved_tensors
            return grad.to(torch.bfloat16) @ bf16_weight, None, None

    class Float32Head(torch.nn.Module):
        def __init__(self, weight: Any) -> None:
            super().__init__()
            self.register_buffer("weight", weight.detach().to(torch.float32), persistent=False)
            # The bf16 weights themselves (tied to the input embeddings: no copy) for the bf16 kernels.
            self.register_buffer("bf16_weight", weight.detach() if weight.dtype == torch.bfloat16 else None,
                                 persistent=False)

        def forward(self, hidden: Any) -> Any:
            with torch.autocast(hidden.device.type, enabled=False):  # fp32 under the policy's autocast too
                if not torch.is_grad_enabled() and hidden.numel() < 8 * hidden.shape[-1]:
                    # A rollout's step, as W·hᵀ transposed back: the same product, but MKL's fp32 GEMM on
                    # an AMD EPYC ran 4 rows against the 49k-column weight in 4.7 ms this way, 6.0 ms
                    # in bf16 math mode and 17 ms as h·Wᵀ (bench/RESULTS.md).
                    flat = hidden.to(torch.float32).reshape(-1, hidden.shape[-1])
                    return (self.weight @ flat.T).T.contiguous().reshape(*hidden.shape[:-1], -1)
                if _bf16_math_applies(hidden, self.bf16_weight):
                    # From 8 rows on (the update, the reference pass, a rollout of 8) faster: 260 rows
                    # 94 ms against 118 forward, and the gradient 42 against 82 ms (bench/RESULTS.md).
                    return Bf16HeadFp32Logits.apply(hidden, self.weight, self.bf16_weight)
                return torch.nn.functional.linear(hidden.to(torch.float32), self.weight)

    model.set_output_embeddings(Float32Head(model.get_output_embeddings().weight))


def _merged_weight(layer: Any) -> Any:
    """A plain LoRA layer's W + scale·B·A in W's dtype, summed in fp32 (PEFT's ``get_delta_weight``
    makes B·A, scales it and adds it in three full-size passes; one ``addmm_`` per adapter here)."""
    import torch

    weight = layer.base_layer.weight
    merged = weight.to(torch.float32, copy=True)
    for name in layer.active_adapters:
        a, b = layer.lora_A[name].weight, layer.lora_B[name].weight
        merged.addmm_(b.to(torch.float32), a.to(torch.float32), alpha=layer.scaling[name])
    return merged.to(weight.dtype)


def _packed_linear(weight: Any, bias: Any, rows: int, tried: set | None = None) -> Any:
    """A forward for a frozen bf16 ``weight`` (``nn.Linear``'s math, under autocast's bf16) that oneDNN
    laid out for its kernels once, as Inductor's frozen CPU graphs do; None where torch cannot (not a
    CPU, not bf16, no oneDNN). ``nn.Linear`` lays a bf16 weight out again at every call: a decode
    step's matmuls are small, and the quickstart's rollouts took 0.92x the time this way (by hand,
    bench/RESULTS.md). The kernel runs once per weight shape not yet in ``tried`` (which it then
    joins), so that a CPU without it falls back here, not mid-rollout."""
    import torch

    if weight.dtype != torch.bfloat16 or weight.device.type != "cpu":
        return None

    def forward(x: Any) -> Any:
        return torch.ops.mkldnn._linear_pointwise(x.to(torch.bfloat16), packed, bias, "none", [], "")

    shape = (tuple(weight.shape), bias is not None)
    try:
        packed = torch.ops.mkldnn._reorder_linear_weight(weight, max(1, rows))
        if tried is None or shape not in tried:
            forward(torch.zeros(1, weight.shape[1], dtype=torch.bfloat16))  # fails here, not mid-rollout
    except (AttributeError, RuntimeError):  # a torch without these ops, or a CPU oneDNN has no bf16 kernel for
        return None
    if tried is not None:
        tried.add(shape)
    return forward


def _bf16_math_applies(hidden: Any, bf16_weight: Any) -> bool:
    """Whether the fp32 head may take its product in oneDNN's bf16 math mode without changing it: on a
    CPU, with bf16 values on both sides, in a torch that has the switch."""
    import torch

    matmul = getattr(getattr(torch.backends, "mkldnn", None), "matmul", None)
    return (bf16_weight is not None and hidden.device.type == "cpu" and hidden.dtype == torch.bfloat16
            and hasattr(matmul, "fp32_precision"))


def load_tokenizer(path: str):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(path)
    if tok.pad_token_id is None:
        tok.pad_token = tok.eos_token
    if not getattr(tok, "chat_template", None):
        raise CAIError(f"-m {path}: the tokenizer has no chat template; PPO renders prompts as chats")
    return tok


def resolve_model_path(spec: str) -> str:
    """A model folder for ``-m/--model``: an alias, a folder, or ``hf:FOLDER``."""
    from cai.models import resolve

    target = spec[len("hf:"):] if spec.startswith("hf:") else spec
    if Path(target).expanduser().is_dir():
        path = Path(target).expanduser()
        check_not_adapter(str(path), spec)
        if not (path / "config.json").is_file():
            raise CAIError(f"-m {spec}: the folder holds no Hugging Face model (no config.json)")
        return str(path)
    try:
        return resolve(target)
    except Exception as e:  # an unknown alias or an unreachable hub id
        raise CAIError(f"-m {spec}: not a model folder or known alias ({e})") from None


def _answer_rows(input_ids: Any, start: int) -> Any:
    """The positions whose logits predict answer tokens ``start..``: the LM head runs on these alone, not
    on the prompt's (49k columns a row for SmolLM2), and as indices, not a slice of a longer logits
    tensor, whose backward would fill a [rows, vocab] tensor of zeros."""
    import torch

    return torch.arange(start - 1, input_ids.shape[1] - 1, device=input_ids.device)


class PolicyWithValue:
    """The trainable policy, its value head and access to the reference log-probs."""

    def __init__(self, path: str, *, lora: bool, lora_r: int, lora_alpha: int, dtype: Any, device: str = "cpu",
                 seed: int = 0) -> None:
        import torch
        from transformers import AutoModelForCausalLM

        model = AutoModelForCausalLM.from_pretrained(path, dtype=dtype).to(device)
        model.config.use_cache = True
        if str(device) == "cpu":
            from cai.train.short_attention import use_short_eager_attention

            # The update's passes (gradients on, no cache) take the plain attention form: CPU flash
            # attention's backward was 16% of an update (bench/RESULTS.md). Rollouts, the reference
            # pass and every pass without gradients keep SDPA.
            use_short_eager_attention(model)
        self.path, self.lora = path, lora
        self.ref = None
        self.fp32_head = lora and dtype != torch.float32
        if lora:
            from peft import LoraConfig, get_peft_model

            cfg = LoraConfig(r=lora_r, lora_alpha=lora_alpha, lora_dropout=0.0, target_modules="all-linear",
                             task_type="CAUSAL_LM")
            model = get_peft_model(model, cfg)
            if self.fp32_head:
                install_fp32_head(model.get_base_model())
        else:
            self.ref = copy.deepcopy(model).eval()
            for p in self.ref.parameters():
                p.requires_grad_(False)
        self.model = model
        hidden = model.config.hidden_size if not lora else model.base_model.model.config.hidden_size
        gen = torch.Generator().manual_seed(seed)
        head = torch.nn.Linear(hidden, 1)
        with torch.no_grad():  # a small init keeps early value estimates near zero
            head.weight.copy_(torch.randn(head.weight.shape, generator=gen) * 0.01)
            head.bias.zero_()
        self.value_head = head.to(device=device, dtype=torch.float32)

    @contextlib.contextmanager
    def compute(self):
        """Where the policy's forward passes run (rollout, update, reference, PPO-ptx). A bf16 LoRA
        policy runs under bf16 autocast with PEFT's cast of each adapter's input to fp32 switched off:
        the adapters then compute in bf16 from their fp32 weights, as mixed precision does, instead of
        casting every layer's activations up and back (on the AMX VM a minibatch's forward and
        backward took 0.87x the time; bench/RESULTS.md). The LM head stays fp32 (:func:`install_fp32_head`)
        and the value head runs outside. Any other policy runs as it is."""
        if not self.fp32_head:
            yield
            return
        import torch
        from peft.helpers import disable_input_dtype_casting

        device = next(iter(self.model.parameters())).device.type
        with torch.autocast(device, dtype=torch.bfloat16), disable_input_dtype_casting(self.model):
            yield

    @contextlib.contextmanager
    def sampling(self, rows: int = 1):
        """Where rollouts generate. A LoRA policy on a CPU samples from a temporary copy of its layers'
        weights with the adapters merged in (W + scale·B·A, in W's dtype) and the adapters off: a
        decode step then runs one matmul per layer instead of three, and on a CPU its small matmuls
        cost about 50 µs each whatever their size (a quickstart rollout: 0.78x the time; the numbers
        are in bench/RESULTS.md). The adapters and frozen weights are put back untouched on exit;
        merging in place and subtracting again would change bf16 weights by their rounding each step.
        The copy holds as much memory as the adapted weights and is freed after the rollout. GPUs,
        full weights, and layers other than ``nn.Linear`` keep the adapters as they are. bf16 copies are
        laid out once for oneDNN's kernels where torch can (:func:`_packed_linear`, ``rows``: the
        rollout's batch size), not at every call."""
        import torch

        layers = self._mergeable_lora_layers()
        if not layers:
            yield
            return
        saved = []
        tried: set = set()  # weight shapes whose packed kernel ran once in this rollout
        try:
            with torch.no_grad():
                for layer in layers:
                    base = layer.base_layer
                    merged = _merged_weight(layer)
                    packed = _packed_linear(merged, base.bias, rows, tried)
                    if packed is not None:
                        saved.append((base, None))
                        base.forward = packed
                    else:
                        saved.append((base, base.weight))
                        base.weight = torch.nn.Parameter(merged, requires_grad=False)
            with self.model.disable_adapter():
                yield
        finally:
            for base, weight in saved:
                if weight is None:
                    del base.forward  # the class's forward again
                else:
                    base.weight = weight

    def _mergeable_lora_layers(self) -> list:
        """The LoRA layers :meth:`sampling` merges: all of them, or none if any would not merge plainly."""
        import torch

        if not self.lora or self.value_head.weight.device.type != "cpu":
            return []
        from peft.tuners.lora import Linear as LoraLinear
        from peft.tuners.lora import LoraLayer

        layers = [m for m in self.model.modules() if isinstance(m, LoraLayer)]
        plain = all(type(m) is LoraLinear and isinstance(m.base_layer, torch.nn.Linear) and not m.merged
                    and not m.fan_in_fan_out and not any(m.use_dora.get(name) for name in m.active_adapters)
                    for m in layers)
        return layers if plain else []

    def parameters(self):
        return [p for p in self.model.parameters() if p.requires_grad] + list(self.value_head.parameters())

    def train(self) -> None:
        self.model.train()

    def eval(self) -> None:
        self.model.eval()

    def forward(self, input_ids, attention_mask, start: int, *, values: bool = True):
        """Logits predicting tokens ``start..`` and the value of each state before them."""
        position_ids = (attention_mask.long().cumsum(-1) - 1).clamp(min=0)
        with self.compute():
            out = self.model(input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids,
                             output_hidden_states=values, use_cache=False,
                             logits_to_keep=_answer_rows(input_ids, start))
        logits = out.logits
        if not values:
            return logits, None
        hidden = out.hidden_states[-1][:, start - 1:-1]
        return logits, self.value_head(hidden.float()).squeeze(-1)

    @contextlib.contextmanager
    def reference(self):
        """The frozen reference model, as a callable like the policy's model."""
        if self.lora:
            with self.model.disable_adapter():
                yield self.model
        else:
            yield self.ref

    def ref_logits(self, input_ids, attention_mask, start: int):
        position_ids = (attention_mask.long().cumsum(-1) - 1).clamp(min=0)
        with self.reference() as ref, self.compute():
            out = ref(input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids, use_cache=False,
                      logits_to_keep=_answer_rows(input_ids, start))
        return out.logits

    # -- saving -----------------------------------------------------------------------------------

    def save_checkpoint_weights(self, folder: Path) -> None:
        self.model.save_pretrained(folder / "policy")
        self._save_head(folder)

    def load_checkpoint_weights(self, folder: Path) -> None:
        import torch
        from safetensors.torch import load_file

        if self.lora:
            from peft import set_peft_model_state_dict
            from peft.utils import load_peft_weights

            set_peft_model_state_dict(self.model, load_peft_weights(str(folder / "policy")))
        else:
            from transformers import AutoModelForCausalLM

            loaded = AutoModelForCausalLM.from_pretrained(folder / "policy", dtype=self.model.dtype)
            self.model.load_state_dict(loaded.state_dict())
        self.value_head.load_state_dict({k: v.to(torch.float32) for k, v in load_file(str(folder / VALUE_HEAD_FILE)).items()})

    def save_final(self, out: Path, tokenizer: Any, *, keep_adapter: bool) -> None:
        """The HF folder every backend loads (merged unless ``keep_adapter``), the value head beside it."""
        model = self.model
        if self.lora and not keep_adapter:
            model = self._merged_fp32() if self.fp32_head else model.merge_and_unload()
            self.model, self.lora, self.fp32_head = model, False, False
        model.save_pretrained(out)
        tokenizer.save_pretrained(out)
        anchor_adapter_base(out)
        self._save_head(out)

    def _merged_fp32(self) -> Any:
        """The adapters merged into fp32 base weights loaded afresh. Merged into the bf16 copy, a
        LoRA update smaller than bf16's rounding of a weight (about 0.4% of it) would be lost."""
        import torch
        from peft import get_peft_model, get_peft_model_state_dict, set_peft_model_state_dict
        from transformers import AutoModelForCausalLM

        base = AutoModelForCausalLM.from_pretrained(self.path, dtype=torch.float32)
        fresh = get_peft_model(base, self.model.peft_config["default"])
        set_peft_model_state_dict(fresh, get_peft_model_state_dict(self.model))
        return fresh.merge_and_unload()

    def _save_head(self, folder: Path) -> None:
        from safetensors.torch import save_file

        (folder / VALUE_HEAD_FILE).parent.mkdir(parents=True, exist_ok=True)
        save_file({k: v.contiguous() for k, v in self.value_head.state_dict().items()}, str(folder / VALUE_HEAD_FILE))


def build_policy(cfg: Any, path: str, device: str) -> tuple[Any, PolicyWithValue, Any]:
    """(tokenizer, policy with value head, AdamW) as ``cai ppo`` trains them (used by the command and the bench)."""
    import torch

    tok = load_tokenizer(path)
    model = PolicyWithValue(path, lora=cfg.lora, lora_r=cfg.lora_r, lora_alpha=cfg.lora_alpha,
                            dtype=pick_dtype(cfg.bf16, lora=cfg.lora, device=device), device=device,
                            seed=cfg.seed)
    model.eval()  # no dropout in rollouts or updates: PPO's ratio needs the same function both times
    params = model.parameters()
    # One fused kernel for every parameter's update (CPU and GPU), as transformers' Trainer defaults to: a
    # LoRA policy has over 400 small tensors, and AdamW's loop over them was 5% of a CPU update in a profile.
    fused = all(p.device.type in ("cpu", "cuda") for p in params)
    return tok, model, torch.optim.AdamW(params, lr=cfg.lr, eps=1e-5, fused=fused or None)
