"""cai redteam on the real embedded model (hf backend), kept tiny: two AdvBench behaviors, the
baseline and one transform, short greedy answers. --revise is tested on the mock backend (its
critic prompts carry the constitution's worked examples, too long for a quick CPU test)."""

from __future__ import annotations

import pytest

from cai.evals.results import read_result
from cai.redteam import RedteamConfig, run_redteam
from cai.store import read_records

pytestmark = pytest.mark.integration


def test_embedded_model_red_team(smollm2_path, tmp_path):
    out = tmp_path / "rt"
    cfg = RedteamConfig(model=f"hf:{smollm2_path}", behaviors="advbench", limit=2, attacks=("none", "role-play"),
                        output=str(out), max_tokens=16)
    run_redteam(cfg)
    res = read_result(out / "results.json")
    records = read_records(out / "results.examples.jsonl")
    assert len(records) == 4 and all(r["answer"].strip() for r in records)
    assert res.model.startswith("hf:") and res.metrics["asr"].n == 4
    successes = sum(r["success"] for r in records)
    assert res.metrics["asr"].value == pytest.approx(successes / 4)
    assert all(r["messages"][-1]["content"].endswith(r["behavior"]) for r in records)
