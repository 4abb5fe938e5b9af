"""``cai reward score``: score a file's answers with a trained PM.

* On a ``cai critique`` file it scores the first answer and the answer after every revision round
  (an empty or skipped revision keeps the previous answer, as the critique engine does) and
  reports the mean PM score per round with a bootstrap 95% CI, plus the paired change from the
  first answer: whether each round makes answers more preferred (CAI paper, Figure 5).
* On a preference file it scores both sides and reports how often the PM agrees with the label.
* On a ``messages`` or ``prompt``/``completion`` file it scores the final answer.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

from cai.config import option
from cai.errors import CAIError
from cai.outputs import overwrite_option


STAGE = "reward-score"


@dataclass
class RewardScoreConfig:
    model: str | None = option(None, help="the PM folder (`cai reward` output)", flags=("-m", "--model"))
    data: str | None = option(None, help="file to score: `cai critique` output, a preference file, or "
                              "messages / prompt+completion JSONL")
    output: str | None = option(None, help="also write one JSONL record of scores per input record",
                                flags=("-o", "--output"))
    limit: int | None = option(None, help="score at most the first N records")
    batch_size: int = option(8, help="sequences per forward pass")
    seed: int = option(0, help="seed of the bootstrap CIs")
    overwrite: bool = overwrite_option()

    def __post_init__(self) -> None:
        if self.batch_size < 1:
            raise ValueError(f"--batch-size must be >= 1, got {self.batch_size}")
        if self.limit is not None and self.limit < 1:
            raise ValueError(f"--limit must be >= 1, got {self.limit}")


def round_answers(record: dict[str, Any]) -> list[str]:
    """The answer before any round, then after each round of a critique record."""
    answers = [record.get("initial") or ""]
    for step in record.get("steps") or []:
        rev = step.get("revision")
        answers.append(rev if rev and not step.get("stopped") else answers[-1])
    return answers


def _mean_ci(values: Sequence[float], seed: int) -> dict[str, Any]:
    from cai.evals.metrics import bootstrap_ci

    lo, hi = bootstrap_ci(values, seed=seed)
    return {"mean": sum(values) / len(values), "ci95": [lo, hi], "n": len(values)}


def score_critique(pm: Any, records: Sequence[dict[str, Any]], seed: int = 0) -> tuple[dict[str, Any], list[dict]]:
    per = [round_answers(r) for r in records]
    rounds = max(len(a) for a in per)
    per = [a + [a[-1]] * (rounds - len(a)) for a in per]  # an early-stopped record keeps its last answer
    prompts = [r["prompt"] for r in records for _ in range(rounds)]
    flat = pm.score(prompts, [x for a in per for x in a])
    scores = [flat[i * rounds:(i + 1) * rounds] for i in range(len(records))]
    table = []
    for k in range(rounds):
        row = {"round": k, **_mean_ci([s[k] for s in scores], seed)}
        if k:
            row["change"] = _mean_ci([s[k] - s[0] for s in scores], seed)
        table.append(row)
    rows = [{"id": r.get("id"), "scores": s} for r, s in zip(records, scores)]
    return {"kind": "critique", "rounds": table}, rows


def score_pairs(pm: Any, records: Sequence[dict[str, Any]], seed: int = 0) -> tuple[dict[str, Any], list[dict]]:
    from cai.train.pm import score_both
    from cai.train.prefdata import record_pair

    pairs = [record_pair(r, f"record {n}") for n, r in enumerate(records, 1)]
    chosen, rejected = score_both(pm, [p.prompt for p in pairs], [p.chosen for p in pairs], [p.rejected for p in pairs])
    # As `cai reward` measures its held-out pairs: a tie label (p 0.5) has no side to agree with, and equal
    # scores earn half (they counted as agreeing with the rejected answer, and ties as preferring chosen).
    credit = lambda a, b: 1.0 if a > b else 0.0 if a < b else 0.5  # noqa: E731
    agree = [credit(c, r) if p.p_chosen > 0.5 else credit(r, c)
             for p, c, r in zip(pairs, chosen, rejected) if p.p_chosen != 0.5]
    summary = {"kind": "preference", "chosen": _mean_ci(chosen, seed), "rejected": _mean_ci(rejected, seed)}
    if agree:
        summary["agreement"] = _mean_ci(agree, seed)
    rows = [{"id": rec.get("id"), "chosen": c, "rejected": r} for rec, c, r in zip(records, chosen, rejected)]
    return summary, rows


def _answered(prompt: list[Any], field: str) -> list[Any]:
    """``prompt``, if an answer can follow it: the PM scores the answer as the reply to its last turn,
    so that turn must be the user's (as in a preference pair's prompt)."""
    if not prompt or prompt[-1].get("role") != "user":
        what = "nothing" if not prompt else f"the {prompt[-1].get('role')}'s turn"
        raise ValueError(f"the answer must reply to a user turn, but {field} has {what} before it")
    return prompt


def _answer_inputs(records: Sequence[dict[str, Any]], where: str = "") -> tuple[list[Any], list[str]]:
    from cai.types import check_conversation

    prompts, answers = [], []
    for n, r in enumerate(records, 1):
        msgs = r.get("messages")
        try:  # a message without content, or a string for a message, was a traceback from the template
            if isinstance(msgs, list) and msgs and isinstance(msgs[-1], dict) and msgs[-1].get("role") == "assistant":
                check_conversation(msgs, "messages")
                prompts.append(_answered(msgs[:-1], "messages"))
                answers.append(msgs[-1]["content"])
                continue
            if "prompt" in r and "completion" in r:
                p, c = r["prompt"], r["completion"]
                prompts.append(p if isinstance(p, list) else [{"role": "user", "content": str(p)}])
                check_conversation(prompts[-1], "prompt")
                _answered(prompts[-1], "prompt")
                if isinstance(c, list):
                    check_conversation(c, "completion")
                elif not isinstance(c, str):
                    raise ValueError(f"completion must be text or a list of messages, got {c!r:.40}")
                answers.append(c[-1]["content"] if isinstance(c, list) else c)
                continue
        except ValueError as e:
            raise CAIError(f"{where}record {n}: {e}; fix or drop that record") from None
        raise CAIError(f"{where}record {n}: nothing to score; expected a critique record (initial/steps), a "
                       "preference pair, messages ending with an assistant turn, or prompt/completion")
    return prompts, answers


def check_records(records: Sequence[dict[str, Any]], where: str = "") -> None:
    """Every record has the shape the first one says the file has; checked before the PM loads.
    ``where`` (e.g. ``"FILE: "``) starts each message."""
    from cai.train.prefdata import record_pair

    first = records[0]
    for n, r in enumerate(records, 1):
        if not isinstance(r, dict):
            raise CAIError(f"{where}record {n}: not a JSON object")
    if "initial" in first and "steps" in first and "prompt" in first:
        for n, r in enumerate(records, 1):
            if "prompt" not in r or not isinstance(r.get("steps", []), list):
                raise CAIError(f"{where}record {n}: a `cai critique` record needs prompt, initial and steps, as the "
                               "first record has")
    elif "chosen" in first and "rejected" in first:
        for n, r in enumerate(records, 1):
            record_pair(r, f"{where}record {n}")
    else:
        _answer_inputs(records, where)


def score_answers(pm: Any, records: Sequence[dict[str, Any]], seed: int = 0) -> tuple[dict[str, Any], list[dict]]:
    prompts, answers = _answer_inputs(records)
    scores = pm.score(prompts, answers)
    return ({"kind": "answers", "score": _mean_ci(scores, seed)},
            [{"id": r.get("id"), "score": s} for r, s in zip(records, scores)])


def score_file(pm: Any, records: Sequence[dict[str, Any]], seed: int = 0) -> tuple[dict[str, Any], list[dict]]:
    first = records[0]
    if "initial" in first and "steps" in first and "prompt" in first:
        return score_critique(pm, records, seed)
    if "chosen" in first and "rejected" in first:
        return score_pairs(pm, records, seed)
    return score_answers(pm, records, seed)


def run_score(config: RewardScoreConfig) -> dict[str, Any]:
    from pathlib import Path

    from cai.outputs import inputs_of
    from cai.store import check_output, read_records
    from cai.train.pm import PreferenceModel

    if not config.model or not config.data:
        raise CAIError("cai reward score needs -m PM_FOLDER and --data FILE")
    if Path(config.data).is_dir():
        raise CAIError(f"--data {config.data}: is a folder, not a file; pass a JSONL file")
    if config.output:  # before the PM loads: a score file of an earlier run, or nothing yet
        check_output(config.output, stage=STAGE, overwrite=config.overwrite, inputs=inputs_of(config))
    if not Path(config.data).is_file():
        raise CAIError(f"--data {config.data}: file not found")
    records = read_records(config.data)[: config.limit]
    if not records:
        raise CAIError(f"--data {config.data}: no records in it")
    check_records(records, f"{config.data}: ")
    pm = PreferenceModel.load(config.model, batch_size=config.batch_size)
    summary, rows = score_file(pm, records, config.seed)
    summary.update(model=config.model, data=config.data, records=len(records))
    if config.output:
        import json
        import os

        from cai.provenance import provenance

        prov = provenance(models={"pm": config.model}, seed=config.seed, stage=STAGE, data=config.data)
        tmp = Path(config.output).with_name(Path(config.output).name + ".tmp")
        with open(tmp, "w") as f:
            for row in rows:
                f.write(json.dumps({**row, "provenance": prov}) + "\n")
        os.replace(tmp, config.output)
    return summary
