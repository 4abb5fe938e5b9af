"""``hf:MODEL``: an in-process transformers backend, the fallback where vLLM is absent.

Generation is batched with LEFT padding (decoder-only models continue from the last position, so
padding must sit on the left and be masked), prompts are sorted by length so a batch wastes little
on padding, and the KV cache is on. Outputs come back in input order. The ``n`` samples of a prompt
share one prefill (its KV cache is copied ``n`` times). On CPU, decode steps use
:mod:`cai.backends.hf_attention` (SDPA's CPU kernel is slow for one query token). On a CPU the default dtype
is bfloat16 only where the CPU has bf16 instructions (AMX / AVX512-BF16) and a measured bf16 matmul
beats float32 (:mod:`cai.precision`, measured once per machine); elsewhere float32.

Reproducibility: every ``generate`` call seeds torch's RNG from ``params.seed`` inside
``torch.random.fork_rng``, so the same inputs and seed give the same outputs and the caller's
global RNG state is left untouched. A call without a seed draws a fresh one (recorded in
``Completion.meta["seed"]``).

Prompts longer than the model's context: by default a CAIError names the conversation and the
context length. ``truncate="left"`` instead keeps the last tokens of the prompt (the end of a chat,
where the question is, matters most) so that ``max_tokens`` still fit.
"""

from __future__ import annotations

import os
import secrets
from pathlib import Path
from typing import Any, Sequence

from cai.chat import encode_prompt, encode_scoring_requests, ensure_chat_template
from cai.errors import CAIError
from cai.types import Completion, Conversation, SamplingParams, check_conversation, stream_seed

_DTYPES = {"bf16": "bfloat16", "bfloat16": "bfloat16", "fp32": "float32", "float32": "float32",
           "fp16": "float16", "float16": "float16", "half": "float16"}


def pick_device(device: str | None) -> str:
    import torch

    if device in (None, "", "auto"):
        return "cuda" if torch.cuda.is_available() else "cpu"
    return device


def pick_dtype(dtype: str, device: str):
    """``"auto"``: bf16 on CUDA (fp16 where the GPU lacks bf16); on a CPU, bf16 where it has bf16
    instructions and a measured bf16 matmul is faster than fp32 (:func:`cai.precision.cpu_prefers_bf16`,
    cached in the cai home), else fp32. An explicit dtype is used as given."""
    import torch

    if dtype == "auto":
        if device.startswith("cuda"):
            return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        from cai.precision import cpu_compute_dtype

        return getattr(torch, cpu_compute_dtype())
    if isinstance(dtype, torch.dtype):
        return dtype
    if dtype not in _DTYPES:
        raise CAIError(f"unknown dtype {dtype!r}; use auto, bfloat16, float16 or float32")
    return getattr(torch, _DTYPES[dtype])


def kv_bytes_per_token(config: Any, dtype_bytes: int) -> int:
    """KV-cache bytes one token costs: keys and values, every layer, every KV head."""
    heads = getattr(config, "num_attention_heads", 1)
    kv_heads = getattr(config, "num_key_value_heads", None) or heads
    head_dim = getattr(config, "head_dim", None) or config.hidden_size // heads
    return 2 * config.num_hidden_layers * kv_heads * head_dim * dtype_bytes


def gpu_batch_tokens(model: Any, device: str, *, share: float = 0.5, free_bytes: int | None = None) -> int:
    """Rows x width of a generation batch whose KV cache fits in ``share`` of the GPU's free memory
    (at least 32k tokens, the CPU default). The logits of the last position and activations are
    small next to the cache at these batch sizes, and the other half of free memory covers them."""
    if free_bytes is None:
        import torch

        free_bytes = torch.cuda.mem_get_info(torch.device(device))[0]
    per_token = kv_bytes_per_token(model.config, model.dtype.itemsize)
    return max(32768, int(free_bytes * share) // per_token)


class HFBackend:
    """Batched transformers generation and one-pass option scoring.

    ``batch_size`` caps the conversations per batch (times ``n`` when sampling) and
    ``max_batch_tokens`` caps rows x (longest prompt + max_tokens), which bounds KV-cache memory.
    Left unset, both follow the device: on the CPU 64 rows and 32k tokens; on a GPU, 256 rows and
    as many tokens as the KV cache can hold in half of the free GPU memory (:func:`gpu_batch_tokens`).
    A fixed 32k on an H200 cut 234 critique prompts of about 1.7k tokens into 13 sequential batches.
    """

    def __init__(self, model: str, *, dtype: str = "auto", batch_size: int | None = None,
                 max_batch_tokens: int | None = None, device: str | None = None, truncate: str = "error",
                 trust_remote_code: bool | None = None, **_: Any) -> None:
        if truncate not in ("error", "left"):
            raise CAIError(f"truncate must be 'error' or 'left', got {truncate!r}")
        if (batch_size is not None and batch_size < 1) or (max_batch_tokens is not None and max_batch_tokens < 1):
            raise CAIError("batch_size and max_batch_tokens must be >= 1")
        from cai.models import resolve

        self.name = f"hf:{model}"
        self.batch_size = batch_size
        self.max_batch_tokens = max_batch_tokens
        self.truncate = truncate
        # How the caller can keep an overlong prompt, said in its own terms: a command with --overlong
        # names that flag here (cai.overlong). The Python argument truncate='left' is not named, since
        # most callers are commands, which have no such argument.
        self.overlong_hint = ""
        self.path = resolve(model)  # first: a bad name fails before torch is imported
        self.device = pick_device(device)
        self.dtype = pick_dtype(dtype, self.device)
        if trust_remote_code is None:
            trust_remote_code = os.environ.get("CAI_TRUST_REMOTE_CODE", "").strip().lower() in ("1", "true", "yes")
        self.tokenizer, self.model = _load(model, self.path, self.dtype, self.device, trust_remote_code)
        on_gpu = self.device.startswith("cuda")
        if batch_size is None:
            self.batch_size = 256 if on_gpu else 64
        if max_batch_tokens is None:
            self.max_batch_tokens = gpu_batch_tokens(self.model, self.device) if on_gpu else 32768
        if self.device == "cpu":
            from cai.backends.hf_attention import use_decode_attention

            use_decode_attention(self.model)  # about 1.5x faster decoding on CPU; prompts still use SDPA
        ensure_chat_template(self.tokenizer)
        self.context_length = _context_length(self.model.config, self.tokenizer)
        self.eos_ids = _eos_ids(self.model, self.tokenizer)
        pad = self.tokenizer.pad_token_id
        self.pad_id = pad if pad is not None else min(self.eos_ids)
        import inspect

        self._keeps_logits = "logits_to_keep" in inspect.signature(self.model.forward).parameters
        self._stops: dict[tuple[str, ...], Any] = {}

    # -- prompts -----------------------------------------------------------------------------------
    def _prompt_ids(self, conv: Conversation, i: int, reserve: int) -> list[int]:
        check_conversation(conv, f"conversations[{i}]")
        ids = encode_prompt(self.tokenizer, conv)
        room = self.context_length - reserve
        if len(ids) <= room:
            return ids
        if self.truncate == "left" and room > 0:
            return ids[-room:]
        raise CAIError(
            f"conversation {i} is {len(ids)} tokens; with {reserve} more it exceeds {self.name}'s context of "
            f"{self.context_length} tokens; shorten it or lower max_tokens"
            + (f", or {self.overlong_hint}" if self.overlong_hint else "")
        )

    def _batches(self, lengths: Sequence[int], extra: int, rows_per_item: int) -> list[list[int]]:
        """Indices grouped into batches, longest first, within the row and token budgets."""
        order = sorted(range(len(lengths)), key=lambda i: -lengths[i])
        batches: list[list[int]] = []
        for i in order:
            if batches:
                b = batches[-1]
                rows = (len(b) + 1) * rows_per_item
                # Sorted longest first, so the batch's first item sets its padded width.
                if len(b) + 1 <= self.batch_size and rows * (lengths[b[0]] + extra) <= self.max_batch_tokens:
                    b.append(i)
                    continue
            batches.append([i])
        return batches

    def _left_pad(self, seqs: Sequence[Sequence[int]]):
        import torch

        width = max(len(s) for s in seqs)
        ids = torch.full((len(seqs), width), self.pad_id, dtype=torch.long)
        mask = torch.zeros((len(seqs), width), dtype=torch.long)
        for r, s in enumerate(seqs):
            ids[r, width - len(s):] = torch.tensor(s, dtype=torch.long)
            mask[r, width - len(s):] = 1
        return ids.to(self.device), mask.to(self.device)

    # -- generate ----------------------------------------------------------------------------------
    def generate(self, conversations: Sequence[Conversation], params: SamplingParams) -> list[Completion]:
        import torch

        convs = list(conversations)
        prompts = [self._prompt_ids(c, i, 1 if self.truncate == "error" else params.max_tokens) for i, c in enumerate(convs)]
        if not prompts:
            return []
        seed = params.seed if params.seed is not None else secrets.randbits(63)
        # One stream per conversation (cai.types.SamplingParams.conversation_seeds), so a
        # conversation's samples do not depend on the batch it is sorted into.
        streams = params.conversation_seeds(len(prompts), seed)
        metas = params.given_seeds(len(prompts), seed)
        rows = 1 if params.greedy else params.n
        results: list[list[Completion]] = [[] for _ in prompts]
        devices = [torch.device(self.device).index or 0] if self.device.startswith("cuda") else []
        with torch.random.fork_rng(devices=devices), torch.inference_mode():
            torch.manual_seed(seed)
            for batch in self._batches([len(p) for p in prompts], params.max_tokens, rows):
                outs = self._generate_batch([prompts[i] for i in batch], params, [streams[i] for i in batch],
                                            [metas[i] for i in batch])
                for i, group in zip(batch, outs):
                    results[i] = group
        return [c for group in results for c in group]

    def _generate_batch(self, prompts: list[list[int]], params: SamplingParams, streams: list[int],
                        metas: list[int]) -> list[list[Completion]]:
        import torch
        from transformers import GenerationConfig

        input_ids, mask = self._left_pad(prompts)
        width = input_ids.shape[1]
        # Never run a row past the context window (absolute-position models would crash).
        max_new = max(1, min(params.max_tokens, self.context_length - max(len(p) for p in prompts)))
        cfg: dict[str, Any] = dict(max_new_tokens=max_new, eos_token_id=sorted(self.eos_ids), pad_token_id=self.pad_id,
                                   use_cache=True, do_sample=not params.greedy)
        extra: dict[str, Any] = {}
        if not params.greedy:
            # top_k=0 turns off transformers' default top-50 filter: plain temperature/top-p, as in vLLM and OpenAI.
            cfg.update(temperature=params.temperature, top_p=params.top_p, top_k=0)
            if params.n > 1 and min(len(p) for p in prompts) > 1:
                # num_return_sequences copies each prompt n times before the prefill: best of n would
                # pay n prefills (a 1.7k-token critique prompt, 8 times). One prefill of all but the
                # last token, its cache copied n times; generate then runs the last token per row.
                extra["past_key_values"] = self._shared_prefill(input_ids[:, :-1], mask[:, :-1], params.n)
                input_ids, mask = input_ids.repeat_interleave(params.n, 0), mask.repeat_interleave(params.n, 0)
            else:
                cfg["num_return_sequences"] = params.n
        stops = tuple(s for s in params.stop if s)
        if stops:
            # transformers stops each row at its stop string; the text is cut exactly in _completion.
            extra["stopping_criteria"] = self._stop_criteria(stops)
        from cai.backends.hf_sampling import fast_multinomial

        per = 1 if params.greedy else params.n  # rows per prompt, prompt-major as generate orders them
        generators = [torch.Generator().manual_seed(stream_seed(s, j)) for s in streams for j in range(per)]
        # transformers' torch.multinomial cost more than a decode step on a CPU; each row draws from its own stream
        with fast_multinomial(generators):
            out = self.model.generate(input_ids=input_ids, attention_mask=mask,
                                      generation_config=GenerationConfig(**cfg), **extra)
        new = out[:, width:].tolist()
        groups = []
        for k, prompt in enumerate(prompts):
            rows = new[k * per:(k + 1) * per]
            comps = [self._completion(row, len(prompt), params, max_new, metas[k]) for row in rows]
            groups.append(comps * params.n if params.greedy else comps)
        return groups

    def _shared_prefill(self, ids, mask, copies: int):
        """The KV cache of ``ids`` (left-padded), computed once and repeated ``copies`` times per row
        (row-major, as ``num_return_sequences`` orders its rows). Positions count from each row's
        first real token, as ``generate`` numbers them from the attention mask."""
        positions = (mask.cumsum(-1) - 1).clamp(min=0)
        kwargs = {"logits_to_keep": 1} if self._keeps_logits else {}
        cache = self.model(input_ids=ids, attention_mask=mask, position_ids=positions, use_cache=True,
                           **kwargs).past_key_values
        cache.batch_repeat_interleave(copies)
        return cache

    def _stop_criteria(self, stops: tuple[str, ...]):
        """Built once per stop tuple: the criteria precompute tables over the whole vocabulary
        (about half a second for a 49k vocabulary), and critique loops reuse the same stops."""
        from transformers import StoppingCriteriaList
        from transformers.generation.stopping_criteria import StopStringCriteria

        if stops not in self._stops:
            self._stops[stops] = StopStringCriteria(self.tokenizer, list(stops))
        return StoppingCriteriaList([self._stops[stops]])

    def _completion(self, row: list[int], prompt_len: int, params: SamplingParams, max_new: int, seed: int) -> Completion:
        end = next((j for j, t in enumerate(row) if t in self.eos_ids), None)
        if end is None:
            tokens = row
            if self.pad_id not in self.eos_ids:
                # A row stopped early by a stop string is filled with pad tokens after it.
                while tokens and tokens[-1] == self.pad_id:
                    tokens = tokens[:-1]
            finish, count = ("length" if len(tokens) >= max_new else "stop"), len(tokens)
        else:
            tokens, finish, count = row[:end], "stop", end + 1
        text = self.tokenizer.decode(tokens, skip_special_tokens=True)
        hits = [text.find(s) for s in params.stop if s and s in text]
        if hits:
            text = text[: min(hits)]
            finish, count = "stop", self._tokens_until_stop(tokens, params.stop)
        return Completion(text, prompt_len, count, finish, {"seed": seed})

    def _tokens_until_stop(self, tokens: list[int], stops: Sequence[str]) -> int:
        """The fewest leading tokens whose text contains a stop string (containment only grows)."""
        lo, hi = 1, len(tokens)
        while lo < hi:
            mid = (lo + hi) // 2
            text = self.tokenizer.decode(tokens[:mid], skip_special_tokens=True)
            if any(s and s in text for s in stops):
                hi = mid
            else:
                lo = mid + 1
        return hi

    # -- score_options -----------------------------------------------------------------------------
    def score_options(self, conversations: Sequence[Conversation], options) -> list[dict[str, float]]:
        import torch

        per, encoded = encode_scoring_requests(self.tokenizer, conversations, options, self.context_length, self.name,
                                               truncate=self.truncate == "left")
        if not per:
            return []
        scores: list[dict[str, float]] = [{} for _ in per]
        # Each conversation's cache is copied once per option in the second pass: budget for that.
        copies = max(len(opts) for opts in per)
        with torch.inference_mode():
            for batch in self._batches([len(encoded[i][0]) for i in range(len(per))], 0, copies):
                for i, values in zip(batch, self._score_batch([encoded[i] for i in batch])):
                    scores[i] = dict(zip(per[i], values))
        return scores

    def _score_batch(self, requests: list[tuple[list[int], list[list[int]]]]) -> list[list[float]]:
        """log p(option | prompt) for a batch of (prompt ids, option ids), in at most two passes.

        The prompts run once, left-padded, keeping their KV cache; the last position scores every
        option's first token. Options longer than one token then run as one row each on a copy of
        their prompt's cache, so a prompt is never recomputed per option (for " (A)" / " (B)" that
        halves the work of labelling)."""
        import torch

        ids, mask = self._left_pad([prompt for prompt, _ in requests])
        positions = (mask.cumsum(-1) - 1).clamp(min=0)
        longer = [(r, j, o) for r, (_, opts) in enumerate(requests) for j, o in enumerate(opts) if len(o) > 1]
        kwargs = {"logits_to_keep": 1} if self._keeps_logits else {}
        out = self.model(input_ids=ids, attention_mask=mask, position_ids=positions, use_cache=bool(longer), **kwargs)
        first = torch.log_softmax(out.logits[:, -1].float(), dim=-1)
        scores = [[float(first[r, o[0]]) for o in opts] for r, (_, opts) in enumerate(requests)]
        if not longer:
            return scores
        rows = torch.tensor([r for r, _, _ in longer], device=ids.device)
        cache = out.past_key_values
        cache.reorder_cache(rows)  # row k holds a copy of its prompt's cache
        # Feed each option but its last token (right-padded); position t predicts token t + 1.
        width = max(len(o) for _, _, o in longer) - 1
        feed = torch.full((len(longer), width), self.pad_id, dtype=torch.long)
        feed_mask = torch.zeros((len(longer), width), dtype=torch.long)
        for k, (_, _, o) in enumerate(longer):
            feed[k, : len(o) - 1] = torch.tensor(o[:-1], dtype=torch.long)
            feed_mask[k, : len(o) - 1] = 1
        next_pos = mask.sum(-1)[rows]
        logits = self.model(input_ids=feed.to(self.device),
                            attention_mask=torch.cat([mask[rows], feed_mask.to(self.device)], dim=1),
                            position_ids=next_pos[:, None] + torch.arange(width, device=ids.device)[None, :],
                            past_key_values=cache, use_cache=False).logits
        logp = torch.log_softmax(logits.float(), dim=-1)
        for k, (r, j, o) in enumerate(longer):
            targets = torch.tensor(o[1:], dtype=torch.long, device=logp.device)
            scores[r][j] += float(logp[k, : len(o) - 1].gather(-1, targets[:, None]).sum())
        return scores


def _load(model: str, path: str, dtype, device: str, trust_remote_code: bool = False):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from cai.quiet import no_weights_bar

    local = Path(path).exists()
    try:
        with no_weights_bar(local):  # a download from the hub keeps its bar: it can take minutes
            tokenizer = AutoTokenizer.from_pretrained(path, trust_remote_code=trust_remote_code)
            # Weights load from safetensors only: a pickled .bin can run code when it is unpickled.
            lm = AutoModelForCausalLM.from_pretrained(path, dtype=dtype, use_safetensors=True,
                                                      trust_remote_code=trust_remote_code)
    except (OSError, ValueError) as e:
        if local and not any(Path(path).glob("*.safetensors")) and any(Path(path).glob("*.bin")):
            raise CAIError(f"{path} holds only pickled .bin weights, which cai does not load (unpickling can run "
                           "code); convert them to safetensors first") from None
        if "trust_remote_code" in str(e):
            raise CAIError(f"{model!r} needs its own Python code to load; cai runs none unless asked: set "
                           "CAI_TRUST_REMOTE_CODE=1 if you trust its authors") from None
        if not local:
            raise CAIError(f"cannot load model {model!r}: not a local folder and the hub is unreachable (or has no "
                           f"such model); pass a local path or an alias from `cai models`") from e
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise CAIError(f"cannot load model {model!r} from {path}: {first}; point -m at a Hugging Face "
                       f"causal-LM folder") from e
    rows = lm.get_input_embeddings().weight.shape[0]
    if len(tokenizer) > rows:
        raise CAIError(f"the tokenizer of {model!r} has {len(tokenizer)} tokens but the model's embedding has "
                       f"{rows} rows: the tokenizer does not belong to this model; put the model's own tokenizer "
                       f"files in {path}")
    return tokenizer, lm.to(device).eval()


def _context_length(config: Any, tokenizer: Any) -> int:
    for attr in ("max_position_embeddings", "n_positions", "max_sequence_length", "seq_length"):
        value = getattr(config, attr, None)
        if isinstance(value, int) and value > 0:
            return value
    limit = getattr(tokenizer, "model_max_length", 0)
    return limit if 0 < limit < 10**7 else 2048


def _eos_ids(model: Any, tokenizer: Any) -> set[int]:
    ids: set[int] = set()
    for value in (getattr(model.generation_config, "eos_token_id", None), model.config.eos_token_id,
                  tokenizer.eos_token_id):
        if isinstance(value, int):
            ids.add(value)
        elif isinstance(value, (list, tuple)):
            ids.update(v for v in value if isinstance(v, int))
    if not ids:
        raise CAIError("the model defines no end-of-sequence token; set eos_token_id in its generation_config.json")
    return ids
