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


def encode_prompt(tokenizer: Any, conversation: Conversation) -> list[int]:
    """The token ids of :func:`render_prompt`'s text. The chat template already holds the special
    tokens, so the tokenizer adds none of its own."""
    return tokenizer(render_prompt(tokenizer, conversation), add_special_tokens=False)["input_ids"]


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


def encode_scoring_requests(
    tokenizer: Any, conversations: Sequence[Conversation], options: Any, context_length: int, model_name: str,
    *, truncate: bool = False,
) -> tuple[list[list[str]], list[tuple[list[int], list[list[int]]]]]:
    """Validate and tokenize a ``score_options`` call for a backend that tokenizes locally.

    Returns the options of each conversation and, per conversation, (prompt ids, ids of each option);
    both lists are empty for no conversations (the options are still checked). A conversation that
    renders to no tokens, or cannot fit its longest option in ``context_length``, is an error naming it
    (with ``truncate``, the prompt's first tokens are dropped to fit instead).
    """
    from cai.backends import options_per_conversation
    from cai.errors import CAIError

    conversations = list(conversations)
    per = options_per_conversation(conversations, options)
    encoded = []
    for i, (conv, opts) in enumerate(zip(conversations, per)):
        check_conversation(conv, f"conversations[{i}]")
        prompt_ids, option_ids = encode_option_pairs(tokenizer, render_prompt(tokenizer, conv), opts)
        if not prompt_ids:
            raise CAIError(f"conversation {i} renders to no tokens, so nothing predicts its options; give it a "
                           "message, or the tokenizer a chat template")
        longest = max(len(o) for o in option_ids)
        if truncate and len(prompt_ids) + longest > context_length and context_length > longest:
            prompt_ids = prompt_ids[len(prompt_ids) + longest - context_length:]  # keep the end, as generate does
        if len(prompt_ids) + longest > context_length:
            raise CAIError(f"conversation {i} with its longest option is {len(prompt_ids) + longest} tokens, over "
                           f"{model_name}'s context of {context_length}; shorten the conversation")
        encoded.append((prompt_ids, option_ids))
    return per, encoded
