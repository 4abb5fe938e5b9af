"""The OpenAI-compatible app behind ``cai serve`` for backends other than vLLM.

``create_app(backend, model_name)`` serves any cai Backend (hf, mock, ...) at ``/v1/models`` and
``/v1/chat/completions`` with ``messages, n, temperature, top_p, max_tokens, stop, seed``, usage
and finish reasons, plus the vLLM extension fields cai's openai client uses:
``continue_final_message``, ``add_generation_prompt``, ``echo``, ``prompt_logprobs`` and
``return_token_ids``. OpenAI ``logprobs``/``top_logprobs`` are supported for one-token answers.
Log-probs need a backend with ``model`` and ``tokenizer`` attributes (the hf backend).

Differences from vLLM, on purpose: a final assistant message is always continued (cai's
convention, and what llama.cpp does), and streaming is not offered.

The model is not thread-safe, so one worker thread makes every model call. Requests that arrive
while it is busy are micro-batched: generation requests with equal sampling parameters go into one
``generate`` call, prompt scoring into one forward pass. Seeded sampling requests run alone, so a
seed gives the same sample whatever else the server is doing.
"""

from __future__ import annotations

import asyncio
import hmac
import itertools
import json
import queue
import threading
import time
import uuid
from concurrent.futures import Future
from contextlib import asynccontextmanager
from typing import Any, Callable

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict
from starlette.exceptions import HTTPException as StarletteHTTPException

from cai.errors import CAIError
from cai.serve.limits import Limits
from cai.types import Completion, Conversation, SamplingParams, check_conversation, group

DEFAULT_MAX_TOKENS = 256


class BodyLimit:
    """ASGI middleware: refuse a request body over ``limit`` bytes with 413, whether or not it
    declares its length, before the JSON is parsed."""

    def __init__(self, app: Any, limit: int) -> None:
        self.app, self.limit = app, limit

    async def __call__(self, scope: dict, receive: Callable, send: Callable) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        declared = dict(scope.get("headers") or []).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.limit:
            return await self._refuse(send)
        # Read the whole body here (it is bounded) so that an undeclared length is counted too.
        chunks, seen, more = [], 0, True
        while more:
            message = await receive()
            if message["type"] != "http.request":
                return await self.app(scope, receive, send)  # a disconnect: let the app see it
            chunks.append(message.get("body", b""))
            seen += len(chunks[-1])
            if seen > self.limit:
                return await self._refuse(send)
            more = message.get("more_body", False)
        body, replayed = b"".join(chunks), False

        async def replay() -> dict:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        await self.app(scope, replay, send)

    async def _refuse(self, send: Callable) -> None:
        body = json.dumps(error_body(413, f"request body over the server's limit of {self.limit} bytes",
                                     "BadRequestError")).encode()
        await send({"type": "http.response.start", "status": 413,
                    "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]})
        await send({"type": "http.response.body", "body": body})




class APIError(Exception):
    def __init__(self, status: int, message: str, param: str | None = None, type_: str | None = None) -> None:
        super().__init__(message)
        self.status, self.message, self.param = status, message, param
        self.type = type_ or {400: "BadRequestError", 401: "AuthenticationError", 404: "NotFoundError"}.get(
            status, "InternalServerError")


def error_body(status: int, message: str, type_: str, param: str | None = None) -> dict[str, Any]:
    return {"error": {"message": message, "type": type_, "param": param, "code": status}}


class ChatRequest(BaseModel):
    model_config = ConfigDict(extra="allow")  # unknown OpenAI fields are ignored, as vLLM does

    model: str | None = None
    messages: list[dict[str, Any]]
    n: int = 1
    temperature: float | None = None
    top_p: float | None = None
    max_tokens: int | None = None
    max_completion_tokens: int | None = None
    stop: str | list[str] | None = None
    seed: int | None = None
    stream: bool = False
    logprobs: bool = False
    top_logprobs: int | None = None
    # vLLM extensions
    echo: bool = False
    add_generation_prompt: bool = True
    continue_final_message: bool = False
    prompt_logprobs: int | None = None
    return_token_ids: bool = False


class BatchWorker:
    """One thread runs every model call; jobs queued while it works are batched by (kind, key)."""

    def __init__(self, handlers: dict[str, Callable[[Any, list[Any]], list[Any]]], max_batch: int = 16) -> None:
        self.handlers = handlers
        self.max_batch = max(1, int(max_batch))
        self._queue: queue.Queue = queue.Queue()
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._ensure_running()

    def _ensure_running(self) -> None:
        with self._lock:  # (re)started on demand: an app may go through several lifespans
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._loop, name="cai-serve-model", daemon=True)
                self._thread.start()

    def submit(self, kind: str, key: Any, item: Any) -> Future:
        self._ensure_running()
        fut: Future = Future()
        self._queue.put((kind, key, item, fut))
        return fut

    def close(self) -> None:
        with self._lock:
            thread, self._thread = self._thread, None
        if thread is not None and thread.is_alive():
            self._queue.put(None)
            thread.join(timeout=5)

    def _loop(self) -> None:
        while True:
            job = self._queue.get()
            if job is None:
                return
            jobs = [job]
            while len(jobs) < self.max_batch:
                try:
                    nxt = self._queue.get_nowait()
                except queue.Empty:
                    break
                if nxt is None:
                    self._queue.put(None)
                    break
                jobs.append(nxt)
            groups: dict[tuple[str, Any], list[tuple]] = {}
            for j in jobs:
                groups.setdefault((j[0], j[1]), []).append(j)
            for (kind, key), batch in groups.items():
                self._run(kind, key, batch)

    def _run(self, kind: str, key: Any, batch: list[tuple]) -> None:
        try:
            results = self.handlers[kind](key, [j[2] for j in batch])
        except Exception as e:  # noqa: BLE001 - handed to the waiting request
            if len(batch) > 1:  # one bad request must not fail the others batched with it
                for j in batch:
                    self._run(kind, key, [j])
                return
            batch[0][3].set_exception(e)
            return
        for j, r in zip(batch, results):
            j[3].set_result(r)


def to_conversation(messages: list[dict[str, Any]]) -> Conversation:
    conv = []
    for i, m in enumerate(messages):
        content = m.get("content")
        if isinstance(content, list):  # OpenAI content parts: keep the text ones
            content = "".join(p.get("text", "") for p in content if isinstance(p, dict) and p.get("type") == "text")
        role = {"developer": "system"}.get(m.get("role"), m.get("role"))
        conv.append({"role": role, "content": "" if content is None else content})
    check_conversation(conv, "messages")
    return conv


def create_app(backend: Any, model_name: str, *, api_key: str | None = None, max_batch: int = 16,
               limits: Limits | None = None) -> FastAPI:
    """An OpenAI-compatible app over ``backend``, serving it under ``model_name``, within ``limits``."""
    from cai.serve.logprobs import ScoreJob, run_score_jobs

    model = getattr(backend, "model", None)
    tokenizer = getattr(backend, "tokenizer", None)
    can_score = model is not None and tokenizer is not None and hasattr(model, "parameters")
    seeded = itertools.count()

    def run_generate(key: tuple, convs: list[Conversation]) -> list[list[Completion]]:
        params = key[0]
        return group(backend.generate(convs, params), params.n)

    worker = BatchWorker({"generate": run_generate, "score": lambda _k, jobs: run_score_jobs(model, tokenizer, jobs)},
                         max_batch)

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        yield
        worker.close()

    limits = limits or Limits()
    app = FastAPI(title="cai serve", lifespan=lifespan)
    app.state.worker = worker
    app.add_middleware(BodyLimit, limit=limits.max_request_bytes)
    in_flight = {"n": 0}

    @app.exception_handler(APIError)
    async def _api_error(_: Request, e: APIError) -> JSONResponse:
        return JSONResponse(error_body(e.status, e.message, e.type, e.param), status_code=e.status)

    @app.exception_handler(RequestValidationError)
    async def _invalid(_: Request, e: RequestValidationError) -> JSONResponse:
        first = e.errors()[0] if e.errors() else {}
        if first.get("type") == "json_invalid":  # its loc is a character offset, not a field
            pos = next((p for p in first.get("loc", ()) if isinstance(p, int)), None)
            why = (first.get("ctx") or {}).get("error") or "malformed"
            msg = (f"the request body is not valid JSON ({why}" + (f" at character {pos}" if pos is not None else "")
                   + '); send a JSON object such as {"model": "...", "messages": [{"role": "user", "content": "Hi"}]}')
            return JSONResponse(error_body(400, msg, "BadRequestError"), status_code=400)
        where = ".".join(str(p) for p in first.get("loc", ()) if p != "body")
        msg = f"{where}: {first.get('msg', 'invalid request')}" if where else str(first.get("msg", e))
        return JSONResponse(error_body(400, msg, "BadRequestError", where or None), status_code=400)

    @app.exception_handler(StarletteHTTPException)
    async def _http(_: Request, e: StarletteHTTPException) -> JSONResponse:
        return JSONResponse(error_body(e.status_code, str(e.detail), "NotFoundError" if e.status_code == 404
                                       else "BadRequestError"), status_code=e.status_code)

    @app.exception_handler(Exception)
    async def _crash(_: Request, e: Exception) -> JSONResponse:
        return JSONResponse(error_body(500, f"{type(e).__name__}: {e}", "InternalServerError"), status_code=500)

    expected = f"Bearer {api_key}".encode() if api_key else None

    def check_key(request: Request) -> None:
        # Constant-time comparison: the time taken must not tell a caller how much of a guess was right.
        if expected is not None and not hmac.compare_digest(request.headers.get("authorization", "").encode(),
                                                            expected):
            raise APIError(401, "missing or wrong API key: send 'Authorization: Bearer KEY'")

    @app.get("/health")
    async def health() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/v1/models")
    async def models(request: Request) -> dict[str, Any]:
        check_key(request)
        return {"object": "list", "data": [{"id": model_name, "object": "model", "created": int(time.time()),
                                            "owned_by": "cai", "root": getattr(backend, "name", model_name)}]}

    @app.post("/v1/chat/completions")
    async def chat(req: ChatRequest, request: Request) -> Any:
        check_key(request)
        if in_flight["n"] >= limits.max_concurrency:
            return JSONResponse(error_body(429, f"the server is at its limit of {limits.max_concurrency} requests in "
                                           "flight; retry shortly", "RateLimitError"), status_code=429,
                                headers={"retry-after": "1"})
        in_flight["n"] += 1
        try:
            return await _chat(req)
        finally:
            in_flight["n"] -= 1

    async def _chat(req: ChatRequest) -> dict[str, Any]:
        if req.model and req.model != model_name:
            raise APIError(404, f"The model `{req.model}` does not exist; this server serves `{model_name}`", "model")
        if req.stream:
            raise APIError(400, "stream=true is not supported by cai serve; send stream=false", "stream")
        if req.continue_final_message and req.add_generation_prompt:
            raise APIError(400, "Cannot set both `continue_final_message` and `add_generation_prompt` to True.")
        max_tokens = req.max_completion_tokens or req.max_tokens or min(DEFAULT_MAX_TOKENS, limits.max_tokens)
        if max_tokens > limits.max_tokens:
            raise APIError(400, f"max_tokens {max_tokens} is over this server's limit of {limits.max_tokens}",
                           "max_tokens")
        if req.n > limits.max_n:
            raise APIError(400, f"n {req.n} is over this server's limit of {limits.max_n}", "n")
        try:
            conv = to_conversation(req.messages)
            stop = [req.stop] if isinstance(req.stop, str) else list(req.stop or [])
            params = SamplingParams(temperature=1.0 if req.temperature is None else req.temperature,
                                    top_p=1.0 if req.top_p is None else req.top_p, max_tokens=max_tokens,
                                    stop=tuple(stop), n=req.n, seed=req.seed)
        except ValueError as e:
            raise APIError(400, str(e)) from None
        if req.continue_final_message and conv[-1]["role"] != "assistant":
            raise APIError(400, "continue_final_message needs the last message to be from the assistant")
        plp = req.prompt_logprobs
        if plp is None and req.echo and can_score:  # as in vLLM, echo alone asks for prompt log-probs
            plp = req.top_logprobs or 0
        top_k = (req.top_logprobs or 0) if req.logprobs else None
        if plp is not None and plp < 0 or (top_k or 0) < 0:
            raise APIError(400, "prompt_logprobs and top_logprobs must be >= 0", "prompt_logprobs")
        if top_k is not None and max_tokens != 1:
            raise APIError(400, "cai serve returns logprobs only for one-token answers; set max_tokens=1", "logprobs")
        scoring = plp is not None or top_k is not None
        if scoring and not can_score:
            raise APIError(400, f"log-probs need a backend with a model and tokenizer (hf:...); "
                                f"{getattr(backend, 'name', 'this backend')} has none", "prompt_logprobs")

        score_fut = gen_fut = None
        one_token = scoring and max_tokens == 1
        if scoring:
            job = ScoreJob(conv, plp, params if one_token else None, top_k)
            score_fut = worker.submit("score", None, job)
        if not one_token:
            # Seeded sampling runs alone: batched with others, its sample would depend on them.
            key = (params, next(seeded) if params.seed is not None and not params.greedy else None)
            gen_fut = worker.submit("generate", key, conv)
        try:
            scored = await asyncio.wrap_future(score_fut) if score_fut else None
            completions = await asyncio.wrap_future(gen_fut) if gen_fut else None
        except (ValueError, CAIError) as e:
            raise APIError(400, str(e)) from None

        if completions is None:  # a one-token answer straight from the scoring pass
            prompt_tokens, completion_tokens = len(scored.prompt_token_ids), params.n
            choices = [_choice(k, c["text"], c["finish_reason"], [c["token_id"]] if req.return_token_ids else None,
                               c["logprobs"]) for k, c in enumerate(scored.choices)]
        else:
            prompt_tokens = completions[0].prompt_tokens
            completion_tokens = sum(c.completion_tokens for c in completions)
            choices = [_choice(k, c.text, c.finish_reason, c.meta.get("token_ids") if req.return_token_ids else None)
                       for k, c in enumerate(completions)]
        if req.echo and conv[-1]["role"] == "assistant":
            for ch in choices:
                ch["message"]["content"] = conv[-1]["content"] + ch["message"]["content"]
        body: dict[str, Any] = {
            "id": f"chatcmpl-{uuid.uuid4().hex}", "object": "chat.completion", "created": int(time.time()),
            "model": model_name, "choices": choices,
            "usage": {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
                      "total_tokens": prompt_tokens + completion_tokens},
        }
        if plp is not None:
            body["prompt_logprobs"] = scored.prompt_logprobs
        if req.return_token_ids and scored is not None:
            body["prompt_token_ids"] = scored.prompt_token_ids
        return body

    return app


def _choice(index: int, text: str, finish: str, token_ids: list[int] | None, logprobs: Any = None) -> dict[str, Any]:
    return {"index": index, "message": {"role": "assistant", "content": text}, "logprobs": logprobs,
            "finish_reason": finish, "token_ids": token_ids}
