"""The options every trainer shares, and the checks every trainer runs before it starts.

``cai sft``, ``cai reward``, ``cai ppo``, ``cai dpo`` and ``cai rloo`` each declare a config
dataclass that extends :class:`TrainCommon`, so ``--epochs``, ``--lr`` or ``--lora`` mean the
same thing everywhere, and a ``cai run`` YAML section uses the same keys.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields
from pathlib import Path

from cai.config import option
from cai.errors import CAIError
from cai.outputs import overwrite_option


@dataclass
class TrainCommon:
    output: str | None = option(None, help="output folder: a Hugging Face model folder that every backend loads "
                                "(hf:DIR, vllm:DIR), with checkpoints and the run record inside", flags=("-o", "--output"))
    epochs: float = option(1.0, help="passes over the training data (ignored when --max-steps is set)")
    max_steps: int | None = option(None, help="stop after this many optimiser steps (overrides --epochs)")
    lr: float = option(1e-5, help="peak learning rate (LoRA runs usually want about 10x more)")
    batch_size: int = option(8, help="examples per optimiser step, per process")
    grad_accum: int = option(1, help="gradient accumulation steps: the effective batch is batch-size x this x processes")
    max_length: int = option(1024, help="token limit of one training sequence (prompt + answer); longer ones are "
                                 "truncated")
    lora: bool = option(False, help="train LoRA adapters (PEFT) instead of all weights")
    lora_r: int = option(16, help="LoRA rank")
    lora_alpha: int = option(32, help="LoRA scaling alpha")
    keep_adapter: bool = option(False, help="with --lora, save the adapter instead of merging it into the weights")
    bf16: bool | None = option(None, help="train in bf16 (default: on a GPU that supports it, and on a CPU with "
                               "AVX512-BF16/AMX whose bf16 matmul runs over 1.1x its fp32 rate, timed once per "
                               "machine and kept in $CAI_HOME/cpu_matmul.json; else fp32)")
    seed: int = option(0, help="seed for data order, initialisation and sampling")
    save_steps: int = option(50, help="save a checkpoint every N steps; a rerun resumes from the last one")
    keep_checkpoints: bool = option(False, help="keep the checkpoints once the run has finished, the last one with "
                                    "its optimiser state (default: delete them then, and write the last one without "
                                    "it; they only serve to resume, and a full-weight 135M model's, with its "
                                    "optimiser state, takes 1.6 GB)")
    logging_steps: int = option(1, help="log metrics every N steps")
    overwrite: bool = overwrite_option()

    def check_common(self) -> None:
        """Validate the shared fields; each trainer's ``__post_init__`` calls this first."""
        # NaN passes every `x <= 0` check below, and inf reached the trainer as an OverflowError traceback
        # (--epochs inf) or NaN weights (--lr inf); JSON has neither, so cai_run.json would not be valid.
        for f in fields(self):
            value = getattr(self, f.name)
            if isinstance(value, float) and not math.isfinite(value):
                raise ValueError(f"--{f.name.replace('_', '-')} must be a finite number, got {value}")
        if self.epochs <= 0:
            raise ValueError(f"epochs must be > 0, got {self.epochs}")
        if self.max_steps is not None and self.max_steps < 1:
            raise ValueError(f"max_steps must be >= 1, got {self.max_steps}")
        if not self.lr > 0:
            raise ValueError(f"lr must be > 0, got {self.lr}")
        for name in ("batch_size", "grad_accum", "max_length", "lora_r", "lora_alpha", "save_steps", "logging_steps"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name.replace('_', '-')} must be >= 1, got {getattr(self, name)}")
        if self.keep_adapter and not self.lora:
            raise ValueError("--keep-adapter needs --lora")

    def check_output_and_data(self, data: list, missing: str) -> None:
        """Before any data or model is loaded: an output folder is named and is not a file, and some
        data is given (``missing`` says how to pass it)."""
        if not self.output:
            raise CAIError("no output folder; pass -o DIR (running the same command again resumes it)")
        if Path(self.output).is_file():
            raise CAIError(f"-o {self.output} is a file; pass a folder for the trained model")
        if not data:
            raise CAIError(missing)
