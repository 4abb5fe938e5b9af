"""Every eval's ``--bootstrap`` reaches every interval it computes (issue 17, leftover 1).

``cai eval harmlessness`` and ``over-refusal`` once recorded ``--bootstrap N`` in their provenance
and then resampled 2000 times anyway. Each case runs one eval on the mock backend with
``--bootstrap 37`` and spies on every function that resamples: each call must get 37, and the
result must record 37."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from cai.cli import main

N = 37
XSTEST = "id,type,prompt,completion,final_label\n1,a,hi,sorry I cannot,2_full_refusal\n2,a,hey,sure,1_full_compliance\n"
ANSWER = ["-m", "mock:", "--limit", "3"]

CASES = {
    "harmlessness": (["eval", "harmlessness", *ANSWER, "-o", "{d}/r.json"], "r.json"),
    "over-refusal": (["eval", "over-refusal", *ANSWER, "-o", "{d}/r.json"], "r.json"),
    "helpfulness": (["eval", "helpfulness", *ANSWER, "--baseline", "mock:", "--judge", "mock:", "--turns", "2",
                     "-o", "{d}/r.json"], "r.json"),
    "pairwise": (["eval", "pairwise", "-m", "mock:", "-m", "mock:{d}/other.yaml", "--judge", "mock:", "--limit", "3",
                  "-o", "{d}/r.json"], "r.json"),
    "hhh": (["eval", "hhh", *ANSWER, "-o", "{d}/r.json"], "r.json"),
    "truthfulqa": (["eval", "truthfulqa", *ANSWER, "-o", "{d}/r.json"], "r.json"),
    "ifeval": (["eval", "ifeval", *ANSWER, "-o", "{d}/r.json"], "r.json"),
    "grader": (["eval", "grader", "--data", "{d}/x.csv", "-o", "{d}/r.json"], "r.json"),
    "labeler": (["eval", "labeler", *ANSWER, "-o", "{d}/r.json"], "r.json"),
    "redteam": (["redteam", "-m", "mock:", "--limit", "2", "--attacks", "none,prefix-injection", "-o", "{d}/rt"],
                "rt/results.json"),
}


def _spy(monkeypatch) -> list[tuple[str, int]]:
    """Wrap every function that resamples; record (name, n_resamples) of each call."""
    import cai.evals.elo as elo
    import cai.evals.graders.agreement as agreement
    import cai.evals.labeler as labeler
    import cai.evals.metrics as metrics

    calls: list[tuple[str, int]] = []

    def wrap(module, name, default):
        real = getattr(module, name)

        def spy(*args, **kw):
            calls.append((f"{module.__name__}.{name}", kw.get("n_resamples", default)))
            return real(*args, **kw)

        monkeypatch.setattr(module, name, spy)

    # The defaults are the functions' own: a call that leaves n_resamples out records it.
    wrap(metrics, "bootstrap_ci", 2000)
    wrap(metrics, "bootstrap_ratio_ci", 2000)
    wrap(labeler, "bootstrap_ci", 2000)  # imported by name at the top of cai.evals.labeler
    wrap(elo, "elo_with_ci", 1000)
    wrap(agreement, "agreement_metrics", 2000)
    return calls


def _recorded(result: dict) -> int | None:
    prov = result.get("provenance") or {}
    return (prov.get("config") or {}).get("bootstrap", prov.get("n_resamples"))


@pytest.mark.parametrize("case", sorted(CASES))
def test_bootstrap_reaches_every_interval(case, tmp_path, monkeypatch, capsys):
    (tmp_path / "x.csv").write_text(XSTEST)
    (tmp_path / "other.yaml").write_text("generate: []\n")
    argv, result = CASES[case]
    calls = _spy(monkeypatch)
    assert main([a.replace("{d}", str(tmp_path)) for a in argv] + ["--bootstrap", str(N), "--no-progress"]) == 0, \
        capsys.readouterr().err
    assert calls, f"{case}: no interval was computed"
    wrong = sorted({c for c in calls if c[1] != N})
    assert not wrong, f"{case}: --bootstrap {N} was not used by {wrong}"
    assert _recorded(json.loads(Path(tmp_path / result).read_text())) == N


def test_bootstrap_changes_the_interval(tmp_path, capsys):
    """Not only the calls: a handful of resamples gives another interval than the default."""
    cis = []
    for n in ("3", "2000"):
        out = tmp_path / f"r{n}.json"
        assert main(["eval", "over-refusal", "-m", "mock:", "--limit", "12", "-o", str(out), "--bootstrap", n,
                     "--no-progress"]) == 0
        cis.append(json.loads(out.read_text())["metrics"]["correct_rate"]["ci"])
    assert cis[0] != cis[1]


def test_redteam_refuses_a_bootstrap_of_zero(tmp_path, capsys):
    assert main(["redteam", "-m", "mock:", "--limit", "1", "-o", str(tmp_path / "rt"), "--bootstrap", "0"]) != 0
    err = capsys.readouterr().err
    assert "--bootstrap must be at least 1" in err and "Traceback" not in err
    assert not (tmp_path / "rt").exists()
