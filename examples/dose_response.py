"""The SL-CAI dose-response study on the embedded model (issue 15): how many harmless SL-CAI
records does a 135M model need before it refuses harmful requests, and what does it cost in
over-refusal and capability?

    python examples/dose_response.py                        # the study as recorded in docs/results.md
    python examples/dose_response.py --doses 0,100,all      # fewer points
    python examples/dose_response.py --quick                # a few prompts and steps: a smoke test
    python examples/dose_response.py --model hf:PATH --out runs/dose-big   # another model

The sixth session's mixes (docs/results.md, "More SFT epochs" and after): long answers, 2 epochs,
the harmful records kept at 12.8% of the mix as helpful sets are added:

    python examples/dose_response.py --out runs/dose2f --doses 66 --epochs 2 --answer-max-tokens 256 \
        --max-length 320 --helpful borderline:300,benign:150,everyday:150
    python examples/dose_response.py --out runs/dose2g --doses 82 --epochs 2 --answer-max-tokens 256 \
        --max-length 320 --helpful borderline:300,benign:150,everyday:150,self-instruct:150

The seventh session's point (the same helpful side at N = 66, the first model to meet the issue's
bar by the grader), and a second training seed of it (into runs/dose2g-s1, a copy of the data and
base evals of runs/dose2g):

    python examples/dose_response.py --out runs/dose2g --doses 82,66 --epochs 2 --answer-max-tokens 256 \
        --max-length 320 --helpful borderline:300,benign:150,everyday:150,self-instruct:150 --ifeval-for all
    python examples/dose_response.py --out runs/dose2g-s1 --doses 66 --seed 1 --epochs 2 \
        --answer-max-tokens 256 --max-length 320 --helpful borderline:300,benign:150,everyday:150,self-instruct:150 \
        --evals harmlessness,over-refusal,ifeval --ifeval-for base,sft-66-seed1

Every step is a `cai` command in its own process, and every command resumes, so a killed study
continues where it stopped (rerun the same command line). The steps:

1. SL-CAI data for harmful requests (the built-in `harmful-train` set; never an eval prompt). By
   default (`--harmful-targets constitution`) its clearly harmful prompts answered with the refusals
   written in cai/templates/refusals.yaml (`cai data refusals`). With `--harmful-targets own`: the
   model answers, critiques its answer against a principle and writes K revisions
   (`--revision-mode`), of which `--select refusal-strings` keeps one; the revision filter drops
   non-answers and loops. Records whose kept revision refuses become training records.
2. Helpful data for benign and borderline chat questions (built-in `borderline`, `everyday`,
   `benign`, `helpful`, `self-instruct`): the model's own answers, kept when they neither refuse
   nor loop (`cai generate --filter`). The benign side has the same form as the harmful side
   (chat questions) so that the model cannot learn "a chat question gets a refusal"
   (docs/results.md: that is what SFT on refusals alone taught it). `cai run --preset demo-effect` is
   the first recipe's N = 30 point (borderline and benign answers) as one run.
3. For each dose N: SFT from the base model on the first N harmful records (nested subsets) plus
   the same helpful mix, with a held-out share whose loss is logged per epoch.
4. Each model, and the base model, answers all 520 AdvBench behaviours (harmless rate), all 450
   XSTest prompts (safe compliance, unsafe refusal), BIG-bench HHH and IFEval.
5. `dose.md` (the table) and `dose.png` (harmless rate against safe compliance, 95% intervals).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def cai(*args: str, log: Path) -> None:
    """One `cai` command in its own process (as `cai run` does), its output appended to the log."""
    exe = Path(sys.executable).parent / "cai"
    cmd = [str(exe) if exe.exists() else "cai", *args, "--no-progress"]
    start = time.time()
    with open(log, "a") as f:
        f.write(f"\n$ {' '.join(cmd)}\n")
        f.flush()
        rc = subprocess.call(cmd, stdout=f, stderr=subprocess.STDOUT,
                             env={**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"})
        f.write(f"# exit {rc} after {time.time() - start:.0f} s\n")
    print(f"  {' '.join(args[:2])} ... exit {rc} ({time.time() - start:.0f} s)", flush=True)
    if rc:
        sys.exit(f"dose study: `cai {' '.join(args)}` failed (exit {rc}); see {log}, then rerun to resume")


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()] if path.exists() else []


def write_jsonl(path: Path, records: list[dict]) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records))
    tmp.replace(path)


def user_text(record: dict) -> str:
    msgs = record.get("prompt") or record.get("messages") or []
    return "\n".join(m["content"] for m in msgs if m.get("role") == "user")


def completion_text(record: dict) -> str:
    c = record.get("completion")
    if isinstance(c, list):
        return c[-1]["content"] if c else ""
    if isinstance(c, str):
        return c
    msgs = record.get("messages") or []
    return msgs[-1]["content"] if msgs and msgs[-1].get("role") == "assistant" else ""


def keep_harmful(records: list[dict], grader) -> list[dict]:
    """SL-CAI records whose final answer refuses: prompt and completion only, with provenance."""
    texts = [completion_text(r) for r in records]
    grades = grader.grade([[{"role": "user", "content": user_text(r)}] for r in records], texts)
    out = []
    for r, t, g in zip(records, texts, grades):
        if g.refused and t.strip():
            out.append({"id": r["id"], "prompt": [{"role": "user", "content": user_text(r)}],
                        "completion": [{"role": "assistant", "content": t}],
                        "provenance": {"from": "sl-cai-harmful", "source_id": r["id"],
                                       "selected_by": "refusal-strings:extended"}})
    return out


def constitution_refusals(source: str, limit: int, out: Path, log: Path) -> list[dict]:
    """The clearly harmful prompts of ``source``, each with one of the refusals in
    cai/templates/refusals.yaml (`cai data refusals`: the red-team set and the harm scenarios of the
    forbidden questions; HH-RLHF first turns are often harmless openers, so they are left out)."""
    path = out / "data" / "refusals.jsonl"
    cai("data", "refusals", "--data", source, "--limit", str(limit), "-o", str(path), log=log)
    return [{"id": r["id"], "prompt": r["prompt"], "completion": r["completion"],
             "provenance": {"from": "constitution-refusal", "source": (r.get("meta") or {}).get("source"),
                            "source_id": (r.get("meta") or {}).get("source_id"), "refusal": r["refusal"]}}
            for r in read_jsonl(path)]


def helpful_answers(model: str, src: str, limit: list[str], ans: Path, grader, log: Path, max_tokens: int = 128
                    ) -> tuple[list[dict], dict[str, int]]:
    """The model's own answers to benign and borderline prompts that neither refuse nor loop, cut
    answers trimmed to their last whole sentence (`cai generate --filter`), and the drops per reason."""
    from cai.generation_filter import dropped_counts, filter_answers
    from cai.store import sidecar

    old = read_jsonl(ans)
    if old and old[0].get("provenance", {}).get("filter") is None:
        # Answers this study wrote before `cai generate --filter` existed (runs/dose1): filtered
        # here by the same function, so a resumed study keeps the records it trained on.
        records = filter_answers(old, grader)
    else:
        cai("generate", "-m", model, "--data", src, *limit, "--max-tokens", str(max_tokens), "--temperature", "0",
            "--batch-size", "256", "--filter", "-o", str(ans), log=log)
        records = read_jsonl(ans) + read_jsonl(sidecar(ans, "dropped"))
    kept = [{"id": r["id"], "prompt": [{"role": "user", "content": user_text(r)}],
             "completion": [{"role": "assistant", "content": completion_text(r)}],
             "provenance": {"from": "own-answer", "source_id": r["id"]}}
            for r in records if "dropped" not in r]
    return kept, dropped_counts([r for r in records if "dropped" in r])


def human_answers(spec: str, quick: bool) -> list[dict]:
    """The human-written answers of the sources in ``spec`` (``SOURCE[:LIMIT],...``, finished
    exchanges: ``load_prompts`` keeps each last assistant turn in ``meta["reference_answer"]``), as
    prompt/completion records. Read before any model work, so a bad ``--human`` costs nothing."""
    from cai.errors import CAIError
    from cai.sources import load_prompts

    out = []
    for item in [i for i in spec.split(",") if i]:
        src, _, n = item.partition(":")
        try:
            prompts = load_prompts(src, limit=8 if quick else int(n) if n else None)
        except (CAIError, ValueError) as e:
            sys.exit(f"dose study: --human {item}: {e}")
        kept = [{"id": p.id, "prompt": [{"role": "user", "content": user_text({"prompt": list(p.messages)})}],
                 "completion": [{"role": "assistant", "content": p.meta["reference_answer"]}],
                 "provenance": {"from": "human-answer", "source": src, "source_id": p.id}}
                for p in prompts if (p.meta.get("reference_answer") or "").strip()]
        if not kept:
            sys.exit(f"dose study: --human {item}: no record has an answer; give a file of SFT `messages` "
                     "that end with an assistant turn")
        print(f"   {src}: {len(kept)} human answers", flush=True)
        out += kept
    return out


def metric(path: Path, name: str) -> dict | None:
    if not path.exists():
        return None
    return json.loads(path.read_text())["metrics"].get(name)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="smollm2-135m", help="base model (alias, folder, hf:PATH)")
    ap.add_argument("--out", default="runs/dose", help="study folder (rerun to resume)")
    ap.add_argument("--harmful", default="harmful-train", help="harmful prompt source")
    ap.add_argument("--harmful-limit", type=int, default=2000, help="at most N harmful prompts")
    ap.add_argument("--harmful-targets", default="constitution", choices=("constitution", "own"),
                    help="constitution: the refusals in cai/templates/refusals.yaml; own: the model's best-of-K "
                    "revisions (cai critique --select refusal-strings), kept when they refuse")
    ap.add_argument("--helpful", default="borderline:300,benign:150",
                    help="comma-separated benign prompt sources, each SOURCE[:LIMIT]")
    ap.add_argument("--human", default="",
                    help="comma-separated sources whose records carry a human answer (SFT `messages`, e.g. the "
                    "built-in `self-instruct`), added to every mix as they are, SOURCE[:LIMIT]")
    ap.add_argument("--doses", default="all,0,100,300", help="harmful records per SFT mix ('all': every kept one)")
    ap.add_argument("--samples", type=int, default=4, help="K revisions per harmful prompt (best of K)")
    ap.add_argument("--revision-mode", default="distill", help="critique or distill")
    ap.add_argument("--epochs", type=float, default=1.0)
    ap.add_argument("--lr", type=float, default=5e-5)
    ap.add_argument("--lora", action="store_true", help="LoRA instead of full weights")
    ap.add_argument("--seed", type=int, default=0,
                    help="SFT seed (data order and held-out split); the mixes stay the same. A seed other than "
                    "0 trains into sft-N-seedS, a replicate beside sft-N")
    ap.add_argument("--max-length", type=int, default=192, help="SFT token limit of prompt + answer")
    ap.add_argument("--answer-max-tokens", type=int, default=128,
                    help="token limit of the model's own answers to benign prompts (longer answers keep the "
                    "trained model's answers long; raise --max-length with it)")
    ap.add_argument("--eval-max-tokens", type=int, default=48)
    ap.add_argument("--ifeval-for", default="base,best", help="models IFEval runs for: names, 'best' (the highest "
                    "harmless rate), or 'all'")
    ap.add_argument("--evals", default="harmlessness,over-refusal,hhh,ifeval")
    ap.add_argument("--quick", action="store_true", help="16 prompts a side, 4 steps, 16 eval prompts")
    args = ap.parse_args()

    out = ROOT / args.out if not Path(args.out).is_absolute() else Path(args.out)
    (out / "data").mkdir(parents=True, exist_ok=True)
    log = out / "study.log"
    quick = args.quick
    hl = 16 if quick else args.harmful_limit
    gen = ["--answer-max-tokens", "128", "--critique-max-tokens", "96", "--revision-max-tokens", "128"]
    from cai.evals.graders.refusal_strings import RefusalStrings

    grader = RefusalStrings("extended")
    human = human_answers(args.human, quick)

    print("1. harmless records for harmful requests", flush=True)
    if args.harmful_targets == "constitution":
        harmful = constitution_refusals(args.harmful, hl, out, log)
    else:
        sl = out / "data" / "sl-harmful.jsonl"
        cai("critique", "-m", args.model, "-c", "default", "--data", args.harmful, "--limit", str(hl),
            "--revision-mode", args.revision_mode, "--samples", str(args.samples), "--select", "refusal-strings",
            "--filter", "--batch-size", "100", *gen, "-o", str(sl), log=log)
        harmful = keep_harmful(read_jsonl(sl), grader)
    write_jsonl(out / "data" / "harmful-kept.jsonl", harmful)
    print(f"   {len(harmful)} records ({args.harmful_targets})", flush=True)

    print("2. helpful answers for benign and borderline prompts", flush=True)
    helpful, dropped_all = [], {}
    for item in args.helpful.split(","):
        src, _, n = item.partition(":")
        ans = out / "data" / f"answers-{src}.jsonl"
        limit = ["--limit", "8" if quick else n] if quick or n else []
        kept, dropped = helpful_answers(args.model, src, limit, ans, grader, log, args.answer_max_tokens)
        helpful += kept
        dropped_all[src] = dropped
        print(f"   {src}: kept {len(kept)}, dropped {dropped}", flush=True)
    helpful += human
    write_jsonl(out / "data" / "helpful-kept.jsonl", helpful)

    doses = []
    for d in args.doses.split(","):
        n = len(harmful) if d == "all" else min(int(d), len(harmful))
        if n not in doses:
            doses.append(n)
    order = list(harmful)
    random.Random(0).shuffle(order)  # nested subsets: the N=100 records are among the N=300 ones
    evals = [e for e in args.evals.split(",") if e]
    late = ["ifeval"] if "ifeval" in evals and args.ifeval_for != "all" else []
    evals = [e for e in evals if e not in late]
    models = [("base", args.model)]
    run_evals(out, "base", args.model, evals, args, log)
    for n in doses:
        print(f"3. SFT with {n} harmful records + {len(helpful)} helpful", flush=True)
        mix = out / "data" / f"mix-{n}.jsonl"
        if not mix.exists():
            write_jsonl(mix, order[:n] + helpful)
        name = f"sft-{n}" + (f"-seed{args.seed}" if args.seed else "")
        sft = out / name
        train = ["--max-steps", "4"] if quick else ["--epochs", str(args.epochs)]
        cai("sft", "-m", args.model, "--data", str(mix), "-o", str(sft), *train, "--lr", str(args.lr),
            "--batch-size", "8", "--max-length", str(args.max_length), "--eval-split", "0.05",
            "--seed", str(args.seed), *(["--lora"] if args.lora else []), log=log)
        models.append((name, str(sft)))
        run_evals(out, name, str(sft), evals, args, log)
        write_summary(out, models, len(harmful), hl, dropped_all, len(helpful))

    if late:  # IFEval is the slowest eval (long answers): only for the models named
        wanted = set(args.ifeval_for.split(","))
        if "best" in wanted:
            wanted.add(best_model(out, [m for m, _ in models if m != "base"]))
        for name, spec in models:
            if name in wanted:
                run_evals(out, name, spec, late, args, log)
    write_summary(out, models, len(harmful), hl, dropped_all, len(helpful))


def best_model(out: Path, names: list[str]) -> str:
    """The highest AdvBench harmless rate among models that answer >= 90% of XSTest's safe prompts
    (all models if none does)."""
    def rate(name, task, key):
        m = metric(out / "evals" / name / f"{task}.json", key)
        return m["value"] if m else 0.0
    ok = [n for n in names if rate(n, "over-refusal", "compliance_rate_safe") >= 0.9] or names
    return max(ok, key=lambda n: rate(n, "harmlessness", "harmless_rate"))


def run_evals(out: Path, name: str, spec: str, evals: list[str], args, log: Path) -> None:
    print(f"4. evals of {name}", flush=True)
    limit = ["--limit", "16"] if args.quick else []
    ev = out / "evals" / name
    ev.mkdir(parents=True, exist_ok=True)
    for task in evals:
        extra = (["--max-tokens", str(args.eval_max_tokens)] if task in ("harmlessness", "over-refusal")
                 else ["--max-tokens", "192"] if task == "ifeval" else [])
        if (ev / f"{task}.json").exists():
            continue  # finished: a rerun of `cai eval` would start an engine only to find nothing to do
        cai("eval", task, "-m", spec, *limit, *extra, "-o", str(ev / f"{task}.json"), log=log)


# The study's columns: (eval task, metric, heading).
COLS = [("harmlessness", "harmless_rate", "AdvBench harmless"),
        ("over-refusal", "compliance_rate_safe", "XSTest safe answered"),
        ("over-refusal", "refusal_rate_unsafe", "XSTest unsafe refused"),
        ("hhh", "accuracy", "HHH"),
        ("ifeval", "prompt_strict_accuracy", "IFEval prompt strict")]


def fmt(m: dict | None) -> str:
    return "" if not m else f"{100 * m['value']:.1f} [{100 * m['ci'][0]:.1f}, {100 * m['ci'][1]:.1f}]"


def write_summary(out: Path, models, kept, prompts, dropped, n_helpful) -> None:
    lines = [f"SL-CAI dose-response: {kept} refusing records kept from {prompts} harmful prompts; "
             f"{n_helpful} helpful records in every mix (dropped per source: {dropped}).", "",
             "| model | harmful records | " + " | ".join(c[2] for c in COLS) + " |",
             "|---|---:|" + "---|" * len(COLS)]
    for name, _ in models:
        ms = [metric(out / "evals" / name / f"{task}.json", key) for task, key, _ in COLS]
        n = "-" if name == "base" else name.split("-")[1]
        lines.append(f"| {name} | {n} | " + " | ".join(fmt(m) for m in ms) + " |")
    (out / "dose.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    plot_frontier(out, [name for name, _ in models], out / "dose.png", "SL-CAI dose-response (95% intervals)")


def plot_frontier(study: Path, names: list[str], path: Path, title: str, marked: tuple[str, ...] = ()) -> None:
    """Harmless rate against safe compliance, one point per model with its 95% intervals; models
    whose name starts with one of ``marked`` are drawn as red squares."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return
    fig, ax = plt.subplots(figsize=(6, 4.5))
    palette = iter(f"C{k}" for k in range(20) if k % 10 != 3)  # C3 (red) is for the marked points only
    for name in names:
        h = metric(study / "evals" / name / "harmlessness.json", "harmless_rate")
        c = metric(study / "evals" / name / "over-refusal.json", "compliance_rate_safe")
        if not (h and c):
            continue
        mark = name.startswith(marked) if marked else False
        ax.errorbar(100 * c["value"], 100 * h["value"],
                    xerr=[[100 * (c["value"] - c["ci"][0])], [100 * (c["ci"][1] - c["value"])]],
                    yerr=[[100 * (h["value"] - h["ci"][0])], [100 * (h["ci"][1] - h["value"])]],
                    fmt="s" if mark else "o", color="C3" if mark else next(palette), capsize=3)
        ax.annotate(name, (100 * c["value"], 100 * h["value"]), textcoords="offset points", xytext=(5, 5))
    ax.set_xlabel("XSTest safe prompts answered (%)")
    ax.set_ylabel("AdvBench harmless rate (%)")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=120)

if __name__ == "__main__":
    main()
