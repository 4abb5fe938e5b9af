"""``openai:URL#MODEL``: any OpenAI-compatible chat server (vLLM, ``cai serve``, TGI, llama.cpp,
SGLang, Ollama, hosted APIs).

Requests run on a thread pool of ``concurrency`` workers over one pooled ``httpx.Client``. 429s,
5xx answers, timeouts and dropped connections are retried with exponential backoff and jitter
(a ``Retry-After`` header is honoured), and so is a 200 whose JSON was cut off in transit. Every
request gives up with a one-line error after ``deadline`` seconds in all (default 300, env
``CAI_OPENAI_DEADLINE``), each attempt after ``timeout`` (120, ``CAI_OPENAI_TIMEOUT``), after at
most ``max_retries`` retries (5, ``CAI_OPENAI_RETRIES``). A server that refuses the very first connection is
reported at once instead: that is a wrong URL or a server not started, not a blip.

A final assistant message is continued (cai's convention). vLLM and ``cai serve`` need to be told
so with their extension fields ``continue_final_message`` / ``add_generation_prompt``; set
``extensions=False`` for servers that reject unknown fields (hosted APIs), where the final
assistant message is sent as it is (llama.cpp and some others treat that as a prefill).

``score_options`` has two modes, picked explicitly with ``score_mode``:

* ``prompt_logprobs`` (default; vLLM's OpenAI server and ``cai serve``): for every option, one
  request whose final assistant message is the conversation's assistant prefix (if any) plus the
  option, with ``echo``, ``max_tokens=1`` and ``prompt_logprobs=0``. The server returns the
  log-prob of every prompt token; the option's score is the sum over the trailing tokens that spell
  the option. This is the exact ``log p(option | prompt)``, except that the server tokenizes the
  prompt and option together: where a token straddles the boundary (rare: options usually begin
  with a space or punctuation) that whole token is counted.
* ``top_logprobs`` (any server with OpenAI ``logprobs``): one request per conversation for one
  token with the top 20 log-probs; an option scores the log-prob of the longest listed token that
  begins it. That equals ``log p(option)`` only for single-token options, needs the options to
  differ in their first token, and needs each option's first token among the top 20. Anything else
  raises an error rather than returning a wrong number.
"""

from __future__ import annotations

import os
import random
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Callable, Sequence
from urllib.parse import urlsplit

from cai.backends import options_per_conversation
from cai.errors import BackendUnavailable, CAIError
from cai.types import Completion, Conversation, SamplingParams, check_conversation, ends_with_assistant

SCORE_MODES = ("prompt_logprobs", "top_logprobs")
RETRY_STATUS = frozenset({408, 409, 429, 500, 502, 503, 504, 520, 522, 524})
TOP_LOGPROBS = 20  # the most OpenAI's API allows


def parse_target(target: str) -> tuple[str, str | None]:
    """``"http://h:8000/v1#m"`` -> ``("http://h:8000/v1", "m")``; a bare ``host:port`` gets http:// and /v1."""
    url, _, model = target.strip().partition("#")
    if not url:
        raise ValueError("openai backend needs a URL: use openai:http://127.0.0.1:8000/v1#MODEL")
    if "://" not in url:
        url = "http://" + url
    parts = urlsplit(url)
    if not parts.netloc:
        raise ValueError(f"not a server URL: {url!r}; use openai:http://HOST:PORT/v1#MODEL")
    url = url.rstrip("/")
    if parts.path in ("", "/"):
        url += "/v1"  # every OpenAI-compatible server mounts its routes there
    return url, (model.strip() or None)


class OpenAIBackend:
    def __init__(
        self,
        target: str,
        *,
        api_key: str | None = None,
        concurrency: int = 16,
        timeout: float | None = None,
        max_retries: int | None = None,
        deadline: float | None = None,
        score_mode: str = "prompt_logprobs",
        extensions: bool = True,
        backoff: float = 0.5,
        **_: Any,
    ) -> None:
        import httpx

        if score_mode not in SCORE_MODES:
            raise ValueError(f"unknown score_mode {score_mode!r}; use one of {', '.join(SCORE_MODES)}")
        if concurrency < 1:
            raise ValueError(f"concurrency must be >= 1, got {concurrency}")
        self.base_url, self._model = parse_target(target)
        self.concurrency = int(concurrency)
        timeout = _env_number("CAI_OPENAI_TIMEOUT", 120.0) if timeout is None else float(timeout)
        self.max_retries = int(_env_number("CAI_OPENAI_RETRIES", 5) if max_retries is None else max_retries)
        # A server that accepts connections and never answers used to stall a run for 10 minutes
        # (120 s x 5 retries); every request now gives up, with a message, after ``deadline``.
        self.deadline = _env_number("CAI_OPENAI_DEADLINE", 300.0) if deadline is None else float(deadline)
        self.timeout = timeout
        if timeout <= 0 or self.deadline <= 0 or self.max_retries < 0:
            raise ValueError("timeout and deadline must be > 0 and max_retries >= 0")
        self.backoff = float(backoff)
        self.score_mode = score_mode
        self.extensions = bool(extensions)
        key = api_key if api_key is not None else os.environ.get("OPENAI_API_KEY")
        headers = {"Authorization": f"Bearer {key}"} if key else {}
        self._client = httpx.Client(
            headers=headers,
            timeout=httpx.Timeout(timeout, connect=min(10.0, timeout)),
            limits=httpx.Limits(max_connections=self.concurrency, max_keepalive_connections=self.concurrency),
        )
        self._pool = ThreadPoolExecutor(max_workers=self.concurrency, thread_name_prefix="cai-openai")
        self._lock = threading.Lock()
        self._reached = False  # once the server has answered, connection errors are retried
        self.name = f"openai:{self.base_url}#{self._model or ''}"
        if self._model is None:
            self.model  # ask the server now, so that ``name`` (used in provenance) is complete

    # -- plumbing ---------------------------------------------------------------------------
    @property
    def model(self) -> str:
        """The served model name; asked from ``GET /models`` when the spec did not give one."""
        with self._lock:
            if self._model is None:
                data = self._request("GET", "/models").get("data") or []
                if not data:
                    raise CAIError(f"{self.base_url}/models lists no model; name one: openai:{self.base_url}#MODEL")
                self._model = str(data[0]["id"])
                self.name = f"openai:{self.base_url}#{self._model}"
            return self._model

    def close(self) -> None:
        self._pool.shutdown(wait=False)
        self._client.close()

    def __enter__(self) -> "OpenAIBackend":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def _request(self, method: str, path: str, payload: dict[str, Any] | None = None) -> dict[str, Any]:
        import httpx

        url = self.base_url + path
        attempt = 0
        start = time.monotonic()
        while True:
            left = self.deadline - (time.monotonic() - start)
            per_try = httpx.Timeout(min(self.timeout, left), connect=min(10.0, self.timeout, left))
            try:
                r = self._client.request(method, url, json=payload, timeout=per_try)
            except httpx.ConnectError as e:
                if not self._reached:
                    raise BackendUnavailable(
                        f"cannot reach {url}: {_reason(e)}; start one with `cai serve -m MODEL` or check the URL"
                    ) from None
                err, retry_after = f"connection failed: {_reason(e)}", None
            except (httpx.TimeoutException, httpx.RemoteProtocolError, httpx.ReadError, httpx.WriteError) as e:
                err, retry_after = f"{type(e).__name__}: {_reason(e)}", None
            else:
                self._reached = True
                if r.status_code < 400:
                    try:
                        body = r.json()
                    except ValueError:
                        body = None
                    if isinstance(body, dict):
                        return body
                    if not r.text.lstrip().startswith("{"):
                        raise CAIError(f"{url} answered {r.status_code} without a JSON object ({r.text[:80]!r}); "
                                       "is it an OpenAI-compatible server (its URL usually ends in /v1)?")
                    err, retry_after = f"truncated JSON ({len(r.content)} bytes)", None  # cut off in transit
                else:
                    if r.status_code not in RETRY_STATUS:
                        raise CAIError(_rejection(url, r))
                    err, retry_after = f"HTTP {r.status_code}: {_error_message(r)}", r.headers.get("retry-after")
            elapsed = time.monotonic() - start
            if attempt >= self.max_retries:
                raise BackendUnavailable(f"{url} still failing after {attempt + 1} attempts in {elapsed:.0f} s "
                                         f"({err}); check the server, or raise CAI_OPENAI_RETRIES")
            delay = self._delay(attempt, retry_after)
            if elapsed + delay >= self.deadline - 0.05:
                raise BackendUnavailable(f"{url} gave no answer within the {self.deadline:g} s deadline ({attempt + 1} "
                                         f"attempts; last: {err}); check the server, or raise CAI_OPENAI_DEADLINE "
                                         "(seconds per request) and CAI_OPENAI_TIMEOUT (seconds per attempt)")
            time.sleep(delay)
            attempt += 1

    def _delay(self, attempt: int, retry_after: str | None) -> float:
        if retry_after:
            try:
                return min(60.0, max(0.0, float(retry_after)))
            except ValueError:
                pass  # an HTTP date: fall back to our own schedule
        # Full jitter keeps many clients that failed together from retrying in lockstep.
        return min(30.0, self.backoff * 2**attempt) * (0.5 + random.random() / 2)

    def _map(self, fn: Callable[[Any], Any], items: Sequence[Any]) -> list[Any]:
        return list(self._pool.map(fn, items))

    def _chat_payload(self, conversation: Conversation, **fields: Any) -> dict[str, Any]:
        payload: dict[str, Any] = {"model": self.model, "messages": [dict(m) for m in conversation], **fields}
        if ends_with_assistant(conversation) and self.extensions:
            payload.update(continue_final_message=True, add_generation_prompt=False)
        return payload

    # -- generate ---------------------------------------------------------------------------
    def generate(self, conversations: Sequence[Conversation], params: SamplingParams) -> list[Completion]:
        for i, conv in enumerate(conversations):
            check_conversation(conv, f"conversations[{i}]")
        if not conversations:
            return []
        # Greedy samples are identical, and vLLM refuses n > 1 at temperature 0: ask for one, copy it.
        n = 1 if params.greedy else params.n
        fields: dict[str, Any] = {"n": n, "temperature": params.temperature, "top_p": params.top_p,
                                  "max_tokens": params.max_tokens}
        if params.stop:
            fields["stop"] = list(params.stop)
        if n > 1 and self.extensions:
            fields["return_token_ids"] = True  # vLLM: per-choice token counts, which usage lacks
        # A conversation's own seed goes with its request as the request's seed (the server makes its
        # stream): its sample then does not depend on the batch, and equals a call seed=s on it alone.
        seeds = params.given_seeds(len(conversations), params.seed)

        def one(job: tuple[Conversation, int | None]) -> list[Completion]:
            conv, seed = job
            body = self._request("POST", "/chat/completions",
                                 self._chat_payload(conv, **{**fields, **({"seed": seed} if seed is not None else {})}))
            return _completions(body, n) * (params.n // n)

        return [c for group in self._map(one, list(zip(conversations, seeds))) for c in group]

    # -- score_options ----------------------------------------------------------------------
    def score_options(self, conversations: Sequence[Conversation], options) -> list[dict[str, float]]:
        per = options_per_conversation(conversations, options)
        for i, conv in enumerate(conversations):
            check_conversation(conv, f"conversations[{i}]")
        if not per:
            return []
        if self.score_mode == "top_logprobs":
            return self._map(lambda a: self._score_top(*a), list(zip(conversations, per)))
        jobs = [(i, conv, o) for i, (conv, opts) in enumerate(zip(conversations, per)) for o in opts]
        scores = self._map(lambda j: self._score_prompt(j[1], j[2]), jobs)
        out: list[dict[str, float]] = [{} for _ in conversations]
        for (i, _, o), s in zip(jobs, scores):
            out[i][o] = s
        return out

    def _score_prompt(self, conv: Conversation, option: str) -> float:
        if ends_with_assistant(conv):
            messages = [*conv[:-1], {"role": "assistant", "content": conv[-1]["content"] + option}]
        else:
            messages = [*conv, {"role": "assistant", "content": option}]
        payload = {"model": self.model, "messages": messages, "continue_final_message": True,
                   "add_generation_prompt": False, "echo": True, "max_tokens": 1, "prompt_logprobs": 0,
                   "temperature": 0}
        return option_logprob(self._request("POST", "/chat/completions", payload), option, self.base_url)

    def _score_top(self, conv: Conversation, options: list[str]) -> dict[str, float]:
        payload = self._chat_payload(conv, max_tokens=1, temperature=0, logprobs=True, top_logprobs=TOP_LOGPROBS)
        body = self._request("POST", "/chat/completions", payload)
        try:
            top = body["choices"][0]["logprobs"]["content"][0]["top_logprobs"]
        except (KeyError, IndexError, TypeError):
            raise CAIError(f"{self.base_url} returned no top_logprobs; it does not support OpenAI logprobs, "
                           "so options cannot be scored through it") from None
        return first_token_scores({_token_text(t): float(t["logprob"]) for t in top}, options)


def _env_number(name: str, default: float) -> float:
    raw = os.environ.get(name, "").strip()
    if not raw:
        return default
    try:
        return float(raw)
    except ValueError:
        raise CAIError(f"{name}={raw!r} is not a number of seconds/retries; unset it or give a number") from None


# -- response parsing (pure functions, tested directly) ------------------------------------------
def _completions(body: dict[str, Any], n: int) -> list[Completion]:
    choices = sorted(body.get("choices") or [], key=lambda c: c.get("index", 0))
    if len(choices) != n:
        raise CAIError(f"server returned {len(choices)} choices for n={n}; it may not support n > 1")
    usage = body.get("usage") or {}
    prompt_tokens = int(usage.get("prompt_tokens") or 0)
    total = int(usage.get("completion_tokens") or 0)
    out = []
    for k, ch in enumerate(choices):
        meta: dict[str, Any] = {}
        if ch.get("token_ids") is not None:
            count = len(ch["token_ids"])
        elif n == 1:
            count = total
        else:
            # usage only gives the total over the n choices; say so rather than pretend.
            count = total // n + (1 if k < total % n else 0)
            meta["completion_tokens_estimated"] = True
        raw = ch.get("finish_reason") or "stop"
        if raw not in ("stop", "length"):
            meta["finish_reason_raw"] = raw
        text = (ch.get("message") or {}).get("content") or ""
        out.append(Completion(text, prompt_tokens, count, "length" if raw == "length" else "stop", meta))
    return out


def option_logprob(body: dict[str, Any], option: str, where: str = "server") -> float:
    """Sum of the log-probs of the trailing prompt tokens that spell ``option``.

    ``prompt_logprobs`` is vLLM's shape: one entry per prompt token, ``None`` for the first, else
    ``{token_id: {"logprob", "rank", "decoded_token"}}`` whose first key is the prompt's own token
    (top-k alternatives, if asked for, follow it).
    """
    plp = body.get("prompt_logprobs")
    if not plp:
        raise CAIError(f"{where} returned no prompt_logprobs; it is not a vLLM-compatible server. "
                       "Use score_mode=top_logprobs (see cai.backends.openai for its limits)")
    # Chat templates that trim message text drop an option's trailing whitespace from the prompt.
    target = option.rstrip() or option
    text, total = "", 0.0
    pos = len(plp)
    # Walk back until the pieces cover the option, then take any "" pieces just before: those are
    # the leading bytes of the option's first character (vLLM credits the character to its last token).
    while pos > 0 and (len(text) < len(target) or _piece(plp[pos - 1]) == ""):
        pos -= 1
        entry = plp[pos]
        if not entry:
            raise CAIError(f"{where}: the prompt ran out before the option {option!r} was found in it")
        piece = _piece(entry)
        if piece is None:
            raise CAIError(f"{where} does not detokenize prompt_logprobs; use score_mode=top_logprobs")
        text = piece + text
        total += float(next(iter(entry.values()))["logprob"])
    if not text.endswith(target):
        raise CAIError(f"{where}: the prompt does not end with the option {option!r} (got {text[-40:]!r}); "
                       "the server's chat template alters the final assistant message")
    return total


def _piece(entry: dict[str, Any] | None) -> str | None:
    """The decoded text of a prompt_logprobs entry's own token (its first key)."""
    if not entry:
        return None
    return next(iter(entry.values())).get("decoded_token")


def _token_text(t: dict[str, Any]) -> str:
    if t.get("bytes"):
        try:
            return bytes(t["bytes"]).decode("utf-8")
        except UnicodeDecodeError:
            pass
    return str(t.get("token", ""))


def first_token_scores(top: dict[str, float], options: Sequence[str]) -> dict[str, float]:
    """Score each option by the longest top token that begins it; refuse ambiguous or missing ones."""
    out: dict[str, float] = {}
    chosen: dict[str, str] = {}
    for o in options:
        matches = [t for t in top if t and o.startswith(t)]
        if not matches:
            raise CAIError(f"option {o!r} does not begin with any of the top {len(top)} first tokens, so its "
                           "log-prob is unknown in score_mode=top_logprobs; use a server with prompt_logprobs "
                           "(vLLM, cai serve)")
        best = max(matches, key=len)
        chosen[o] = best
        out[o] = top[best]
    for o, t in chosen.items():
        clash = [p for p in options if p != o and p.startswith(t)]
        if clash:
            raise CAIError(f"options {o!r} and {clash[0]!r} share their first token {t!r}; score_mode=top_logprobs "
                           "sees only one token, so use options that differ at once (e.g. 'A'/'B') or prompt_logprobs")
    return out


def _reason(e: Exception) -> str:
    text = str(e).lower()
    if "refused" in text:
        return "connection refused"
    if "name or service not known" in text or "nodename nor servname" in text or "getaddrinfo" in text:
        return "unknown host"
    return str(e).strip() or type(e).__name__


def _error_message(r: Any) -> str:
    try:
        body = r.json()
        err = body.get("error", body) if isinstance(body, dict) else body
        msg = err.get("message") if isinstance(err, dict) else err
        if msg is None and isinstance(body, dict):
            msg = body.get("detail") or body.get("message")
        return " ".join(str(msg).split())[:300]
    except ValueError:
        return " ".join(r.text.split())[:300] or r.reason_phrase


def _rejection(url: str, r: Any) -> str:
    msg = _error_message(r)
    if r.status_code in (401, 403):
        return f"{url} refused the request ({r.status_code}: {msg}); pass api_key or set OPENAI_API_KEY"
    if r.status_code == 404:
        return f"{url} answered 404 ({msg}); check the URL (it usually ends in /v1) and the model name after #"
    hint = ""
    if any(k in msg for k in ("prompt_logprobs", "continue_final_message", "add_generation_prompt", "echo")):
        hint = "; this server lacks vLLM's extensions: use extensions=False and score_mode=top_logprobs"
    return f"{url} rejected the request ({r.status_code}: {msg}){hint}"
