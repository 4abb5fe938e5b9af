"""``cai serve -m MODEL [--host 127.0.0.1 --port 8000]``: an OpenAI-compatible server."""

from __future__ import annotations

import argparse


def register(sub: argparse._SubParsersAction) -> None:
    from cai.config import add_config_arguments
    from cai.serve import ServeConfig

    p = sub.add_parser(
        "serve", help="serve a model over an OpenAI-compatible HTTP API",
        description="Serve /v1/chat/completions and /v1/models for a local model: vLLM's own server where "
        "the model resolves to vllm, else cai's app over the hf backend. Binds 127.0.0.1 unless --host says "
        "otherwise. Clients: -m openai:http://127.0.0.1:8000/v1#MODEL.")
    p.add_argument("--config", metavar="RUN.yaml", help="YAML run file with these options (keys are the long flag "
                   "names); flags given on the command line override it")
    add_config_arguments(p, ServeConfig)
    # vLLM's server says through its log when it is up and what it serves: not kept to errors.
    p.set_defaults(func=_serve, library_logs=True)


def _serve(args: argparse.Namespace) -> int:
    from cai.config import stage_config
    from cai.serve import ServeConfig, serve

    config = stage_config(ServeConfig, args)
    serve(config)
    return 0
