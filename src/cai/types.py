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
    """How to sample. ``n`` completions are returned per conversation, conversation-major.

    ``seed`` seeds the call: conversation i draws from a stream made from it and i. ``seeds``, one per
    conversation, give each its own stream instead, so that a conversation draws the same tokens
    whatever batch it is sent in (a resumed run's redone prompts draw what the first run would have).
    A call ``seed=s`` on one conversation draws what ``seeds=(s,)`` does.
    """

    temperature: float = 0.7
    top_p: float = 1.0
    max_tokens: int = 256
    stop: tuple[str, ...] = ()
    n: int = 1
    seed: int | None = None
    seeds: tuple[int, ...] | None = None

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
        if self.seeds is not None:
            if any(isinstance(x, bool) or not isinstance(x, int) or x < 0 for x in self.seeds):
                raise ValueError(f"seeds must be non-negative integers, got {self.seeds!r:.80}")
            object.__setattr__(self, "seeds", tuple(self.seeds))

    @property
    def greedy(self) -> bool:
        return self.temperature == 0

    def given_seeds(self, count: int, call_seed: int | None) -> list[int | None]:
        """Each of ``count`` conversations' seed as the caller gave it (what ``Completion.meta["seed"]``
        reports): its entry of ``seeds``, else ``call_seed`` (``seed``, or the one a backend drew)."""
        if self.seeds is None:
            return [call_seed] * count
        if len(self.seeds) != count:
            raise ValueError(f"seeds: {len(self.seeds)} seeds for {count} conversations; give one per conversation")
        return list(self.seeds)

    def conversation_seeds(self, count: int, call_seed: int) -> list[int]:
        """The stream each of ``count`` conversations draws from: made from its entry of ``seeds``, or
        from ``call_seed`` and the conversation's index."""
        return [stream_seed(s, 0 if self.seeds is not None else i)
                for i, s in enumerate(self.given_seeds(count, call_seed))]

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["stop"] = list(self.stop)
        if self.seeds is None:  # records written before seeds existed compare equal
            del d["seeds"]
        else:
            d["seeds"] = list(self.seeds)
        return d


def keyed_seed(seed: int, *key: object) -> int:
    """A seed made from a run's ``seed`` and a stable key (a stage's name and a prompt's id, a step
    and what it draws), 31 bits: one per prompt for :attr:`SamplingParams.seeds`, or for a
    ``random.Random`` or ``torch.Generator``. Stages name themselves in the key, so that two stages
    run with the same seed on the same prompts do not draw the same samples."""
    import hashlib

    text = ":".join(map(str, (seed, *key)))
    return int.from_bytes(hashlib.sha256(text.encode()).digest()[:4], "big") & 0x7FFFFFFF


def stream_seed(seed: int, index: int) -> int:
    """The seed of the ``index``-th stream of ``seed`` (31 bits, which every engine and API that
    takes a seed accepts)."""
    import hashlib

    digest = hashlib.sha256(f"cai-vllm/{seed}/{index}".encode()).digest()
    return int.from_bytes(digest[:4], "big") >> 1


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
