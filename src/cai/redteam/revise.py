"""``--revise``: red-team failures become SL-CAI training data.

Each successful attack (the attacked conversation and the harmful answer the target gave) goes
through one or more rounds of critique and revision against the ``red-team`` constitution, by the
same engine as ``cai critique``. The engine would write its own first answer; a replay policy hands
it the answer the target already gave instead, so the record's ``initial`` is the very failure that
was found. The records are a ``cai critique`` file (``cai data stats`` reads it; SFT and DPO train
on it), each with a ``redteam`` block naming its behavior, attack and category.
"""

from __future__ import annotations

import json
from collections import defaultdict
from pathlib import Path
from typing import Any, Sequence

from cai.types import Completion, Conversation, SamplingParams


def _key(conv: Conversation) -> str:
    # The engine may put the constitution's system prompt in front; the answer belongs to the rest.
    return json.dumps([m for m in conv if m["role"] != "system"], sort_keys=True, ensure_ascii=False)


class ReplayPolicy:
    """A backend whose ``generate`` returns answers given in advance, by conversation. Two items
    with the same conversation get their answers in the order given."""

    def __init__(self, name: str, pairs: Sequence[tuple[Conversation, str]]) -> None:
        self.name = name
        self._answers: dict[str, list[str]] = defaultdict(list)
        for conv, answer in pairs:
            self._answers[_key(conv)].append(answer)

    def generate(self, conversations: Sequence[Conversation], params: SamplingParams) -> list[Completion]:
        out = []
        for conv in conversations:
            queue = self._answers.get(_key(conv))
            if not queue:
                raise RuntimeError("replay policy asked for an answer it was not given; this is a bug in cai.redteam")
            out.append(Completion(queue.pop(0)))
        return out

    def score_options(self, conversations, options):  # pragma: no cover - the engine never scores with the policy
        raise RuntimeError("replay policy cannot score options")


def revise_failures(failures: Sequence[dict[str, Any]], path: str | Path, *, target: Any, critic: Any,
                    constitution: Any, rounds: int, max_tokens: int, batch_size: int,
                    seed: int, show_progress: bool | None = None, overwrite: bool = False) -> dict[str, Any]:
    """Critique and revise ``failures`` (red-team records), appending SL-CAI records to ``path``.
    Resumable: failures already in the file are skipped; with ``overwrite`` the file starts afresh."""
    from cai.critique import CritiqueConfig, critique_revise
    from cai.progress import progress
    from cai.store import RecordStore

    store = RecordStore(path, stage="critique", overwrite=overwrite)
    todo = store.todo(failures)
    config = CritiqueConfig(model=target.name, critic=critic.name, constitution=constitution.name, rounds=rounds,
                            answer_max_tokens=max_tokens, critique_max_tokens=max_tokens,
                            revision_max_tokens=max_tokens, batch_size=batch_size, seed=seed)
    written = 0
    with progress(len(failures), "revise", unit="failure", initial=len(failures) - len(todo),
                  enabled=show_progress) as bar:
        for start in range(0, len(todo), batch_size):
            batch = todo[start : start + batch_size]
            replay = ReplayPolicy(target.name, [(r["messages"], r["answer"]) for r in batch])
            records = critique_revise([{"id": r["id"], "messages": r["messages"]} for r in batch],
                                      policy=replay, critic=critic, constitution=constitution, config=config)
            for rec, r in zip(records, batch):
                rec["redteam"] = {"behavior_id": r["behavior_id"], "attack": r["attack"], "category": r["category"],
                                  "template_id": r.get("template_id"), "grade": r["grade"]}
            written += store.append(records)
            bar.update(len(batch))
    return {"output": str(path), "failures": len(failures), "written": written, "total": len(store)}
