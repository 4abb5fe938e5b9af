"""Turn the records of critique, preference and eval files into the items the report's example
browser shows: plain dicts of text, embedded as JSON and drawn by the page's script.

Eval and red-team per-item records are read by meaning, not one fixed schema (each task names its
fields), so the first present of a few usual names is taken: see :func:`eval_item`.
"""

from __future__ import annotations

from typing import Any, Sequence

MAX_TEXT = 20_000  # characters kept per text field: a runaway generation should not bloat the page


def clip(text: Any) -> str:
    s = text if isinstance(text, str) else ("" if text is None else str(text))
    return s if len(s) <= MAX_TEXT else s[:MAX_TEXT] + f"… [{len(s) - MAX_TEXT} more characters]"


def finite(v: Any) -> float | None:
    """A number the page's JSON can hold (no NaN or infinity), else None."""
    import math

    return float(v) if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) else None


def message_text(x: Any) -> str:
    """A field that is a string, one message, or a list of messages: its last message's text."""
    if isinstance(x, str):
        return x
    if isinstance(x, dict):
        return str(x.get("content", ""))
    if isinstance(x, list) and x and isinstance(x[-1], dict):
        return str(x[-1].get("content", ""))
    return "" if x is None else str(x)


def split_prompt(prompt: Any) -> tuple[str, list[list[str]]]:
    """(the last user message, the turns before it as [role, text]) of a prompt given as a
    string or a chat conversation. System messages are kept in the context: they shape the answer."""
    if isinstance(prompt, str):
        return prompt, []
    if not isinstance(prompt, list):
        return message_text(prompt), []
    msgs = [m for m in prompt if isinstance(m, dict)]
    last = max((i for i, m in enumerate(msgs) if m.get("role") == "user"), default=len(msgs) - 1)
    if last < 0:
        return "", []
    context = [[str(m.get("role", "")), clip(m.get("content", ""))] for m in msgs[:last]]
    return clip(msgs[last].get("content", "")), context


def critique_item(rec: dict[str, Any], src: str) -> dict[str, Any]:
    prompt, context = split_prompt(rec.get("prompt"))
    steps = []
    for s in rec.get("steps") or []:
        steps.append({"principle": str(s.get("principle_id", "?")), "critique": clip(s.get("critique")),
                      "revision": clip(s.get("revision")), "stopped": bool(s.get("stopped")),
                      "p_comply": finite(s.get("p_comply"))})
    initial, final = clip(rec.get("initial")), clip(rec.get("final"))
    tags = sorted({s["principle"] for s in steps})
    revised = final != initial
    tags.append("revised" if revised else "unchanged")
    return {"kind": "revision", "id": str(rec.get("id", "")), "src": src, "prompt": prompt, "context": context,
            "initial": initial, "steps": steps, "final": final, "revised": revised, "tags": tags}


def pair_item(rec: dict[str, Any], src: str) -> dict[str, Any]:
    from cai.data_stats import _principle_ids

    prompt, context = split_prompt(rec.get("prompt"))
    tags = _principle_ids(rec)
    if rec.get("tie"):
        tags.append("tie")
    agree = rec.get("agree", rec.get("orders_agree"))
    if agree is False:
        tags.append("orders disagree")
    return {"kind": "pair", "id": str(rec.get("id", "")), "src": src, "prompt": prompt, "context": context,
            "chosen": clip(message_text(rec.get("chosen"))), "rejected": clip(message_text(rec.get("rejected"))),
            "p_chosen": finite(rec.get("p_chosen")),
            "agree": agree if isinstance(agree, bool) else None, "tags": tags}


PROMPT_KEYS = ("prompt", "attack_prompt", "messages", "conversation", "input", "question", "behavior", "goal")
ANSWER_KEYS = ("answer", "completion", "response", "output", "generation", "final", "text")
LABEL_KEYS = ("label", "grade", "verdict", "judgement", "judgment", "category_label")
FAIL_KEYS = ("success", "attack_success", "jailbroken", "harmful", "unsafe", "failed", "failure")
FAIL_LABELS = {"harmful", "complies-harmful", "complies_harmful", "complied-harmful", "unsafe", "jailbroken",
               "success", "harmful-compliance", "full_compliance"}
TAG_KEYS = ("attack", "category", "type", "task", "label")


def _first(rec: dict[str, Any], keys: Sequence[str]) -> Any:
    for k in keys:
        if rec.get(k) not in (None, ""):
            return rec[k]
    return None


def failed(rec: dict[str, Any], task: str) -> bool | None:
    """Whether an eval item is a failure: for red-teaming, the attack succeeded; for a safety
    eval, the answer was harmful. None when the record does not say."""
    for k in FAIL_KEYS:
        if isinstance(rec.get(k), bool):
            return rec[k]
    if isinstance(rec.get("harmless"), bool):
        return not rec["harmless"]
    label = _first(rec, LABEL_KEYS)
    if isinstance(label, str):
        return label.strip().lower() in FAIL_LABELS
    return None


def eval_item(rec: dict[str, Any], src: str, task: str, model: str) -> dict[str, Any] | None:
    """An eval or red-team record as a browser item, or None if it holds no prompt text."""
    raw_prompt = _first(rec, PROMPT_KEYS)
    if raw_prompt is None:
        return None
    prompt, context = split_prompt(raw_prompt)
    label = _first(rec, LABEL_KEYS)
    tags = [str(rec[k]) for k in TAG_KEYS if isinstance(rec.get(k), (str, int)) and rec.get(k) != ""]
    bad = failed(rec, task)
    if bad:
        tags.append("failure")
    kind = "redteam" if task == "redteam" else "eval"
    item = {"kind": kind, "id": str(rec.get("id", "")), "src": src, "prompt": prompt, "context": context,
            "answer": clip(message_text(_first(rec, ANSWER_KEYS))), "label": "" if label is None else str(label),
            "failed": bad, "task": task, "model": model, "tags": list(dict.fromkeys(tags))}
    if rec.get("behavior") and rec.get("behavior") != raw_prompt:
        item["behavior"] = clip(message_text(rec["behavior"]))
    score = _first(rec, ("score", "p_harmful", "p_refusal", "reward"))
    if finite(score) is not None:
        item["score"] = finite(score)
    return item
