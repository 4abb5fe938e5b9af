"""Human-labelled comparisons for judging a preference labeller.

Three shapes, picked by :func:`load_comparisons`:

* ``hhh`` (or a folder): BIG-bench ``hhh_alignment``: one ``task.json`` per category folder
  (harmless, helpful, honest, other), each example an ``input`` (a Human/Assistant transcript
  without its first "Human:") and ``target_scores`` {response: 1 preferred / 0}. It carries a
  canary string: evaluation only, never training data.
* ``hh-rlhf`` or ``hh-rlhf:PATH``: Anthropic HH-RLHF pairs (``chosen``/``rejected`` transcripts);
  the human's choice is the label. Only the pairs in the check pool are used unless ``hh_pool``
  says otherwise (:func:`cai.sources.split.hh_rlhf_pool`): the other pairs' first turns are
  training prompts (the built-in ``harmful-train`` set), and a labeller or PM checked on them would
  be checked on what it was trained with.
* a JSONL file in the CAI paper's multiple-choice format: ``prompt`` already holds the question
  and options and ends "The answer is:"; ``corrects``/``incorrects`` are option strings (" (A)").

``hhh`` and ``hh-rlhf`` alone read the copies that ship inside the package
(:mod:`cai.evals.datasets`); ``hhh:PATH`` and ``hh-rlhf:PATH`` read any other copy.
"""

from __future__ import annotations

import gzip
import itertools
import json
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, Union

from cai.errors import CAIError
from cai.evals.datasets import dataset_path
from cai.sources.readers import iter_jsonl
from cai.sources.split import HH_POOLS, hh_rlhf_pool
from cai.transcripts import parse_transcript, split_preference_pair
from cai.types import Conversation

DEFAULT_HHH = dataset_path("hhh")
DEFAULT_HH_RLHF = dataset_path("hh-rlhf")


@dataclass(frozen=True)
class Comparison:
    """Two answers to one conversation; humans preferred ``better``."""

    id: str
    category: str
    messages: Conversation
    better: str
    worse: str


@dataclass(frozen=True)
class ChoiceItem:
    """A ready-made multiple-choice prompt (the CAI paper's evaluation files)."""

    id: str
    category: str
    prompt: str
    corrects: tuple[str, ...]
    incorrects: tuple[str, ...]


Item = Union[Comparison, ChoiceItem]


def load_comparisons(source: str, *, limit: int | None = None, seed: int = 0,
                     cwd: str | Path | None = None, hh_pool: str = "check") -> tuple[str, list[Item]]:
    """(kind, items) for ``source``: ``hhh``, ``hhh:PATH``, ``hh-rlhf``, ``hh-rlhf:PATH``, a folder
    shaped like hhh_alignment, or a JSONL(.gz) file of paper-format or chosen/rejected records.

    ``hh_pool`` (``check``, ``train`` or ``all``) picks which chosen/rejected pairs are kept; the
    default keeps the pairs held out from training prompts. ``limit`` then keeps a seeded random
    subset (in the original order), so a small run still samples every category.
    """
    if hh_pool not in HH_POOLS:
        raise CAIError(f"--hh-pool {hh_pool!r}: use one of {', '.join(HH_POOLS)}")
    base = Path(cwd) if cwd is not None else Path.cwd()
    kind, path = _resolve(source, base)
    if kind == "hhh":
        items: list[Item] = list(load_hhh(path))
    elif kind == "hh-rlhf":
        items = list(load_hh_rlhf(path, pool=hh_pool))
    else:
        items = list(load_choice_jsonl(path))
    if not items:
        raise CAIError(f"{source}: no comparisons found in {path}")
    if limit is not None:
        if limit < 1:
            raise CAIError(f"--limit must be a positive number, got {limit}")
        if limit < len(items):
            keep = set(random.Random(seed).sample(range(len(items)), limit))
            items = [it for k, it in enumerate(items) if k in keep]
    return kind, items


def _resolve(source: str, base: Path) -> tuple[str, Path]:
    def rel(p: str | Path) -> Path:
        p = Path(p).expanduser()
        return p if p.is_absolute() else base / p

    name, sep, rest = source.partition(":")
    if name in ("hhh", "hh-rlhf") and (sep or source == name):
        path = rel(rest) if rest else rel(DEFAULT_HHH if name == "hhh" else DEFAULT_HH_RLHF)
        if not path.exists():
            raise CAIError(f"{source}: {path} not found; pass --data {name}:PATH pointing at the "
                           f"{'hhh_alignment folder' if name == 'hhh' else 'HH-RLHF .jsonl(.gz) file'}")
        return name, path
    path = rel(source)
    if path.is_dir():
        return "hhh", path
    if not path.is_file():
        raise CAIError(f"--data {source}: not found; use hhh, hh-rlhf, hh-rlhf:PATH, an hhh_alignment-shaped "
                       "folder or a JSONL file in the CAI paper's multiple-choice format")
    first = _first_record(path)
    if isinstance(first, dict) and "corrects" in first and "prompt" in first:
        return "choice", path
    if isinstance(first, dict) and "chosen" in first and "rejected" in first:
        return "hh-rlhf", path
    raise CAIError(f"{path}: records need prompt/corrects/incorrects (CAI paper format) or chosen/rejected "
                   f"(HH-RLHF transcripts); the first has {sorted(first)[:6] if isinstance(first, dict) else first!r:.60}")


_SHAPES = ("JSON Lines (one JSON record per line) with prompt/corrects/incorrects (CAI paper format) or "
           "chosen/rejected (HH-RLHF)")


def _first_record(path: Path) -> Any:
    """The first record of a --data file, or what the file is instead of JSON Lines: a CSV, or one
    JSON document (a list or object over several lines) rather than one record per line."""
    opener = gzip.open if path.name.endswith(".gz") else open
    with opener(path, "rt", encoding="utf-8") as f:
        first = next((line for line in f if line.strip()), "")
    try:
        rec = json.loads(first) if first else None
    except json.JSONDecodeError:
        rec = None
        if path.suffix.lower() in (".csv", ".tsv") or not first.lstrip().startswith(("{", "[")):
            raise CAIError(f"--data {path}: looks like a CSV or other text, not JSON Lines; --data takes {_SHAPES}, "
                           "hhh, hh-rlhf or an hhh_alignment-shaped folder") from None
        try:
            with opener(path, "rt", encoding="utf-8") as f:
                json.load(f)
        except json.JSONDecodeError:
            return next(_jsonl(path), None)  # broken JSON Lines: name the line
        raise CAIError(f"--data {path}: is one JSON document, not JSON Lines; write one record per line "
                       f"(e.g. jq -c '.[]' {path.name} > {path.stem}.jsonl); --data takes {_SHAPES}") from None
    if isinstance(rec, list):
        raise CAIError(f"--data {path}: is one JSON list, not JSON Lines; write one record per line "
                       f"(e.g. jq -c '.[]' {path.name} > {path.stem}.jsonl)")
    return rec


def _jsonl(path: Path) -> Iterator[Any]:
    return (rec for _, rec in iter_jsonl(path, objects=False))


def load_hhh(folder: str | Path) -> Iterator[Comparison]:
    """Every (preferred, other) pair of every example, per category folder. A folder that itself
    holds a task.json with examples is one category named after it."""
    folder = Path(folder)
    tasks = sorted(p for p in folder.glob("*/task.json"))
    if (folder / "task.json").is_file() and not tasks:
        tasks = [folder / "task.json"]
    if not tasks:
        raise CAIError(f"{folder}: no */task.json; expected BIG-bench hhh_alignment's layout (one folder per category)")
    for task in tasks:
        category = task.parent.name
        data = json.loads(task.read_text(encoding="utf-8"))
        for k, ex in enumerate(data.get("examples") or []):
            where = f"{task}: examples[{k}]"
            if not isinstance(ex, dict) or not isinstance(ex.get("target_scores"), dict) or "input" not in ex:
                raise CAIError(f"{where}: needs 'input' and 'target_scores'")
            messages = parse_transcript("\n\nHuman: " + ex["input"].strip())
            if messages[-1]["role"] != "user":
                raise CAIError(f"{where}: the conversation must end with a Human turn")
            scores = ex["target_scores"]
            best = max(scores.values())
            better = [r for r, s in scores.items() if s == best]
            worse = [r for r, s in scores.items() if s < best]
            for m, (b, w) in enumerate(itertools.product(better, worse)):
                suffix = "" if len(better) * len(worse) == 1 else f"-{m}"
                yield Comparison(f"hhh/{category}/{k}{suffix}", category, messages, b.strip(), w.strip())


def load_hh_rlhf(path: str | Path, pool: str = "all") -> Iterator[Comparison]:
    """HH-RLHF pairs in ``pool`` (``check``, ``train`` or ``all``), ids numbering every pair of the
    file so they do not depend on the pool; the rare pair whose two sides share no prompt is skipped."""
    path = Path(path)
    for n, rec in enumerate(_jsonl(path), 1):
        try:
            messages, chosen, rejected = split_preference_pair(rec["chosen"], rec["rejected"])
        except (KeyError, ValueError):
            continue
        if chosen.strip() == rejected.strip() or messages[-1]["role"] != "user":
            continue  # nothing to prefer
        if pool != "all" and hh_rlhf_pool(first_user_text(messages)) != pool:
            continue
        yield Comparison(f"hh-rlhf/{n}", "harmless" if "harmless" in str(path) else "hh-rlhf", messages,
                         chosen, rejected)


def first_user_text(messages: Conversation) -> str:
    """The opening user message: the text that decides an HH-RLHF pair's pool."""
    return next((m["content"] for m in messages if m["role"] == "user" and m["content"]), "")


def load_choice_jsonl(path: str | Path) -> Iterator[ChoiceItem]:
    path = Path(path)
    stem = path.name.split(".")[0]
    for n, rec in enumerate(_jsonl(path), 1):
        where = f"{path}:{n}"
        try:
            prompt, corrects, incorrects = rec["prompt"], rec["corrects"], rec["incorrects"]
        except (KeyError, TypeError):
            raise CAIError(f"{where}: a multiple-choice record needs prompt, corrects and incorrects") from None
        if not isinstance(corrects, list) or not isinstance(incorrects, list) or not corrects or not incorrects:
            raise CAIError(f"{where}: corrects and incorrects must be non-empty lists of option strings like ' (A)'")
        if set(corrects) & set(incorrects):
            raise CAIError(f"{where}: an option is listed as both correct and incorrect")
        yield ChoiceItem(str(rec.get("id", f"{stem}/{n}")), str(rec.get("category", stem)), str(prompt),
                         tuple(corrects), tuple(incorrects))
