"""The arithmetic of PPO for language models: torch only, no model.

Shapes: per-token tensors are ``[batch, T]`` over the answer tokens, right-padded, with ``mask``
1.0 on real answer tokens (the end-of-turn token included: emitting it is an action) and 0.0 on
padding. Every formula cites the paper it comes from.

References
- [PPO]   Schulman, Wolski, Dhariwal, Radford, Klimov 2017, "Proximal Policy Optimization
          Algorithms", arXiv:1707.06347.
- [GAE]   Schulman, Moritz, Levine, Jordan, Abbeel 2016, "High-Dimensional Continuous Control
          Using Generalized Advantage Estimation", arXiv:1506.02438.
- [KLA]   Schulman 2020, "Approximating KL Divergence", http://joschu.net/blog/kl-approx.html.
- [Z19]   Ziegler, Stiennon, Wu, Brown, Radford, Amodei, Christiano, Irving 2019, "Fine-Tuning
          Language Models from Human Preferences", arXiv:1909.08593.
- [O22]   Ouyang et al. 2022, "Training language models to follow instructions with human
          feedback" (InstructGPT), arXiv:2203.02155.
- [B2]    Dhariwal et al. 2017, OpenAI Baselines ``ppo2`` (the clipped value loss used with [PPO]).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

__all__ = ["masked_mean", "masked_var", "whiten", "gae", "kl_k1", "kl_k3", "kl_penalized_rewards",
           "policy_loss", "value_loss", "entropy_from_logits", "AdaptiveKLController", "FixedKLController",
           "kl_controller", "RunningMoments"]


def masked_mean(x: torch.Tensor, mask: torch.Tensor | None = None, dim: int | None = None) -> torch.Tensor:
    if mask is None:
        return x.mean() if dim is None else x.mean(dim)
    if dim is None:
        return (x * mask).sum() / mask.sum().clamp(min=1.0)
    return (x * mask).sum(dim) / mask.sum(dim).clamp(min=1.0)


def masked_var(x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
    """Population variance (divide by n) of the masked entries."""
    mean = masked_mean(x, mask)
    return masked_mean((x - mean) ** 2, mask)


def whiten(x: torch.Tensor, mask: torch.Tensor | None = None, *, shift_mean: bool = True,
           eps: float = 1e-8) -> torch.Tensor:
    """(x - mean) / sqrt(var + eps) over the masked entries; padding stays 0.

    Advantage normalisation per batch, as in the [B2] PPO implementation that [PPO] reports and
    [Z19] uses; ``shift_mean=False`` only rescales (used for rewards in [Z19]).
    """
    mean, var = masked_mean(x, mask), masked_var(x, mask)
    out = (x - mean) * torch.rsqrt(var + eps)
    if not shift_mean:
        out = out + mean
    return out * mask if mask is not None else out


def gae(rewards: torch.Tensor, values: torch.Tensor, mask: torch.Tensor, gamma: float = 1.0,
        lam: float = 0.95) -> tuple[torch.Tensor, torch.Tensor]:
    """Generalised advantage estimates and returns, [GAE] eq. (16):

        delta_t = r_t + gamma * V(s_{t+1}) - V(s_t)
        A_t     = sum_l (gamma * lam)^l * delta_{t+l}       (computed backwards: A_t = delta_t + gamma*lam*A_{t+1})
        R_t     = A_t + V(s_t)                               (the value target, [GAE] eq. (17) with lam)

    The state after an answer's last token is terminal: V = 0 there and beyond (padding).
    """
    rewards, values = rewards * mask, values * mask
    T = rewards.shape[-1]
    adv = torch.zeros_like(rewards)
    next_adv = torch.zeros_like(rewards[..., 0])
    next_value = torch.zeros_like(rewards[..., 0])
    for t in reversed(range(T)):
        delta = rewards[..., t] + gamma * next_value - values[..., t]
        next_adv = (delta + gamma * lam * next_adv) * mask[..., t]
        adv[..., t] = next_adv
        next_value = values[..., t]
    return adv, (adv + values) * mask


def kl_k1(logp: torch.Tensor, ref_logp: torch.Tensor) -> torch.Tensor:
    """k1 = log p(x) - log q(x) for x ~ p: unbiased for KL(p || q), high variance, can be negative
    per sample ([KLA]); the per-token penalty of [Z19] eq. (2) and [O22] eq. (2)."""
    return logp - ref_logp


def kl_k3(logp: torch.Tensor, ref_logp: torch.Tensor) -> torch.Tensor:
    """k3 = (r - 1) - log r with r = q(x)/p(x), x ~ p: unbiased for KL(p || q), never negative,
    lower variance than k1 ([KLA])."""
    log_r = ref_logp - logp
    return torch.expm1(log_r) - log_r


def kl_penalized_rewards(scores: torch.Tensor, logp: torch.Tensor, ref_logp: torch.Tensor, mask: torch.Tensor,
                         beta: float, estimator: str = "k1") -> tuple[torch.Tensor, torch.Tensor]:
    """Per-token rewards: -beta * KL_t at every answer token, plus the sequence score at the last one.

    [Z19] eq. (2): R(x, y) = r(x, y) - beta * log(pi(y|x) / rho(y|x)), spread over tokens as in
    [Z19]'s code and [O22] eq. (2) (the PM's score r_theta(x, y) arrives at the end of the answer).
    Returns (rewards, per-token KL estimate), both zero on padding.
    """
    kl = (kl_k1 if estimator == "k1" else kl_k3)(logp, ref_logp) * mask
    rewards = -beta * kl
    last = (mask.sum(-1).long() - 1).clamp(min=0)
    rewards = rewards.clone()
    rewards[torch.arange(rewards.shape[0]), last] += scores.to(rewards.dtype)
    return rewards * mask, kl


def policy_loss(logp: torch.Tensor, old_logp: torch.Tensor, advantages: torch.Tensor, mask: torch.Tensor,
                clip_range: float = 0.2) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The clipped surrogate objective, [PPO] eq. (7), as a loss to minimise:

        ratio_t = pi(a_t|s_t) / pi_old(a_t|s_t)
        L = -E_t[ min(ratio_t * A_t, clip(ratio_t, 1 - eps, 1 + eps) * A_t) ]

    Returns (loss, clip fraction: share of tokens where the clipped term is the one taken,
    approx-KL(pi_old || pi) by the k3 estimator of [KLA] with samples from pi_old).
    """
    log_ratio = logp - old_logp
    ratio = torch.exp(log_ratio)
    unclipped = -advantages * ratio
    clipped = -advantages * torch.clamp(ratio, 1.0 - clip_range, 1.0 + clip_range)
    loss = masked_mean(torch.maximum(unclipped, clipped), mask)
    with torch.no_grad():
        clip_frac = masked_mean((clipped > unclipped).float(), mask)
        approx_kl = masked_mean(torch.expm1(log_ratio) - log_ratio, mask)
    return loss, clip_frac, approx_kl


def value_loss(values: torch.Tensor, old_values: torch.Tensor, returns: torch.Tensor, mask: torch.Tensor,
               clip_range: float = 0.2) -> tuple[torch.Tensor, torch.Tensor]:
    """The clipped value loss of [B2] ppo2 (used with [PPO], and by [Z19]):

        V_clip = V_old + clip(V - V_old, -eps, eps)
        L_V = 1/2 * E_t[ max((V - R_t)^2, (V_clip - R_t)^2) ]

    Returns (loss, fraction of tokens where the clipped term is the larger).
    """
    v_clipped = old_values + torch.clamp(values - old_values, -clip_range, clip_range)
    l1, l2 = (values - returns) ** 2, (v_clipped - returns) ** 2
    loss = 0.5 * masked_mean(torch.maximum(l1, l2), mask)
    with torch.no_grad():
        frac = masked_mean((l2 > l1).float(), mask)
    return loss, frac


def entropy_from_logits(logits: torch.Tensor) -> torch.Tensor:
    """H = -sum_a p(a) log p(a) per position, from logits (``[..., vocab]`` -> ``[...]``)."""
    logp = torch.log_softmax(logits.float(), dim=-1)
    return -(logp.exp() * logp).sum(-1)


@dataclass
class AdaptiveKLController:
    """beta adapted so that the measured KL tracks a target, [Z19] section 2.2:

        e_t       = clip(KL_t / KL_target - 1, -0.2, 0.2)
        beta_{t+1} = beta_t * (1 + K_beta * e_t),   K_beta = n_steps / horizon

    where n_steps is the number of rollouts (episodes) the KL was measured on ([Z19] uses
    K_beta = 0.1 per 10,000 episodes as horizon).
    """

    value: float
    target: float
    horizon: float = 10_000.0

    def update(self, kl: float, n_steps: int) -> float:
        error = min(max(kl / self.target - 1.0, -0.2), 0.2)
        self.value *= 1.0 + error * n_steps / self.horizon
        return self.value

    def reach(self, n_steps: int, updates: int) -> float:
        """The largest factor beta can grow by in ``updates`` updates of ``n_steps`` rollouts each
        (every error clipped at +0.2): how far the controller can correct a drifting KL in a run."""
        return (1.0 + 0.2 * n_steps / self.horizon) ** updates

    def horizon_for(self, n_steps: int, updates: int, factor: float = 10.0) -> float:
        """The horizon at which :meth:`reach` is ``factor`` over ``updates`` updates."""
        return 0.2 * n_steps / (factor ** (1.0 / max(1, updates)) - 1.0)

    def state_dict(self) -> dict[str, float]:
        return {"value": self.value, "target": self.target, "horizon": self.horizon}

    def load_state_dict(self, state: dict[str, float]) -> None:
        self.value = float(state["value"])


@dataclass
class FixedKLController:
    """A constant beta ([Z19]'s non-adaptive runs; [O22] uses a fixed beta)."""

    value: float

    def update(self, kl: float, n_steps: int) -> float:
        return self.value

    def state_dict(self) -> dict[str, float]:
        return {"value": self.value}

    def load_state_dict(self, state: dict[str, float]) -> None:
        self.value = float(state["value"])


def kl_controller(beta: float, target: float | None, horizon: float = 10_000.0):
    return AdaptiveKLController(beta, target, horizon) if target is not None else FixedKLController(beta)


@dataclass
class RunningMoments:
    """Running mean and standard deviation of every score seen (Chan et al.'s parallel update),
    for reward normalisation as in [Z19] (which normalises the reward model's output)."""

    mean: float = 0.0
    var: float = 1.0
    count: float = 0.0

    def update(self, xs: torch.Tensor) -> None:
        xs = xs.double().flatten()
        n = xs.numel()
        if n == 0:
            return
        b_mean, b_var = xs.mean().item(), xs.var(unbiased=False).item()
        total = self.count + n
        delta = b_mean - self.mean
        m2 = self.var * self.count + b_var * n + delta ** 2 * self.count * n / total
        self.mean += delta * n / total
        self.var, self.count = m2 / total, total

    @property
    def std(self) -> float:
        return max(self.var, 1e-8) ** 0.5

    def state_dict(self) -> dict[str, float]:
        return {"mean": self.mean, "var": self.var, "count": self.count}

    def load_state_dict(self, state: dict[str, float]) -> None:
        self.mean, self.var, self.count = float(state["mean"]), float(state["var"]), float(state["count"])
