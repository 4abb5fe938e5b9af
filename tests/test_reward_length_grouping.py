"""`cai reward --group-by-length` (default on): batches of pairs of similar length. Less padding per
epoch, every pair still once per epoch, a pair's score independent of its batch-mates (so the
epoch's loss is the same sum), the order reproducible per epoch (resume skips by count), and the
flag reaching TrainingArguments from the CLI and YAML."""

from __future__ import annotations

import random
from collections import Counter
from types import SimpleNamespace

from cai.train.prefdata import record_pair

WORDS = "apple river stone cloud green paper music light table window garden ocean".split()


def _pairs(n: int = 64, seed: int = 0) -> list:
    """Answers of 1 to 90 words, the two sides of a pair close in length (as a labeller's samples of
    one prompt are); each prompt carries its index, so every pair's token ids are unique."""
    rng = random.Random(seed)
    out = []
    for i in range(n):
        words = rng.randint(1, 90)
        answer = lambda k: " ".join(rng.choice(WORDS) for _ in range(max(1, k)))  # noqa: E731
        out.append(record_pair({"prompt": f"question {i}", "chosen": answer(words),
                                "rejected": answer(words + rng.randint(-3, 3)), "p_chosen": 0.9}, f"t:{i}"))
    return out


def _trainer(tiny_llama_dir, tmp_path, name, group, pairs=None, batch_size=4, share_prompt=False):
    """Two rows a pair unless ``share_prompt`` (tests/test_shared_prompt.py checks one row a pair)."""
    from cai.train.reward import RewardTrainConfig, build_reward_trainer
    from cai.train.rundir import RunDir

    config = RewardTrainConfig(model=tiny_llama_dir, data=("unused",), output=str(tmp_path / name), batch_size=batch_size,
                               max_length=256, human_eval=(), bf16=False, seed=0, group_by_length=group,
                               share_prompt=share_prompt)
    run = RunDir(tmp_path / name, command="reward", config={}, data=[], base_model=tiny_llama_dir)
    return build_reward_trainer(config, pairs if pairs is not None else _pairs(), run, tiny_llama_dir,
                                show_progress=False)


def _epoch(trainer, epoch: int = 0) -> list[dict]:
    """The batches the trainer's own dataloader yields in one epoch."""
    loader = trainer.get_train_dataloader()
    loader.set_epoch(epoch)
    return list(loader)


def _pairs_seen(batches: list[dict]) -> list[tuple]:
    """(chosen ids, rejected ids) of every pair, in order: a batch holds the chosen rows, then the rejected."""
    seen = []
    for b in batches:
        rows = [tuple(ids[m.bool()].tolist()) for ids, m in zip(b["input_ids"], b["attention_mask"])]
        half = len(rows) // 2
        seen += list(zip(rows[:half], rows[half:]))
    return seen


def _pads(batches: list[dict]) -> int:
    return sum(int((b["attention_mask"] == 0).sum()) for b in batches)


def test_grouped_batches_pad_less_and_see_every_pair_once(tiny_llama_dir, tmp_path):
    grouped = _trainer(tiny_llama_dir, tmp_path, "grouped", True)
    plain = _trainer(tiny_llama_dir, tmp_path, "plain", False)
    data = grouped.train_dataset
    assert "length" in data.column_names  # the column survives shared_dataset and TRL's dataset preparation
    expected = Counter(zip(map(tuple, data["chosen_ids"]), map(tuple, data["rejected_ids"])))
    assert list(data["length"]) == [max(len(c), len(r)) for c, r in zip(data["chosen_ids"], data["rejected_ids"])]

    g, p = _epoch(grouped), _epoch(plain)
    # Every pair exactly once per epoch, chosen still matched with its own rejected, in both modes.
    assert Counter(_pairs_seen(g)) == expected and Counter(_pairs_seen(p)) == expected
    assert [len(b["p_chosen"]) for b in g] == [4] * 16  # the extra column reaches no batch as a tensor
    assert set(g[0]) == {"input_ids", "attention_mask", "p_chosen"}
    # Same real tokens, far fewer pads (measured here: 1,067 against 3,435 of 10k real tokens).
    assert sum(int(b["attention_mask"].sum()) for b in g) == sum(int(b["attention_mask"].sum()) for b in p)
    assert _pads(g) < 0.5 * _pads(p), (_pads(g), _pads(p))
    # Still shuffled: the grouped order is not simply sorted by length, and it changes with the epoch.
    lengths = [max(len(c), len(r)) for c, r in _pairs_seen(g)]
    assert lengths != sorted(lengths, reverse=True)
    assert _pairs_seen(_epoch(grouped, 1)) != _pairs_seen(g)


def test_grouped_order_is_a_function_of_seed_and_epoch(tiny_llama_dir, tmp_path):
    """A resumed run skips its trained batches by count, in an order drawn again after the global
    RNG has moved on: the order must depend on the seed and the epoch only."""
    import torch

    trainer = _trainer(tiny_llama_dir, tmp_path, "o", True)
    first = _pairs_seen(_epoch(trainer, 1))
    torch.manual_seed(12345)
    torch.rand(7)
    assert _pairs_seen(_epoch(trainer, 1)) == first


def test_a_pairs_score_does_not_depend_on_its_batch_mates(tiny_llama_dir, tmp_path):
    """Why grouping leaves the loss the same: the soft BT loss is a mean of per-pair terms, and each
    pair's rewards come out the same padded beside a long pair or alone (right padding, causal
    attention, the score read at the last real token). Every pair is seen once per epoch, so an
    epoch's loss at fixed weights is the same sum; only which pairs share a step changes."""
    import torch

    pairs = _pairs(8)
    by_len = sorted(pairs, key=lambda p: len(p.chosen))
    short, long = by_len[0], by_len[-1]
    trainer = _trainer(tiny_llama_dir, tmp_path, "s", True, pairs=[short, long], batch_size=2)
    rows = [trainer.train_dataset[i] for i in range(2)]
    rows.sort(key=lambda r: r["length"])
    collate, model = trainer.data_collator, trainer.model.eval()
    with torch.no_grad():
        alone = model(**{k: v for k, v in collate(rows[:1]).items() if k != "p_chosen"}).logits.squeeze(-1)
        mixed = collate(rows)
        assert int((mixed["attention_mask"] == 0).sum()) > 20  # the short pair is really padded here
        beside = model(**{k: v for k, v in mixed.items() if k != "p_chosen"}).logits.squeeze(-1)
    # rows of `beside`: chosen short, chosen long, rejected short, rejected long
    torch.testing.assert_close(beside[[0, 2]], alone, rtol=1e-4, atol=1e-5)


def test_flag_reaches_the_training_arguments(tmp_path):
    from cai.cli import build_parser
    from cai.config import build_config, stage_config
    from cai.train.reward import RewardTrainConfig, _trainer_args
    from cai.train.rundir import _NOT_IDENTITY

    run = SimpleNamespace(checkpoints=tmp_path)
    base = ["reward", "--data", "p.jsonl", "-o", str(tmp_path / "o"), "--no-bf16"]
    for argv, strategy in ((base, "group_by_length"), (base + ["--no-group-by-length"], "random"),
                           (["reward", "train", *base[1:], "--group-by-length"], "group_by_length")):
        config = stage_config(RewardTrainConfig, build_parser().parse_args(argv))
        args = _trainer_args(config, run, False)
        assert (args.train_sampling_strategy, args.length_column_name) == (strategy, "length"), argv
    yaml_config = build_config(RewardTrainConfig, {"group_by_length": False, "bf16": False})
    assert _trainer_args(yaml_config, run, False).train_sampling_strategy == "random"
    # Another batch order trains other weights, and a resume must skip the batches of the same
    # order: switching the flag is another run, as --seed is.
    assert "group_by_length" not in _NOT_IDENTITY
