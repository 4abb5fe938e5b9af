"""Best of K (``cai critique --samples K``): which of K sampled revisions a round keeps.

Rejection-sampling fine-tuning keeps the best of several samples by some score. Tried on the
embedded model, only 8-17% of single revisions of harmful requests refuse; sampling K and keeping
one that does raises that share as 1 - (1 - q)^K would predict if samples were independent. The
selectors, each a score per candidate where higher is better and ties go to the earlier sample:

* ``filter``: 1 when the revision passes the revision filter (:mod:`cai.critique.filter`), else 0;
* ``refusal-strings``: 2 when it passes the filter and the refusal-strings grader says it refuses,
  1 when it passes the filter only, 0 otherwise;
* any reward spec (a PM folder, ``module:function``): the reward, with a filter failure pushing a
  candidate below every passing one.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

from cai.critique.filter import example_texts, revision_problems


class Selector:
    def __init__(self, spec: str, constitution: Any) -> None:
        self.spec = spec
        self.examples = example_texts(constitution)
        self._grader = self._reward = None
        if spec == "refusal-strings":
            from cai.evals.graders import load_grader

            self._grader = load_grader("refusal-strings")
        elif spec != "filter":
            from cai.errors import CAIError
            from cai.train.rewards import load_reward

            kinds = "filter, refusal-strings, a preference-model folder (cai reward -o DIR) or module:function"
            if ":" not in spec and not Path(spec).expanduser().is_dir():
                raise CAIError(f"--select {spec}: no such selector or folder; give {kinds}")
            try:
                self._reward = load_reward(spec)
            except CAIError as e:  # the reward loader speaks of --reward; this is --select
                raise CAIError(f"--select {spec}: {str(e).split(': ', 1)[-1]}") from None

    def _passes(self, state: Any, text: str, critique: str) -> bool:
        user = "\n".join(m["content"] for m in state.item.messages if m["role"] == "user")
        return not revision_problems(text, user_text=user, critique=critique, initial=state.initial,
                                     examples=self.examples)

    def scores(self, states: Sequence[Any], candidates: Sequence[Sequence[str]],
               critiques: Sequence[str]) -> list[list[float]]:
        passes = [[float(self._passes(s, c, ct)) for c in cands]
                  for s, cands, ct in zip(states, candidates, critiques)]
        flat_prompts = [s.item.messages for s, cands in zip(states, candidates) for _ in cands]
        flat = [c for cands in candidates for c in cands]
        if self._grader is not None:
            grades = self._grader.grade(flat_prompts, flat)
            extra = [float(g.refused) for g in grades]
        elif self._reward is not None:
            extra = [float(x) for x in self._reward(flat_prompts, flat)]
        else:
            return passes
        out, i = [], 0
        for ps in passes:
            row = []
            for ok in ps:
                # A failing candidate sits below every passing one whatever its score.
                row.append(ok * (1.0 + extra[i]) if self._grader is not None else (extra[i] if ok else extra[i] - 1e6))
                i += 1
            out.append(row)
        return out

    def pick(self, states: Sequence[Any], candidates: Sequence[Sequence[str]],
             critiques: Sequence[str]) -> list[tuple[int, list[float]]]:
        """(index of the kept candidate, every candidate's score) per state."""
        return [(max(range(len(row)), key=lambda j: (row[j], -j)), row)
                for row in self.scores(states, candidates, critiques)]
