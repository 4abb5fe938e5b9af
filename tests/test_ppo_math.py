"""PPO's formulas against numbers worked out by hand (the working is in each test's comments)."""

from __future__ import annotations

import math

import pytest
import torch

from cai.train import ppo_math as pm


def t(x):
    return torch.tensor(x, dtype=torch.float64)


def close(actual: torch.Tensor, expected) -> None:
    torch.testing.assert_close(actual, t(expected), rtol=0, atol=1e-6)


def test_gae_by_hand():
    # gamma 0.9, lambda 0.8 (gamma*lambda = 0.72); V after the last answer token is 0.
    # Row 0: r = [0, 0, 1], V = [0.5, 0.4, 0.3]
    #   d2 = 1 - 0.3 = 0.7                    A2 = 0.7
    #   d1 = 0 + 0.9*0.3 - 0.4 = -0.13        A1 = -0.13 + 0.72*0.7   = 0.374
    #   d0 = 0 + 0.9*0.4 - 0.5 = -0.14        A0 = -0.14 + 0.72*0.374 = 0.12928
    # Row 1: two answer tokens then padding (whose junk must be ignored): r = [0.5, 1], V = [0.2, 0.1]
    #   d1 = 1 - 0.1 = 0.9                    A1 = 0.9
    #   d0 = 0.5 + 0.9*0.1 - 0.2 = 0.39       A0 = 0.39 + 0.72*0.9 = 1.038
    rewards = t([[0.0, 0.0, 1.0], [0.5, 1.0, 9.0]])
    values = t([[0.5, 0.4, 0.3], [0.2, 0.1, 7.0]])
    mask = t([[1, 1, 1], [1, 1, 0]])
    adv, ret = pm.gae(rewards, values, mask, gamma=0.9, lam=0.8)
    close(adv, [[0.12928, 0.374, 0.7], [1.038, 0.9, 0.0]])
    close(ret, [[0.62928, 0.774, 1.0], [1.238, 1.0, 0.0]])


def test_gae_lambda_one_is_monte_carlo():
    # gamma = lambda = 1: A_t = sum of future rewards - V_t.
    adv, ret = pm.gae(t([[1.0, 2.0, 3.0]]), t([[0.5, 0.5, 0.5]]), t([[1, 1, 1]]), gamma=1.0, lam=1.0)
    close(adv, [[5.5, 4.5, 2.5]])
    close(ret, [[6.0, 5.0, 3.0]])


def test_kl_estimators_by_hand():
    # p = 0.5, q = 0.25:  k1 = log(p/q) = log 2;  r = q/p = 0.5, k3 = (r-1) - log r = -0.5 + log 2
    # p = 0.25, q = 0.5:  k1 = -log 2;            r = 2,         k3 = 1 - log 2
    logp, ref = t([math.log(0.5), math.log(0.25)]), t([math.log(0.25), math.log(0.5)])
    assert pm.kl_k1(logp, ref).tolist() == pytest.approx([math.log(2), -math.log(2)])
    assert pm.kl_k3(logp, ref).tolist() == pytest.approx([-0.5 + math.log(2), 1 - math.log(2)])


def test_kl_estimators_are_unbiased():
    # KL(p||q) for p = [.5, .3, .2], q = [.2, .3, .5]: .5 ln 2.5 + .2 ln .4 = 0.274887
    p, q = t([0.5, 0.3, 0.2]), t([0.2, 0.3, 0.5])
    x = torch.multinomial(p, 200_000, replacement=True, generator=torch.Generator().manual_seed(0))
    logp, logq = p.log()[x], q.log()[x]
    assert pm.kl_k1(logp, logq).mean().item() == pytest.approx(0.274887, abs=0.01)
    assert pm.kl_k3(logp, logq).mean().item() == pytest.approx(0.274887, abs=0.01)
    assert (pm.kl_k3(logp, logq) >= 0).all()


def test_kl_penalized_rewards_by_hand():
    # beta 0.1, k1 = logp - ref = [0.5, -1.0] on the two answer tokens; the score 2.0 lands on the
    # last answer token: [-0.1*0.5, -0.1*(-1.0) + 2.0, 0] = [-0.05, 2.1, 0].
    rewards, kl = pm.kl_penalized_rewards(t([2.0]), t([[-1.0, -2.0, -3.0]]), t([[-1.5, -1.0, 0.0]]),
                                          t([[1, 1, 0]]), beta=0.1)
    close(rewards, [[-0.05, 2.1, 0.0]])
    close(kl, [[0.5, -1.0, 0.0]])


def test_clipped_policy_loss_by_hand():
    # eps 0.2. ratio, advantage -> max(-A*r, -A*clip(r)):
    #   1.5, +1 -> max(-1.5, -1.2) = -1.2  (clipped)
    #   0.5, +1 -> max(-0.5, -0.8) = -0.5
    #   1.1, -1 -> max( 1.1,  1.1) =  1.1
    #   0.7, -1 -> max( 0.7,  0.8) =  0.8  (clipped)
    # loss = (-1.2 - 0.5 + 1.1 + 0.8) / 4 = 0.05; clip fraction 2/4; the fifth token is padding.
    # approx-KL = mean((r-1) - log r) = (0.094535 + 0.193147 + 0.004690 + 0.056675) / 4 = 0.087262
    ratio = [1.5, 0.5, 1.1, 0.7, 9.0]
    old = t([[-1.0] * 5])
    logp = old + t([[math.log(r) for r in ratio]])
    adv = t([[1.0, 1.0, -1.0, -1.0, 5.0]])
    mask = t([[1, 1, 1, 1, 0]])
    loss, clip_frac, approx_kl = pm.policy_loss(logp, old, adv, mask, clip_range=0.2)
    assert loss.item() == pytest.approx(0.05)
    assert clip_frac.item() == pytest.approx(0.5)
    assert approx_kl.item() == pytest.approx(0.087262, abs=1e-6)


def test_clipped_value_loss_by_hand():
    # eps 0.2, V_old = 0.5: V, R -> V_clip, max((V-R)^2, (V_clip-R)^2)
    #   1.0, 2.0 -> 0.7: max(1.00, 1.69) = 1.69  (clipped)
    #   0.0, 0.0 -> 0.3: max(0.00, 0.09) = 0.09  (clipped)
    #   0.5, 0.0 -> 0.5: max(0.25, 0.25) = 0.25
    # loss = 0.5 * (1.69 + 0.09 + 0.25) / 3 = 0.338333
    loss, frac = pm.value_loss(t([[1.0, 0.0, 0.5]]), t([[0.5, 0.5, 0.5]]), t([[2.0, 0.0, 0.0]]), t([[1, 1, 1]]),
                               clip_range=0.2)
    assert loss.item() == pytest.approx(0.338333, abs=1e-6)
    assert frac.item() == pytest.approx(2 / 3)


def test_adaptive_kl_controller_by_hand():
    # beta 0.1, target 6, horizon 10000.
    # KL 9 over 100 rollouts: e = clip(9/6 - 1 = 0.5, -0.2, 0.2) = 0.2; beta = 0.1 * (1 + 0.2 * 100/10000) = 0.1002
    # KL 5.4 over 1000:       e = 5.4/6 - 1 = -0.1;                   beta = 0.1002 * (1 - 0.1 * 0.1) = 0.099198
    c = pm.kl_controller(0.1, 6.0, 10_000)
    assert c.update(9.0, 100) == pytest.approx(0.1002)
    assert c.update(5.4, 1000) == pytest.approx(0.099198)
    fixed = pm.kl_controller(0.1, None)
    assert fixed.update(100.0, 1000) == 0.1
    c2 = pm.kl_controller(1.0, 6.0)
    c2.load_state_dict(c.state_dict())
    assert c2.value == c.value


def test_whiten_and_entropy_by_hand():
    # [1, 2, 3, 4]: mean 2.5, population variance 1.25; the padded 100 is ignored and stays 0.
    x, mask = t([1.0, 2.0, 3.0, 4.0, 100.0]), t([1, 1, 1, 1, 0])
    s = math.sqrt(1.25)
    assert pm.whiten(x, mask).tolist() == pytest.approx([-1.5 / s, -0.5 / s, 0.5 / s, 1.5 / s, 0.0], abs=1e-6)
    # logits [0, ln 3] -> p = [0.25, 0.75]: H = 0.25 ln 4 + 0.75 ln(4/3) = 0.562335
    h = pm.entropy_from_logits(t([[0.0, 0.0], [0.0, math.log(3)]]))
    assert h.tolist() == pytest.approx([math.log(2), 0.562335], abs=1e-6)


def test_running_moments():
    m = pm.RunningMoments()
    m.update(t([1.0, 2.0, 3.0]))
    m.update(t([4.0, 5.0]))
    assert (m.mean, m.var, m.count) == pytest.approx((3.0, 2.0, 5.0))
