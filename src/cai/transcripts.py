"""Reading raw "\\n\\nHuman: ...\\n\\nAssistant: ..." transcripts (HH-RLHF, the CAI paper's files)
into chat messages."""

from __future__ import annotations

import re

from cai.types import Conversation

_TURN = re.compile(r"(?:^|\n\n)(Human|Assistant):[ \t]?")
_ROLE = {"Human": "user", "Assistant": "assistant"}


def parse_transcript(text: str) -> Conversation:
    """Split a transcript into user/assistant messages; text before the first turn is ignored.

    A trailing empty "Assistant:" (a prompt awaiting an answer) is dropped.
    """
    parts = _TURN.split(text)
    if len(parts) < 3:
        raise ValueError(f"not a Human:/Assistant: transcript: {text[:80]!r}")
    messages = []
    for role, content in zip(parts[1::2], parts[2::2]):
        messages.append({"role": _ROLE[role], "content": content.strip()})
    if messages and messages[-1]["role"] == "assistant" and not messages[-1]["content"]:
        messages.pop()
    return messages


def split_preference_pair(chosen: str, rejected: str) -> tuple[Conversation, str, str]:
    """An HH-RLHF pair -> (shared prompt messages, chosen final answer, rejected final answer)."""
    c, r = parse_transcript(chosen), parse_transcript(rejected)
    if not c or c[-1]["role"] != "assistant" or not r or r[-1]["role"] != "assistant":
        raise ValueError("an HH-RLHF pair must end with an assistant turn on both sides")
    prompt = c[:-1]
    if r[:-1] != prompt:
        # A few pairs differ earlier; the shared prefix is the part both agree on up to a user turn.
        n = 0
        while n < min(len(c), len(r)) - 1 and c[n] == r[n]:
            n += 1
        while n > 0 and c[n - 1]["role"] != "user":
            n -= 1
        if n == 0:
            raise ValueError("the two sides of the pair share no prompt")
        prompt = c[:n]
        return prompt, "\n\n".join(m["content"] for m in c[n:]), "\n\n".join(m["content"] for m in r[n:])
    return prompt, c[-1]["content"], r[-1]["content"]
