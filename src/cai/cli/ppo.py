"""``cai ppo``: reinforcement learning from AI feedback (the RL phase of RL-CAI) with PPO."""

from __future__ import annotations

import argparse

EPILOG = """examples:
  cai ppo -m sl-model/ --reward pm/ --data redteam -o rl-model/ --lora --lr 1e-4 --max-steps 200
  cai ppo -m smollm2-135m --reward judge:hf:smollm2-135m -c default --data redteam -o rl/ --kl-target 6
  cai ppo -m sl-model/ --reward mypkg.rewards:politeness --data prompts.jsonl -o rl/ \\
          --ptx-data sl.jsonl --ptx-coef 0.5
Rerunning the same command on the same -o resumes from the last checkpoint. Metrics: DIR/metrics.jsonl,
TensorBoard logs in DIR/tensorboard, curves in DIR/curves/. The trained policy is DIR itself: hf:DIR."""


def register(sub: argparse._SubParsersAction) -> None:
    from cai.config import add_stage_arguments
    from cai.train.ppo import PPORunConfig

    p = sub.add_parser(
        "ppo", help="train a policy with PPO against a reward (PM, callable or constitution judge)",
        description="The RL phase of RL-CAI: PPO with a value head, GAE, the clipped policy and value losses, "
        "a per-token KL penalty to the frozen reference (fixed, or adapted to --kl-target), and optional "
        "PPO-ptx on SL-CAI data. Writes a Hugging Face model folder that every backend loads.",
        epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_stage_arguments(p, PPORunConfig)
    p.set_defaults(func=_run)


def _run(args: argparse.Namespace) -> int:
    import sys

    from cai.config import stage_config
    from cai.train.ppo import PPORunConfig, run_ppo

    config = stage_config(PPORunConfig, args)
    summary = run_ppo(config, show_progress=args.progress)
    if summary.get("already_done"):
        return 0
    final = summary["final"]
    shown = ", ".join(f"{k} {final[k]:.4g}" for k in ("reward", "kl", "length") if k in final)
    print(f"trained {summary['steps']} PPO steps" + (f" (resumed at step {summary['resumed_from']})"
          if summary["resumed_from"] else "") + f"; last step: {shown}. The policy is {summary['output']} "
          f"(use -m hf:{summary['output']}); metrics in {summary['output']}/metrics.jsonl, curves in "
          f"{summary['output']}/curves/", file=sys.stderr)
    return 0
