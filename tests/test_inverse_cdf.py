"""cai.backends.inverse_cdf.draw, the search both cai samplers use: the two-level search finds the
same entry as one cumulative sum over the whole row, never a zero entry (not even for a number at
the top of [0, 1)), and reports rows it cannot draw from."""

from __future__ import annotations

from cai.backends.inverse_cdf import BLOCK, draw


def reference(probs, u):
    """The one-level search in float64: the first entry whose cumulative sum passes u * total."""
    import torch

    cdf = probs.double().cumsum(-1)
    return torch.searchsorted(cdf, u.double().reshape(-1, 1) * cdf[:, -1:], right=True).squeeze(1)


def test_the_same_entries_as_one_cumulative_sum_over_the_row():
    import torch

    g = torch.Generator().manual_seed(0)
    vocab = 3 * BLOCK + 77  # a last block the search pads
    probs = torch.rand(40, vocab, generator=g) ** 4
    probs[probs < 0.2] = 0.0  # many zeros, some whole runs of them
    probs[:, BLOCK:2 * BLOCK] = 0.0  # a whole block of zeros
    for _ in range(25):
        u = torch.rand(40, generator=g, dtype=torch.float64)
        assert torch.equal(draw(probs, u), reference(probs, u))


def test_a_number_at_the_top_never_draws_a_zero_entry():
    import torch

    probs = torch.zeros(3, 2 * BLOCK + 10)
    probs[0, 5] = 1.0  # mass only in the first block; every later entry zero
    probs[1, BLOCK + 3], probs[1, BLOCK + 4] = 1e-30, 1.0  # the last positive entry mid-block
    probs[2, :] = 1.0 / probs.shape[1]
    probs[2, -1] = 0.0
    # A block whose sum (a vectorised reduction) rounds above its cumulative sum, its last entry 0:
    # a number at the top of the block's share then lies past the cumulative sum's end.
    candidates = torch.rand(200, BLOCK, generator=torch.Generator().manual_seed(0))
    candidates[:, -1] = 0.0
    above = candidates.sum(-1) > candidates.cumsum(-1)[:, -1]
    assert bool(above.any())  # about a fifth of such rows here
    probs = torch.cat([probs, torch.zeros(1, probs.shape[1])])
    probs[3, :BLOCK] = candidates[int(above.nonzero()[0])]
    u = torch.full((4,), 1.0 - 2.0 ** -53, dtype=torch.float64)
    drawn = draw(probs, u)
    assert drawn.tolist() == [5, BLOCK + 4, probs.shape[1] - 2, BLOCK - 2]
    assert draw(probs, torch.zeros(4, dtype=torch.float64)).tolist() == [5, BLOCK + 3, 0, 0]


def test_rows_without_a_positive_finite_total():
    import torch

    u = torch.full((1,), 0.5, dtype=torch.float64)
    for bad in (torch.zeros(1, 300), torch.tensor([[0.5, float("nan")]]), torch.tensor([[1.0, float("inf")]])):
        assert draw(bad, u) is None


def test_the_last_shorter_block_never_reaches_past_the_vocabulary():
    import torch

    tail = 200
    # A last block whose sum rounds above its cumulative sum, all the row's mass in it, and a number
    # at the top: the draw is the last entry, never one past the vocabulary.
    candidates = torch.rand(400, tail, generator=torch.Generator().manual_seed(1))
    above = candidates.sum(-1) > candidates.cumsum(-1)[:, -1]
    assert bool(above.any())
    probs = torch.zeros(1, 2 * BLOCK + tail)
    probs[0, 2 * BLOCK:] = candidates[int(above.nonzero()[0])]
    drawn = draw(probs, torch.full((1,), 1.0 - 2.0 ** -53, dtype=torch.float64))
    assert drawn.tolist() == [probs.shape[1] - 1]
