"""``cai rloo``: RL-CAI with TRL's RLOOTrainer (critic-free) and a PM or any reward callable."""

from __future__ import annotations

import argparse

EPILOG = """examples:
  cai rloo -m runs/sl -o runs/rloo --reward runs/pm --data redteam --max-steps 50
  cai rloo -m smollm2-135m -o runs/rloo --reward mypkg.rewards:brevity --data helpful -k 4 --lora --lr 1e-4
--reward takes a `cai reward` folder, module:function or judge:MODEL. Running the same command on the
same -o folder resumes it from its last checkpoint."""


def register(sub: argparse._SubParsersAction) -> None:
    from cai.config import add_stage_arguments
    from cai.train.rloo import RlooConfig

    p = sub.add_parser(
        "rloo", help="RL-CAI by REINFORCE leave-one-out (TRL RLOOTrainer): the critic-free alternative to PPO",
        description="Samples k answers per prompt from the policy, scores them with the reward, and takes a policy "
        "gradient step with each answer's reward minus the mean of the other k-1 as its advantage, plus a KL "
        "penalty to the starting policy. Writes a Hugging Face folder (every backend loads it) with cai_run.json, "
        "metrics.jsonl (reward, kl, entropy, length, clip_frac) and curves/.",
        epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_stage_arguments(p, RlooConfig, skip=("max_length",))
    p.set_defaults(func=_run)


def _run(args: argparse.Namespace) -> int:
    import sys

    from cai.config import stage_config
    from cai.train.rloo import RlooConfig, run_rloo

    config = stage_config(RlooConfig, args)
    run = run_rloo(config, show_progress=args.progress)
    if not run.get("final_metrics"):
        return 0  # another rank of a multi-process run: rank 0 reports
    m = run["final_metrics"]
    line = f"policy written to {config.output}: {m.get('global_step')} steps on {m.get('prompts')} prompts"
    if m.get("reward_first") is not None:
        line += f"; mean reward {m['reward_first']:.3f} (first log) -> {m['reward_last']:.3f} (last)"
    print(line + f". Curves: {config.output}/curves/", file=sys.stderr)
    return 0
