"""Reading a constitution file in any supported format; the format is detected from the content.

| format                          | shape                                                               |
|---------------------------------|---------------------------------------------------------------------|
| ``yaml`` (ours; JSON works too) | mapping with ``name``, ``version``, ``description``, ``principles`` |
| ``llm-swarm``                   | ``{"constitutions": [{"critic", "revision"}], "system_chat": [[messages]]}`` |
| ``paper-critique``              | ``{id: {"prompt": ["\\n\\nCritiqueRequest: ...\\n\\nCritique:"], "edit_request": "..."}}`` |
| ``paper-preference``            | ``["\\nPlease choose the response ... Options:", ...]``            |
| ``paper-fewshot``               | transcripts with Human/Assistant/CritiqueRequest/Critique/RevisionRequest/Revision turns: a JSON list of strings, or a text file |
| ``paper-preference-fewshot``    | ``[{"prompt": "\\n\\nHuman: ...\\n\\nAssistant:", "corrects": [...], "incorrects": [...]}]`` |
| ``paper-preference-cot-fewshot``| ``[{"prompt": "...{}\\n (A) [[[...]]]\\n (B) [[[...]]] ... So the answer is: (B)"}]`` |

The paper's formats are readers in ``cai.constitution.paper``; this module detects and dispatches.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from cai.constitution import paper
from cai.constitution.located import Located, parse_json_error, parse_yaml
from cai.constitution.model import Constitution, ConstitutionError, Example, Principle
from cai.constitution.schema import TOP_KEYS, build

_TRANSCRIPT_TEXT = re.compile(r"(?m)^CritiqueRequest:")


def read_file(path: str | Path) -> Constitution:
    """Load a constitution file of any supported format."""
    p = Path(path)
    file = str(p)
    if not p.is_file():
        raise ConstitutionError(file, "no such file", "check the path, or give a built-in name such as 'default' "
                                "(see `cai constitution list`)")
    try:
        text = p.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as e:
        raise ConstitutionError(file, f"not UTF-8 text (byte {e.start})", "save the file as UTF-8") from None
    return read_text(text, file=file, name=p.stem)


def read_text(text: str, *, file: str, name: str) -> Constitution:
    stripped = text.lstrip()
    if not stripped:
        raise ConstitutionError(file, "the file is empty", "write a constitution (see `cai constitution show default`)")
    if stripped[0] in "{[":
        # JSON decides what the data is (YAML would accept broken JSON as odd flow YAML); YAML's
        # node marks then supply the lines, which they do for nearly all JSON.
        try:
            data = json.loads(text)
        except json.JSONDecodeError:
            if file.lower().endswith(".json"):
                raise parse_json_error(text, file) from None
            doc = parse_yaml(text, file)
        else:
            try:
                doc = parse_yaml(text, file)
            except ConstitutionError:
                doc = Located(data=data, file=file)
            if doc.data != data:
                doc = Located(data=data, file=file)
    elif _TRANSCRIPT_TEXT.search(text):
        return paper.read_transcript_text(text, file=file, name=name)
    else:
        doc = parse_yaml(text, file)
    return from_data(doc, name=name)


def detect(data: Any) -> str | None:
    """The format name of parsed data, or None when it matches none."""
    if isinstance(data, dict):
        if "constitutions" in data and "principles" not in data:
            return "llm-swarm"
        if data and all(isinstance(v, dict) and ("edit_request" in v or "prompt" in v) for v in data.values()):
            return "paper-critique"
        if data.keys() & TOP_KEYS:
            return "yaml"
        return None
    if isinstance(data, list) and data:
        if all(isinstance(x, str) for x in data):
            if all(x.rstrip().endswith("Options:") for x in data):
                return "paper-preference"
            if any("CritiqueRequest:" in x for x in data):
                return "paper-fewshot"
            return None
        if all(isinstance(x, dict) and "prompt" in x for x in data):
            if "corrects" in data[0]:
                return "paper-preference-fewshot"
            if "So the answer is" in str(data[0]["prompt"]):
                return "paper-preference-cot-fewshot"
    return None


def from_data(doc: Located, *, name: str) -> Constitution:
    fmt = detect(doc.data)
    source = doc.file
    if fmt == "yaml" or (fmt is None and isinstance(doc.data, dict)):
        # An unrecognised mapping is most likely our format with mistakes: let the schema say which.
        return build(doc, source=source)
    if fmt == "llm-swarm":
        return read_llm_swarm(doc, name=name)
    if fmt is None:
        raise ConstitutionError(
            doc.file, "not a constitution in any known format",
            "write our YAML format (name, version, description, principles), or give an llm-swarm JSON file or one "
            "of the CAI paper's prompt files; docs/constitutions.md lists the formats", line=doc.line(()))
    return paper.READERS[fmt](doc, name=name)


def _entry(doc: Located, value: Any, path: tuple, keys: tuple[str, ...]) -> dict:
    if not isinstance(value, dict):
        raise doc.error(path, f"expected a mapping with {', '.join(keys)}", "fix this entry")
    for key in keys:
        if not isinstance(value.get(key), str) or not value[key].strip():
            raise doc.error(path + (key,), "missing or not text", f"give {key} as a string")
    return value


def read_llm_swarm(doc: Located, *, name: str) -> Constitution:
    """Hugging Face llm-swarm: ``constitutions`` become principles ``p0``, ``p1``, ...; each
    ``system_chat`` chain becomes a worked example. A chain's last four messages are the critique
    request, critique, revision request and revision; everything before is the conversation,
    ending with the answer that was critiqued (so multi-turn chains keep their earlier turns)."""
    data = doc.data
    items = data.get("constitutions")
    if not isinstance(items, list) or not items:
        raise doc.error(("constitutions",), "must be a non-empty list of {critic, revision}", "add the critique/revision pairs")
    width = len(str(len(items) - 1))
    principles = []
    for i, item in enumerate(items):
        item = _entry(doc, item, ("constitutions", i), ("critic", "revision"))
        principles.append(Principle(id=f"p{i:0{width}d}", critique=item["critic"].strip(), revision=item["revision"].strip()))
    chains = data.get("system_chat") or []
    if not isinstance(chains, list):
        raise doc.error(("system_chat",), "must be a list of message lists", "fix system_chat")
    examples = []
    for i, chain in enumerate(chains):
        path = ("system_chat", i)
        if not isinstance(chain, list) or not all(isinstance(m, dict) for m in chain):
            raise doc.error(path, "must be a list of {role, content} messages", "fix this chain")
        for j, m in enumerate(chain):
            _entry(doc, m, path + (j,), ("role", "content"))
        roles = [m["role"] for m in chain]
        if len(chain) < 6 or roles[-4:] != ["user", "assistant", "user", "assistant"] or roles[-5] != "assistant":
            raise doc.error(path, f"roles {roles} do not end with answer, critique request, critique, revision request, "
                            "revision", "give each chain as user, assistant, user (critique request), assistant (critique), "
                            "user (revision request), assistant (revision)")
        conv = [{"role": m["role"], "content": m["content"].strip()} for m in chain[:-4]]
        cr, c, rr, r = (m["content"].strip() for m in chain[-4:])
        examples.append(Example(messages=conv, critique_request=cr, critique=c, revision_request=rr, revision=r))
    return Constitution(
        name=name, version="1",
        description=f"Hugging Face llm-swarm constitution: {len(principles)} critique/revision pairs, "
                    f"{len(examples)} few-shot chains",
        principles=tuple(principles), examples=tuple(examples), source=doc.file, format="llm-swarm")
