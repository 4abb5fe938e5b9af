"""Building the feedback model's multiple-choice prompt, as chat messages.

Layout (wording in ``templates/label.yaml``)::

    [system]                       optional, from the template
    user:      example question    } few-shot examples from the constitution, if asked for
    assistant: The answer is: (B)  }
    user:      conversation + preference question + (A) ... (B) ...
    assistant: The answer is: (    <- continued: "A" and "B" are scored here

In chain-of-thought mode the last assistant message is first "Let's think step by step:" (the
model writes its reasoning), then the reasoning followed by "So the answer is:".
"""

from __future__ import annotations

import re
from typing import Any, Sequence

from cai.templates import fill, load_template
from cai.types import Conversation, Message

_OPTIONS_TAIL = re.compile(r"\s*Options:\s*$")


def label_template() -> dict[str, Any]:
    return load_template("label")


def format_transcript(messages: Sequence[Message], tpl: dict[str, Any] | None = None) -> str:
    """The conversation under judgement as "Human: ...\\n\\nAssistant: ..." text."""
    tpl = tpl or label_template()
    roles = tpl["roles"]
    return tpl["turn_separator"].join(
        fill(tpl["turn"], role=roles.get(m["role"], m["role"]), content=m["content"].strip()) for m in messages
    )


def clean_question(question: str | None, tpl: dict[str, Any] | None = None) -> str:
    """The preference question, without a trailing "Options:" (the CAI paper's instruction files
    end with it, and the template adds its own)."""
    tpl = tpl or label_template()
    q = (question or "").strip()
    q = _OPTIONS_TAIL.sub("", q).strip()
    return q or tpl["default_question"]


def question_message(messages: Sequence[Message], response_a: str, response_b: str, question: str | None,
                     tpl: dict[str, Any] | None = None) -> Message:
    tpl = tpl or label_template()
    content = fill(tpl["question"], conversation=format_transcript(messages, tpl),
                   question=clean_question(question, tpl), response_a=response_a.strip(),
                   response_b=response_b.strip())
    return {"role": "user", "content": content}


def example_turns(examples: Sequence[Any], tpl: dict[str, Any] | None = None, *, cot: bool = False) -> list[Message]:
    """Few-shot turns from PreferenceExample-like objects (messages, response_a, response_b,
    question, answer "A"/"B", optional reasoning). In CoT mode an example's reasoning is shown
    before its answer, so the model sees what it is asked to do."""
    tpl = tpl or label_template()
    turns: list[Message] = []
    for ex in examples:
        letter = str(ex.answer).strip().strip("()").upper()
        if letter not in tpl["letters"]:
            raise ValueError(f"a preference example's answer must be one of {tpl['letters']}, got {ex.answer!r}")
        turns.append(question_message(ex.messages, ex.response_a, ex.response_b, ex.question, tpl))
        reasoning = getattr(ex, "reasoning", None)
        if cot and reasoning:
            answer = fill(tpl["example_cot_answer"], cot_prefix=tpl["cot_prefix"], reasoning=reasoning.strip(),
                          letter=letter)
        else:
            answer = fill(tpl["example_answer"], letter=letter)
        turns.append({"role": "assistant", "content": answer})
    return turns


def choice_conversation(messages: Sequence[Message], response_a: str, response_b: str, question: str | None, *,
                        examples: Sequence[Any] = (), cot: bool = False,
                        tpl: dict[str, Any] | None = None) -> Conversation:
    """The full prompt, ending with an assistant message to be continued: ``answer_prefix``, or
    ``cot_prefix`` in chain-of-thought mode (the model writes its reasoning first)."""
    tpl = tpl or label_template()
    conv: Conversation = []
    if tpl.get("system"):
        conv.append({"role": "system", "content": tpl["system"]})
    conv.extend(example_turns(examples, tpl, cot=cot))
    conv.append(question_message(messages, response_a, response_b, question, tpl))
    prefix = tpl["cot_prefix"] if cot else tpl["answer_prefix"]
    conv.append({"role": "assistant", "content": prefix})
    return conv


def after_reasoning(cot_conversation: Conversation, reasoning: str, tpl: dict[str, Any] | None = None, *,
                    paper: bool = False) -> Conversation:
    """Replace the "Let's think step by step:" turn with the reasoning and the answer prefix
    (for paper-format prompts, whose options are " (A)", the prefix without its "(")."""
    tpl = tpl or label_template()
    last = fill(tpl["paper_cot_answer" if paper else "cot_answer"], cot_prefix=tpl["cot_prefix"],
                reasoning=reasoning.strip())
    return [*cot_conversation[:-1], {"role": "assistant", "content": last}]


def paper_choice_conversation(prompt: str, *, examples: Sequence[Any] = (), cot: bool = False,
                              tpl: dict[str, Any] | None = None) -> Conversation:
    """A prompt in the CAI paper's evaluation format (question and options already written,
    ending "The answer is:") as a user turn plus the prefix to continue, laid out like
    :func:`choice_conversation`."""
    tpl = tpl or label_template()
    text = prompt.rstrip()
    answer = tpl["paper_answer_prefix"]
    head = text[: -len(answer)] if text.endswith(answer) else text
    conv: Conversation = []
    if tpl.get("system"):
        conv.append({"role": "system", "content": tpl["system"]})
    conv.extend(example_turns(examples, tpl, cot=cot))
    conv.append({"role": "user", "content": head.strip()})
    conv.append({"role": "assistant", "content": tpl["cot_prefix"] if cot else answer})
    return conv


_PAPER_OPTIONS = re.compile(r"(\n ?\(A\) )(.*)(\n ?\(B\) )(.*?)(\s*The answer is:\s*)$", re.DOTALL)


def swap_paper_options(prompt: str) -> str | None:
    """The same paper-format prompt with the texts of (A) and (B) exchanged, or None if its two
    options cannot be found."""
    m = _PAPER_OPTIONS.search(prompt)
    if not m:
        return None
    return prompt[: m.start()] + m.group(1) + m.group(4) + m.group(3) + m.group(2) + m.group(5)
