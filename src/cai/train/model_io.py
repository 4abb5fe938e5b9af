"""What SFT and DPO share around TRL's trainers: the base model and its precision, the LoRA config,
the Trainer arguments every cai trainer sets the same way, the final Hugging Face folder, and the
run itself (:func:`run_trl`: refuse another run, resume a killed one, train, write the record)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from cai.errors import CAIError


def model_path(spec: str) -> str:
    """A local folder (or hub id) for a model argument: an alias, ``hf:PATH``, ``vllm:PATH`` or a folder."""
    from cai.models import resolve

    for prefix in ("hf:", "vllm:"):
        if spec.startswith(prefix):
            spec = spec[len(prefix):]
    if spec.startswith(("openai:", "mock:")):
        raise CAIError(f"-m {spec}: training needs local weights; pass an alias, hf:PATH or a model folder")
    path = resolve(spec)
    check_not_adapter(path, spec)
    return path


def check_not_adapter(path: str, spec: str) -> None:
    """A --keep-adapter folder loads for generation, but as a base to train it came up frozen (PEFT
    marks a loaded adapter as not trainable) and the trainer died on a loss without a gradient."""
    folder = Path(path).expanduser()
    if (folder / "adapter_config.json").is_file() and not (folder / "config.json").is_file():
        raise CAIError(f"-m {spec}: the folder holds a LoRA adapter (written with --keep-adapter), not a model to "
                       "train on; train from its base model, or rerun the run that wrote it without --keep-adapter "
                       "to get a merged model folder")


def use_bf16(flag: bool | None, device: str | None = None) -> bool:
    """``--bf16/--no-bf16`` when given; by default bf16 where the GPU supports it, and on a CPU where it has
    bf16 instructions (AMX / AVX512-BF16) and a measured bf16 matmul beats fp32
    (:func:`cai.precision.cpu_prefers_bf16`, measured once per machine and cached in the cai home; the same
    choice as the hf backend's). Flags alone mislead: on an AVX512-BF16 Xeon without AMX, SFT in bf16
    reached 0.73x the tokens/s of fp32. ``device`` is where the work runs (default: the GPU if there is
    one), so that work kept on the CPU of a GPU machine takes the CPU's rule."""
    if flag is not None:
        return flag
    import torch

    if torch.cuda.is_available() if device is None else str(device).startswith("cuda"):
        return torch.cuda.is_bf16_supported()
    from cai.precision import cpu_prefers_bf16, home_cache

    return cpu_prefers_bf16(home_cache())


def stored_dtype(path: str) -> str | None:
    """The dtype the base checkpoint was saved in, so the trained folder is saved the same way."""
    try:
        cfg = json.loads((Path(path) / "config.json").read_text())
    except (OSError, json.JSONDecodeError):
        return None
    return cfg.get("dtype") or cfg.get("torch_dtype")


def load_tokenizer(path: str):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(path)
    if not getattr(tok, "chat_template", None):
        raise CAIError(f"{path}: the tokenizer has no chat template; cai trains chat models (pass an instruct model)")
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    return tok


def load_model(path: str):
    """Full-precision master weights; bf16 training runs under autocast."""
    import torch
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32)


def lora_config(config: Any):
    if not config.lora:
        return None
    from peft import LoraConfig

    return LoraConfig(r=config.lora_r, lora_alpha=config.lora_alpha, lora_dropout=0.0, target_modules="all-linear",
                      task_type="CAUSAL_LM")


def trainer_args(config: Any, run_dir: Any, *, show_progress: bool | None) -> dict[str, Any]:
    """TrainingArguments fields every cai trainer sets from :class:`cai.train.common.TrainCommon`."""
    import torch

    from cai.progress import bars_wanted

    show_progress = bars_wanted(show_progress)
    return dict(
        use_cpu=not torch.cuda.is_available(),
        output_dir=str(run_dir.checkpoints),
        num_train_epochs=config.epochs,
        max_steps=config.max_steps or -1,
        learning_rate=config.lr,
        per_device_train_batch_size=config.batch_size,
        gradient_accumulation_steps=config.grad_accum,
        max_length=config.max_length,
        bf16=use_bf16(config.bf16),
        seed=config.seed,
        data_seed=config.seed,
        save_strategy="steps",
        save_steps=config.save_steps,
        # One complete checkpoint is enough to resume; transformers deletes the older one only after the
        # newer one is fully written.
        save_total_limit=1,
        logging_steps=config.logging_steps,
        report_to="none",
        disable_tqdm=not show_progress,
        dataloader_num_workers=0,
        gradient_checkpointing=False,
        # Every parameter gets a gradient in a causal LM; the search for unused ones costs a graph walk per step.
        ddp_find_unused_parameters=False,
    )


def save_final(trainer: Any, config: Any, out: Path, base_path: str) -> None:
    """The trained weights as a Hugging Face folder in ``out``: LoRA merged unless --keep-adapter,
    in the dtype the base checkpoint was stored in, with the tokenizer and its chat template.

    Under FSDP or DeepSpeed the weights are sharded across processes, so ``Trainer.save_model``
    gathers them (every process must call it); a LoRA adapter saved that way is then merged into a
    fresh copy of the base on the main process."""
    import shutil

    import torch

    acc = trainer.accelerator
    sharded = bool(getattr(trainer, "is_fsdp_enabled", False) or getattr(trainer, "is_deepspeed_enabled", False))
    merge = config.lora and not config.keep_adapter
    dtype = stored_dtype(base_path)
    cast = getattr(torch, dtype) if dtype in ("bfloat16", "float16") else None
    acc.wait_for_everyone()
    if sharded:
        target = out / "adapter" if merge else out
        trainer.save_model(str(target))
        acc.wait_for_everyone()
        if merge and acc.is_main_process:
            from peft import PeftModel

            model = PeftModel.from_pretrained(load_model(base_path), str(target)).merge_and_unload()
            (model.to(cast) if cast else model).save_pretrained(out, safe_serialization=True)
            shutil.rmtree(target, ignore_errors=True)
    elif acc.is_main_process:
        model = acc.unwrap_model(trainer.model)
        if merge:
            model = model.merge_and_unload()
        (model.to(cast) if cast else model).save_pretrained(out, safe_serialization=True)
    if acc.is_main_process:
        trainer.processing_class.save_pretrained(out)
        anchor_adapter_base(out)
    acc.wait_for_everyone()


def anchor_adapter_base(out: Path) -> None:
    """A --keep-adapter folder names its base model as -m was given; a relative folder (-m ./base)
    then loaded only from the same working directory, and from any other was looked up on the hub."""
    f = Path(out) / "adapter_config.json"
    if not f.is_file():
        return
    cfg = json.loads(f.read_text())
    base = Path(str(cfg.get("base_model_name_or_path") or "")).expanduser()
    if str(base) != "." and not base.is_absolute() and base.exists():
        cfg["base_model_name_or_path"] = str(base.resolve())
        f.write_text(json.dumps(cfg, indent=2, sort_keys=True) + "\n")


def final_metrics(train_output: Any, trainer: Any) -> dict[str, Any]:
    m = {k: v for k, v in (train_output.metrics or {}).items() if isinstance(v, (int, float))}
    m["global_step"] = trainer.state.global_step
    return m


def shared_dataset(examples: list[dict[str, Any]], args: Any, run_dir: Any, *, name: str = "dataset"):
    """The examples as an on-disk dataset under DIR/checkpoints/, so every process of a multi-process
    run shares one set of cache files (TRL's tokenising and reference log-prob caches are written by
    the main process and read by the others; an in-memory dataset gives each process its own)."""
    from datasets import Dataset, load_from_disk

    path = run_dir.checkpoints / name
    with args.main_process_first(desc="writing the training set"):
        if args.process_index == 0:
            Dataset.from_list(examples).save_to_disk(str(path))
        return load_from_disk(str(path))


def drop_unfit(examples: list[dict[str, Any]], tok: Any, max_length: int, *,
               held_out: bool = False) -> list[dict[str, Any]]:
    """The examples whose prompt leaves room for an answer token within ``max_length``. TRL's SFT and DPO
    trainers drop the others without a word after cutting them to length, so a run said it trained on
    6 examples when it used 3, and with none left failed on "num_samples=0" or "torch.cat(): expected a
    non-empty list of Tensors". ``held_out``: the examples are ``--eval-split``'s, which TRL drops alike
    (with none left, the first evaluation failed after the training it follows). ``tok``: the
    model's tokenizer (:func:`load_tokenizer`)."""
    lengths = [len(tok.apply_chat_template(ex["prompt"], add_generation_prompt=True, tokenize=True,
                                           return_dict=True)["input_ids"]) for ex in examples]
    kept = [ex for ex, n in zip(examples, lengths) if n < max_length]
    held, done, use, other = (("held-out ", "measured", "measure them", " (or drop --eval-split)") if held_out
                              else ("", "trained", "train on them", ""))
    if not kept:
        raise CAIError(f"every {held}prompt fills --max-length {max_length} tokens on its own (the shortest has "
                       f"{min(lengths)}), so no answer token would be {done}; pass a --max-length above "
                       f"{min(lengths)} or shorten the prompts{other}")
    if len(kept) < len(examples):
        import sys

        print(f"cai: note: left out {len(examples) - len(kept)} of {len(examples)} {held}examples whose prompt fills "
              f"--max-length {max_length} tokens on its own (the longest has {max(lengths)}); raise --max-length "
              f"to {use}", file=sys.stderr)
    return kept


def run_trl(command: str, config: Any, examples: list[dict[str, Any]], files: list[Any], base_path: str, build: Any,
            *, summary: dict[str, Any], show_progress: bool | None, final_extra: dict[str, Any] | None = None,
            held_out: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    """Train ``build(config, examples, run_dir, base_path, show_progress=...)`` (a TRL trainer) into
    ``config.output``: refuse a folder that holds another run, resume a killed one from its last
    checkpoint, stop on a non-finite loss, then write the model folder and the run record. Returns
    ``summary`` with the final metrics (``already_done`` when the run had finished before).
    ``held_out`` examples go to ``build`` as ``eval_examples``."""
    from cai.config import to_dict
    from cai.outputs import inputs_of
    from cai.progress import library_bars
    from cai.train.guards import train_guarded
    from cai.train.rundir import RunDir
    from cai.train.saving import saving

    out = Path(config.output)
    run = RunDir(out, command=command, config=to_dict(config), data=[f.to_dict() for f in files], base_model=base_path,
                 overwrite=config.overwrite, inputs=inputs_of(config))
    state = run.check()
    if state == "done":
        return {**summary, "already_done": True, "final_metrics": run.existing().get("final_metrics")}
    tok = load_tokenizer(base_path)
    examples = drop_unfit(examples, tok, config.max_length)  # packing ("bfd") cuts examples alike
    summary = {**summary, "examples": len(examples)}
    extra = {}
    if held_out:
        extra["eval_examples"] = drop_unfit(held_out, tok, config.max_length, held_out=True)
        summary["held_out"] = len(extra["eval_examples"])
    resume = run.last_checkpoint() if state == "resume" else None
    run.start(resume)
    with library_bars(show_progress):
        trainer = build(config, examples, run, base_path, show_progress=show_progress, **extra)
        # A NaN/inf loss or weight stops at its step with a one-line error; no final model is saved.
        # A checkpoint or the model that cannot be written (a full disk) is one line too.
        with saving(run):
            result = train_guarded(trainer, resume, run.checkpoints)
        with saving(run, model_files=True):
            save_final(trainer, config, out, base_path)
    metrics = final_metrics(result, trainer)
    run.finish({**metrics, **(final_extra or {})})
    return {**summary, "resumed_from": resume, "final_metrics": metrics}
