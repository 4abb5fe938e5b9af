"""In-the-wild jailbreak templates, in the CSV shape of "Do Anything Now" (Shen et al., CCS 2024;
github.com/verazuo/jailbreak_llms): columns ``prompt`` and ``jailbreak`` (plus platform, source,
dates...). Only rows whose ``jailbreak`` is true are templates.

Authors mark where the question goes in many spellings ("[INSERT PROMPT HERE]", "[PROMPT]",
"[Your prompt here]"...); the markers are regular expressions in ``templates/redteam.yaml``.
A template without a marker is skipped (see the comment there). ``sample_templates`` draws N of
the usable ones with a seed, so a run names the same templates every time.
"""

from __future__ import annotations

import csv
import hashlib
import random
import re
import sys
from dataclasses import dataclass
from pathlib import Path

from cai.errors import CAIError

_TRUE = {"true", "1", "yes", "y", "t"}


@dataclass(frozen=True)
class JailbreakTemplate:
    id: str  # "jb-" + a digest of the text: stable whichever file or row it came from
    text: str
    source: str  # file name and row, for the reader
    marker: str  # the exact marker text found in the template

    def fill(self, behavior: str) -> str:
        # str.replace, not re.sub: the behavior must never be read as a regex replacement pattern.
        return self.text.replace(self.marker, behavior)


def markers() -> list[re.Pattern[str]]:
    from cai.templates import load_template

    return [re.compile(m, re.IGNORECASE) for m in load_template("redteam")["jailbreak_markers"]]


def fills() -> dict[str, str]:
    from cai.templates import load_template

    return {str(k): str(v) for k, v in (load_template("redteam").get("jailbreak_fills") or {}).items()}


def _files(path: Path) -> list[Path]:
    if path.is_dir():
        files = sorted(p for p in path.glob("*.csv") if p.name.startswith("jailbreak"))
        if not files:
            raise CAIError(f"{path}: no jailbreak_*.csv file in this folder; pass the CSV itself "
                           "(columns 'prompt' and 'jailbreak')")
        return files
    if not path.is_file():
        raise CAIError(f"{path}: no such jailbreak file or folder; pass a CSV with columns 'prompt' and 'jailbreak' "
                       "(such as jailbreak_llms/jailbreak_prompts_2023_12_25.csv) or the folder holding it")
    return [path]


def load_templates(path: str | Path, *, max_chars: int | None = None) -> list[JailbreakTemplate]:
    """Every usable template of a CSV file, or of all ``jailbreak*.csv`` files in a folder:
    ``jailbreak`` true, a marker present, at most ``max_chars`` long; duplicates (same text)
    once, in file order."""
    pats, blanks = markers(), fills()
    out: list[JailbreakTemplate] = []
    seen: set[str] = set()
    csv.field_size_limit(min(sys.maxsize, 2**31 - 1))  # some templates run to thousands of characters
    for f in _files(Path(path)):
        with open(f, newline="", encoding="utf-8") as fh:
            reader = csv.DictReader(fh)
            cols = {c.lower(): c for c in reader.fieldnames or []}
            if "prompt" not in cols or "jailbreak" not in cols:
                raise CAIError(f"{f}: a jailbreak file needs columns 'prompt' and 'jailbreak' (columns: "
                               f"{', '.join(reader.fieldnames or []) or 'none'})")
            for row_no, row in enumerate(reader, start=2):
                if str(row[cols["jailbreak"]]).strip().lower() not in _TRUE:
                    continue
                text = (row[cols["prompt"]] or "").strip()
                if not text or text in seen or (max_chars is not None and len(text) > max_chars):
                    continue
                found = next((m for p in pats if (m := p.search(text))), None)
                if found is None:
                    continue
                seen.add(text)
                digest = hashlib.sha1(text.encode("utf-8")).hexdigest()[:10]
                for blank, value in blanks.items():
                    text = text.replace(blank, value)
                out.append(JailbreakTemplate(f"jb-{digest}", text, f"{f.name}:{row_no}", found.group(0)))
    return out


def sample_templates(templates: list[JailbreakTemplate], n: int, seed: int) -> list[JailbreakTemplate]:
    if n < 1:
        raise CAIError(f"jailbreak_templates must be >= 1, got {n}")
    if not templates:
        raise CAIError("no usable jailbreak template: none is marked jailbreak, has a place for the question "
                       "(such as [INSERT PROMPT HERE]) and fits --jailbreak-max-chars")
    if n >= len(templates):
        return list(templates)
    return random.Random(seed).sample(templates, n)
