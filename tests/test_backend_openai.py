"""The openai backend over real HTTP: the backend contract against `cai serve` (cai's app over the
tiny random Llama, in float32, on a localhost port), plus retries, errors and the concurrency limit
against small fake servers, and the parsing of vLLM's response shapes."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import threading
import time
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx
import pytest
from backend_contract import (
    _load_fp32,
    check_batch_invariant_greedy,
    check_conversation_seeds,
    check_generate_contract,
    check_score_options_contract,
    check_score_options_matches_forward,
    check_seed_reproducible,
    reference_option_logprobs,
    reference_prompt,
)

from cai.backends import load_backend
from cai.backends.mock import MockBackend
from cai.backends.openai import OpenAIBackend, first_token_scores, option_logprob, parse_target
from cai.errors import BackendUnavailable, CAIError
from cai.serve.app import create_app
from cai.types import SamplingParams

USER = [{"role": "user", "content": "Hi!"}]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def uvicorn_server(app):
    """Serve ``app`` on a free localhost port in a background thread; yield its /v1 URL."""
    import uvicorn

    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        assert time.monotonic() < deadline and thread.is_alive(), "uvicorn did not start"
        time.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{port}/v1"
    finally:
        server.should_exit = True
        thread.join(10)


@pytest.fixture(scope="module")
def served_tiny(tiny_llama_dir):
    from cai.backends.hf import HFBackend

    backend = HFBackend(tiny_llama_dir, dtype="float32")
    with uvicorn_server(create_app(backend, "tiny")) as url:
        yield url


@pytest.fixture(scope="module")
def client(served_tiny):
    backend = load_backend(f"openai:{served_tiny}#tiny", concurrency=4)
    yield backend
    backend.close()


# -- the contract against `cai serve` ------------------------------------------------------------------


def test_generate_contract(client):
    assert isinstance(client, OpenAIBackend) and client.name.endswith("#tiny")
    check_generate_contract(client)


def test_seed_reproducible(client):
    check_seed_reproducible(client)


def test_each_conversation_samples_from_its_own_seed(client):
    check_conversation_seeds(client)


def test_batched_greedy_matches_one_at_a_time(client):
    # Concurrent requests are micro-batched by the server (float32, so padding changes nothing).
    check_batch_invariant_greedy(client)


def test_score_options_contract(client):
    check_score_options_contract(client)


def test_score_options_matches_forward(client, tiny_llama_dir):
    check_score_options_matches_forward(client, tiny_llama_dir)


def test_model_name_comes_from_models_endpoint(served_tiny):
    backend = OpenAIBackend(served_tiny)
    assert backend.name == f"openai:{served_tiny}#tiny", "the name is complete before any call (provenance)"
    assert backend.model == "tiny"
    backend.close()


def test_top_logprobs_mode_scores_single_token_options(served_tiny, tiny_llama_dir):
    import torch

    # Pick two options that are among the 20 most likely first tokens, so this mode can see them.
    tok, model = _load_fp32(tiny_llama_dir)
    ids = tok(reference_prompt(tok, USER), add_special_tokens=False)["input_ids"]
    with torch.no_grad():
        lp = torch.log_softmax(model(input_ids=torch.tensor([ids])).logits[0, -1].float(), -1)
    texts = [tok.decode([t]) for t in lp.topk(20).indices.tolist()]
    options = [t for t in texts if t.strip() and t.isprintable()]
    options = [o for o in options if not any(p != o and (p.startswith(o) or o.startswith(p)) for p in options)][:2]
    assert len(options) == 2, texts
    backend = OpenAIBackend(f"{served_tiny}#tiny", score_mode="top_logprobs")
    (got,) = backend.score_options([USER], options)
    ref = reference_option_logprobs(tiny_llama_dir, USER, options)
    for o in options:
        assert abs(got[o] - ref[o]) < 1e-3, (o, got[o], ref[o])
    with pytest.raises(CAIError, match="does not begin with any"):
        backend.score_options([USER], [options[0], "\x07zzz-not-a-likely-token"])
    backend.close()


def test_requests_are_micro_batched_but_seeded_sampling_runs_alone():
    def slow(conv):
        time.sleep(0.05)
        return "ok"

    mock = MockBackend(responses=slow)
    with uvicorn_server(create_app(mock, "m", max_batch=8)) as url:
        backend = OpenAIBackend(f"{url}#m", concurrency=8)
        convs = [[{"role": "user", "content": f"q{i}"}] for i in range(12)]
        assert [c.text for c in backend.generate(convs, SamplingParams(temperature=0))] == ["ok"] * 12
        sizes = [len(convs_) for kind, convs_ in mock.calls if kind == "generate"]
        assert sum(sizes) == 12 and max(sizes) > 1, f"concurrent requests were not batched: {sizes}"
        mock.calls.clear()
        backend.generate(convs[:6], SamplingParams(temperature=1.0, seed=3))
        assert [len(c) for _, c in mock.calls] == [1] * 6
        backend.close()


# -- fake servers: retries, errors, concurrency -----------------------------------------------------


def chat_body(text="hi", n=1, finish="stop", token_ids=None):
    choices = [{"index": k, "message": {"role": "assistant", "content": f"{text}{k}"}, "finish_reason": finish,
                **({"token_ids": token_ids[k]} if token_ids else {})} for k in range(n)]
    return {"choices": choices[::-1], "usage": {"prompt_tokens": 5, "completion_tokens": 7, "total_tokens": 12}}


@contextmanager
def fake_server(respond):
    """A threaded HTTP server; ``respond(handler, payload)`` returns (status, body, headers) or None
    to drop the connection. Yields (url, list of received (path, payload, headers))."""
    seen = []

    class Handler(BaseHTTPRequestHandler):
        def _handle(self):
            length = int(self.headers.get("content-length") or 0)
            payload = json.loads(self.rfile.read(length)) if length else None
            seen.append((self.path, payload, dict(self.headers)))
            result = respond(self, payload)
            if result is None:
                self.connection.shutdown(socket.SHUT_RDWR)  # a reset mid-request
                return
            status, body, headers = result
            data = body if isinstance(body, bytes) else json.dumps(body).encode()  # bytes: sent as they are
            self.send_response(status)
            for k, v in {"content-type": "application/json", **headers}.items():
                self.send_header(k, v)
            self.send_header("content-length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        do_GET = do_POST = _handle

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/v1", seen
    finally:
        server.shutdown()
        server.server_close()


def failing_then_ok(failures):
    """Answer with each of ``failures`` in turn ((status, headers) or None for a reset), then succeed."""
    state = {"i": 0}
    lock = threading.Lock()

    def respond(handler, payload):
        with lock:
            i = state["i"]
            state["i"] += 1
        if i < len(failures):
            f = failures[i]
            if f is None:
                return None
            return f[0], {"error": {"message": f"failure {i}"}}, f[1]
        return 200, chat_body(), {}

    return respond


@pytest.mark.parametrize("failures", [
    [(429, {}), (429, {"retry-after": "0"}), (500, {})],
    [(503, {}), None, (502, {})],
])
def test_retries_then_succeeds(failures):
    with fake_server(failing_then_ok(failures)) as (url, seen):
        backend = OpenAIBackend(f"{url}#m", max_retries=5, backoff=0.01)
        (c,) = backend.generate([USER], SamplingParams(temperature=0))
        assert c.text == "hi0" and len(seen) == len(failures) + 1
        backend.close()


def test_retries_a_timeout():
    def respond(handler, payload):
        if len(seen_calls) == 0:
            seen_calls.append(1)
            time.sleep(1.5)
        return 200, chat_body(), {}

    seen_calls: list[int] = []
    with fake_server(respond) as (url, seen):
        backend = OpenAIBackend(f"{url}#m", timeout=0.5, backoff=0.01)
        assert backend.generate([USER], SamplingParams())[0].text == "hi0"
        assert len(seen) == 2
        backend.close()


def test_gives_up_after_max_retries_and_does_not_retry_client_errors():
    with fake_server(failing_then_ok([(500, {})] * 10)) as (url, seen):
        backend = OpenAIBackend(f"{url}#m", max_retries=2, backoff=0.01)
        with pytest.raises(BackendUnavailable, match="after 3 attempts"):
            backend.generate([USER], SamplingParams())
        assert len(seen) == 3
        backend.close()
    with fake_server(failing_then_ok([(400, {})])) as (url, seen):
        backend = OpenAIBackend(f"{url}#m", backoff=0.01)
        with pytest.raises(CAIError, match="400: failure 0"):
            backend.generate([USER], SamplingParams())
        assert len(seen) == 1
        backend.close()


def test_clear_error_when_nothing_listens():
    url = f"http://127.0.0.1:{free_port()}/v1"
    backend = OpenAIBackend(f"{url}#m")
    start = time.monotonic()
    with pytest.raises(BackendUnavailable) as e:
        backend.generate([USER], SamplingParams())
    msg = str(e.value)
    assert "cannot reach" in msg and url in msg and "connection refused" in msg and "cai serve" in msg
    assert "\n" not in msg and time.monotonic() - start < 5
    backend.close()
    with pytest.raises(BackendUnavailable, match="cannot reach"):
        OpenAIBackend(url)  # without #MODEL it asks the server for the name at once


def test_concurrency_limit_is_respected():
    state = {"now": 0, "peak": 0}
    lock = threading.Lock()

    def respond(handler, payload):
        with lock:
            state["now"] += 1
            state["peak"] = max(state["peak"], state["now"])
        time.sleep(0.1)
        with lock:
            state["now"] -= 1
        return 200, chat_body(payload["messages"][-1]["content"]), {}

    with fake_server(respond) as (url, seen):
        backend = OpenAIBackend(f"{url}#m", concurrency=3)
        convs = [[{"role": "user", "content": f"q{i}"}] for i in range(10)]
        out = backend.generate(convs, SamplingParams())
        assert [c.text for c in out] == [f"q{i}0" for i in range(10)], "results must keep input order"
        assert state["peak"] == 3, f"expected 3 requests in flight at most (and at best), saw {state['peak']}"
        backend.close()


def test_request_fields_api_key_and_response_mapping(monkeypatch):
    def respond(handler, payload):
        n = payload.get("n", 1)
        ids = [[1] * (k + 1) for k in range(n)] if payload.get("return_token_ids") else None
        return 200, chat_body(n=n, finish="length" if n == 1 else "content_filter", token_ids=ids), {}

    monkeypatch.setenv("OPENAI_API_KEY", "from-env")
    with fake_server(respond) as (url, seen):
        backend = OpenAIBackend(f"{url}#m")
        params = SamplingParams(temperature=0.3, top_p=0.8, max_tokens=9, stop=("x",), n=2, seed=4)
        out = backend.generate([[*USER, {"role": "assistant", "content": "Sure"}]], params)
        _, payload, headers = seen[-1]
        assert headers["Authorization"] == "Bearer from-env"
        assert {k: payload[k] for k in ("model", "n", "temperature", "top_p", "max_tokens", "stop", "seed")} == {
            "model": "m", "n": 2, "temperature": 0.3, "top_p": 0.8, "max_tokens": 9, "stop": ["x"], "seed": 4}
        assert payload["continue_final_message"] is True and payload["add_generation_prompt"] is False
        assert [c.text for c in out] == ["hi0", "hi1"], "choices are ordered by index"
        assert [c.completion_tokens for c in out] == [1, 2], "per-choice counts come from token_ids"
        assert out[0].finish_reason == "stop" and out[0].meta["finish_reason_raw"] == "content_filter"

        plain = OpenAIBackend(f"{url}#m", api_key="opt", extensions=False)
        (c,) = plain.generate([[*USER, {"role": "assistant", "content": "Sure"}]], SamplingParams())
        _, payload, headers = seen[-1]
        assert headers["Authorization"] == "Bearer opt"
        assert not {"continue_final_message", "add_generation_prompt", "return_token_ids"} & set(payload)
        assert c.finish_reason == "length" and c.completion_tokens == 7 and c.prompt_tokens == 5
        backend.close()
        plain.close()


def test_a_server_that_is_not_openai_compatible_is_named():
    with fake_server(lambda h, p: (200, "<html>welcome</html>", {})) as (url, _):
        with pytest.raises(CAIError, match="without a JSON object.*OpenAI-compatible"):
            OpenAIBackend(url.removesuffix("/v1"))


def test_prompt_logprobs_mode_explains_servers_without_them():
    with fake_server(lambda h, p: (200, chat_body(), {})) as (url, _):
        backend = OpenAIBackend(f"{url}#m")
        with pytest.raises(CAIError, match="score_mode=top_logprobs"):
            backend.score_options([USER], [" A", " B"])
        backend.close()


# -- parsing --------------------------------------------------------------------------------------------


def test_parse_target():
    assert parse_target("http://h:8000/v1#m") == ("http://h:8000/v1", "m")
    assert parse_target("h:8000") == ("http://h:8000/v1", None)
    assert parse_target("https://api.example.com/v1/#gpt") == ("https://api.example.com/v1", "gpt")
    with pytest.raises(ValueError):
        parse_target("#m")


def test_option_logprob_reads_vllm_prompt_logprobs():
    # vLLM's shape: None first; then the prompt's own token first, top-k alternatives after it; a
    # token holding the first bytes of a character decodes to "" and the next one carries it.
    body = {"prompt_logprobs": [
        None,
        {"10": {"logprob": -9.0, "rank": 3, "decoded_token": " is"}, "11": {"logprob": -0.1, "rank": 1, "decoded_token": "x"}},
        {"12": {"logprob": -1.0, "rank": 2, "decoded_token": " ("}},
        {"13": {"logprob": -2.0, "rank": 1, "decoded_token": ""}},
        {"14": {"logprob": -0.5, "rank": 1, "decoded_token": "é"}},
        {"15": {"logprob": -0.25, "rank": 1, "decoded_token": ")"}},
    ]}
    assert option_logprob(body, " (é)") == pytest.approx(-3.75)
    assert option_logprob(body, "é)") == pytest.approx(-2.75)  # the byte token before "é" is part of it
    assert option_logprob(body, " (é) ") == pytest.approx(-3.75)  # trailing space trimmed by the template
    with pytest.raises(CAIError, match="does not end with"):
        option_logprob(body, " (A)")
    with pytest.raises(CAIError, match="no prompt_logprobs"):
        option_logprob({"choices": []}, " A")


def test_first_token_scores():
    top = {" A": -0.5, " B": -1.5, " (": -0.2, "A": -3.0}
    assert first_token_scores(top, [" A", " B"]) == {" A": -0.5, " B": -1.5}
    assert first_token_scores(top, [" A)", "A"]) == {" A)": -0.5, "A": -3.0}  # the longest matching token
    with pytest.raises(CAIError, match="share their first token"):
        first_token_scores(top, [" (A)", " (B)"])
    with pytest.raises(CAIError, match="does not begin with"):
        first_token_scores(top, [" A", " C"])


# -- `cai serve` -------------------------------------------------------------------------------------------


def test_cai_serve_binds_localhost_by_default(tmp_path):
    port = free_port()
    cai = Path(sys.executable).with_name("cai")
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen([str(cai), "serve", "-m", "mock:", "--port", str(port)], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        deadline = time.monotonic() + 60
        while True:
            assert proc.poll() is None, proc.stdout.read()
            try:
                if httpx.get(f"http://127.0.0.1:{port}/health", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline, "cai serve did not come up"
            time.sleep(0.2)
        backend = OpenAIBackend(f"http://127.0.0.1:{port}/v1")
        assert backend.model == "mock:"
        assert backend.generate([USER], SamplingParams(temperature=0))[0].text
        backend.close()
        listening = _listening_addresses(port)
        if listening is not None:
            assert listening == {"127.0.0.1"}, f"cai serve listens on {listening}, not only localhost"
    finally:
        proc.terminate()
        proc.wait(10)


def _listening_addresses(port: int) -> set[str] | None:
    """Local addresses with a socket in LISTEN state on ``port``, from /proc/net/tcp (Linux)."""
    table = Path("/proc/net/tcp")
    if not table.exists():
        return None
    found = set()
    for line in table.read_text().splitlines()[1:]:
        local, state = line.split()[1], line.split()[3]
        addr, _, p = local.partition(":")
        if state == "0A" and int(p, 16) == port:
            found.add(socket.inet_ntoa(bytes.fromhex(addr)[::-1]))
    return found


def test_greedy_n_asks_for_one_sample_and_copies_it():
    # vLLM answers 400 to n > 1 at temperature 0; greedy samples are identical anyway.
    with fake_server(lambda h, p: (200, chat_body(n=p["n"]), {})) as (url, seen):
        backend = OpenAIBackend(f"{url}#m")
        out = backend.generate([USER, USER], SamplingParams(temperature=0, n=3))
        assert [c.text for c in out] == ["hi0"] * 6
        assert all(p["n"] == 1 and "return_token_ids" not in p for _, p, _ in seen)
        backend.close()


# -- vLLM's own server ----------------------------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.vllm
def test_against_vllm_openai_server(smollm2_path):
    """`cai serve` on a vllm: spec execs vLLM's OpenAI server; the contract and the option scores
    (vLLM in float32 against the reference forward pass) hold over it. Minutes on a CPU."""
    pytest.importorskip("vllm")
    port = free_port()
    cai = Path(sys.executable).with_name("cai")
    proc = subprocess.Popen([str(cai), "serve", "-m", "vllm:smollm2-135m", "--port", str(port), "--dtype", "float32",
                             "--vllm-args", "--enforce-eager --max-model-len 2048"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 900
        while True:
            assert proc.poll() is None, "vLLM's server exited during start-up"
            try:
                if httpx.get(f"http://127.0.0.1:{port}/health", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline, "vLLM's server did not come up in 15 minutes"
            time.sleep(2)
        with OpenAIBackend(f"http://127.0.0.1:{port}/v1", timeout=600) as backend:
            assert backend.model == "smollm2-135m"
            check_score_options_matches_forward(backend, smollm2_path, tol=2e-2)
            check_generate_contract(backend)
            check_score_options_contract(backend, batch_tol=2e-2)
    finally:
        proc.terminate()
        proc.wait(60)


# ---- faults (issue 8): a hanging server, cut-off JSON, all bounded in time -------------------------

def test_a_server_that_never_answers_fails_within_the_deadline():
    def respond(handler, payload):
        time.sleep(5)  # accepts the request and says nothing
        return 200, chat_body(), {}

    with fake_server(respond) as (url, seen):
        backend = OpenAIBackend(f"{url}#m", timeout=0.4, deadline=1.5, backoff=0.01)
        start = time.monotonic()
        with pytest.raises(BackendUnavailable) as e:
            backend.generate([USER], SamplingParams())
        took = time.monotonic() - start
        assert took < 2.5, f"took {took:.1f} s for a 1.5 s deadline"
        assert "deadline" in str(e.value) and "CAI_OPENAI_DEADLINE" in str(e.value) and "\n" not in str(e.value)
        assert len(seen) >= 2  # it did retry before giving up
        backend.close()


def test_deadline_and_retries_come_from_the_environment(monkeypatch):
    monkeypatch.setenv("CAI_OPENAI_DEADLINE", "7")
    monkeypatch.setenv("CAI_OPENAI_TIMEOUT", "3")
    monkeypatch.setenv("CAI_OPENAI_RETRIES", "1")
    b = OpenAIBackend("http://127.0.0.1:9/v1#m")
    assert (b.deadline, b.timeout, b.max_retries) == (7.0, 3.0, 1)
    b.close()
    monkeypatch.setenv("CAI_OPENAI_DEADLINE", "soon")
    with pytest.raises(CAIError, match="CAI_OPENAI_DEADLINE"):
        OpenAIBackend("http://127.0.0.1:9/v1#m")


def test_truncated_json_is_retried_then_reported():
    with fake_server(_truncating(cuts=2)) as (url, seen):
        backend = OpenAIBackend(f"{url}#m", backoff=0.01)
        assert backend.generate([USER], SamplingParams(temperature=0))[0].text == "hi0"
        assert len(seen) == 3
        backend.close()
    with fake_server(_truncating(cuts=100)) as (url, seen):
        backend = OpenAIBackend(f"{url}#m", backoff=0.01, max_retries=2)
        with pytest.raises(BackendUnavailable, match="truncated JSON"):
            backend.generate([USER], SamplingParams())
        assert len(seen) == 3
        backend.close()


def _truncating(cuts: int):
    """200 answers whose JSON is cut after 20 bytes, ``cuts`` times, then whole ones."""
    state = {"i": 0}
    lock = threading.Lock()

    def respond(handler, payload):
        with lock:
            state["i"] += 1
            i = state["i"]
        if i <= cuts:
            return 200, json.dumps(chat_body()).encode()[:20], {}
        return 200, chat_body(), {}

    return respond

