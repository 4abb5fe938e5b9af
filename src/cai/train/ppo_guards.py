"""The warnings a PPO run gives about itself: a KL target the controller cannot reach in the run's
length (said before the first step), and KL or answer length running away (said once each, as it
happens). Both are the usual signs of a policy hacking its reward model."""

from __future__ import annotations

import sys
from typing import Any


def check_horizon(ctl: Any, cfg: Any, total: int) -> None:
    """Ziegler et al.'s horizon (10,000 rollouts) suits runs of that size; in a run of a few hundred
    rollouts beta barely moves, so KL is held only by the starting --kl-coef (measured:
    docs/results.md, PPO against the PM: KL 8.8 nats against a target of 2, beta 0.0500 -> 0.0502)."""
    if cfg.kl_target is None or ctl.reach(cfg.batch_size, total) >= 2.0:
        return
    print(f"cai ppo: warning: with --kl-horizon {cfg.kl_horizon:g}, {total} steps of {cfg.batch_size} rollouts can "
          f"raise beta by at most {ctl.reach(cfg.batch_size, total) - 1:.1%}, so --kl-target {cfg.kl_target:g} will "
          f"hardly be enforced; pass --kl-horizon {ctl.horizon_for(cfg.batch_size, total):.0f} (beta can then grow "
          f"10x) or a larger --kl-coef", file=sys.stderr)


def warn_drift(rec: dict[str, Any], cfg: Any, first: dict[str, float], warned: set[str]) -> None:
    """Warn, once each, when KL runs away or answers grow or collapse (the signs of reward hacking)."""
    if not first:
        first.update(length=rec["length"], truncated=rec["truncated"])
    limit = cfg.kl_warn if cfg.kl_warn is not None else (2 * cfg.kl_target if cfg.kl_target else 20.0)
    if rec["kl"] > limit and "kl" not in warned:
        warned.add("kl")
        # With a target set, the controller moves beta by at most 20% x batch/horizon a step, so a short run
        # at the default horizon keeps beta where it started: say how fast beta can move, and where it is.
        if cfg.kl_target:
            step_max = 0.2 * cfg.batch_size / cfg.kl_horizon
            fix = (f"lower --kl-horizon (now {cfg.kl_horizon:g} rollouts: beta, {rec.get('kl_coef', cfg.kl_coef):.3g} "
                   f"at this step from {cfg.kl_coef:g}, can grow by at most {step_max:.1%} a step)")
        else:
            fix = "set --kl-target"
        print(f"cai ppo: warning: step {rec['step']}: KL to the reference is {rec['kl']:.2f} nats per answer, over "
              f"{limit:g}; the policy is drifting away (reward hacking?). Lower --lr, raise --kl-coef or {fix}",
              file=sys.stderr)
    grew = rec["length"] > 2 * max(first["length"], 1.0) or (rec["truncated"] >= 0.5 > first["truncated"])
    if grew and "length" not in warned:
        warned.add("length")
        print(f"cai ppo: warning: step {rec['step']}: answers are running long (mean {rec['length']:.0f} tokens, "
              f"{rec['truncated']:.0%} cut off at --max-tokens {cfg.max_tokens}; at the start {first['length']:.0f}"
              f" and {first['truncated']:.0%}); the reward may favour length. Check it, raise "
              "--missing-eos-penalty or lower --max-tokens", file=sys.stderr)
    # A PM that scores refusals high pays for "I can't help." to everything: answers shrink to a line
    # (measured: 42 -> 11 tokens in 40 steps, docs/results.md).
    if rec["length"] < first["length"] / 3 and first["length"] >= 6 and "short" not in warned:
        warned.add("short")
        print(f"cai ppo: warning: step {rec['step']}: answers are collapsing (mean {rec['length']:.0f} tokens, "
              f"{first['length']:.0f} at the start); the reward may favour short answers such as refusals. Read "
              "a few of its answers (`cai generate -m` on a checkpoint), raise --kl-coef or lower --lr", file=sys.stderr)
