"""The bounds ``cai serve`` puts on each client (kept apart from the app so that the config can
check them without importing FastAPI)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Limits:
    """What one client may ask of the server. A request over a limit gets a 400 (413 for size,
    429 when the server is full) naming the limit, instead of tying up the model."""

    max_request_bytes: int = 4 * 1024 * 1024
    max_tokens: int = 4096
    max_n: int = 16
    max_concurrency: int = 64  # requests in flight (queued or running); more get 429 + Retry-After

    def __post_init__(self) -> None:
        for name in ("max_request_bytes", "max_tokens", "max_n", "max_concurrency"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
