"""SL-CAI revision modes on red-team prompts: how many revisions the filter keeps, and whether the
final answers refuse more often than the first ones (issue 11, item 2).

For each mode it runs ``cai critique`` (one round, the ``default`` constitution, the revision
filter on) on the first ``--limit`` built-in ``redteam`` prompts, then reads the kept file and
the ``.dropped.jsonl`` beside it:

  critique     the critic revises inside its own chat (the paper's way)
  distill      the revision is a fresh answer, with the principle and critique in the system prompt
  best-of-K    K revisions sampled per round; ``--select refusal-strings`` keeps one that refuses,
               else one that passes the filter (rejection sampling)

Refusal is measured with the ``refusal-strings`` grader (its agreement with XSTest's human labels
is in docs/results.md). Every ``cai critique`` resumes, so a killed run continues.

    python bench/revision_modes.py -o runs/modes                      # the embedded model, 100 prompts
    python bench/revision_modes.py -o runs/modes --modes distill --limit 16
    python bench/revision_modes.py -o runs/modes --report-only        # tables from files already there

Prints a Markdown table and writes DIR/revision_modes.json.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

MODES = {
    "critique": ["--revision-mode", "critique"],
    "distill": ["--revision-mode", "distill"],
    "best-of-8": ["--revision-mode", "critique", "--samples", "8", "--select", "refusal-strings"],
}


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("-m", "--model", default="smollm2-135m", help="model spec (default: smollm2-135m)")
    p.add_argument("-o", "--output", required=True, help="folder for the critique files and the summary")
    p.add_argument("--limit", type=int, default=100, help="red-team prompts per mode (default: 100)")
    p.add_argument("--modes", default=",".join(MODES), help="comma-separated subset of " + ",".join(MODES))
    p.add_argument("--batch-size", type=int, default=100, help="cai critique --batch-size (default: 100)")
    p.add_argument("--report-only", action="store_true", help="only summarise the files already in -o")
    args = p.parse_args(argv)
    args.modes = [m.strip() for m in args.modes.split(",") if m.strip()]
    unknown = set(args.modes) - set(MODES)
    if unknown:
        p.error(f"unknown modes {sorted(unknown)}; pick from {', '.join(MODES)}")
    return args


def _read(path: Path) -> list[dict]:
    return [json.loads(x) for x in path.read_text().splitlines() if x.strip()] if path.is_file() else []


def summarise(kept_path: Path) -> dict:
    from cai.evals.graders.refusal_strings import RefusalStrings

    kept = _read(kept_path)
    dropped = _read(kept_path.with_suffix(".dropped.jsonl"))
    every = kept + dropped
    strings = RefusalStrings()

    def rate(texts: list[str]) -> dict:
        n = len(texts)
        refused = sum(strings.is_refusal(t) for t in texts)
        return {"n": n, "refused": refused, "rate": refused / n if n else None}

    reasons: dict[str, int] = {}
    for r in dropped:
        for why in r.get("dropped") or []:
            reasons[why] = reasons.get(why, 0) + 1
    revisions = [r["steps"][-1]["revision"] for r in every if r.get("steps")]
    return {
        "records": len(every), "kept": len(kept), "kept_share": len(kept) / len(every) if every else None,
        "dropped_reasons": reasons,
        "first_answers": rate([r["initial"] for r in every]),
        "revisions_as_written": rate(revisions),
        "final_answers_kept": rate([r["final"] for r in kept]),
    }


def table(summary: dict) -> str:
    def pct(x: dict) -> str:
        return "-" if x["rate"] is None else f"{100 * x['rate']:.1f}% ({x['refused']}/{x['n']})"

    lines = ["| mode | records | kept by the filter | first answers refuse | revisions refuse | kept final answers refuse | seconds |",
             "|---|---:|---:|---:|---:|---:|---:|"]
    for mode, s in summary.items():
        share = "-" if s["kept_share"] is None else f"{100 * s['kept_share']:.0f}% ({s['kept']})"
        secs = f"{s['seconds']:.0f}" if s.get("seconds") is not None else "-"
        lines.append(f"| {mode} | {s['records']} | {share} | {pct(s['first_answers'])} | "
                     f"{pct(s['revisions_as_written'])} | {pct(s['final_answers_kept'])} | {secs} |")
    return "\n".join(lines)


def main(argv=None) -> int:
    args = parse_args(argv)
    out = Path(args.output)
    out.mkdir(parents=True, exist_ok=True)
    summary_path = out / "revision_modes.json"
    old = json.loads(summary_path.read_text()) if summary_path.is_file() else {}
    summary = {}
    for mode in args.modes:
        path = out / f"{mode}.jsonl"
        seconds = old.get(mode, {}).get("seconds")
        if not args.report_only:
            cmd = [sys.executable, "-m", "cai", "critique", "-m", args.model, "-c", "default", "--data", "redteam",
                   "--limit", str(args.limit), "--rounds", "1", "--filter", "--batch-size", str(args.batch_size),
                   "--no-progress", "-o", str(path), *MODES[mode]]
            print(f"{mode}: {' '.join(cmd[2:])}", file=sys.stderr)
            t = time.perf_counter()
            done = subprocess.run(cmd)
            if done.returncode != 0:
                print(f"{mode}: cai critique exited {done.returncode}", file=sys.stderr)
                continue
            seconds = time.perf_counter() - t
        summary[mode] = {**summarise(path), "seconds": seconds, "model": args.model, "limit": args.limit,
                         "flags": MODES[mode]}
    summary_path.write_text(json.dumps({**old, **summary}, indent=2))
    print(table(summary))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
