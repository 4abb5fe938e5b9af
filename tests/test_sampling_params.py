"""cai.types.SamplingParams' per-conversation seeds: checked, recorded only when given, and each
conversation's stream made the same way whether its seed came as ``seed`` or in ``seeds``."""

from __future__ import annotations

import pytest

from cai.types import SamplingParams, keyed_seed, stream_seed


def test_seeds_are_checked_and_each_conversation_gets_its_own_stream():
    p = SamplingParams(seeds=[3, 4])
    assert p.seeds == (3, 4)
    assert p.conversation_seeds(2, 99) == [stream_seed(3, 0), stream_seed(4, 0)]  # the call's seed plays no part
    assert SamplingParams(seed=3).conversation_seeds(2, 3) == [stream_seed(3, 0), stream_seed(3, 1)]
    with pytest.raises(ValueError, match="3 seeds for 2 conversations"):
        SamplingParams(seeds=(1, 2, 3)).conversation_seeds(2, 0)
    for bad in ((-1,), ("7",), (1.5,), (True,)):
        with pytest.raises(ValueError, match="seeds must be non-negative integers"):
            SamplingParams(seeds=bad)


def test_records_written_before_seeds_existed_read_the_same():
    # Stages store SamplingParams.to_dict() and compare it on resume: without seeds it has no key for them.
    assert "seeds" not in SamplingParams(seed=1).to_dict()
    assert SamplingParams(seeds=(1, 2)).to_dict()["seeds"] == [1, 2]


def test_keyed_seeds_are_stable_31_bit_and_distinct():
    seeds = {keyed_seed(s, f"p{i}") for s in range(10) for i in range(100)}
    assert len(seeds) == 1000 and all(0 <= x < 2**31 for x in seeds)
    assert keyed_seed(0, "p1") == keyed_seed(0, "p1") != keyed_seed(1, "p1")
