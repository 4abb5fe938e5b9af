"""Readers for the prompt files published with the CAI paper (anthropics/ConstitutionalHarmlessnessPaper).

How each maps onto our model:
- critique instructions (``{id: {"prompt": [...], "edit_request": ...}}``): one principle per id,
  with the ``CritiqueRequest:``/``Critique:`` and ``RevisionRequest:``/``Revision:`` markers
  stripped. An entry with several critique requests gives ``id``, ``id-1``, ``id-2``, ... sharing
  the revision request.
- preference instructions (a list of strings ending "Options:"): labelling-only principles
  ``pref0``, ``pref1``, ... with just a preference question (empty critique and revision, so
  ``critique_principles()`` skips them). Join it to a critique file with ``a.json+b.json`` to get
  one constitution with both.
- critique few-shot transcripts: one worked Example per critique round; a transcript with two
  rounds gives two examples, the second critiquing the first revision.
- preference few-shot files: PreferenceExamples. Their question is the paper's slot for the
  principle, so it gets the default wording in ``builtin/_formats.yaml``; the correct answer
  alternates between A and B so the examples do not teach a position bias.
"""

from __future__ import annotations

import re
from importlib import resources
from typing import Any, Callable

import yaml

from cai.constitution.located import Located
from cai.constitution.model import Constitution, ConstitutionError, Example, PreferenceExample, Principle
from cai.transcripts import parse_transcript

_TURN = re.compile(r"(?m)^(Human|Assistant|CritiqueRequest|Critique|RevisionRequest|Revision):[ \t]?")
_ROUND = ("CritiqueRequest", "Critique", "RevisionRequest", "Revision")


def _defaults() -> dict[str, Any]:
    text = (resources.files("cai.constitution") / "builtin" / "_formats.yaml").read_text(encoding="utf-8")
    return yaml.safe_load(text)


def strip_markers(text: str, start: str, end: str) -> str:
    """``"\\n\\nCritiqueRequest: X\\n\\nCritique:"`` -> ``"X"``; text without markers is kept."""
    s = text.strip()
    if s.startswith(start):
        s = s[len(start):]
    if s.endswith(end):
        s = s[: -len(end)]
    return s.strip()


def read_critique_instructions(doc: Located, *, name: str) -> Constitution:
    principles: list[Principle] = []
    ids: set[str] = set()
    for key, entry in doc.data.items():
        prompts = entry.get("prompt")
        if isinstance(prompts, str):
            prompts = [prompts]
        if not isinstance(prompts, list) or not prompts or not all(isinstance(x, str) and x.strip() for x in prompts):
            raise doc.error((key, "prompt"), "must be a non-empty list of critique requests",
                            'write "prompt": ["\\n\\nCritiqueRequest: ...\\n\\nCritique:"]')
        edit = entry.get("edit_request")
        if not isinstance(edit, str) or not edit.strip():
            raise doc.error((key, "edit_request"), "missing or not text",
                            'write "edit_request": "\\n\\nRevisionRequest: ...\\n\\nRevision:"')
        revision = strip_markers(edit, "RevisionRequest:", "Revision:")
        for k, prompt in enumerate(prompts):
            pid = str(key) if k == 0 else f"{key}-{k}"
            if pid in ids:
                raise doc.error((key,), f"principle id {pid!r} would be used twice", "rename the entry")
            ids.add(pid)
            principles.append(Principle(id=pid, critique=strip_markers(prompt, "CritiqueRequest:", "Critique:"),
                                        revision=revision))
    return Constitution(name=name, version="1",
                        description=f"CAI paper critique/revision instructions: {len(principles)} principles",
                        principles=tuple(principles), source=doc.file, format="paper-critique")


def read_preference_instructions(doc: Located, *, name: str) -> Constitution:
    principles = []
    for i, text in enumerate(doc.data):
        question = text.strip()
        question = question[: -len("Options:")].strip() if question.endswith("Options:") else question
        if not question:
            raise doc.error((i,), "is empty", "write the preference question before 'Options:'")
        principles.append(Principle(id=f"pref{i}", critique="", revision="", preference=question))
    return Constitution(name=name, version="1",
                        description=f"CAI paper preference instructions: {len(principles)} questions (labelling only)",
                        principles=tuple(principles), source=doc.file, format="paper-preference")


def _examples_from_transcript(text: str, error: Callable[[int, str, str], ConstitutionError]) -> list[Example]:
    """Parse Human/Assistant/CritiqueRequest/... turns. ``error(offset, problem, fix)`` locates problems."""
    matches = list(_TURN.finditer(text))
    turns = [(m.group(1), text[m.end():(matches[k + 1].start() if k + 1 < len(matches) else len(text))].strip(),
              m.start()) for k, m in enumerate(matches)]
    examples: list[Example] = []
    conv: list[dict[str, str]] = []
    pending: list[str] = []  # the critique round being read
    finished = False  # a round just ended: a Human: turn now starts the next example
    for tag, content, offset in turns:
        if pending or tag in _ROUND:
            expected = _ROUND[len(pending)]
            if tag != expected:
                raise error(offset, f"found {tag}: where {expected}: was expected",
                            "write each round as CritiqueRequest:, Critique:, RevisionRequest:, Revision:")
            if not pending and (not conv or conv[-1]["role"] != "assistant"):
                raise error(offset, "a CritiqueRequest: must follow an Assistant: answer", "add the answer to critique")
            pending.append(content)
            finished = False
            if len(pending) == 4:
                cr, c, rr, r = pending
                examples.append(Example(messages=list(conv), critique_request=cr, critique=c,
                                        revision_request=rr, revision=r))
                # A further round critiques this revision.
                conv = conv[:-1] + [{"role": "assistant", "content": r}]
                pending, finished = [], True
            continue
        if tag == "Human":
            if finished:
                conv, finished = [], False
            if content:
                conv.append({"role": "user", "content": content})
        else:
            if not conv or conv[-1]["role"] != "user":
                raise error(offset, "an Assistant: turn must follow a Human: turn", "add the Human: turn")
            conv.append({"role": "assistant", "content": content})
    if pending:
        raise error(len(text), f"the transcript ends inside a critique round (after {_ROUND[len(pending) - 1]}:)",
                    f"add the {_ROUND[len(pending)]}: turn")
    return examples


def read_fewshot(doc: Located, *, name: str) -> Constitution:
    examples: list[Example] = []
    for i, text in enumerate(doc.data):
        def error(offset: int, problem: str, fix: str, i: int = i, text: str = text) -> ConstitutionError:
            return doc.error((i,), f"{problem} (at character {offset})", fix)
        found = _examples_from_transcript(text, error)
        if not found:
            raise doc.error((i,), "no complete critique round in this transcript",
                            "add CritiqueRequest:, Critique:, RevisionRequest: and Revision: turns")
        examples.extend(found)
    return _fewshot_constitution(examples, doc.file, name)


def read_transcript_text(text: str, *, file: str, name: str) -> Constitution:
    def error(offset: int, problem: str, fix: str) -> ConstitutionError:
        return ConstitutionError(file, problem, fix, line=text.count("\n", 0, max(offset, 0)) + 1)
    examples = _examples_from_transcript(text, error)
    if not examples:
        raise ConstitutionError(file, "no complete critique round found", "add CritiqueRequest:, Critique:, "
                                "RevisionRequest: and Revision: turns after a Human:/Assistant: exchange")
    return _fewshot_constitution(examples, file, name)


def _fewshot_constitution(examples: list[Example], file: str, name: str) -> Constitution:
    return Constitution(name=name, version="1",
                        description=f"CAI paper critique few-shot transcripts: {len(examples)} worked examples",
                        principles=(), examples=tuple(examples), source=file, format="paper-fewshot")


def _pair(doc: Located, path: tuple, messages: list, good: str, bad: str, position: int,
          question: str, reasoning: str | None = None) -> PreferenceExample:
    if not messages or messages[-1]["role"] != "user":
        raise doc.error(path + ("prompt",), "the prompt does not end with a Human: turn", "end it with the human's request")
    a, b, answer = (good, bad, "A") if position % 2 == 0 else (bad, good, "B")
    return PreferenceExample(messages=messages, response_a=a, response_b=b, question=question, answer=answer,
                             reasoning=reasoning)


def read_preference_fewshot(doc: Located, *, name: str) -> Constitution:
    question = _defaults()["preference_question"]
    out: list[PreferenceExample] = []
    for i, item in enumerate(doc.data):
        good, bad = item.get("corrects"), item.get("incorrects")
        for key, value in (("corrects", good), ("incorrects", bad)):
            if not isinstance(value, list) or not value or not all(isinstance(x, str) for x in value):
                raise doc.error((i, key), "must be a non-empty list of responses", f'write "{key}": ["..."]')
        try:
            messages = parse_transcript(item["prompt"])
        except ValueError as e:
            raise doc.error((i, "prompt"), str(e), "write the prompt as \\n\\nHuman: ...\\n\\nAssistant:") from None
        for g in good:
            for b in bad:
                out.append(_pair(doc, (i,), messages, g.strip(), b.strip(), len(out), question))
    return Constitution(name=name, version="1",
                        description=f"CAI paper preference few-shot examples: {len(out)} labelled pairs",
                        principles=(), preference_examples=tuple(out), source=doc.file, format="paper-preference-fewshot")


_OPTIONS = re.compile(r"\(A\)\s*\[\[\[(.*?)\]\]\]\s*\(B\)\s*\[\[\[(.*?)\]\]\]", re.S)
_REASONING = re.compile(r"Let's think step by step:?(.*?)(?:\n\s*Human:|$)", re.S)
_ANSWER = re.compile(r"So the answer is:?\s*\(?([AB])\)?")
_HA_TURN = re.compile(r"(?m)^(H|A):[ \t]*")


def read_preference_cot_fewshot(doc: Located, *, name: str) -> Constitution:
    question = _defaults()["preference_question"]
    out = []
    for i, item in enumerate(doc.data):
        prompt = item["prompt"]
        if not isinstance(prompt, str) or "{}" not in prompt:
            raise doc.error((i, "prompt"), "has no {} slot for the question", "keep the paper's layout")
        head, tail = prompt.split("{}", 1)
        pieces = _HA_TURN.split(head)
        messages = [{"role": "user" if r == "H" else "assistant", "content": c.strip()}
                    for r, c in zip(pieces[1::2], pieces[2::2])]
        options, answer = _OPTIONS.search(tail), _ANSWER.search(tail)
        if not messages or options is None or answer is None:
            raise doc.error((i, "prompt"), "could not find the H:/A: conversation, the (A) [[[...]]] (B) [[[...]]] options "
                            "and 'So the answer is: (X)'", "keep the paper's layout")
        reasoning = _REASONING.search(tail[options.end():answer.start()])
        if not messages[-1]["role"] == "user":
            raise doc.error((i, "prompt"), "the conversation does not end with an H: turn", "end it with the human's request")
        out.append(PreferenceExample(messages=messages, response_a=options.group(1).strip(),
                                     response_b=options.group(2).strip(), question=question, answer=answer.group(1),
                                     reasoning=reasoning.group(1).strip() if reasoning else None))
    return Constitution(name=name, version="1",
                        description=f"CAI paper chain-of-thought preference few-shot examples: {len(out)} labelled pairs",
                        principles=(), preference_examples=tuple(out), source=doc.file,
                        format="paper-preference-cot-fewshot")


READERS: dict[str, Callable[..., Constitution]] = {
    "paper-critique": read_critique_instructions,
    "paper-preference": read_preference_instructions,
    "paper-fewshot": read_fewshot,
    "paper-preference-fewshot": read_preference_fewshot,
    "paper-preference-cot-fewshot": read_preference_cot_fewshot,
}
