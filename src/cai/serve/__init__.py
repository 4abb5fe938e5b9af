"""An OpenAI-compatible server: vLLM's own for vLLM models, else cai's app over any backend.

``server`` plans and starts it, ``app`` is the FastAPI app, ``logprobs`` the log-prob helpers.
"""

from cai.serve.server import ServeConfig, plan, serve, served_name, vllm_command

__all__ = ["ServeConfig", "plan", "serve", "served_name", "vllm_command"]
