"""A scripted backend for tests, dry runs and demos without a model.

``mock:`` answers every prompt with a deterministic text derived from the conversation and the
seed, and scores options with deterministic pseudo log-probabilities. ``mock:SCRIPT.yaml`` (or
.json) replies by rules instead::

    generate:                     # first rule whose regex matches the last message wins
      - match: "(?i)critique"
        reply: "The answer is harmful because ..."
      - reply: "Here is a safe answer."          # no match: a catch-all
    options:
      - match: "The answer is:"
        logprobs: {" (A)": -0.2, " (B)": -1.7}

From Python, pass ``responses=`` (a list cycled in order, or a callable taking the conversation)
and ``option_logprobs=`` (a dict, or a callable taking the conversation and options). Every call
is appended to ``calls`` so tests can inspect what was asked.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
from pathlib import Path
from typing import Any, Callable, Sequence

from cai.backends import options_per_conversation
from cai.types import Completion, Conversation, SamplingParams, check_conversation

_WORDS = (
    "the a model answer careful helpful honest safe reply because people often ask about this and "
    "it depends on context so here is what I can say clearly with care"
).split()


def _digest(*parts: Any) -> int:
    h = hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).digest()
    return int.from_bytes(h[:8], "big")


class MockBackend:
    def __init__(
        self,
        script: str = "",
        *,
        responses: Sequence[str] | Callable[[Conversation], str] | None = None,
        option_logprobs: dict[str, float] | Callable[[Conversation, list[str]], dict[str, float]] | None = None,
        **_: Any,
    ) -> None:
        self.name = f"mock:{script}"
        self.calls: list[tuple[str, Any]] = []
        self._responses = responses
        self._option_logprobs = option_logprobs
        self._reply_index = 0
        self._rules: dict[str, list[dict[str, Any]]] = {"generate": [], "options": []}
        if script:
            self._rules = _load_script(script)

    # -- generate ---------------------------------------------------------------------------
    def generate(self, conversations: Sequence[Conversation], params: SamplingParams) -> list[Completion]:
        self.calls.append(("generate", [list(c) for c in conversations]))
        out = []
        seeds = params.given_seeds(len(conversations), params.seed)
        for i, (conv, seed) in enumerate(zip(conversations, seeds)):
            check_conversation(conv, f"conversations[{i}]")
            for j in range(params.n):
                text = self._reply(conv, params, j, seed)
                finish = "stop"
                words = text.split()
                if len(words) > params.max_tokens:
                    text, finish = " ".join(words[: params.max_tokens]), "length"
                for s in params.stop:
                    if s and s in text:
                        text, finish = text[: text.index(s)], "stop"
                prompt_tokens = sum(len(m["content"].split()) for m in conv)
                out.append(Completion(text, prompt_tokens, len(text.split()), finish))
        return out

    def _reply(self, conv: Conversation, params: SamplingParams, j: int, seed: int | None) -> str:
        if callable(self._responses):
            return self._responses(conv)
        if self._responses is not None:
            text = self._responses[self._reply_index % len(self._responses)]
            self._reply_index += 1
            return text
        for rule in self._rules["generate"]:
            if re.search(rule.get("match", ""), conv[-1]["content"]):
                return str(rule["reply"])
        # Deterministic text: greedy ignores the seed and sample index, sampling does not.
        key = (conv,) if params.greedy else (conv, seed, j, params.temperature)
        d = _digest(*key)
        n = 8 + d % 24
        return " ".join(_WORDS[(d >> (k % 48)) % len(_WORDS)] for k in range(n)).capitalize() + "."

    # -- score_options ------------------------------------------------------------------------
    def score_options(self, conversations: Sequence[Conversation], options) -> list[dict[str, float]]:
        per = options_per_conversation(conversations, options)
        self.calls.append(("score_options", ([list(c) for c in conversations], per)))
        out = []
        for i, (conv, opts) in enumerate(zip(conversations, per)):
            check_conversation(conv, f"conversations[{i}]")
            out.append({o: float(v) for o, v in self._scores(conv, opts).items()})
        return out

    def _scores(self, conv: Conversation, opts: list[str]) -> dict[str, float]:
        if callable(self._option_logprobs):
            return self._option_logprobs(conv, opts)
        if self._option_logprobs is not None:
            return {o: self._option_logprobs[o] for o in opts}
        for rule in self._rules["options"]:
            if re.search(rule.get("match", ""), conv[-1]["content"]):
                return {o: float(rule["logprobs"][o]) for o in opts}
        # Pseudo log-probs that depend only on the conversation and option, never on batch order.
        return {o: -0.1 - 4.0 * (_digest(conv, o) % 10_000) / 10_000 for o in opts}


def _load_script(path: str) -> dict[str, list[dict[str, Any]]]:
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"mock script {path!r} not found; write a YAML file with 'generate' and 'options' rules")
    text = p.read_text()
    if p.suffix == ".json":
        data = json.loads(text)
    else:
        import yaml

        data = yaml.safe_load(text)
    if not isinstance(data, dict):
        raise ValueError(f"{path}: a mock script is a mapping with 'generate' and/or 'options' lists")
    # Any other YAML file (a constitution, a run file) would otherwise pass as a script without rules.
    other = sorted(set(map(str, data)) - {"generate", "options"})
    if other or not data:
        found = f"it has {', '.join(repr(k) for k in other[:5])}" if other else "it is empty"
        raise ValueError(f"{path} is not a mock script ({found}); a mock script holds only 'generate' and "
                         "'options' rule lists (see cai.backends.mock), and plain mock: needs no file")
    rules = {"generate": data.get("generate") or [], "options": data.get("options") or []}
    for key, rs in rules.items():
        if not isinstance(rs, list) or not all(isinstance(r, dict) for r in rs):
            raise ValueError(f"{path}: '{key}' must be a list of rules (mappings with 'match' and "
                             f"'{'reply' if key == 'generate' else 'logprobs'}')")
    for r in rules["generate"]:
        if "reply" not in r:
            raise ValueError(f"{path}: every generate rule needs a 'reply', got {r!r}")
    for r in rules["options"]:
        if not isinstance(r.get("logprobs"), dict) or any(not math.isfinite(float(v)) for v in r["logprobs"].values()):
            raise ValueError(f"{path}: every options rule needs a 'logprobs' mapping of option -> number")
    return rules
