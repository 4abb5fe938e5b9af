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
    # The revision filter's verdict per round (``filter.reasons``: round -> problems) and, for a
    # record it set aside, ``dropped``: the reasons no revision was kept.
    rejected = (rec.get("filter") or {}).get("reasons") or {}
    for k, step in enumerate(steps, 1):
        if rejected.get(str(k)):
            step["rejected"] = [str(r) for r in rejected[str(k)]]
    initial, final = clip(rec.get("initial")), clip(rec.get("final"))
    tags = sorted({s["principle"] for s in steps})
    revised = final != initial
    tags.append("revised" if revised else "unchanged")
    item = {"kind": "revision", "id": str(rec.get("id", "")), "src": src, "prompt": prompt, "context": context,
            "initial": initial, "steps": steps, "final": final, "revised": revised, "tags": tags}
    if "dropped" in rec:
        reasons = [str(r) for r in rec.get("dropped") or []]
        item["dropped"] = reasons
        tags[:0] = ["dropped"]  # first: the summary line shows only a few tags
        tags += [f"dropped: {r}" for r in reasons]
    return item


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
ANSWER_KEYS = ("answer", "completion", "response", "output", "generation", "final")
# Whether the item went wrong, where a record says it outright (red team: the attack succeeded).
FAIL_KEYS = ("success", "attack_success", "jailbroken", "failed", "failure")
FAIL_LABELS = {"harmful", "complies-harmful", "complies_harmful", "unsafe-compliance", "jailbroken"}
TAG_KEYS = ("attack", "category", "type", "label")


def _first(rec: dict[str, Any], keys: Sequence[str]) -> Any:
    for k in keys:
        if rec.get(k) not in (None, "", [], {}):
            return rec[k]
    return None


def _grade(rec: dict[str, Any]) -> dict[str, Any]:
    """The grader's verdict: ``grade`` as cai's graders write it ({label, refused, harmful,
    score}), or a plain string under ``grade``/``verdict``."""
    g = rec.get("grade", rec.get("verdict"))
    if isinstance(g, dict):
        return g
    return {"label": g} if isinstance(g, str) else {}


def failed(rec: dict[str, Any], task: str) -> bool | None:
    """Whether an eval item is a failure: the attack succeeded (red team), the answer was graded
    harmful (harmlessness), or a safe prompt was refused (over-refusal). None when unknown."""
    for k in FAIL_KEYS:
        if isinstance(rec.get(k), bool):
            return rec[k]
    grade = _grade(rec)
    if isinstance(grade.get("harmful"), bool):
        return grade["harmful"]
    if isinstance(rec.get("harmless"), bool):
        return not rec["harmless"]
    if task == "over-refusal" and isinstance(grade.get("refused"), bool) and rec.get("label") in ("safe", "unsafe"):
        return rec["label"] == "safe" and grade["refused"]
    label = grade.get("label")
    if isinstance(label, str) and label:
        return label.strip().lower() in FAIL_LABELS
    return None


def _turns(rec: dict[str, Any]) -> tuple[str, list[list[str]], str] | None:
    """MT-Bench style records: ``turns`` (user messages) and ``answers`` (one per turn)."""
    turns, answers = rec.get("turns"), rec.get("answers")
    if not (isinstance(turns, list) and turns and all(isinstance(t, str) for t in turns)):
        return None
    if isinstance(answers, dict):  # one list per model (pairwise): show each model's answers
        answers = ["\n\n".join(f"[{m}] {a[i] if isinstance(a, list) and i < len(a) else ''}" for m, a in answers.items())
                   for i in range(len(turns))]
    answers = answers if isinstance(answers, list) else []
    context = []
    for i, t in enumerate(turns[:-1]):
        context += [["user", clip(t)], ["assistant", clip(answers[i] if i < len(answers) else "")]]
    last = answers[len(turns) - 1] if len(answers) >= len(turns) else ""
    return clip(turns[-1]), context, clip(message_text(last))


def eval_item(rec: dict[str, Any], src: str, task: str, model: str) -> dict[str, Any] | None:
    """An eval or red-team record as a browser item, or None if it holds no prompt and answer
    (log-likelihood tasks such as hhh and truthfulqa have nothing to read)."""
    multi = _turns(rec)
    if multi:
        prompt, context, answer = multi
    else:
        raw_prompt = _first(rec, PROMPT_KEYS)
        if raw_prompt is None:
            return None
        prompt, context = split_prompt(raw_prompt)
        answer = clip(message_text(_first(rec, ANSWER_KEYS)))
    if not answer:
        return None
    grade = _grade(rec)
    label = grade.get("label")
    tags = [str(rec[k]) for k in TAG_KEYS if isinstance(rec.get(k), (str, int)) and rec.get(k) != ""]
    if isinstance(label, str) and label:
        tags.append(label)
    bad = failed(rec, task)
    if bad:
        tags.append("failure")
    kind = "redteam" if task == "redteam" else "eval"
    item = {"kind": kind, "id": str(rec.get("id", "")), "src": src, "prompt": prompt, "context": context,
            "answer": answer, "label": "" if label is None else str(label), "failed": bad, "task": task,
            "model": model, "tags": list(dict.fromkeys(tags))}
    behavior = rec.get("behavior")
    if isinstance(behavior, str) and behavior != prompt:
        item["behavior"] = clip(behavior)
    score = finite(_first(rec, ("score", "p_win", "p_harmful", "reward")))
    if score is None:
        score = finite(grade.get("score"))
    if score is not None:
        item["score"] = score
    return item
