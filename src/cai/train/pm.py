"""A trained preference model (PM): load a ``cai reward`` folder and score answers with it.

This is the stable API that the RL trainers (through :func:`cai.train.rewards.load_reward`) and the
``pm`` grader of the evals use::

    from cai.train.pm import PreferenceModel, is_pm_folder

    pm = PreferenceModel.load("runs/pm")                 # a `cai reward` output folder
    pm.score([[{"role": "user", "content": "Hi"}]], ["Hello! How can I help?"])   # -> [0.83]

A score is the scalar the PM puts on (conversation, answer); only differences between scores of
answers to the same prompt mean anything (Bradley-Terry: P(a better than b) = sigmoid(s_a - s_b)).

Formatting is shared with training through :func:`encode`: the prompt conversation plus the
answer as one assistant turn, rendered with the model's chat template, left-truncated to
``max_length`` tokens so that the end of the answer, where the score is read, always survives.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Sequence

from cai.errors import CAIError
from cai.train.rundir import RUN_FILE
from cai.types import Conversation


def encode(tokenizer: Any, prompt: Conversation, completion: str, max_length: int | None = None) -> list[int]:
    """Token ids of ``prompt`` + ``completion`` (one assistant turn) through the chat template."""
    if not getattr(tokenizer, "chat_template", None):
        raise CAIError(f"{getattr(tokenizer, 'name_or_path', 'the model')}: its tokenizer has no chat template; "
                       "a preference model needs one (use an instruct model or add a template)")
    messages = list(prompt) + [{"role": "assistant", "content": completion}]
    ids = tokenizer.apply_chat_template(messages, tokenize=True, return_dict=True)["input_ids"]
    ids = list(ids)
    if max_length is not None and len(ids) > max_length:
        ids = ids[-max_length:]
    return ids


def score_both(pm: Any, prompts: Sequence[Conversation], first: Sequence[str],
               second: Sequence[str]) -> tuple[list[float], list[float]]:
    """Scores of two answers to each prompt: :meth:`PreferenceModel.score_pairs` (one row a pair)
    where ``pm`` has it, else ``pm.score`` on each side (any scorer with the ``score`` method)."""
    if hasattr(pm, "score_pairs"):
        return pm.score_pairs(prompts, first, second)
    return pm.score(prompts, first), pm.score(prompts, second)


def _by_length(lengths: Sequence[int], batch_size: int, score_chunk: Any) -> list:
    """``score_chunk(indices)`` on batches of up to ``batch_size`` indices in order of ``lengths``
    (similar lengths together keep padding, wasted compute, low); its results back in input order."""
    order = sorted(range(len(lengths)), key=lambda i: lengths[i])
    out: list = [None] * len(lengths)
    for start in range(0, len(order), batch_size):
        chunk = order[start:start + batch_size]
        for i, value in zip(chunk, score_chunk(chunk)):
            out[i] = value
    return out


def _config(path: Path) -> dict[str, Any] | None:
    try:
        return json.loads((path / "config.json").read_text())
    except (OSError, json.JSONDecodeError):
        return None


def is_pm_folder(path: str | Path) -> bool:
    """True when ``path`` is a folder holding a one-score sequence-classification model (a PM),
    merged or as a LoRA adapter written by ``cai reward --lora --keep-adapter``."""
    p = Path(path)
    if not p.is_dir():
        return False
    run = _run_record(p)
    if run is not None and run.get("command") == "reward":
        return True
    cfg = _config(p)
    if cfg is None:
        return False
    archs = cfg.get("architectures") or []
    one_label = len(cfg.get("id2label") or {"0": 0}) == 1 or cfg.get("num_labels") == 1
    return any(a.endswith("ForSequenceClassification") for a in archs) and one_label


def _run_record(p: Path) -> dict[str, Any] | None:
    try:
        return json.loads((p / RUN_FILE).read_text())
    except (OSError, json.JSONDecodeError):
        return None


def _cast_linear_weights(model: Any, dtype: Any) -> None:
    """Cast the weights of ``model``'s ``nn.Linear`` layers to ``dtype`` in place. Under autocast to that
    dtype every matmul casts its fp32 weight anew, batch after batch, to the same values; the norms
    and embeddings, which autocast leaves in fp32, stay fp32, so the scores do not change. The
    quickstart PM's checks on the AMX VM: 13.3 s against 14.9 s, equal scores (bench/RESULTS.md)."""
    import torch

    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, torch.nn.Linear):
                module.weight.data = module.weight.data.to(dtype)
                if module.bias is not None:
                    module.bias.data = module.bias.data.to(dtype)


class PreferenceModel:
    """A PM ready to score. Build it with :meth:`load`; call :meth:`score` (or the object itself,
    which makes it a reward callable ``reward(prompts, completions) -> list[float]``)."""

    def __init__(self, model: Any, tokenizer: Any, *, max_length: int = 1024, batch_size: int = 8,
                 path: str | None = None, bf16_autocast: bool = False) -> None:
        self.model = model
        self.tokenizer = tokenizer
        self.max_length = max_length
        self.batch_size = batch_size
        self.path = path
        self.bf16_autocast = bf16_autocast
        self.__name__ = f"pm:{Path(path).name}" if path else "pm"  # TRL logs reward callables by name

    @classmethod
    def load(cls, path: str | Path, *, device: str | None = None, dtype: str | None = None,
             batch_size: int = 8, max_length: int | None = None) -> "PreferenceModel":
        """Load a ``cai reward`` folder. ``max_length`` defaults to the one it was trained with.

        Without ``dtype`` it scores as ``cai reward`` trains: fp32 weights under bf16 autocast where
        bf16 training is chosen (its ``--bf16`` flag, else this machine's default, as
        :func:`cai.train.model_io.use_bf16` decides), else fp32. On a CPU with AMX that scores in about
        half of fp32's time (the quickstart PM's checks: 53 s fp32, 24 s autocast). Under autocast the
        linear layers' weights are cast to bf16 once at load, the values autocast would make of them
        for every batch: the same scores in 0.90x the time (:func:`_cast_linear_weights`). ``dtype``
        ("float32", "bfloat16") loads the weights in that dtype instead, with no autocast."""
        import torch
        from transformers import AutoModelForSequenceClassification, AutoTokenizer

        p = Path(str(path).removeprefix("hf:")).expanduser()
        if not is_pm_folder(p):
            raise CAIError(f"{p}: not a preference model folder (no one-score sequence-classification model "
                           "in it); train one with `cai reward -m MODEL --data prefs.jsonl -o DIR`")
        run = _run_record(p) or {}
        trained_len = (run.get("config") or {}).get("max_length")
        torch_dtype = getattr(torch, dtype) if dtype else torch.float32
        device = device or ("cuda" if torch.cuda.is_available() else "cpu")
        autocast = False
        if dtype is None:
            from cai.train.model_io import use_bf16

            flag = (run.get("config") or {}).get("bf16")
            autocast = use_bf16(flag if isinstance(flag, bool) else None, device=device)
        from cai.quiet import no_weights_bar

        adapter = (p / "adapter_config.json").is_file()
        with no_weights_bar():
            if adapter:
                from peft import AutoPeftModelForSequenceClassification

                model = AutoPeftModelForSequenceClassification.from_pretrained(str(p), num_labels=1, dtype=torch_dtype)
            else:
                model = AutoModelForSequenceClassification.from_pretrained(str(p), num_labels=1, dtype=torch_dtype)
        tokenizer = AutoTokenizer.from_pretrained(str(p))
        if tokenizer.pad_token is None:
            tokenizer.pad_token = tokenizer.eos_token
        model.config.pad_token_id = tokenizer.pad_token_id
        model.to(device).eval()
        if autocast and not adapter:  # PEFT's adapters cast their inputs to their own weights' dtype
            _cast_linear_weights(model, torch.bfloat16)
        return cls(model, tokenizer, max_length=max_length or trained_len or 1024, batch_size=batch_size, path=str(p),
                   bf16_autocast=autocast)

    def score(self, prompts: Sequence[Conversation], completions: Sequence[str]) -> list[float]:
        """One score per (prompt conversation, answer), in order; batched by ``batch_size``."""
        if len(prompts) != len(completions):
            raise ValueError(f"score: {len(prompts)} prompts but {len(completions)} completions")
        ids = [encode(self.tokenizer, p, c, self.max_length) for p, c in zip(prompts, completions)]
        return _by_length([len(x) for x in ids], self.batch_size, lambda chunk: self.score_ids([ids[i] for i in chunk]))

    def __call__(self, prompts: Sequence[Conversation], completions: Sequence[str], **_: Any) -> list[float]:
        return self.score(prompts, completions)

    def score_pairs(self, prompts: Sequence[Conversation], first: Sequence[str],
                    second: Sequence[str]) -> tuple[list[float], list[float]]:
        """The scores of two answers to each prompt, read from one row a pair that holds the prompt
        once (:mod:`cai.train.shared_prompt`, as ``cai reward`` trains): :meth:`score` of each side,
        up to float rounding, for the prompt's compute once. Rows are sorted by length and batched
        ``batch_size // 2`` pairs at a time."""
        from cai.train.shared_prompt import SharedPromptRewards, pack_pairs, packed_length, score_head

        if not len(prompts) == len(first) == len(second):
            raise ValueError(f"score_pairs: {len(prompts)} prompts, {len(first)} and {len(second)} answers")
        head = score_head(self.model)
        if head is None:
            return self.score(prompts, first), self.score(prompts, second)
        pairs = [(encode(self.tokenizer, p, a, self.max_length), encode(self.tokenizer, p, b, self.max_length))
                 for p, a, b in zip(prompts, first, second)]
        rewards = SharedPromptRewards(self.model, head)

        def score_chunk(chunk: list[int]) -> list[tuple[float, float]]:
            batch = pack_pairs([pairs[i] for i in chunk], self.tokenizer.pad_token_id)
            del batch["attention_mask"]  # pair_mask is the model's mask
            scores = self._first_logits(rewards, batch)  # the chosen side's rows, then the rejected side's
            return list(zip(scores[:len(chunk)], scores[len(chunk):]))

        both = _by_length([packed_length(*p) for p in pairs], max(1, self.batch_size // 2), score_chunk)
        return [a for a, _ in both], [b for _, b in both]

    def score_ids(self, batch: Sequence[Sequence[int]]) -> list[float]:
        """Scores of already encoded sequences (one forward pass, right-padded)."""
        import torch

        width = max(len(x) for x in batch)
        pad = self.tokenizer.pad_token_id
        input_ids = torch.tensor([list(x) + [pad] * (width - len(x)) for x in batch])
        mask = torch.tensor([[1] * len(x) + [0] * (width - len(x)) for x in batch])
        return self._first_logits(self.model, {"input_ids": input_ids, "attention_mask": mask})

    def _first_logits(self, model: Any, batch: dict[str, Any]) -> list[float]:
        """``model(**batch)``'s first logit per row: on this PM's device, without gradients, under its autocast."""
        import torch

        device = next(self.model.parameters()).device
        with torch.inference_mode(), torch.autocast(device.type, dtype=torch.bfloat16, enabled=self.bf16_autocast):
            logits = model(**{k: v.to(device) for k, v in batch.items()}, use_cache=False).logits
        return [float(v) for v in logits[:, 0].float().cpu()]
