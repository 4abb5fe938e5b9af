"""The warnings a PPO run gives about itself (cai.train.ppo_guards) and the controller arithmetic
they rest on (AdaptiveKLController.reach / horizon_for), by hand."""

from types import SimpleNamespace

import pytest

from cai.train import ppo_math as pm
from cai.train.ppo_guards import check_horizon, warn_drift


def cfg(**kw):
    base = dict(kl_target=2.0, kl_horizon=10_000.0, kl_coef=0.05, batch_size=8, kl_warn=None, max_tokens=48)
    return SimpleNamespace(**{**base, **kw})


def test_reach_and_horizon_by_hand():
    c = pm.kl_controller(0.05, 2.0, 10_000)
    # 40 updates of 8 rollouts, error clipped at 0.2: (1 + 0.2 * 8 / 10000) ** 40 = 1.0064...
    assert c.reach(8, 40) == pytest.approx(1.00016 ** 40)
    h = c.horizon_for(8, 40)  # 0.2 * 8 / (10 ** (1/40) - 1) = 1.6 / 0.05925...
    assert h == pytest.approx(1.6 / (10 ** 0.025 - 1))
    assert pm.kl_controller(0.05, 2.0, h).reach(8, 40) == pytest.approx(10.0)


def test_check_horizon_warns_only_when_the_target_cannot_be_held(capsys):
    check_horizon(pm.kl_controller(0.05, 2.0, 10_000), cfg(), 40)
    err = capsys.readouterr().err
    assert "--kl-horizon 10000" in err and "at most 0.6%" in err and "--kl-horizon 27" in err
    check_horizon(pm.kl_controller(0.05, 2.0, 27), cfg(kl_horizon=27), 40)  # beta can grow 10x: fine
    check_horizon(pm.kl_controller(0.05, None), cfg(kl_target=None), 40)  # fixed beta: nothing to enforce
    assert capsys.readouterr().err == ""


def rec(step, length, kl=0.1, truncated=0.0):
    return {"step": step, "length": length, "kl": kl, "truncated": truncated}


def test_warn_drift_collapse_once(capsys):
    first, warned = {}, set()
    warn_drift(rec(1, 42.0), cfg(), first, warned)
    warn_drift(rec(2, 20.0), cfg(), first, warned)  # half: not yet
    assert capsys.readouterr().err == ""
    warn_drift(rec(3, 11.0), cfg(), first, warned)
    warn_drift(rec(4, 9.0), cfg(), first, warned)
    err = capsys.readouterr().err
    assert err.count("collapsing") == 1 and "mean 11 tokens, 42 at the start" in err


def test_warn_drift_kl_and_length_once(capsys):
    first, warned = {}, set()
    warn_drift(rec(1, 10.0), cfg(), first, warned)
    warn_drift(rec(2, 25.0, kl=4.5), cfg(), first, warned)  # over 2 x target, and longer than 2x the start
    warn_drift(rec(3, 30.0, kl=9.0), cfg(), first, warned)
    err = capsys.readouterr().err
    assert err.count("KL to the reference is 4.50") == 1 and err.count("running long") == 1
    assert "collapsing" not in err
    # How fast beta can move, and where it is, so the user sees which knob acts in this run.
    assert "beta, 0.05 at this step from 0.05, can grow by at most 0.0% a step" in err
    first, warned = {}, set()
    warn_drift({**rec(11, 10.0, kl=4.8), "kl_coef": 0.078}, cfg(kl_horizon=32.0), first, warned)
    assert "beta, 0.078 at this step from 0.05, can grow by at most 5.0% a step" in capsys.readouterr().err
