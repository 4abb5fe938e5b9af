"""The small value types that cross every boundary: conversations, sampling parameters, completions.

A conversation is a plain list of ``{"role": ..., "content": ...}`` dicts, exactly TRL's
``messages`` format, so records flow into datasets and trainers without conversion.

Convention shared by every backend: when a conversation ends with an ``assistant`` message, that
message is an unfinished answer to be continued (no end-of-turn token is added). This is how a
multiple-choice prompt ends with "The answer is:" and how chain-of-thought is primed.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, Sequence

Message = dict[str, str]
Conversation = list[Message]

ROLES = ("system", "user", "assistant")

# No backend bounds the temperature (vLLM and transformers take any value >= 0; OpenAI's API stops
# at 2), but a chat model's next-token logits span some 10-30 nats, so dividing them by 10 already
# leaves a near-uniform draw over the vocabulary: random tokens. Anything above is a typo (70 for
# 0.7, 1e9) that would otherwise fill a dataset with noise and exit 0.
MAX_TEMPERATURE = 10.0


def check_temperature(value: float, name: str = "temperature") -> None:
    """The one temperature check every stage runs (sampling, PPO and RLOO rollouts, red-team attacker)."""
    if not 0 <= value < float("inf"):  # also refuses NaN, which would reach the records
        raise ValueError(f"{name} must be a finite number >= 0, got {value}")
    if value > MAX_TEMPERATURE:
        raise ValueError(f"{name} must be at most {MAX_TEMPERATURE:g} (above it a model samples near-random tokens), "
                         f"got {value:g}; 0.7 to 1 is usual, 0 is greedy")


def check_conversation(conversation: Sequence[Message], where: str = "conversation") -> None:
    """Raise ValueError with a precise message if ``conversation`` is not a valid chat."""
    if not isinstance(conversation, (list, tuple)) or not conversation:
        raise ValueError(f"{where}: expected a non-empty list of messages, got {conversation!r:.80}")
    for i, m in enumerate(conversation):
        if not isinstance(m, dict) or "role" not in m or "content" not in m:
            raise ValueError(f"{where}[{i}]: a message needs 'role' and 'content', got {m!r:.80}")
        if m["role"] not in ROLES:
            raise ValueError(f"{where}[{i}]: unknown role {m['role']!r}; use one of {', '.join(ROLES)}")
        if not isinstance(m["content"], str):
            raise ValueError(f"{where}[{i}]: content must be a string")


def ends_with_assistant(conversation: Sequence[Message]) -> bool:
    return bool(conversation) and conversation[-1]["role"] == "assistant"


@dataclass(frozen=True)
class SamplingParams:
    """How to sample. ``n`` completions are returned per conversation, conversation-major."""

    temperature: float = 0.7
    top_p: float = 1.0
    max_tokens: int = 256
    stop: tuple[str, ...] = ()
    n: int = 1
    seed: int | None = None

    def __post_init__(self) -> None:
        check_temperature(self.temperature)
        if not 0 < self.top_p <= 1:
            raise ValueError(f"top_p must be in (0, 1], got {self.top_p}")
        if self.max_tokens < 1:
            raise ValueError(f"max_tokens must be >= 1, got {self.max_tokens}")
        if self.n < 1:
            raise ValueError(f"n must be >= 1, got {self.n}")
        if isinstance(self.stop, str) or isinstance(self.stop, list):
            object.__setattr__(self, "stop", (self.stop,) if isinstance(self.stop, str) else tuple(self.stop))

    @property
    def greedy(self) -> bool:
        return self.temperature == 0

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["stop"] = list(self.stop)
        return d


@dataclass(frozen=True)
class Completion:
    """One generated answer. ``finish_reason`` is "stop" (end of turn or a stop string) or "length"."""

    text: str
    prompt_tokens: int = 0
    completion_tokens: int = 0
    finish_reason: str = "stop"
    meta: dict[str, Any] = field(default_factory=dict, compare=False)


def group(completions: Sequence[Completion], n: int) -> list[list[Completion]]:
    """Split the flat, conversation-major list returned for ``n`` samples into one list per conversation."""
    if n < 1 or len(completions) % n:
        raise ValueError(f"{len(completions)} completions cannot be split into groups of {n}")
    return [list(completions[i : i + n]) for i in range(0, len(completions), n)]
