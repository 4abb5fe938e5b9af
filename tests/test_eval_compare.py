"""Elo from synthetic comparisons with a known answer, and cai compare's table and plot files."""

from __future__ import annotations

import math

import pytest

from cai.errors import CAIError
from cai.evals.results import EvalResult, Metric, write_result


def test_bradley_terry_recovers_a_known_win_rate():
    from cai.evals.elo import ELO_SCALE, bradley_terry

    # 0 beats 1 three times in four: theta_0 - theta_1 = ln 3 (the weak prior shrinks it a hair).
    comps = [(0, 1, 1.0)] * 300 + [(0, 1, 0.0)] * 100
    t = bradley_terry(2, comps)
    assert t[0] - t[1] == pytest.approx(math.log(3), rel=1e-3)
    assert ELO_SCALE * (t[0] - t[1]) == pytest.approx(190.8, abs=0.5)
    # Soft outcomes: one comparison at p = 0.75 says the same as three wins in four.
    soft = bradley_terry(2, [(0, 1, 0.75)] * 400)
    assert soft[0] - soft[1] == pytest.approx(t[0] - t[1], rel=1e-6)


def test_elo_orders_a_known_ranking_with_intervals():
    import random

    from cai.evals.elo import elo_with_ci

    strength = [0.0, 1.0, 2.0, 3.0]  # player 3 is best
    rng = random.Random(0)
    comps, groups = [], []
    for g in range(200):
        i, j = rng.sample(range(4), 2)
        p = 1 / (1 + math.exp(-(strength[i] - strength[j])))
        comps.append((i, j, 1.0 if rng.random() < p else 0.0))
        groups.append(f"q{g // 2}")
    elo, cis = elo_with_ci(4, comps, groups, n_resamples=200, seed=0)
    assert elo == sorted(elo) and sum(elo) / 4 == pytest.approx(1000.0)
    assert all(lo <= e <= hi for e, (lo, hi) in zip(elo, cis))
    assert cis[0][1] < cis[3][0]  # the worst and the best are told apart


def test_elo_stays_finite_when_one_player_wins_everything():
    from cai.evals.elo import bradley_terry

    t = bradley_terry(3, [(0, 1, 1.0), (0, 2, 1.0), (1, 2, 1.0)] * 5)
    assert all(math.isfinite(x) for x in t) and t[0] > t[1] > t[2]
    with pytest.raises(ValueError):
        bradley_terry(2, [(0, 0, 1.0)])


def _write(tmp_path, name, task, model, metrics, **kw):
    res = EvalResult(task=task, model=model, metrics={k: Metric(v, (v - 0.05, v + 0.05), 100, True)
                                                      for k, v in metrics.items()}, **kw)
    return str(write_result(res, tmp_path / name))


def _runs(tmp_path):
    return [
        _write(tmp_path, "base_hhh.json", "hhh", "hf:runs/base", {"accuracy": 0.6, "helpful_accuracy": 0.55,
                                                                   "harmless_accuracy": 0.5}),
        _write(tmp_path, "base_harm.json", "harmlessness", "hf:runs/base", {"harmless_rate": 0.40}),
        _write(tmp_path, "rl_hhh.json", "hhh", "hf:runs/rl", {"accuracy": 0.7, "helpful_accuracy": 0.65,
                                                               "harmless_accuracy": 0.8}),
        _write(tmp_path, "rl_harm.json", "harmlessness", "hf:runs/rl", {"harmless_rate": 0.90}),
    ]


def test_compare_table_groups_files_into_runs(tmp_path):
    from cai.evals.compare import load, markdown_table

    cols = load(_runs(tmp_path), ["base", "rl"])
    assert [c.label for c in cols] == ["base", "rl"]
    md = markdown_table(cols)
    assert "| metric | base | rl |" in md
    assert "| harmlessness.harmless_rate % | 40.0 [35.0, 45.0] | 90.0 [85.0, 95.0] |" in md
    assert [c.label for c in load(_runs(tmp_path))] == ["base", "rl"]  # short names by default
    with pytest.raises(CAIError, match="2 names for 2 runs|3 names for 2 runs"):
        load(_runs(tmp_path), ["a", "b", "c"])


def test_compare_spreads_a_pairwise_result_over_its_models(tmp_path):
    from cai.evals.compare import load

    by_model = {m: {"elo": Metric(e, (e - 30, e + 30), 10, True)} for m, e in (("hf:runs/base", 950.0),
                                                                            ("hf:runs/rl", 1050.0))}
    pw = str(write_result(EvalResult("pairwise", "hf:runs/base, hf:runs/rl", {}, breakdown={"by_model": by_model}),
                          tmp_path / "pw.json"))
    cols = load(_runs(tmp_path) + [pw])
    assert len(cols) == 2 and cols[1].metrics["pairwise.elo"].value == 1050.0


def test_compare_plot_png_and_svg_and_missing_metrics(tmp_path):
    from cai.evals.compare import load, plot_tradeoff

    files = _runs(tmp_path) + [_write(tmp_path, "x.json", "truthfulqa", "hf:runs/sft", {"mc1": 0.3})]
    cols = load(files)
    outs, skipped = plot_tradeoff(cols, tmp_path / "plot" / "t.png")
    assert [o.name for o in outs] == ["t.png", "t.svg"] and all(o.stat().st_size > 1000 for o in outs)
    assert (tmp_path / "plot" / "t.png").read_bytes()[:4] == b"\x89PNG"
    assert b"<svg" in (tmp_path / "plot" / "t.svg").read_bytes()[:400]
    assert len(skipped) == 1 and skipped[0].startswith("sft: no hhh.helpful_accuracy")
    with pytest.raises(CAIError, match="--y nope.metric"):
        plot_tradeoff(cols, tmp_path / "t.png", y="nope.metric")
    only_truth = load([files[-1]])
    with pytest.raises(CAIError, match="no x metric"):
        plot_tradeoff(only_truth, tmp_path / "t.png")


def test_compare_cli(tmp_path, capsys):
    from cai.cli import main

    files = _runs(tmp_path)
    assert main(["compare", *files, "--labels", "base,rl", "--markdown", "--plot", str(tmp_path / "t.png")]) == 0
    out = capsys.readouterr()
    assert "| hhh.accuracy % | 60.0 [55.0, 65.0] | 70.0 [65.0, 75.0] |" in out.out
    assert (tmp_path / "t.svg").exists()
    bad = tmp_path / "bad.json"
    bad.write_text("{}")
    assert main(["compare", str(bad)]) == 2
    assert "not a cai eval result" in capsys.readouterr().err
    assert main(["compare", *files, "--plot", str(tmp_path / "t.pdf")]) == 2
