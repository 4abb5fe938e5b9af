"""Turning a conversation into prompt text with a tokenizer's chat template.

Shared by the in-process backends (hf, vllm) and ``cai serve`` so that every path renders a
conversation the same way, including the "final assistant message is continued" convention.
"""

from __future__ import annotations

from typing import Any, Sequence

from cai.types import Conversation, check_conversation, ends_with_assistant

# Used only for tokenizers that ship no chat template (base models, tiny test models): ChatML,
# the format SmolLM2 and many open models use.
CHATML_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\n' + message['content'] }}"
    "{% if not (loop.last and continue_final_message) %}{{ '<|im_end|>\n' }}{% endif %}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)


def ensure_chat_template(tokenizer: Any) -> None:
    if not getattr(tokenizer, "chat_template", None):
        tokenizer.chat_template = CHATML_TEMPLATE


def render_prompt(tokenizer: Any, conversation: Conversation) -> str:
    """The exact text the model sees before it starts (or continues) the assistant turn."""
    check_conversation(conversation)
    ensure_chat_template(tokenizer)
    if ends_with_assistant(conversation):
        return tokenizer.apply_chat_template(
            list(conversation), tokenize=False, add_generation_prompt=False, continue_final_message=True
        )
    return tokenizer.apply_chat_template(list(conversation), tokenize=False, add_generation_prompt=True)


def render_prompts(tokenizer: Any, conversations: Sequence[Conversation]) -> list[str]:
    return [render_prompt(tokenizer, c) for c in conversations]


def encode_option_pairs(tokenizer: Any, prompt: str, options: Sequence[str]) -> tuple[list[int], list[list[int]]]:
    """Token ids of the prompt and of each option, encoded separately.

    Scoring ``log p(option | prompt)`` on ids(prompt) + ids(option) keeps every option's tokens
    apart from the prompt's, the way lm-evaluation-harness scores continuations. All backends that
    tokenize locally use this, so their scores agree.
    """
    prompt_ids = tokenizer(prompt, add_special_tokens=False)["input_ids"]
    option_ids = [tokenizer(o, add_special_tokens=False)["input_ids"] for o in options]
    for o, ids in zip(options, option_ids):
        if not ids:
            raise ValueError(f"option {o!r} encodes to no tokens")
    return prompt_ids, option_ids
