"""Rebuild the two built-in prompt sets that are derived from other data rather than written by hand.

- ``harmful-train`` (``src/cai/prompts/harmful-train.jsonl``): harmful requests to train on, from
  (a) the first human turns of the shipped HH-RLHF harmless-base pairs in the TRAIN pool only
  (:func:`cai.sources.split.hh_rlhf_pool`; the CHECK pool is what ``cai eval labeler --data hh-rlhf``
  and ``cai reward``'s human accuracy use), (b) the in-the-wild forbidden questions, (c) the built-in
  ``redteam`` set. Repeats (same text after lower-casing and collapsing whitespace) are kept once;
  a prompt is dropped when it repeats or near-duplicates (:class:`cai.sources.overlap.NearDuplicateIndex`)
  a CHECK-pool first turn or a prompt of an evaluation set: AdvBench,
  XSTest, MT-Bench, TruthfulQA (shipped with cai), HarmBench and JailbreakBench (read from
  ``--shared-data``, at build time only).
- ``self-instruct`` (``src/cai/prompts/self-instruct.jsonl``): the 427 Self-Instruct instructions
  shipped under ``src/cai/prompts/data/self_instruct/``, each with its human-written answer as the
  assistant turn, which ``load_prompts`` keeps in ``meta["reference_answer"]``.

Rerun after changing any source; the output is deterministic (file order, no randomness)::

    python scripts/build_prompt_sets.py                     # shared data at ../shared/data
    python scripts/build_prompt_sets.py --shared-data DIR
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))  # this checkout's cai, not an installed one

from cai.evals.datasets import dataset_path  # noqa: E402
from cai.sources import load_prompts  # noqa: E402
from cai.sources.overlap import NearDuplicateIndex  # noqa: E402
from cai.sources.readers import read_jsonl  # noqa: E402
from cai.sources.records import first_human_turn  # noqa: E402
from cai.sources.split import hh_rlhf_pool, normalise  # noqa: E402

PROMPTS = ROOT / "src" / "cai" / "prompts"
FORBIDDEN = PROMPTS / "data" / "jailbreak_llms" / "forbidden_question_set.csv"
SELF_INSTRUCT = PROMPTS / "data" / "self_instruct"


def _csv_column(path: Path, column: str) -> list[str]:
    with open(path, encoding="utf-8-sig", newline="") as f:
        return [row[column] for row in csv.DictReader(f) if (row.get(column) or "").strip()]


def eval_prompts(shared: Path) -> dict[str, list[str]]:
    """Every prompt of the evaluation sets that training prompts must stay apart from."""
    mt = [t for rec in read_jsonl(dataset_path("mt-bench")) for t in rec["turns"]]
    sets = {
        "advbench": _csv_column(dataset_path("advbench"), "goal"),
        "xstest": _csv_column(dataset_path("xstest"), "prompt"),
        "mt-bench": mt,
        "truthfulqa": _csv_column(dataset_path("truthfulqa"), "Question"),
    }
    harmbench = shared / "harmbench" / "harmbench_behaviors_text_val.csv"
    jbb = shared / "jailbreakbench" / "behaviors.csv"
    for path in (harmbench, jbb):
        if not path.is_file():
            sys.exit(f"{path} not found; pass --shared-data DIR holding harmbench/ and jailbreakbench/")
    sets["harmbench"] = _csv_column(harmbench, "Behavior")
    sets["jailbreakbench"] = _csv_column(jbb, "Goal")
    return sets


def _user(text: str) -> list[dict[str, str]]:
    return [{"role": "user", "content": text.strip()}]


def harmful_candidates() -> tuple[list[dict], set[str]]:
    """(candidate records in source order, normalised CHECK-pool first turns)."""
    records, check = [], set()
    hh = dataset_path("hh-rlhf")
    for n, rec in enumerate(read_jsonl(hh), 1):
        text = first_human_turn(rec["chosen"], f"{hh}: row {n}")[0]["content"]
        if hh_rlhf_pool(text) == "check":
            check.add(normalise(text))
        else:
            # source_id matches the id `cai eval labeler --data hh-rlhf` gives the same pair.
            records.append({"messages": _user(text), "category": "uncategorized", "source": "hh-rlhf",
                            "source_id": f"hh-rlhf/{n}"})
    with open(FORBIDDEN, encoding="utf-8", newline="") as f:
        for row in csv.DictReader(f):
            records.append({"messages": _user(row["question"]), "category": row["content_policy_name"],
                            "source": "forbidden-questions",
                            "source_id": f"forbidden-questions/{row['content_policy_id']}-{row['q_id']}"})
    for p in load_prompts("redteam"):
        records.append({"messages": p.messages, "category": p.meta.get("category", "uncategorized"),
                        "framing": p.meta.get("framing"), "source": "redteam", "source_id": p.id})
    return records, check


def user_texts(messages: list[dict[str, str]]) -> list[str]:
    return [m["content"] for m in messages if m["role"] == "user"]


def build_harmful_train(shared: Path) -> list[dict]:
    candidates, check = harmful_candidates()
    evals = eval_prompts(shared)
    # The CHECK pool comes first: a request that differs from a check-pool one only by a word or
    # its punctuation would otherwise hash to the other pool and leak a check prompt into training.
    indexes = {"check-pool": NearDuplicateIndex(check)}
    indexes.update((name, NearDuplicateIndex(texts)) for name, texts in evals.items())
    seen: set[str] = set()
    kept, dropped, shown = [], Counter(), Counter()
    for rec in candidates:
        turns = user_texts(rec["messages"])
        key = normalise("\n".join(turns))
        reason = None
        if key in seen:
            reason = "repeat"
        elif any(normalise(t) in check for t in turns):
            reason = "check-pool"
        else:
            for name, index in indexes.items():
                hit = next((m for m in map(index.match, turns) if m), None)
                if hit:
                    reason = name
                    if shown[name] < 3:
                        print(f"  near-dup of {name} ({hit[1]:.2f}): {turns[-1][:70]!r} ~ {hit[0][:70]!r}")
                        shown[name] += 1
                    break
        seen.add(key)
        if reason:
            dropped[(rec["source"], reason)] += 1
            continue
        kept.append(rec)
    for (source, reason), n in sorted(dropped.items()):
        print(f"  dropped {n} {source} prompt(s): {reason}")
    width = len(str(len(kept)))
    return [{"id": f"harmful-train-{k:0{width}d}", **rec} for k, rec in enumerate(kept, 1)]


def build_self_instruct() -> list[dict]:
    out = []
    for name, category in (("seed_tasks.jsonl", "seed"), ("user_oriented_instructions.jsonl", "user-oriented")):
        for rec in read_jsonl(SELF_INSTRUCT / name):
            first = rec["instances"][0]
            prompt = rec["instruction"].strip()
            if first.get("input", "").strip():
                prompt += "\n\n" + first["input"].strip()
            row = {"id": f"self-instruct-{rec['id']}", "category": category,
                   "messages": [{"role": "user", "content": prompt},
                                {"role": "assistant", "content": first["output"].strip()}]}
            if rec.get("motivation_app"):
                row["app"] = rec["motivation_app"]
            out.append(row)
    return out


def write_jsonl(path: Path, rows: list[dict]) -> None:
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    print(f"wrote {len(rows)} records to {path.relative_to(ROOT)}")


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--shared-data", type=Path, default=ROOT.parent / "shared" / "data",
                    help="folder with harmbench/ and jailbreakbench/ (default: ../shared/data)")
    args = ap.parse_args(argv)
    rows = build_harmful_train(args.shared_data)
    print("by source:", dict(Counter(r["source"] for r in rows)))
    write_jsonl(PROMPTS / "harmful-train.jsonl", rows)
    write_jsonl(PROMPTS / "self-instruct.jsonl", build_self_instruct())


if __name__ == "__main__":
    main()
