"""Training data for ``cai sft`` and ``cai dpo``: read JSONL files in the shapes cai and TRL write,
check them line by line, and mix several files with weights.

``--data FILE[:WEIGHT]`` names one file; the weight scales how many of its records go into the mix:
``2`` uses every record twice, ``0.5`` a seeded random half, ``1`` (the default) each record once.
A path that itself contains ``:`` keeps it: only a final ``:NUMBER`` is read as a weight.

SFT examples become TRL's conversational prompt/completion form, so the loss falls on the final
assistant turn only. Accepted records, in this order of precedence:

* ``prompt`` + ``completion`` (``cai critique`` writes both; strings or message lists);
* ``messages`` ending with an assistant turn (``cai generate`` output, chat datasets): the last turn
  is the completion and everything before it the prompt.

Preference examples become prompt/chosen/rejected plus ``p_chosen`` (the probability that the
chosen answer is the better one): ``cai label`` records carry it; ``cai critique`` records (revision
chosen over first answer) and plain TRL preference files count as certain (p = 1).
"""

from __future__ import annotations

import hashlib
import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cai.errors import CAIError
from cai.label.preference import margin
from cai.sources.readers import iter_jsonl


@dataclass
class DataSpec:
    path: Path
    weight: float = 1.0

    @classmethod
    def parse(cls, text: str) -> "DataSpec":
        path, _, tail = text.rpartition(":")
        if path:
            try:
                weight = float(tail)
            except ValueError:
                if Path(path).expanduser().is_file() and not Path(text).expanduser().exists():
                    raise CAIError(f"--data {text}: {tail!r} after ':' is not a weight; give a number, e.g. "
                                   f"{path}:0.5 (a random half) or {path}:2 (twice)") from None
                path, weight = text, 1.0
        else:
            path, weight = text, 1.0
        if not weight >= 0:
            raise CAIError(f"--data {text}: the weight after ':' must be >= 0")
        return cls(Path(path), weight)


@dataclass
class LoadedFile:
    path: str
    sha256: str
    weight: float
    records: int
    used: int
    dropped: dict[str, int] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {"path": self.path, "sha256": self.sha256, "weight": self.weight, "records": self.records,
                "used": self.used, **({"dropped": self.dropped} if self.dropped else {})}


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _read_jsonl(path: Path) -> list[tuple[int, dict[str, Any]]]:
    if path.is_dir():
        raise CAIError(f"--data {path}: is a folder, not a file; pass a JSONL file inside it")
    if not path.is_file():
        raise CAIError(f"--data {path}: file not found; pass a JSONL file written by cai critique, cai label, "
                       "cai generate, or in TRL's messages / prompt-completion / preference format")
    out = list(iter_jsonl(path, "each line of a --data file is one JSON record"))
    if not out:
        raise CAIError(f"{path}: no records; check that the file was written completely")
    return out


def _as_messages(value: Any, role: str, where: str, name: str) -> list[dict[str, str]]:
    """A string becomes one message with ``role``; a list must already be messages."""
    if isinstance(value, str):
        return [{"role": role, "content": value}]
    if isinstance(value, list) and value and all(isinstance(m, dict) and "role" in m and "content" in m
                                                 for m in value):
        return [_message(m, where, f"{name}[{i}]") for i, m in enumerate(value)]
    raise CAIError(f"{where}: {name!r} must be a string or a non-empty list of {{role, content}} messages")


def _message(m: dict[str, Any], where: str, name: str) -> dict[str, str]:
    """A chat template renders any role and str()s any content, so a typo ("human", "gpt") or a
    number would be trained on as it is rendered instead of as a turn of the conversation."""
    from cai.types import ROLES

    if m["role"] not in ROLES:
        raise CAIError(f"{where}: {name} has role {m['role']!r}; a role is one of {', '.join(ROLES)} (rename it "
                       "or drop this record)")
    if m["content"] is not None and not isinstance(m["content"], str):
        raise CAIError(f"{where}: {name} has content {m['content']!r:.40} ({type(m['content']).__name__}); "
                       "content must be text")
    return {"role": m["role"], "content": m["content"] or ""}


def sft_example(rec: dict[str, Any], where: str) -> dict[str, Any]:
    """One record as a conversational prompt/completion pair (the completion is one assistant turn)."""
    completion = rec.get("completion")
    if "prompt" in rec and isinstance(completion, (str, list)):
        prompt = _as_messages(rec["prompt"], "user", where, "prompt")
        completion = _as_messages(completion, "assistant", where, "completion")
    elif "messages" in rec:
        msgs = _as_messages(rec["messages"], "user", where, "messages")
        if len(msgs) < 2 or msgs[-1]["role"] != "assistant":
            raise CAIError(f"{where}: 'messages' must end with an assistant turn after at least one prompt turn "
                           "(the last assistant turn is what SFT trains on)")
        prompt, completion = msgs[:-1], msgs[-1:]
    else:
        raise CAIError(f"{where}: an SFT record needs 'messages' (ending with an assistant turn) or 'prompt' and "
                       f"'completion'; this one has {sorted(rec)[:8]}")
    if completion[-1]["role"] != "assistant":
        raise CAIError(f"{where}: the completion must be an assistant message")
    if not completion[-1]["content"].strip():
        raise CAIError(f"{where}: the completion is empty; drop this record or regenerate it")
    if not any(m["content"].strip() for m in prompt if m["role"] != "system"):
        raise CAIError(f"{where}: the prompt is empty (no turn with text before the completion), so SFT would "
                       "teach an answer to nothing; drop this record or fix its prompt")
    return {"prompt": prompt, "completion": completion}


def preference_example(rec: dict[str, Any], where: str) -> dict[str, Any]:
    """One record as conversational prompt/chosen/rejected plus ``p_chosen``."""
    missing = [k for k in ("prompt", "chosen", "rejected") if k not in rec]
    if missing:
        raise CAIError(f"{where}: a preference record needs 'prompt', 'chosen' and 'rejected' (cai label or cai "
                       f"critique output, or TRL's preference format); missing {', '.join(missing)}")
    p = rec.get("p_chosen", 0.5 if rec.get("tie") else 1.0)
    # JSON's true is a bool, which Python counts as the int 1: no probability all the same.
    if isinstance(p, bool) or not isinstance(p, (int, float)) or not 0.0 <= float(p) <= 1.0:
        raise CAIError(f"{where}: 'p_chosen' must be a probability in [0, 1], got {p!r}")
    chosen = _as_messages(rec["chosen"], "assistant", where, "chosen")
    if not "".join(m["content"] for m in chosen).strip():
        raise CAIError(f"{where}: 'chosen' is empty, so training would prefer saying nothing; drop this record "
                       "or fix it")
    return {"prompt": _as_messages(rec["prompt"], "user", where, "prompt"),
            "chosen": chosen,
            "rejected": _as_messages(rec["rejected"], "assistant", where, "rejected"),
            "p_chosen": float(p)}


def _weighted(items: list[Any], weight: float, rng: random.Random) -> list[Any]:
    whole, frac = int(weight), weight - int(weight)
    out = items * whole
    k = round(frac * len(items))
    if k:
        out += rng.sample(items, k)
    return out


def load_mix(specs: list[str], kind: str, *, seed: int, min_margin: float | None = None
             ) -> tuple[list[dict[str, Any]], list[LoadedFile]]:
    """Read, check, filter and mix ``specs`` (``FILE[:WEIGHT]``) for ``kind`` "sft" or "preference".
    ``min_margin`` drops preference pairs whose |2 p_chosen - 1| is at most it, as ``cai label`` does.

    Returns the examples (in file order; the trainer shuffles) and one :class:`LoadedFile` per spec.
    """
    if not specs:
        raise CAIError("no training data; pass --data FILE.jsonl (repeat it to mix files, FILE:0.5 to weight one)")
    rng = random.Random(seed)
    examples: list[dict[str, Any]] = []
    files: list[LoadedFile] = []
    for text in specs:
        spec = DataSpec.parse(text)
        rows = _read_jsonl(spec.path)
        kept, dropped = [], {}
        for n, rec in rows:
            where = f"{spec.path}:{n}"
            if kind == "sft":
                kept.append(sft_example(rec, where))
                continue
            ex = preference_example(rec, where)
            if ex["chosen"] == ex["rejected"]:
                # cai critique keeps unrevised answers; identical answers carry no preference.
                dropped["identical"] = dropped.get("identical", 0) + 1
            elif min_margin is not None and margin(ex["p_chosen"]) <= min_margin:
                dropped["below_min_margin"] = dropped.get("below_min_margin", 0) + 1
            else:
                kept.append(ex)
        used = _weighted(kept, spec.weight, rng)
        files.append(LoadedFile(str(spec.path), sha256_file(spec.path), spec.weight, len(rows), len(used), dropped))
        examples += used
    if not examples:
        raise CAIError(_nothing_left(specs, files))
    return examples, files


def _nothing_left(specs: list[str], files: list[LoadedFile]) -> str:
    """Why no example is left, and the fix that the reason calls for (only dpo has --min-margin)."""
    zero = [text for text, f in zip(specs, files) if f.weight == 0 and f.records]
    dropped = {k: sum(f.dropped.get(k, 0) for f in files) for k in ("identical", "below_min_margin")}
    fixes = []
    if zero:
        fixes.append(f"{', '.join(zero)} {'has' if len(zero) == 1 else 'have'} weight 0, so none of "
                     f"{'its' if len(zero) == 1 else 'their'} records are used; give a weight above 0 "
                     "(FILE:0.5 uses a random half) or drop the weight")
    if dropped["below_min_margin"]:
        fixes.append(f"{dropped['below_min_margin']} pairs were below --min-margin; lower it")
    if dropped["identical"]:
        fixes.append(f"{dropped['identical']} pairs had the same chosen and rejected answer (unrevised "
                     "critique records); add pairs that differ")
    detail = "; ".join(f"{f.path}: {f.dropped}" for f in files if f.dropped)
    return ("no training examples left after weighting and filtering" + (f" ({detail})" if detail else "") + ": "
            + ("; ".join(fixes) or "the files hold no usable records"))
