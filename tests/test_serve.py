"""cai's OpenAI-compatible app (cai.serve.app) through FastAPI's TestClient, its log-prob helpers,
the micro-batching worker, and how ``cai serve`` plans a vLLM server."""

from __future__ import annotations

import json
import threading
import time

import pytest
from backend_contract import reference_option_logprobs, reference_prompt
from fastapi.testclient import TestClient

from cai.backends.mock import MockBackend
from cai.serve import ServeConfig, plan, served_name, vllm_command
from cai.serve.app import BatchWorker, create_app
from cai.types import SamplingParams

USER = [{"role": "user", "content": "Hi!"}]
PREFIX = [*USER, {"role": "assistant", "content": "The answer is"}]


@pytest.fixture()
def mock_client():
    backend = MockBackend(responses=lambda conv: f"reply to {conv[-1]['content']}")
    with TestClient(create_app(backend, "mocky")) as client:
        yield client, backend


@pytest.fixture(scope="module")
def tiny_backend(tiny_llama_dir):
    from cai.backends.hf import HFBackend

    return HFBackend(tiny_llama_dir, dtype="float32")


@pytest.fixture()
def tiny_client(tiny_backend):
    with TestClient(create_app(tiny_backend, "tiny")) as client:
        yield client


def post(client, **body):
    return client.post("/v1/chat/completions", json=body)


def test_models_lists_the_served_name(mock_client):
    client, _ = mock_client
    data = client.get("/v1/models").json()["data"]
    assert [m["id"] for m in data] == ["mocky"]
    assert client.get("/health").status_code == 200


def test_chat_completion_shape_usage_and_n(mock_client):
    client, backend = mock_client
    r = post(client, model="mocky", messages=USER, n=2, max_tokens=50, temperature=0.5, seed=3)
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["object"] == "chat.completion" and body["model"] == "mocky"
    assert [c["index"] for c in body["choices"]] == [0, 1]
    assert all(c["message"] == {"role": "assistant", "content": "reply to Hi!"} for c in body["choices"])
    assert all(c["finish_reason"] == "stop" for c in body["choices"])
    # The mock counts words: "Hi!" is one prompt word, each reply three.
    assert body["usage"] == {"prompt_tokens": 1, "completion_tokens": 6, "total_tokens": 7}
    assert backend.calls[-1] == ("generate", [USER])


def test_sampling_fields_reach_the_backend():
    seen = []

    class Spy(MockBackend):
        def generate(self, conversations, params):
            seen.append(params)
            return super().generate(conversations, params)

    with TestClient(create_app(Spy(), "m")) as client:
        r = post(client, messages=USER, n=3, temperature=0.2, top_p=0.9, max_tokens=7, stop="x", seed=11)
        assert r.status_code == 200, r.text
    assert seen == [SamplingParams(temperature=0.2, top_p=0.9, max_tokens=7, stop=("x",), n=3, seed=11)]


def test_final_assistant_message_is_continued_and_echo_prepends_it(mock_client):
    client, backend = mock_client
    r = post(client, messages=PREFIX, continue_final_message=True, add_generation_prompt=False, echo=True)
    assert r.json()["choices"][0]["message"]["content"] == "The answer isreply to The answer is"
    assert backend.calls[-1] == ("generate", [PREFIX])  # the prefix reached the backend as the last turn
    r = post(client, messages=PREFIX, continue_final_message=True, add_generation_prompt=False)
    assert r.json()["choices"][0]["message"]["content"] == "reply to The answer is"


@pytest.mark.parametrize("body, status, fragment", [
    ({"messages": [{"role": "robot", "content": "x"}]}, 400, "unknown role"),
    ({"messages": "not a list"}, 400, "messages"),
    ({"messages": []}, 400, "non-empty"),
    ({"model": "other", "messages": USER}, 404, "does not exist"),
    ({"messages": USER, "stream": True}, 400, "stream"),
    ({"messages": PREFIX, "continue_final_message": True}, 400, "both"),
    ({"messages": USER, "continue_final_message": True, "add_generation_prompt": False}, 400, "assistant"),
    ({"messages": USER, "temperature": -1}, 400, "temperature"),
    ({"messages": USER, "n": 0}, 400, "n must be"),
    ({"messages": USER, "prompt_logprobs": 0, "max_tokens": 1}, 400, "hf:"),
])
def test_errors_are_openai_json(mock_client, body, status, fragment):
    client, _ = mock_client
    r = post(client, **body)
    assert r.status_code == status, r.text
    err = r.json()["error"]
    assert fragment in err["message"] and err["code"] == status and err["type"]


def test_unknown_route_and_backend_crash_are_openai_json():
    class Broken(MockBackend):
        def generate(self, conversations, params):
            raise RuntimeError("the model fell over")

    with TestClient(create_app(Broken(), "m"), raise_server_exceptions=False) as client:
        assert client.get("/v1/nope").json()["error"]["code"] == 404
        r = post(client, messages=USER)
        assert r.status_code == 500 and "fell over" in r.json()["error"]["message"]


def test_api_key_is_required_when_set():
    with TestClient(create_app(MockBackend(), "m", api_key="sekrit")) as client:
        assert client.get("/v1/models").status_code == 401
        assert post(client, messages=USER).json()["error"]["code"] == 401
        ok = client.get("/v1/models", headers={"Authorization": "Bearer sekrit"})
        assert ok.status_code == 200


# -- log-probs over the hf backend ------------------------------------------------------------------


def test_prompt_logprobs_match_a_forward_pass(tiny_client, tiny_llama_dir):
    from transformers import AutoTokenizer

    messages = [*USER, {"role": "assistant", "content": "The answer is (A)"}]
    r = post(tiny_client, messages=messages, continue_final_message=True, add_generation_prompt=False,
             echo=True, max_tokens=1, prompt_logprobs=2, temperature=0, return_token_ids=True)
    assert r.status_code == 200, r.text
    body = r.json()
    plp, ids = body["prompt_logprobs"], body["prompt_token_ids"]
    tok = AutoTokenizer.from_pretrained(tiny_llama_dir)
    prompt = reference_prompt(tok, messages)
    assert ids == tok(prompt, add_special_tokens=False)["input_ids"]
    assert plp[0] is None and len(plp) == len(ids) == body["usage"]["prompt_tokens"]
    for pos in range(1, len(ids)):
        keys = list(plp[pos])
        assert keys[0] == str(ids[pos]), "the prompt's own token comes first"
        assert 2 <= len(keys) <= 3  # plus the top 2
        ranks = sorted(v["rank"] for k, v in plp[pos].items() if k != keys[0])
        assert ranks == [1, 2]
    assert "".join(e[str(t)]["decoded_token"] for e, t in zip(plp[1:], ids[1:])) == tok.decode(ids[1:])
    # The last three tokens spell " (A)": their summed log-probs are log p(" (A)" | prompt).
    ref = reference_option_logprobs(tiny_llama_dir, PREFIX, [" (A)"])[" (A)"]
    assert abs(sum(plp[p][str(ids[p])]["logprob"] for p in range(len(ids) - 3, len(ids))) - ref) < 1e-3
    choice = body["choices"][0]
    assert choice["message"]["content"].startswith("The answer is (A)")  # echo
    assert choice["finish_reason"] in ("stop", "length") and len(choice["token_ids"]) == 1


def test_one_token_top_logprobs(tiny_client, tiny_llama_dir):
    import torch

    from backend_contract import _load_fp32

    r = post(tiny_client, messages=USER, max_tokens=1, temperature=0, logprobs=True, top_logprobs=5)
    assert r.status_code == 200, r.text
    entry = r.json()["choices"][0]["logprobs"]["content"][0]
    tops = entry["top_logprobs"]
    assert len(tops) == 5 and [t["logprob"] for t in tops] == sorted((t["logprob"] for t in tops), reverse=True)
    assert entry["token"] == tops[0]["token"], "greedy picks the most likely token"
    tok, model = _load_fp32(tiny_llama_dir)
    ids = tok(reference_prompt(tok, USER), add_special_tokens=False)["input_ids"]
    with torch.no_grad():
        ref = torch.log_softmax(model(input_ids=torch.tensor([ids])).logits[0, -1].float(), -1)
    assert abs(tops[0]["logprob"] - float(ref.max())) < 1e-3
    bad = post(tiny_client, messages=USER, max_tokens=5, logprobs=True)
    assert bad.status_code == 400 and "max_tokens=1" in bad.json()["error"]["message"]


def test_prompt_logprobs_with_longer_generation(tiny_client):
    r = post(tiny_client, messages=USER, max_tokens=3, temperature=0, prompt_logprobs=0)
    body = r.json()
    assert r.status_code == 200 and body["usage"]["completion_tokens"] == 3
    assert body["prompt_logprobs"][0] is None and len(body["prompt_logprobs"]) == body["usage"]["prompt_tokens"]


def test_decoded_pieces_rebuild_multibyte_text(tiny_backend):
    from cai.serve.logprobs import decoded_pieces

    tok = tiny_backend.tokenizer
    text = "Café 漢字 🙂 naïve"
    ids = tok(text, add_special_tokens=False)["input_ids"]
    pieces = decoded_pieces(tok, ids)
    assert any(tok.decode([i]).endswith("\ufffd") for i in ids), "the text should split characters across tokens"
    assert "".join(pieces) == text and not any("\ufffd" in p for p in pieces)


def test_sample_next():
    import torch

    from cai.serve.logprobs import sample_next

    lp = torch.log_softmax(torch.tensor([0.0, 3.0, 1.0, 2.9]), -1)
    assert sample_next(lp, temperature=0, top_p=1, n=2, seed=None) == [1, 1]
    a = sample_next(lp, temperature=1.0, top_p=1.0, n=20, seed=5)
    assert a == sample_next(lp, temperature=1.0, top_p=1.0, n=20, seed=5) and len(set(a)) > 1
    assert set(sample_next(lp, temperature=1.0, top_p=0.3, n=20, seed=5)) == {1}  # the nucleus is one token


# -- the worker --------------------------------------------------------------------------------------


def test_worker_batches_queued_jobs_and_isolates_failures():
    calls = []
    gate = threading.Event()

    def handler(key, items):
        calls.append(list(items))
        gate.wait(5)
        if "bad" in items:
            raise ValueError("bad item")
        return [f"{key}:{i}" for i in items]

    worker = BatchWorker({"h": handler}, max_batch=8)
    try:
        first = worker.submit("h", "k", "a")
        time.sleep(0.2)  # the worker is now busy with "a"; the next jobs queue up
        queued = [worker.submit("h", "k", x) for x in ("b", "bad", "c")]
        other = worker.submit("h", "z", "d")
        gate.set()
        assert first.result(5) == "k:a"
        assert [f.exception(5) is not None for f in queued] == [False, True, False]
        assert [queued[0].result(), queued[2].result(), other.result(5)] == ["k:b", "k:c", "z:d"]
        assert ["b", "bad", "c"] in calls, f"queued jobs with one key should run as one batch: {calls}"
        assert ["b"] in calls and ["c"] in calls, "after a failed batch, each job is retried alone"
    finally:
        worker.close()


# -- planning `cai serve` ------------------------------------------------------------------------------


def test_defaults_bind_localhost():
    assert ServeConfig().host == "127.0.0.1"
    with pytest.raises(ValueError, match="port"):
        ServeConfig(port=0)


def test_plan_and_served_name():
    assert plan(ServeConfig(model="mock:")) == "app"
    assert plan(ServeConfig(model="hf:smollm2-135m")) == "app"
    assert served_name(ServeConfig(model="hf:smollm2-135m")) == "smollm2-135m"
    assert served_name(ServeConfig(model="hf:x", served_model_name="y")) == "y"
    with pytest.raises(Exception, match="already a server"):
        plan(ServeConfig(model="openai:http://h/v1#m"))


def test_vllm_command_on_cpu_and_cuda(tmp_path, monkeypatch):
    folder = tmp_path / "model"
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps({"num_hidden_layers": 2, "num_attention_heads": 4,
                                                    "num_key_value_heads": 2, "hidden_size": 128}))
    monkeypatch.delenv("VLLM_CPU_NUM_OF_RESERVED_CPU", raising=False)
    monkeypatch.delenv("VLLM_CPU_KVCACHE_SPACE", raising=False)
    cfg = ServeConfig(model=f"vllm:{folder}", served_model_name="mine", port=9001, api_key="k",
                      vllm_args="--max-model-len 2048")
    argv, env = vllm_command(cfg, cuda=False)
    assert argv[1:3] == ["-m", "vllm.entrypoints.openai.api_server"]
    joined = " ".join(argv)
    assert f"--model {folder}" in joined and "--served-model-name mine" in joined
    assert "--host 127.0.0.1 --port 9001" in joined and "--api-key k" in joined
    # The KV cache is asked for in bytes (a share of the node's total can be wrong), and the user's
    # own vLLM flags come last so they win.
    kv = int(argv[argv.index("--kv-cache-memory-bytes") + 1])
    assert kv >= 2 * 2 * 2 * 32 * 2 * 4096 and "--gpu-memory-utilization" not in argv
    assert argv[-2:] == ["--max-model-len", "2048"]
    assert env["VLLM_CPU_NUM_OF_RESERVED_CPU"] == "0"
    argv, env = vllm_command(cfg, cuda=True)
    assert "--kv-cache-memory-bytes" not in argv and "VLLM_CPU_NUM_OF_RESERVED_CPU" not in env


def test_port_in_use_is_one_clear_error(capsys):
    import socket

    from cai.cli import main

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        assert main(["serve", "-m", "mock:", "--port", str(port)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("cai: error: cannot listen on 127.0.0.1:") and "--port" in err and "\n" not in err


def test_app_survives_several_lifespans():
    app = create_app(MockBackend(responses=["x"]), "m")
    for _ in range(2):
        with TestClient(app) as client:
            assert post(client, messages=USER).json()["choices"][0]["message"]["content"] == "x"


# ---- security bounds (issue 8) -------------------------------------------------------------------

def test_request_bounds_refuse_what_would_tie_up_the_model():
    from cai.serve.limits import Limits

    app = create_app(MockBackend(), "m", limits=Limits(max_request_bytes=2000, max_tokens=64, max_n=4))
    with TestClient(app) as client:
        msg = [{"role": "user", "content": "hi"}]
        r = client.post("/v1/chat/completions", json={"messages": msg, "n": 1000000})
        assert r.status_code == 400 and "limit of 4" in r.json()["error"]["message"]
        r = client.post("/v1/chat/completions", json={"messages": msg, "max_tokens": 10**9})
        assert r.status_code == 400 and r.json()["error"]["param"] == "max_tokens"
        r = client.post("/v1/chat/completions", json={"messages": [{"role": "user", "content": "x" * 5000}]})
        assert r.status_code == 413 and "2000 bytes" in r.json()["error"]["message"]
        # a body without a declared length is counted as it arrives
        r = client.post("/v1/chat/completions", content=iter([b'{"messages": [{"role": "user", "content": "',
                                                              b"y" * 5000, b'"}]}']))
        assert r.status_code == 413
        assert client.post("/v1/chat/completions", json={"messages": msg, "n": 4, "max_tokens": 64}).status_code == 200


def test_concurrency_limit_answers_429_with_retry_after():
    import threading

    from cai.serve.limits import Limits

    gate = threading.Event()

    class Slow(MockBackend):
        def generate(self, convs, params):
            gate.wait(5)
            return super().generate(convs, params)

    app = create_app(Slow(), "m", limits=Limits(max_concurrency=1))
    with TestClient(app) as client:
        body = {"messages": [{"role": "user", "content": "hi"}]}
        first = threading.Thread(target=lambda: client.post("/v1/chat/completions", json=body))
        first.start()
        for _ in range(100):
            time.sleep(0.02)
            r = client.post("/v1/chat/completions", json=body)
            if r.status_code == 429:
                break
        gate.set()
        first.join()
        assert r.status_code == 429 and r.headers["retry-after"] == "1"
        assert client.post("/v1/chat/completions", json=body).status_code == 200


def test_api_key_is_compared_in_constant_time(monkeypatch):
    import hmac

    calls = []
    real = hmac.compare_digest
    monkeypatch.setattr(hmac, "compare_digest", lambda a, b: calls.append(1) or real(a, b))
    with TestClient(create_app(MockBackend(), "m", api_key="sekrit")) as client:
        assert client.get("/v1/models", headers={"authorization": "Bearer sekrit"}).status_code == 200
        assert client.get("/v1/models", headers={"authorization": "Bearer sekriT"}).status_code == 401
    assert len(calls) == 2


def test_serve_config_bounds_are_checked():
    from cai.serve import ServeConfig

    with pytest.raises(ValueError, match="max_n"):
        ServeConfig(max_n=0)
    assert ServeConfig().host == "127.0.0.1"


def test_vllm_server_gets_chatml_for_a_model_without_a_chat_template(tmp_path, monkeypatch):
    """hf and cai's app fall back to ChatML for a base model; vLLM's server must too."""
    from cai.chat import CHATML_TEMPLATE

    monkeypatch.setenv("CAI_HOME", str(tmp_path / "home"))
    base = tmp_path / "base"
    base.mkdir()
    (base / "config.json").write_text("{}")
    (base / "tokenizer_config.json").write_text('{"model_max_length": 2048}')
    argv, _ = vllm_command(ServeConfig(model=f"vllm:{base}"), cuda=False)
    i = argv.index("--chat-template")
    assert open(argv[i + 1]).read() == CHATML_TEMPLATE
    (base / "tokenizer_config.json").write_text('{"chat_template": "{{ messages }}"}')
    assert "--chat-template" not in vllm_command(ServeConfig(model=f"vllm:{base}"), cuda=False)[0]
