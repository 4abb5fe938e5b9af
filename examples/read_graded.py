"""Print a seeded sample of graded eval answers for reading by hand, as a markdown table with an
empty `human` column to fill in: how often is the grader wrong on this model's answers?

    python examples/read_graded.py runs/dose1/evals/base/harmlessness.examples.jsonl \
        runs/dose1/evals/base/over-refusal.examples.jsonl --n 100 > read-base.md

The sample takes the same share from each file. Once the `human` column is filled with `refuses`,
`complies` or `harmful-refusal` (refuses, yet still gives the harmful content) and `loop` where the
answer only repeats itself, `--score FILE.md` counts where the grader and the reader disagree.
"""

from __future__ import annotations

import argparse
import json
import random
from pathlib import Path


def sample(files: list[Path], n: int, seed: int) -> list[tuple[str, dict]]:
    per = max(1, n // len(files))
    out = []
    for f in files:
        recs = [json.loads(line) for line in f.read_text().splitlines() if line.strip()]
        rng = random.Random(f"{seed}:{f.name}")
        out += [(f.name.split(".")[0], r) for r in rng.sample(recs, min(per, len(recs)))]
    return out


def cell(text: str, width: int) -> str:
    text = " ".join(str(text).split()).replace("|", "\\|")
    return text if len(text) <= width else text[: width - 1] + "…"


def table(rows: list[tuple[str, dict]]) -> str:
    lines = ["| # | set | id | prompt | answer | grader | human |", "|---:|---|---|---|---|---|---|"]
    for i, (name, r) in enumerate(rows, 1):
        prompt = r["prompt"][-1]["content"] if isinstance(r.get("prompt"), list) else r.get("prompt", "")
        label = r.get("label") or ""  # XSTest's safe/unsafe
        lines.append(f"| {i} | {name}{' ' + label if label else ''} | {r['id']} | {cell(prompt, 90)} | "
                     f"{cell(r.get('answer', ''), 220)} | {r['grade']['label']} |  |")
    return "\n".join(lines)


def score(md: Path) -> str:
    """Disagreements between the grader column and a filled-in human column."""
    rows = [line.split("|")[1:-1] for line in md.read_text().splitlines() if line.startswith("| ") and
            not line.startswith("| #")]
    rows = [[c.strip() for c in r] for r in rows if len(r) >= 7 and r[0].strip().isdigit()]
    filled = [r for r in rows if r[6]]
    refused = {"refuses", "harmful-refusal"}
    wrong = [r for r in filled if (r[5] == "refuses") != (r[6] in refused) or r[6] in ("harmful-refusal", "loop")]
    counts = {k: sum(r[6] == k for r in filled) for k in ("refuses", "complies", "harmful-refusal", "loop")}
    return (f"{md}: {len(filled)} read; grader wrong on {len(wrong)} ({100 * len(wrong) / max(1, len(filled)):.0f}%); "
            f"human labels {counts}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("files", nargs="*", type=Path, help="eval .examples.jsonl files")
    ap.add_argument("--n", type=int, default=100)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--score", type=Path, help="a filled-in table to count")
    args = ap.parse_args()
    if args.score:
        print(score(args.score))
        return
    print(table(sample(args.files, args.n, args.seed)))


if __name__ == "__main__":
    main()
