"""``cai serve``: an OpenAI-compatible server (``/v1/chat/completions``, ``/v1/models``) for any
local model, bound to localhost unless told otherwise.

Where the model resolves to the vllm backend (a bare name with vLLM installed, or ``vllm:...``),
this process becomes vLLM's own OpenAI server, started on the resolved local folder and serving it
under the name the user gave. Otherwise a small FastAPI app (``cai.serve.app``) serves the cai
backend in-process (hf, or mock for dry runs). Either way, cai's openai backend talks to it:
``-m openai:http://127.0.0.1:8000/v1#MODEL``.
"""

from __future__ import annotations

import os
import shlex
import sys
from dataclasses import dataclass
from typing import Any

from cai.config import option
from cai.errors import BackendUnavailable, CAIError



@dataclass
class ServeConfig:
    model: str = option("smollm2-135m", help="model or backend spec to serve (alias, folder, hf:X, vllm:X, mock:)",
                        flags=("-m", "--model"))
    host: str = option("127.0.0.1", help="address to bind; 0.0.0.0 exposes the server to the network")
    port: int = option(8000, help="port to listen on")
    served_model_name: str | None = option(None, help="the model name clients ask for (default: the -m value "
                                           "without its backend prefix)")
    api_key: str | None = option(None, help="require 'Authorization: Bearer KEY' (default: $CAI_SERVE_API_KEY, "
                                 "or no key)")
    dtype: str = option("auto", help="weights dtype: auto (bf16 where fast), bfloat16, float16, float32")
    max_batch: int = option(16, help="most queued requests batched into one model call (in-process app; "
                            "1 turns micro-batching off)")
    vllm_args: str = option("", help="extra arguments for vLLM's server, as one quoted string, e.g. "
                            "\"--max-model-len 4096\"")
    max_tokens: int = option(4096, help="most tokens one request may ask for (in-process app)")
    max_n: int = option(16, help="most samples one request may ask for (in-process app)")
    max_concurrency: int = option(64, help="requests in flight at once; more get 429 with Retry-After (in-process app)")
    max_request_bytes: int = option(4 * 1024 * 1024, help="largest request body accepted; larger get 413 "
                                    "(in-process app)")

    def __post_init__(self) -> None:
        if not 0 < int(self.port) < 65536:
            raise ValueError(f"port must be 1-65535, got {self.port}")
        if self.max_batch < 1:
            raise ValueError(f"max_batch must be >= 1, got {self.max_batch}")
        self.limits()  # checks the bounds now

    def limits(self) -> Any:
        from cai.serve.limits import Limits

        return Limits(max_request_bytes=self.max_request_bytes, max_tokens=self.max_tokens, max_n=self.max_n,
                      max_concurrency=self.max_concurrency)


def served_name(config: ServeConfig) -> str:
    if config.served_model_name:
        return config.served_model_name
    from cai.backends import split_spec

    kind, target = split_spec(config.model)
    return target if kind in ("hf", "vllm") else config.model


def plan(config: ServeConfig) -> str:
    """"vllm" (exec vLLM's server) or "app" (cai's own app over a cai backend)."""
    from cai.backends import split_spec, vllm_available

    kind, _ = split_spec(config.model)
    if kind == "openai":
        raise CAIError(f"{config.model} is already a server; point clients at it directly")
    if kind == "vllm" and not vllm_available():
        raise BackendUnavailable(f"vLLM is not installed; serve with -m hf:{_target(config.model)} or install vllm")
    return "vllm" if kind == "vllm" else "app"


def _target(spec: str) -> str:
    from cai.backends import split_spec

    return split_spec(spec)[1]


def vllm_command(config: ServeConfig, *, cuda: bool) -> tuple[list[str], dict[str, str]]:
    """The argv and environment that start vLLM's OpenAI server for ``config``."""
    from cai.models import resolve

    path = resolve(_target(config.model))
    argv = [sys.executable, "-m", "vllm.entrypoints.openai.api_server", "--model", path,
            "--served-model-name", served_name(config), "--host", config.host, "--port", str(config.port)]
    env = dict(os.environ)
    if config.dtype != "auto":
        argv += ["--dtype", config.dtype]
    if not cuda:
        # The CPU build would otherwise hold a core back for its own bookkeeping and size the KV
        # cache as a share of the memory node's total, which can be far from what is free (see
        # cai.backends.vllm_memory); ask for bytes instead.
        env.setdefault("VLLM_CPU_NUM_OF_RESERVED_CPU", "0")
        # What the engine computes in: "auto" becomes bf16 only where this CPU is faster in it.
        from cai.precision import cpu_compute_dtype

        dtype = cpu_compute_dtype() if config.dtype == "auto" else config.dtype
        if not env.get("VLLM_CPU_KVCACHE_SPACE") and "--kv-cache-memory-bytes" not in config.vllm_args:
            from cai.backends.vllm import _model_max_len
            from cai.backends.vllm_memory import SERVER_TOKENS, bytes_per_value, cpu_kv_cache_bytes

            try:
                kv = cpu_kv_cache_bytes(path, _model_max_len(path) or 4096, tokens=SERVER_TOKENS,
                                        dtype_bytes=bytes_per_value(dtype, path))
            except MemoryError as e:
                raise CAIError(f"cannot serve {config.model!r} with vLLM: {e}; or serve -m hf:{config.model}") from None
            argv += ["--kv-cache-memory-bytes", str(kv)]
        if config.dtype == "auto":
            argv += ["--dtype", dtype]
    key = api_key(config)
    if key:
        argv += ["--api-key", key]
    extra = shlex.split(config.vllm_args)
    if "--chat-template" not in extra and not has_chat_template(path):
        # vLLM refuses to chat with a base model; the hf backend and cai's app fall back to ChatML,
        # so the vllm server is given the same template, and a model answers the same either way.
        argv += ["--chat-template", str(chatml_file())]
    argv += extra
    return argv, env


def has_chat_template(path: str) -> bool:
    """Whether a local model folder ships a chat template (hub ids are assumed to)."""
    import json
    from pathlib import Path

    folder = Path(path)
    if not folder.is_dir():
        return True
    if (folder / "chat_template.jinja").is_file() or (folder / "chat_template.json").is_file():
        return True
    try:
        return bool(json.loads((folder / "tokenizer_config.json").read_text()).get("chat_template"))
    except (OSError, ValueError):
        return False


def chatml_file() -> Any:
    from cai.chat import CHATML_TEMPLATE
    from cai.home import cai_home

    p = cai_home() / "chatml.jinja"
    if not p.is_file() or p.read_text() != CHATML_TEMPLATE:
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(CHATML_TEMPLATE)
    return p


def api_key(config: ServeConfig) -> str | None:
    return config.api_key or os.environ.get("CAI_SERVE_API_KEY") or None


def build_app(config: ServeConfig, backend: Any = None) -> Any:
    """cai's own app for ``config`` (loading the backend unless one is given)."""
    from cai.backends import load_backend

    try:
        from cai.serve.app import create_app
    except ModuleNotFoundError as e:
        raise BackendUnavailable(f"cai serve needs {e.name}: pip install 'cai[serve]'") from None

    if backend is None:
        backend = load_backend(config.model, dtype=config.dtype)
    return create_app(backend, served_name(config), api_key=api_key(config), max_batch=config.max_batch,
                      limits=config.limits())


def check_port_free(host: str, port: int) -> None:
    import socket

    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError as e:
            raise CAIError(f"cannot listen on {host}:{port} ({e.strerror}); pick another with --port "
                           "or stop the server using it") from None


def serve(config: ServeConfig) -> None:
    """Run the server in the foreground until interrupted."""
    how = plan(config)
    check_port_free(config.host, config.port)
    if how == "vllm":
        import torch

        argv, env = vllm_command(config, cuda=torch.cuda.is_available())
        shown = ["***" if i and argv[i - 1] == "--api-key" else a for i, a in enumerate(argv)]
        print(f"cai: starting vLLM's OpenAI server: {shlex.join(shown)}", file=sys.stderr)
        sys.stdout.flush()
        sys.stderr.flush()
        os.execve(argv[0], argv, env)  # vLLM owns the process (and its signals) from here on

    app = build_app(config)
    import uvicorn

    print(f"cai: serving {served_name(config)} at http://{config.host}:{config.port}/v1 "
          f"(use -m openai:http://{config.host}:{config.port}/v1#{served_name(config)})", file=sys.stderr)
    uvicorn.run(app, host=config.host, port=config.port, log_level="warning")
