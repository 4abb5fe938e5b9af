"""Summaries of cai data files: critique files (``cai critique``) and preference files (``cai label``).

``summarize(records)`` returns plain numbers (tested, and printed as JSON with ``--json``);
``render(summary, console)`` draws them as rich tables.
"""

from __future__ import annotations

import random
from collections import Counter
from statistics import mean
from typing import Any, Sequence


def _text(x: Any) -> str:
    """The text of a field that is a string or a list of chat messages (its last message)."""
    if isinstance(x, str):
        return x
    if isinstance(x, list) and x and isinstance(x[-1], dict):
        return str(x[-1].get("content", ""))
    return ""


def _last_user(messages: Any) -> str:
    if isinstance(messages, str):
        return messages
    for m in reversed(messages or []):
        if isinstance(m, dict) and m.get("role") == "user":
            return str(m.get("content", ""))
    return ""


def _lengths(texts: Sequence[str]) -> dict[str, float]:
    if not texts:
        return {"n": 0, "chars": 0.0, "words": 0.0}
    return {"n": len(texts), "chars": mean(len(t) for t in texts), "words": mean(len(t.split()) for t in texts)}


def kind_of(records: Sequence[dict[str, Any]]) -> str:
    first = records[0] if records else {}
    if "steps" in first and "initial" in first:
        return "critique"
    if "chosen" in first and "rejected" in first:
        return "preference"
    raise ValueError("not a cai critique or preference file: records need 'steps'/'initial' or 'chosen'/'rejected'")


def summarize(records: Sequence[dict[str, Any]], *, examples: int = 3, seed: int = 0,
              dropped: Sequence[dict[str, Any]] = ()) -> dict[str, Any]:
    """``dropped``: the records the revision filter set aside (``OUT.dropped.jsonl``), counted by reason."""
    if not records:
        raise ValueError("the file holds no records")
    kind = kind_of(records)
    pick = random.Random(seed).sample(range(len(records)), min(examples, len(records)))
    if kind == "critique":
        summary = _critique_summary(records, sorted(pick))
        summary["filter"] = _filter_summary(records, dropped)
        return summary
    return _preference_summary(records, sorted(pick))


def _filter_summary(records: Sequence[dict[str, Any]], dropped: Sequence[dict[str, Any]]) -> dict[str, Any] | None:
    """Kept and dropped counts and the reasons, when the file was written with --filter."""
    if not dropped and not any("filter" in r for r in records):
        return None
    reasons = Counter(reason for r in dropped for reason in r.get("dropped", []))
    rejected_rounds = Counter(p for r in list(records) + list(dropped)
                              for ps in (r.get("filter") or {}).get("reasons", {}).values() for p in ps)
    total = len(records) + len(dropped)
    return {"kept": len(records), "dropped": len(dropped), "kept_rate": len(records) / total if total else None,
            "dropped_by_reason": dict(reasons.most_common()), "rejected_revisions": dict(rejected_rounds.most_common())}


def _critique_summary(records: Sequence[dict[str, Any]], pick: list[int]) -> dict[str, Any]:
    per: dict[str, Counter] = {}
    critiques, revisions, rounds = [], [], Counter()
    for r in records:
        steps = r.get("steps") or []
        rounds[len(steps)] += 1
        prev = r.get("initial", "")
        for s in steps:
            c = per.setdefault(s.get("principle_id", "?"), Counter())
            c["steps"] += 1
            if s.get("stopped"):
                c["stopped"] += 1
                continue
            critiques.append(s.get("critique") or "")
            rev = s.get("revision") or ""
            revisions.append(rev)
            if not rev:
                c["empty"] += 1
            elif rev != prev:
                c["changed"] += 1
                prev = rev
    n = len(records)
    revised = sum(1 for r in records if r.get("final", "") != r.get("initial", ""))
    p_comply = [s["p_comply"] for r in records for s in r.get("steps") or [] if s.get("p_comply") is not None]
    return {
        "kind": "critique",
        "records": n,
        "revised": revised,
        "revised_rate": revised / n,
        "steps_per_record": dict(sorted(rounds.items())),
        "principles": {k: dict(v) for k, v in sorted(per.items(), key=lambda kv: -kv[1]["steps"])},
        "lengths": {"initial": _lengths([r.get("initial", "") for r in records]), "critique": _lengths(critiques),
                    "revision": _lengths(revisions), "final": _lengths([r.get("final", "") for r in records])},
        "early_stop": ({"judged": len(p_comply), "mean_p_comply": mean(p_comply),
                        "stopped": sum(v.get("stopped", 0) for v in per.values())} if p_comply else None),
        "examples": [{"id": records[i].get("id"), "prompt": _last_user(records[i].get("prompt")),
                      "principles": [s.get("principle_id") for s in records[i].get("steps") or []],
                      "initial": records[i].get("initial", ""), "final": records[i].get("final", "")} for i in pick],
    }


def _preference_summary(records: Sequence[dict[str, Any]], pick: list[int]) -> dict[str, Any]:
    n = len(records)
    chosen = [_text(r.get("chosen")) for r in records]
    rejected = [_text(r.get("rejected")) for r in records]
    probs = [float(r["p_chosen"]) for r in records if isinstance(r.get("p_chosen"), (int, float))]
    principles = Counter()
    for r in records:
        principles.update(_principle_ids(r))
    bins = Counter()
    for p in probs:  # confidence of the label, folded so 0.5 is a coin flip
        m = abs(p - 0.5)
        bins["< 0.05" if m < 0.05 else "0.05-0.15" if m < 0.15 else "0.15-0.3" if m < 0.3 else ">= 0.3"] += 1
    agree = [r.get("orders_agree", r.get("agree")) for r in records]
    agree = [a for a in agree if isinstance(a, bool)]
    return {
        "kind": "preference",
        "records": n,
        "identical_pairs": sum(1 for c, r in zip(chosen, rejected) if c == r),
        "p_chosen": ({"n": len(probs), "mean": mean(probs), "min": min(probs), "max": max(probs),
                      "margin": dict(bins)} if probs else None),
        "orders_agree_rate": (sum(agree) / len(agree)) if agree else None,
        "principles": dict(principles.most_common()),
        "lengths": {"prompt": _lengths([_last_user(r.get("prompt")) for r in records]),
                    "chosen": _lengths(chosen), "rejected": _lengths(rejected)},
        "examples": [{"id": records[i].get("id"), "prompt": _last_user(records[i].get("prompt")),
                      "chosen": chosen[i], "rejected": rejected[i], "p_chosen": records[i].get("p_chosen")}
                     for i in pick],
    }


def _principle_ids(record: dict[str, Any]) -> list[str]:
    """The principle ids a preference record was judged by, in the shapes a labeller may write."""
    if record.get("principle_ids"):
        return [str(i) for i in record["principle_ids"]]
    if record.get("principle_id"):
        return [str(record["principle_id"])]
    ps = record.get("principles")
    if isinstance(ps, dict):
        return [str(k) for k in ps]
    if isinstance(ps, list):
        return [str(p.get("id") or p.get("principle_id")) if isinstance(p, dict) else str(p) for p in ps]
    return []


def _clip(text: str, n: int = 300) -> str:
    text = " ".join(str(text).split())
    return text if len(text) <= n else text[: n - 1] + "…"


def render(summary: dict[str, Any], console: Any, *, title: str = "") -> None:
    from rich.panel import Panel
    from rich.table import Table

    head = Table(title=title or f"{summary['kind']} file", show_header=False)
    head.add_column("what")
    head.add_column("value", justify="right")
    n = summary["records"]
    head.add_row("records", str(n))
    if summary["kind"] == "critique":
        head.add_row("final differs from first answer", f"{summary['revised']} ({summary['revised_rate']:.1%})")
        head.add_row("steps per record", ", ".join(f"{k}: {v}" for k, v in summary["steps_per_record"].items()))
        if summary.get("filter"):
            f = summary["filter"]
            head.add_row("revision filter", f"kept {f['kept']} ({f['kept_rate']:.1%}), dropped {f['dropped']}: "
                         + (", ".join(f"{k} {v}" for k, v in f["dropped_by_reason"].items()) or "-"))
            head.add_row("revisions rejected by reason", ", ".join(f"{k} {v}" for k, v in f["rejected_revisions"].items()) or "-")
        if summary["early_stop"]:
            es = summary["early_stop"]
            head.add_row("early stop", f"{es['stopped']} stopped of {es['judged']} judged, "
                         f"mean P(complies) {es['mean_p_comply']:.2f}")
    else:
        head.add_row("pairs with chosen == rejected", str(summary["identical_pairs"]))
        pc = summary["p_chosen"]
        if pc:
            head.add_row("p_chosen mean [min, max]", f"{pc['mean']:.3f} [{pc['min']:.3f}, {pc['max']:.3f}]")
            head.add_row("|p_chosen - 0.5|", ", ".join(f"{k}: {v}" for k, v in pc["margin"].items()))
        if summary["orders_agree_rate"] is not None:
            head.add_row("both orders agree", f"{summary['orders_agree_rate']:.1%}")
    console.print(head)

    lengths = Table(title="mean lengths")
    for col in ("text", "n", "chars", "words"):
        lengths.add_column(col, justify="left" if col == "text" else "right")
    for name, v in summary["lengths"].items():
        lengths.add_row(name, str(v["n"]), f"{v['chars']:.0f}", f"{v['words']:.1f}")
    console.print(lengths)

    if summary["principles"]:
        table = Table(title="principles")
        table.add_column("principle")
        if summary["kind"] == "critique":
            for col in ("steps", "revision changed", "empty revision", "stopped early"):
                table.add_column(col, justify="right")
            for pid, c in summary["principles"].items():
                steps = c.get("steps", 0)
                done = steps - c.get("stopped", 0)
                changed = f"{c.get('changed', 0)} ({c.get('changed', 0) / done:.0%})" if done else "-"
                table.add_row(pid, str(steps), changed, str(c.get("empty", 0)), str(c.get("stopped", 0)))
        else:
            table.add_column("pairs", justify="right")
            for pid, count in summary["principles"].items():
                table.add_row(pid, str(count))
        console.print(table)

    from rich.text import Text

    for ex in summary["examples"]:
        if summary["kind"] == "critique":
            rows = [("prompt", ex["prompt"]), ("principles", ", ".join(ex["principles"]) or "-"),
                    ("first answer", ex["initial"]), ("final", ex["final"])]
        else:
            rows = [("prompt", ex["prompt"]), ("chosen", ex["chosen"]), ("rejected", ex["rejected"])]
            if ex["p_chosen"] is not None:
                rows.append(("p_chosen", f"{ex['p_chosen']:.3f}"))
        body = Text("\n").join(Text.assemble((f"{k}: ", "bold"), _clip(v)) for k, v in rows)
        console.print(Panel(body, title=Text(f"example {ex['id']}"), title_align="left"))
