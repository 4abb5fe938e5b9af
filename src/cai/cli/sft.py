"""``cai sft``: fine-tune a model on SL-CAI revisions (and helpfulness data mixed in) with TRL's SFTTrainer."""

from __future__ import annotations

import argparse

EPILOG = """examples:
  cai sft -m smollm2-135m --data sl.jsonl -o sft-model
  cai sft -m smollm2-135m --data sl.jsonl --data helpful.jsonl:0.5 -o sft-model --lora --lr 2e-4
  accelerate launch --config_file examples/accelerate/cpu-2proc.yaml -m cai sft -m smollm2-135m --data sl.jsonl -o sft-model
  cai generate -m hf:sft-model "How do I pick a lock?"
--data FILE:WEIGHT scales how much of FILE goes into the mix (0.5: a random half, 2: twice).
Running the same command on the same -o folder resumes from its last checkpoint. On a CPU, accelerate's
--num_processes 2 alone starts one process; the config file starts two (docs/training.md)."""


def register(sub: argparse._SubParsersAction) -> None:
    from cai.config import add_stage_arguments
    from cai.train.sft import SFTRunConfig

    p = sub.add_parser(
        "sft", help="supervised fine-tuning on SL-CAI revisions (TRL SFTTrainer; full or LoRA)",
        description="The supervised stage of Constitutional AI: train on the final revisions that cai critique "
        "wrote (the loss falls on the assistant's final answer only), mixed with any chat data such as the "
        "model's own answers to helpful prompts (cai generate). Writes a Hugging Face model folder that "
        "hf:DIR and vllm:DIR load, with cai_run.json, metrics.jsonl, curves/ and checkpoints/ inside.",
        epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_data_argument(p)
    add_stage_arguments(p, SFTRunConfig, skip=("data",))
    p.set_defaults(func=_run)


def add_data_argument(p: argparse.ArgumentParser) -> None:
    """``--data`` repeats and takes several files at once; all of them are used."""
    p.add_argument("--data", dest="data", action="extend", nargs="+", metavar="FILE[:WEIGHT]",
                   default=argparse.SUPPRESS,
                   help="training file (repeatable); FILE:WEIGHT scales its share (0.5: a random half, 2: twice)")


def print_summary(summary: dict) -> None:
    import sys

    from cai.train.rundir import finished_note, is_main_process

    if not is_main_process():
        return
    files = ", ".join(f"{f['path']} ({f['used']}/{f['records']})" for f in summary["files"])
    if summary.get("already_done"):
        print(finished_note(summary["output"]), file=sys.stderr)
        return
    m = summary.get("final_metrics") or {}
    resumed = f", resumed from {summary['resumed_from']}" if summary.get("resumed_from") else ""
    loss = f", final train loss {m['train_loss']:.4f}" if isinstance(m.get("train_loss"), float) else ""
    print(f"trained {m.get('global_step')} steps on {summary['examples']} examples from {files}{resumed}{loss}; "
          f"model in {summary['output']} (try: cai generate -m hf:{summary['output']} \"Hello\")", file=sys.stderr)


def _run(args: argparse.Namespace) -> int:
    from cai.config import stage_config
    from cai.train.sft import SFTRunConfig, run_sft

    config = stage_config(SFTRunConfig, args)
    print_summary(run_sft(config, show_progress=args.progress))
    return 0
